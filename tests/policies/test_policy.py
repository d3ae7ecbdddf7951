"""Policy validation: every error names the field and says what to fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from policies import (
    Policy,
    PolicyError,
    dumps_policy,
    example_policy,
    load_policy,
    loads_policy,
    parse_policy,
    save_policy,
)
from policies.io import EXAMPLES_DIR


def base(**over: object) -> dict:
    data: dict = {
        "project": "demo",
        "labels": ["ham", "spam"],
        "target_precision": 0.95,
        "tools": [{"name": "clf", "kind": "text_classifier"}],
    }
    data.update(over)
    return data


def error_of(data: dict) -> str:
    with pytest.raises(PolicyError) as info:
        parse_policy(data)
    return str(info.value)


def test_minimal_policy_gets_defaults() -> None:
    p = parse_policy(base())
    assert p.key == "demo/1"
    assert p.alpha == pytest.approx(0.05)
    assert p.delta == pytest.approx(0.05)
    assert p.tools[0].cost == 1.0


@pytest.mark.parametrize(
    ("over", "expected"),
    [
        ({"labels": []}, "labels: the label set is empty"),
        ({"labels": ["a"]}, "labels: a label set needs at least two labels"),
        ({"labels": ["a", "b", "a"]}, "labels: label 'a' is listed twice"),
        ({"target_precision": 1.0}, "target_precision: target_precision must be strictly between 0 and 1"),
        ({"target_precision": 0.0}, "target_precision: target_precision must be strictly between 0 and 1"),
        ({"confidence": 1.0}, "confidence: confidence must be in [0.5, 1)"),
        ({"budget": -1}, "budget: budget must not be negative"),
        ({"tools": [{"name": "x", "kind": "oracle"}]}, "tools[0]: unknown tool kind 'oracle'"),
        ({"tools": []}, "tools: List should have at least 1 item"),
        ({"surprise": 1}, "surprise: unknown field; remove it or check its spelling"),
        ({"audit_rate": 1.5}, "audit_rate: Input should be less than or equal to 1"),
        ({"tools": [{"name": "c", "kind": "text_classifier", "cost": -2}]}, "tools[0].cost"),
        (
            {"tools": [{"name": "c", "kind": "text_classifier"}, {"name": "c", "kind": "retrieval"}]},
            "tools: name 'c' is used twice",
        ),
        ({"always_review": ["eggs"]}, "always_review: 'eggs' is not in labels"),
        ({"critical_labels": ["eggs"]}, "critical_labels: 'eggs' is not in labels"),
        ({"critical_labels": ["spam", "spam"]}, "critical_labels: a label is listed twice"),
        ({"planner": {"settle_confidence": 0.9}}, "planner.settle_confidence is set, but no tool costs more than"),
        ({"planner": {"settle_confidence": 0.4}}, "planner.settle_confidence: Input should be greater than 0.5"),
        (
            {"tools": [{"name": "r", "kind": "rules", "rules": [{"label": "eggs", "keywords": ["x"]}]}]},
            "tools.r: rule label 'eggs' is not in labels",
        ),
        (
            {"tools": [{"name": "r", "kind": "rules", "rules": [{"label": "spam", "regex": "("}]}]},
            "tools[0].rules[0].regex: regex does not compile",
        ),
        ({"tools": [{"name": "r", "kind": "rules", "rules": [{"label": "spam"}]}]}, "a rule needs at least one"),
        ({"overlap": 3, "max_overlap": 2}, "max_overlap must be >= overlap"),
        (
            {"tools": [{"name": "c", "kind": "text_classifier", "metadata_bins": 8}]},
            "tools[0]: metadata_bins is 8 but metadata_features is empty",
        ),
        (
            {"tools": [{"name": "c", "kind": "text_classifier", "metadata_features": ["x"], "metadata_bins": 1}]},
            "tools[0]: metadata_bins must be 0 (values enter linearly) or at least 2",
        ),
        (
            {"tools": [{"name": "c", "kind": "text_classifier", "metadata_features": ["datetime:season"]}]},
            "tools[0].metadata_features: 'datetime:season': a time feature is 'key:part' with part one of year",
        ),
        (
            {"tools": [{"name": "c", "kind": "text_classifier", "metadata_features": ["x"], "metadata_bins": 999}]},
            "tools[0].metadata_bins: Input should be less than or equal to 256",
        ),
    ],
)
def test_validation_names_field_and_fix(over: dict, expected: str) -> None:
    assert expected in error_of(base(**over))


def test_several_errors_are_reported_together() -> None:
    message = error_of(base(labels=["a", "a"], target_precision=2))
    assert "labels:" in message and "target_precision:" in message


def test_not_a_mapping() -> None:
    assert "expected a mapping" in error_of(["labels"])  # type: ignore[arg-type]


def test_invalid_yaml() -> None:
    with pytest.raises(PolicyError, match="not valid YAML"):
        loads_policy("labels: [a, b")


def test_yaml_round_trip(tmp_path: Path) -> None:
    p = example_policy("sms_spam")
    path = save_policy(p, tmp_path / "p.yaml")
    again = load_policy(path)
    assert again == p
    assert loads_policy(dumps_policy(p)) == p


def test_policies_are_immutable() -> None:
    p = parse_policy(base())
    with pytest.raises(ValueError):
        p.labels = ["x", "y"]  # type: ignore[misc]
    assert p.with_version(3).version == 3 and p.version == 1


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="does not exist"):
        load_policy(tmp_path / "nope.yaml")


@pytest.mark.parametrize("path", sorted(EXAMPLES_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_examples_are_valid(path: Path) -> None:
    p = load_policy(path)
    assert isinstance(p, Policy)
    assert p.project == path.stem


def test_unknown_example() -> None:
    with pytest.raises(PolicyError, match="no example policy 'nope'; known: "):
        example_policy("nope")
