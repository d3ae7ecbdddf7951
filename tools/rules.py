"""Operator-written labeling functions: keyword, regex and metadata rules that vote or abstain.

A rule matches an item when every condition it lists holds: any of its ``keywords`` occurs as a
whole word (case-insensitive), its ``regex`` is found in the text, and each ``metadata`` key equals
the given value. A matching rule votes its label with ``strength``, the rest of the mass spread
evenly over the other labels. Several matching rules combine as the normalised product of their
distributions (independent evidence); no match is an abstain.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import numpy as np

from policies.exceptions import ToolError
from policies.model import Rule, RulesSpec
from tools.base import Batch, Item, ToolContext, Votes

_SEPARATOR = "\x00"  # joins texts for one keyword scan per rule; a keyword pattern cannot cross it
_MISSING = object()


@dataclass(slots=True, frozen=True)
class _CompiledRule:
    index: int
    rule: Rule
    keywords: re.Pattern[str] | None
    regex: re.Pattern[str] | None
    description: str


def _compile(index: int, rule: Rule, tool: str) -> _CompiledRule:
    keywords = None
    words = [w.strip() for w in rule.keywords if w.strip()]
    if words:
        alternatives = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
        # Look-arounds instead of \b so that keywords such as "£100" or "t&c" still need a boundary.
        keywords = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)
    try:
        regex = re.compile(rule.regex) if rule.regex else None
    except re.error as exc:  # the policy validator compiles it too; keep the message if it slipped by
        raise ToolError(f"tool {tool!r}: rule #{index + 1} regex does not compile ({exc})") from None
    parts = []
    if words:
        shown = ", ".join(words[:3]) + (", ..." if len(words) > 3 else "")
        parts.append(f"keywords: {shown}")
    if rule.regex:
        parts.append(f"regex: {rule.regex}")
    if rule.metadata:
        parts.append("metadata: " + ", ".join(f"{k}={v!r}" for k, v in rule.metadata.items()))
    description = f"#{index + 1} {rule.label} ({'; '.join(parts)})"
    return _CompiledRule(index, rule, keywords, regex, description)


class Rules:
    """Tool (not learnable). Construct from the spec and the project's labels."""

    kind = "rules"

    def __init__(self, spec: RulesSpec, labels: tuple[str, ...] | list[str]) -> None:
        self.spec = spec
        self.name = spec.name
        self.cost = spec.cost
        self.labels = tuple(labels)
        unknown = sorted({r.label for r in spec.rules} - set(self.labels))
        if unknown:
            raise ToolError(f"tool {spec.name!r}: rule label {unknown[0]!r} is not one of the project's labels")
        self._rules = tuple(_compile(i, rule, spec.name) for i, rule in enumerate(spec.rules))
        digest = hashlib.sha1(spec.model_dump_json(include={"rules"}).encode()).hexdigest()[:8]
        self.version = f"{self.name}-{digest}"  # changes whenever the rules change

    def matches(self, items: list[Item]) -> np.ndarray:
        """(n_items, n_rules) boolean matrix: which rule fires on which item."""
        n = len(items)
        fired = np.ones((n, len(self._rules)), dtype=bool)
        if n == 0:
            return fired
        texts = [item.text or "" for item in items]
        joined = _SEPARATOR.join(texts)
        starts = np.cumsum([0] + [len(t) + 1 for t in texts[:-1]])
        for j, compiled in enumerate(self._rules):
            if compiled.keywords is not None:
                hit = np.zeros(n, dtype=bool)
                positions = [m.start() for m in compiled.keywords.finditer(joined)]
                if positions:
                    hit[np.searchsorted(starts, positions, side="right") - 1] = True
                fired[:, j] &= hit
            if compiled.regex is not None:
                search = compiled.regex.search
                candidates = np.flatnonzero(fired[:, j])
                fired[candidates, j] = [search(texts[i]) is not None for i in candidates]
            for key, value in compiled.rule.metadata.items():
                candidates = np.flatnonzero(fired[:, j])
                fired[candidates, j] = [_equal(items[i].metadata.get(key, _MISSING), value) for i in candidates]
        return fired

    async def predict(self, batch: Batch, context: ToolContext) -> Votes:
        labels = context.labels
        n, n_labels = len(batch), len(labels)
        positions = {label: i for i, label in enumerate(labels)}
        usable = [r for r in self._rules if r.rule.label in positions]
        fired = self.matches(batch.items)[:, [r.index for r in usable]] if usable else np.zeros((n, 0), dtype=bool)
        # log of each rule's distribution: strength on its label, the rest spread over the others
        log_dist = np.empty((len(usable), n_labels))
        for j, compiled in enumerate(usable):
            strength = compiled.rule.strength
            log_dist[j] = np.log((1.0 - strength) / max(n_labels - 1, 1))
            log_dist[j, positions[compiled.rule.label]] = np.log(strength)
        logits = fired.astype(np.float64) @ log_dist if usable else np.zeros((n, n_labels))
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        abstain = np.asarray(~fired.any(axis=1))
        probs[abstain] = 1.0 / n_labels
        evidence = []
        for i in range(n):
            if abstain[i]:
                evidence.append(f"{self.name}: no rule matched")
                continue
            best = int(probs[i].argmax())
            names = "; ".join(usable[j].description for j in np.flatnonzero(fired[i]))
            evidence.append(f"{self.name}: {labels[best]} {probs[i, best]:.2f} from {names}")
        return Votes(self.name, probs, abstain, np.full(n, self.cost, dtype=np.float64), evidence, self.version)


def _equal(actual: object, expected: object) -> bool:
    if actual is _MISSING:
        return False
    if isinstance(actual, bool) or isinstance(expected, bool):
        return type(actual) is type(expected) and actual == expected
    return actual == expected
