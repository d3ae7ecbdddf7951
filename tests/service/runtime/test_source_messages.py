"""What every broker source does with one message (``service.runtime.sources.common``): the HTTP ingest's checks, so
that a message the databases cannot store is dead-lettered with its reason instead of failing its batch's write on
every redelivery (a poison message would block the stream)."""

from __future__ import annotations

import asyncio
import json

import pytest

from policies import InputError
from service.runtime.sources.common import BatchIngestor, parse_entry
from service.store import SqlStore
from tests.service.runtime.helpers import runtime_policy


def fields(text: object = "hi", metadata: object = None, **extra: object) -> dict[str, object]:
    data: dict[str, object] = {"text": text}
    if metadata is not None:
        data["metadata"] = metadata
    return {"project": "p", "external_id": "k", "data": json.dumps(data), **extra}


@pytest.mark.parametrize(("message", "reason"), [
    (fields("a\x00b"), "data.text must not contain NUL"),
    (fields(metadata={"x": "\x00"}), "data.metadata must not contain NUL"),
    (fields(metadata={"\x00": 1}), "data.metadata must not contain NUL"),
    ({**fields(), "data": '{"text": "x", "metadata": {"v": NaN}}'}, "data.metadata holds NaN or Infinity"),
    ({**fields(), "data": '{"metadata": {"v": [1, Infinity]}}'}, "data.metadata holds NaN or Infinity"),
    ({**fields(), "external_id": "k\x00"}, "external_id must not contain NUL"),
    ({**fields(), "project": "p\x00"}, "project must not contain NUL"),
    (fields(label="sp\x00am"), "label must not contain NUL"),
    (fields(label="x" * 129), "'label' is longer than 128 characters"),
    (fields("x" * 11), "data.text has 11 characters; at most 10 are accepted"),
])
def test_messages_the_databases_cannot_store_are_refused_with_the_reason(message: dict, reason: str) -> None:
    with pytest.raises(InputError, match=reason):
        parse_entry(message, 256, max_text_chars=10)


def test_a_good_message_passes_the_checks() -> None:
    project, item, label = parse_entry(fields("x" * 10, {"n": 1.5, "tags": ["a"]}, label="spam"), 256, 10)
    assert (project, item.key, item.text, item.metadata, label) == ("p", "k", "x" * 10, {"n": 1.5, "tags": ["a"]},
                                                                    "spam")


def test_a_poison_message_is_dead_lettered_and_its_batch_mates_stored(store: SqlStore) -> None:
    policy = runtime_policy()
    store.projects.create_project(policy.project, policy)

    def body(key: str, text: str) -> bytes:
        return json.dumps({"project": policy.project, "external_id": key, "data": {"text": text}}).encode()

    messages = [(0, body("a", "fine")), (1, body("nul", "bad\x00text")), (2, body("b", "fine too")),
                (3, b'{"project": "demo", "external_id": "nan", "data": {"metadata": {"v": NaN}}}')]
    out = asyncio.run(BatchIngestor(store).handle(messages))
    assert out.done == [0, 2]
    assert [(ref, reason.split(" must")[0].split(" holds")[0]) for ref, reason in out.dead] == [
        (1, "data.text"), (3, "data.metadata")]
    assert (out.counts.stored, out.counts.duplicates, out.counts.dead) == (2, 0, 2)
    assert store.items.count_items(policy.project)["pending"] == 2
