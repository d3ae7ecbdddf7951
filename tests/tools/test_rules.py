"""Rules: keyword/regex/metadata labeling functions fire, abstain and combine as specified."""

from __future__ import annotations

import re

import numpy as np
import pytest

from policies.exceptions import ToolError
from policies.model import Rule, RulesSpec
from tests.tools.helpers import SMS_LABELS, items_of, label_indices, predict
from tools.base import Item, Learnable, Tool
from tools.rules import Rules

LABELS = ("ham", "spam", "other")


def make(*rules: Rule, labels: tuple[str, ...] = LABELS) -> Rules:
    return Rules(RulesSpec(name="rules", rules=list(rules)), labels)


def test_keywords_are_case_insensitive_whole_words() -> None:
    tool = make(Rule(label="spam", keywords=["free", "£100", "t&c"]))
    assert isinstance(tool, Tool) and not isinstance(tool, Learnable)
    texts = ["FREE entry now", "freedom of speech", "win £100 today", "see T&C apply", "carefree", "£1000 prize",
             "free-for-all", ""]
    fired = tool.matches([Item(str(i), t) for i, t in enumerate(texts)])[:, 0]
    assert fired.tolist() == [True, False, True, True, False, False, True, False]


def test_regex_and_metadata_conditions_must_all_hold() -> None:
    tool = make(
        Rule(label="spam", regex=r"\b\d{5}\b"),
        Rule(label="other", metadata={"source": "sensor", "level": 3}),
        Rule(label="ham", keywords=["meeting"], metadata={"lang": "en"}),
        Rule(label="other", metadata={"flag": True}),
    )
    items = [
        Item("a", "text WIN to 87121"),
        Item("b", "call 1234 now", {"source": "sensor", "level": 3}),
        Item("c", "meeting at 5", {"lang": "en"}),
        Item("d", "meeting at 5", {"lang": "fr", "source": "sensor", "level": "3"}),
        Item("e", "no match", {"flag": 1}),
        Item("f", "no match", {"flag": True}),
    ]
    assert tool.matches(items).astype(int).tolist() == [
        [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1],
    ]


def test_one_rule_votes_its_strength_and_no_match_abstains() -> None:
    tool = make(Rule(label="spam", keywords=["prize"], strength=0.8))
    votes = predict(tool, [Item("a", "claim your prize"), Item("b", "see you soon")], LABELS)
    np.testing.assert_allclose(votes.probs[0], [0.1, 0.8, 0.1])
    assert votes.abstain.tolist() == [False, True]
    np.testing.assert_allclose(votes.probs[1], 1 / 3)
    assert votes.evidence[0] == "rules: spam 0.80 from #1 spam (keywords: prize)"
    assert votes.evidence[1] == "rules: no rule matched"
    assert votes.cost.tolist() == [0.1, 0.1] and re.fullmatch(r"rules-[0-9a-f]{8}", votes.model_version or "")
    assert make(Rule(label="spam", keywords=["prize"], strength=0.7)).version != votes.model_version


def test_matching_rules_combine_as_a_normalised_product() -> None:
    tool = make(Rule(label="spam", keywords=["prize"]), Rule(label="spam", regex="(?i)claim"),
                Rule(label="ham", keywords=["mum"], strength=0.6))
    votes = predict(tool, [Item("a", "claim your prize"), Item("b", "mum says claim it")], LABELS)
    # two agreeing rules (0.9, 0.05, 0.05)^2 -> spam 0.81 / (0.81 + 2 * 0.0025)
    assert votes.probs[0, 1] == pytest.approx(0.81 / 0.815)
    # disagreeing rules soften each other: spam (0.9) x ham (0.6)
    spam, ham = 0.9 * 0.2, 0.05 * 0.6
    other = 0.05 * 0.2
    np.testing.assert_allclose(votes.probs[1], np.array([ham, spam, other]) / (ham + spam + other))
    assert "#2 spam (regex: (?i)claim)" in votes.evidence[1] and "#3 ham (keywords: mum)" in votes.evidence[1]
    np.testing.assert_allclose(votes.probs.sum(axis=1), 1.0)


def test_unknown_rule_label_is_a_tool_error() -> None:
    with pytest.raises(ToolError, match="'promo' is not one of the project's labels"):
        make(Rule(label="promo", keywords=["sale"]))


def test_spam_keywords_on_real_sms(sms_rows: list[dict[str, str]]) -> None:
    tool = make(Rule(label="spam", keywords=["txt", "claim", "prize", "urgent", "winner", "ringtone"]),
                labels=SMS_LABELS)
    votes = predict(tool, items_of(sms_rows), SMS_LABELS)
    y = label_indices(sms_rows, SMS_LABELS)
    fired = ~votes.abstain
    precision = float((y[fired] == 1).mean())
    recall = float(fired[y == 1].mean())
    assert precision >= 0.9 and 0.3 <= recall <= 0.7, (precision, recall)  # measured 0.94 and 0.44
