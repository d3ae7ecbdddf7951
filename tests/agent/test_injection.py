"""Prompt injection end to end through the graph: flagged items are escalated whatever the other votes say."""

from __future__ import annotations

from langchain_core.language_models.fake_chat_models import FakeListChatModel

from policies.model import LLMSpec
from tests.agent.fixtures import TableTool
from tests.agent.test_graph import SURE, labeler, run
from tests.tools.test_llm import INJECTIONS
from tools.base import Item
from tools.llm import LLMTool


def test_injection_items_are_escalated_and_clean_items_accepted() -> None:
    clean = [Item(f"clean-{i}", f"see you at lunch {i}") for i in range(4)]
    bad = [Item(f"bad-{i}", text) for i, text in enumerate(INJECTIONS)]
    items = clean + bad
    sure = TableTool("sure", {it.key: SURE for it in items})
    model = FakeListChatModel(responses=['{"label": "ham"}'])
    llm = LLMTool(LLMSpec(name="llm", cost=1.0), ("ham", "spam"), model=model)
    lab = labeler([sure, llm], threshold=0.9, budget=5)
    result = run(lab, items)
    by_key = {d.key: d for d in result.decisions}
    for it in bad:
        d = by_key[it.key]
        assert d.action == "escalate" and d.reason == "flagged for review by llm", (it.text, d.reason)
        assert d.label in {"ham", "spam", None}
        assert any(v.tool == "llm" and v.distribution is None and v.evidence.startswith("injection-suspected")
                   for v in d.votes)
    assert all(by_key[it.key].action == "accept" for it in clean)
    assert set(result.tool_calls) == {"sure", "llm"}  # no tool outside the policy was called
    assert result.tool_calls["llm"] == len(items)
