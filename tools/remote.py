"""A remote model as one more voter: a Label Studio ML backend's ``/predict`` or a generic JSON endpoint.

Label Studio protocol (``protocol: label_studio``): ``POST {url}`` with
``{"tasks": [{"id": i, "data": {<text_key>: text, **metadata}}], "label_config": ..., "project": ...}``;
the answer is ``{"results": [{"result": [{"value": {"choices": [label]}}], "score": s, "model_version": v}]}``,
one entry per task in order. Generic protocol (``protocol: json``): ``POST {url}`` with
``{"items": [{"id": key, "text": text, "metadata": {...}}]}``, answered by
``{"predictions": [{"label": l, "score": s} | {"distribution": {label: p}}], "model_version": v}``.

A label outside the project's label set, a missing prediction or one without a label is an abstain. The
named label gets the ``score`` (or the spec's ``strength`` when there is none), the rest is spread evenly.
Requests are chunked (``max_batch``), sent with a timeout, retried with backoff on 5xx, 429 and transport
errors, and guarded by the same circuit breaker as the weather client. When every request fails the tool
raises :class:`ToolError` and the agent goes on with the other tools.
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeGuard

import httpx
import numpy as np

from policies.exceptions import ToolError
from policies.model import RemoteModelSpec
from tools.base import Batch, Item, ToolContext, Votes
from tools.environment import ToolEnvironment
from tools.outbound import Caller, CircuitBreaker, GuardedTransport, RetryPolicy, request_with_retries, require_allowed

Prediction = tuple[dict[str, float] | None, str]  # (label -> probability or None = abstain, why)


class RemoteModelTool:
    """Tool (not learnable). ``env``: the deployment's allowed endpoints (the spec's ``url`` must be one); every
    request goes through the SSRF guard. ``transport`` lets tests substitute the httpx transport under the guard."""

    kind = "remote_model"

    def __init__(self, spec: RemoteModelSpec, labels: tuple[str, ...] | list[str], *,
                 transport: httpx.AsyncBaseTransport | None = None, env: ToolEnvironment | None = None) -> None:
        env = env or ToolEnvironment()
        require_allowed(spec.name, spec.url, env.endpoints())
        self.spec = spec
        self.name = spec.name
        self.cost = spec.cost
        self.labels = tuple(labels)
        self.transport = GuardedTransport(env.guard_allow(), transport)
        self.breaker = CircuitBreaker(spec.breaker_failures, spec.breaker_reset_seconds)
        self._caller = Caller(
            self.breaker, RetryPolicy(spec.max_retries, spec.backoff_seconds, spec.timeout_seconds),
            unavailable=f"{self.name} unavailable", describe=lambda r: f"HTTP {r.status_code}",
            refuse=lambda _r, reason: ToolError(f"{self.name}: refused: {reason}"))  # never the body
        self.requests = 0
        self.model_version: str | None = None

    def payload(self, items: list[Item]) -> dict[str, Any]:
        if self.spec.protocol == "label_studio":
            tasks = [{"id": i, "data": {**_jsonable(it.metadata), self.spec.text_key: it.text or "",
                                        "external_id": it.key}} for i, it in enumerate(items)]
            return {"tasks": tasks, "label_config": self.spec.label_config, "project": self.spec.project,
                    "params": {"context": None}}
        return {"items": [{"id": it.key, "text": it.text or "", "metadata": _jsonable(it.metadata)} for it in items]}

    async def _post(self, client: httpx.AsyncClient, body: dict[str, Any]) -> Any:
        return await request_with_retries(lambda: client.post(self.spec.url, json=body), self._json, self._caller,
                                          on_attempt=self._count)

    def _count(self) -> None:
        self.requests += 1

    def _json(self, response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            raise ToolError(f"{self.name}: the answer is not JSON") from None

    def parse(self, answer: Any, n: int, labels: tuple[str, ...]) -> list[Prediction]:
        """One prediction per item of a chunk of ``n`` from a response body."""
        key = "results" if self.spec.protocol == "label_studio" else "predictions"
        rows = answer.get(key) if isinstance(answer, dict) else None
        if not isinstance(rows, list):
            raise ToolError(f"{self.name}: response has no {key!r} list")
        version = answer.get("model_version")
        if isinstance(version, str):
            self.model_version = version
        out: list[Prediction] = []
        for i in range(n):
            row = rows[i] if i < len(rows) else None
            if not isinstance(row, dict):
                out.append((None, "no prediction for this item"))
                continue
            if isinstance(row.get("model_version"), str):
                self.model_version = row["model_version"]
            out.append(self._one(row, labels))
        return out

    def _one(self, row: dict[str, Any], labels: tuple[str, ...]) -> Prediction:
        dist = row.get("distribution")
        if isinstance(dist, dict):
            probs = {lab: float(dist[lab]) for lab in labels if _is_number(dist.get(lab)) and dist[lab] >= 0}
            total = sum(probs.values())
            if total <= 0:
                return None, "distribution has no label of the set"
            return {lab: probs.get(lab, 0.0) / total for lab in labels}, "distribution"
        label = row.get("label")
        if self.spec.protocol == "label_studio":
            result = row.get("result")
            choices = (result[0].get("value", {}).get("choices") if isinstance(result, list) and result
                       and isinstance(result[0], dict) else None)
            label = choices[0] if isinstance(choices, list) and choices else None
        if label is None:
            return None, "no label"
        if label not in labels:
            return None, f"label {str(label)[:40]!r} is not in the label set"
        score = row.get("score")
        strength = float(score) if _is_number(score) else self.spec.strength
        strength = min(max(strength, 1.0 / len(labels)), 0.999)
        rest = (1.0 - strength) / (len(labels) - 1)
        return {lab: strength if lab == label else rest for lab in labels}, f"{label} score {strength:.3f}"

    async def predict(self, batch: Batch, context: ToolContext) -> Votes:
        labels = context.labels
        n = len(batch)
        votes = Votes.abstaining(self.name, n, len(labels), "", cost=self.cost)
        chunks = [list(range(s, min(s + self.spec.max_batch, n))) for s in range(0, n, self.spec.max_batch)]
        results: list[list[Prediction] | ToolError] = []
        semaphore = asyncio.Semaphore(self.spec.max_concurrency)
        timeout = httpx.Timeout(self.spec.timeout_seconds)
        async with httpx.AsyncClient(timeout=timeout, transport=self.transport, trust_env=False) as client:

            async def one(rows: list[int]) -> list[Prediction] | ToolError:
                async with semaphore:
                    try:
                        answer = await self._post(client, self.payload([batch.items[i] for i in rows]))
                        return self.parse(answer, len(rows), labels)
                    except ToolError as exc:
                        return exc

            results = list(await asyncio.gather(*(one(rows) for rows in chunks)))
        if results and all(isinstance(r, ToolError) for r in results):
            raise ToolError(str(results[0]))
        evidence = [""] * n
        for rows, result in zip(chunks, results, strict=True):
            for j, i in enumerate(rows):
                if isinstance(result, ToolError):
                    evidence[i] = f"{self.name}: unavailable ({result})"
                    continue
                dist, why = result[j]
                evidence[i] = f"{self.name}: {why}" if dist else f"{self.name}: abstain: {why}"
                if dist:
                    votes.probs[i] = [dist[lab] for lab in labels]
                    votes.abstain[i] = False
        votes.evidence = evidence
        votes.model_version = self.model_version
        return votes


def _is_number(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and bool(np.isfinite(value))


def _jsonable(metadata: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metadata.items() if isinstance(v, str | int | float | bool) or v is None}
