"""Ingest (idempotent by external id) and claiming batches under leases."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, func, select

from policies import InputError, NotFoundError, Policy
from service.settings import Settings
from service.store import SqlStore
from service.store.base import item_t
from service.store.db import read_tx
from tests.factories import make_batch_result, make_items, make_policy
from tools.base import Item

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def stored_count(store: SqlStore) -> int:
    with read_tx(store.engine) as conn:
        return conn.execute(select(func.count()).select_from(item_t)).scalar_one()


def test_ingest_is_idempotent_by_external_id(store: SqlStore, project: str) -> None:
    first = store.items.ingest(project, make_items(5))
    assert (first.inserted, first.duplicates, first.first_seq) == (5, [], 1)
    again = store.items.ingest(project, make_items(7))  # 5 known + 2 new
    assert again.inserted == 2
    assert again.duplicates == [f"item-{i:06d}" for i in range(5)]
    assert again.first_seq == 6  # seqs stay dense: duplicates take none
    assert stored_count(store) == 7


def test_ingest_reports_repeats_within_one_call(store: SqlStore, project: str) -> None:
    items = [*make_items(3), make_items(1)[0]]
    result = store.items.ingest(project, items)
    assert result.inserted == 3
    assert result.duplicates == ["item-000000"]
    assert stored_count(store) == 3


def test_ingest_keeps_content_and_client_labels(store: SqlStore, project: str) -> None:
    item = Item(key="a", text="héllo", metadata={"lat": 1.5, "tags": ["x"]}, image=b"\x89PNG")
    store.items.ingest(project, [item, Item(key="b", text=None)], labels=["spam", None])
    stored = store.items.item_view(project, "a").item
    assert (stored.text, stored.meta, stored.client_label, stored.status) == ("héllo", item.metadata, "spam", "pending")
    assert store.items.item_view(project, "b").item.client_label is None
    _, claimed = store.items.claim_batch(project, worker="w", size=10)
    assert claimed[0] == item  # round-trips exactly, bytes included


def test_ingest_validates_input(store: SqlStore, project: str) -> None:
    with pytest.raises(InputError, match="not in the project's labels"):
        store.items.ingest(project, make_items(2), labels=["ham", "eggs"])
    with pytest.raises(InputError, match="key must be"):
        store.items.ingest(project, [Item(key="")])
    with pytest.raises(InputError, match="align"):
        store.items.ingest(project, make_items(2), labels=["ham"])
    small = SqlStore(store.engine, Settings(max_batch_items=3))
    with pytest.raises(InputError, match="at most 3"):
        small.items.ingest(project, make_items(4))
    with pytest.raises(NotFoundError):
        store.items.ingest("missing", make_items(1))
    assert stored_count(store) == 0  # nothing of the failed calls was stored


def test_claims_hand_out_oldest_first_and_never_twice(store: SqlStore, project: str) -> None:
    store.items.ingest(project, make_items(10))
    token_a, batch_a = store.items.claim_batch(project, worker="a", size=4)
    token_b, batch_b = store.items.claim_batch(project, worker="b", size=4)
    token_c, batch_c = store.items.claim_batch(project, worker="c", size=4)
    assert [it.key for it in batch_a] == [f"item-{i:06d}" for i in range(4)]
    assert [it.key for it in batch_b] == [f"item-{i:06d}" for i in range(4, 8)]
    assert [it.key for it in batch_c] == ["item-000008", "item-000009"]
    assert len({token_a, token_b, token_c}) == 3
    assert store.items.claim_batch(project, worker="d", size=4)[1] == []
    leased = store.items.item_view(project, "item-000005").item
    assert (leased.status, leased.lease_owner, leased.attempts) == ("leased", "b", 1)


def test_concurrent_claims_from_threads_never_share_an_item(store: SqlStore, project: str) -> None:
    n_items, n_workers = 600, 6
    for start in range(0, n_items, 200):
        store.items.ingest(project, make_items(200, start=start))
    claimed: dict[str, list[str]] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(n_workers)

    def worker(name: str) -> None:
        try:
            barrier.wait()
            mine: list[str] = []
            while True:
                _, batch = store.items.claim_batch(project, worker=name, size=25)
                if not batch:
                    break
                mine.extend(it.key for it in batch)
            claimed[name] = mine
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(n_workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    everything = [key for keys in claimed.values() for key in keys]
    assert len(everything) == n_items
    assert len(set(everything)) == n_items  # no item went to two workers


def test_expired_leases_come_back(store: SqlStore, project: str) -> None:
    store.items.ingest(project, make_items(3))
    old_token, first = store.items.claim_batch(project, worker="slow", size=2, lease_seconds=30, now=T0)
    assert store.items.claim_batch(project, worker="fast", size=5,
                                   now=T0 + timedelta(seconds=29))[1][0].key == "item-000002"
    token, again = store.items.claim_batch(project, worker="fast", size=5, now=T0 + timedelta(seconds=30))
    assert [it.key for it in again] == [it.key for it in first]
    assert token != old_token
    item = store.items.item_view(project, "item-000000").item
    assert (item.lease_owner, item.attempts) == ("fast", 2)


def test_items_failing_too_often_are_marked_failed(store: SqlStore, project: str) -> None:
    limited = SqlStore(store.engine, Settings(max_attempts=2))
    limited.items.ingest(project, make_items(1))
    now = T0
    for _ in range(2):
        assert len(limited.items.claim_batch(project, worker="w", lease_seconds=10, now=now)[1]) == 1
        now += timedelta(seconds=11)
    assert limited.items.claim_batch(project, worker="w", now=now)[1] == []
    assert limited.items.item_view(project, "item-000000").item.status == "failed"
    assert limited.items.count_items(project)["failed"] == 1


def test_released_items_fail_after_too_many_attempts(store: SqlStore, project: str) -> None:
    limited = SqlStore(store.engine, Settings(max_attempts=2))
    limited.items.ingest(project, make_items(1))
    token, _ = limited.items.claim_batch(project, worker="w")
    assert limited.items.release_lease(project, token) == 1
    assert limited.items.item_view(project, "item-000000").item.status == "pending"
    token, _ = limited.items.claim_batch(project, worker="w")
    limited.items.release_lease(project, token)
    assert limited.items.item_view(project, "item-000000").item.status == "failed"
    assert limited.items.claim_batch(project, worker="w")[1] == []


def test_extend_and_release_leases(store: SqlStore, project: str) -> None:
    store.items.ingest(project, make_items(4))
    token, _ = store.items.claim_batch(project, worker="w", size=4, lease_seconds=10, now=T0)
    assert store.items.extend_lease(project, token, lease_seconds=60, now=T0 + timedelta(seconds=5)) == 4
    assert store.items.claim_batch(project, worker="x", now=T0 + timedelta(seconds=30))[1] == []  # still held
    assert store.items.extend_lease(project, "not-a-token", now=T0) == 0
    assert store.items.release_lease(project, token) == 4
    assert store.items.count_items(project)["pending"] == 4
    assert len(store.items.claim_batch(project, worker="x", size=10)[1]) == 4


def test_projects_are_isolated(store: SqlStore, project: str) -> None:
    store.projects.create_project("other", make_policy("other"))
    store.items.ingest(project, make_items(3))
    result = store.items.ingest("other", make_items(3))  # same keys, another project: not duplicates
    assert result.inserted == 3
    assert len(store.items.claim_batch("other", worker="w", size=10)[1]) == 3
    assert store.items.count_items(project)["pending"] == 3



def test_sqlite_bulk_insert_skips_keys_stored_meanwhile(sqlite_engine, policy) -> None:  # type: ignore[no-untyped-def]
    """The fast SQLite insert of ``ingest`` reports only the rows it inserted (ON CONFLICT DO NOTHING)."""
    from service.store.db import write_tx
    from service.store.item_rows import insert_sqlite

    store = SqlStore(sqlite_engine)
    store.projects.create_project(policy.project, policy)
    now = datetime.now(UTC)
    with write_tx(store.engine) as conn:
        pid = conn.execute(select(item_t.c.project_id)).scalar()
        pid = pid if pid is not None else store.projects._project_id(conn, policy.project)
        assert insert_sqlite(conn, pid, [(Item("b", "first"), None)], 100, now) == {"b"}
        inserted = insert_sqlite(conn, pid, [(Item("a", "x", {"k": 1.5}), "ham"), (Item("b", "again"), None),
                                              (Item("c", "z"), None)], 1, now)
    assert inserted == {"a", "c"}
    with read_tx(store.engine) as conn:
        rows = {r.external_id: r for r in conn.execute(select(item_t))}
    assert rows["b"].text == "first" and rows["a"].meta == {"k": 1.5} and rows["a"].client_label == "ham"
    assert rows["a"].created_at == now and rows["a"].seq == 1 and rows["c"].seq == 3


@pytest.mark.postgres
def test_postgres_array_insert_keeps_order_content_and_skips_keys_stored_meanwhile(postgres_engine: Engine,
                                                                                   policy: Policy) -> None:
    """``ingest``'s PostgreSQL insert (five arrays through ``unnest``): ids follow the input, every value round-trips
    (keys and texts with the characters of array literals, nested and non-ASCII JSON, NULLs), and a key another
    writer stored first is skipped and left as it was."""
    from service.store.db import write_tx
    from service.store.item_rows import insert_pg

    store = SqlStore(postgres_engine)
    store.projects.create_project(policy.project, policy)
    now = datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    odd = 'k{"a,b"}\\ \'q\' NULL é'
    fresh = [(Item(odd, 'x, {y} "z" \\', {"k": 1.5, "é": ["a", {"b": None}]}), "ham"),
             (Item("taken", "again"), None), (Item("NULL", None), None), (Item("c", ""), "spam")]
    with write_tx(store.engine) as conn:
        pid = store.projects._project_id(conn, policy.project)
        assert insert_pg(conn, pid, [(Item("taken", "first"), None)], 100, now).keys() == {"taken"}
        inserted = insert_pg(conn, pid, fresh, 1, now)
    assert list(inserted) == [odd, "NULL", "c"]  # the skipped key is not reported
    assert sorted(inserted.values()) == [inserted[odd], inserted["NULL"], inserted["c"]]  # ids in input order
    with read_tx(store.engine) as conn:
        rows = {r.external_id: r for r in conn.execute(select(item_t))}
    assert rows[odd].text == 'x, {y} "z" \\' and rows[odd].meta == {"k": 1.5, "é": ["a", {"b": None}]}
    assert (rows[odd].client_label, rows[odd].status, rows[odd].seq, rows[odd].created_at) == ("ham", "pending", 1, now)
    assert rows["taken"].text == "first" and rows["NULL"].text is None and rows["NULL"].client_label is None
    assert (rows["c"].text, rows["c"].meta, rows["c"].seq, rows["c"].updated_at) == ("", {}, 4, now)


def test_items_ingested_since_a_time_are_counted_by_the_window_s_ids(store: SqlStore, project: str) -> None:
    """The last minute's and hour's items, with another project's items stored in between: the same counts as
    ``created_at >= t`` over every row, found from the id range after the newest item created before ``t``."""
    other = make_policy("other")
    store.projects.create_project(other.project, other)
    now = datetime.now(UTC)
    for age, n, start in ((timedelta(hours=3), 5, 0), (timedelta(minutes=30), 4, 5), (timedelta(seconds=10), 3, 9)):
        store.items.ingest(project, make_items(n, start=start), now=now - age)
        store.items.ingest(other.project, make_items(2, prefix=f"o{start}"), now=now - age)
    since = [now - timedelta(minutes=1), now - timedelta(hours=1), now - timedelta(days=1), now]
    assert store.learning.ingested_since(project, since) == [3, 7, 12, 0]
    with read_tx(store.engine) as conn:
        pid = conn.execute(select(item_t.c.project_id).where(item_t.c.external_id == "item-000000")).scalar_one()
        direct = [int(conn.execute(select(func.count()).select_from(item_t).where(
            item_t.c.project_id == pid, item_t.c.created_at >= t)).scalar_one()) for t in since]
    assert direct == [3, 7, 12, 0]
    assert store.learning.ingested_since(other.project, since) == [2, 4, 6, 0]


def test_items_per_status_equal_a_count_of_every_row_through_their_life(store: SqlStore, project: str,
                                                                         policy: Policy) -> None:
    """``count_items`` counts the items not yet labeled and takes ``labeled`` from the project's item count: the
    same figures as a count by status over every row, at each step (pending, leased, labeled, in review, failed,
    duplicates ingested again, another project beside)."""
    other = make_policy("other")
    store.projects.create_project(other.project, other)
    store.items.ingest(other.project, make_items(4, prefix="o"))

    def direct() -> dict[str, int]:
        with read_tx(store.engine) as conn:
            pid = conn.execute(select(item_t.c.project_id).where(item_t.c.external_id == "item-000000")).scalar_one()
            rows = conn.execute(select(item_t.c.status, func.count()).where(item_t.c.project_id == pid)
                                .group_by(item_t.c.status)).all()
        return {status: n for status, n in rows}

    def check(**expected: int) -> None:
        counts = store.items.count_items(project)
        assert {s: n for s, n in counts.items() if n} == direct() == expected

    empty = store.items.count_items(project)
    assert set(empty) == {"pending", "leased", "labeled", "in_review", "failed"} and not any(empty.values())
    store.items.ingest(project, make_items(10))
    store.items.ingest(project, make_items(12))  # ten of them again: duplicates, not items
    check(pending=12)
    token, batch = store.items.claim_batch(project, worker="w", size=6)
    check(pending=6, leased=6)
    store.items.record_batch(project, make_batch_result(policy, batch, ["accept"] * 4 + ["escalate"] * 2), token)
    check(pending=6, labeled=4, in_review=2)
    limited = SqlStore(store.engine, Settings(max_attempts=1))
    token, _ = limited.items.claim_batch(project, worker="w", size=2)
    limited.items.release_lease(project, token)
    check(pending=4, labeled=4, in_review=2, failed=2)
