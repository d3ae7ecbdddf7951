"""What a restarted worker needs to decide with the certificate in force before it stopped (issue 14).

A snapshot is persisted as a plain JSON document (:func:`snapshot_state`): the pool's weights, the certificate
(threshold and the counts it rests on) and the certifier's state (tests made, so the ``anytime`` rule's spending
goes on where it stopped; the next checkpoint; losses). A fresh learner loads the ground truth, the calibration
records and the decision-time votes (:func:`vote_arrays` turns stored votes back into the arrays the learner
keeps), retrains, and then :func:`restore_snapshot` puts the persisted pool and certificate back in force: its
first batch is decided with the same threshold and weights as the last batch before the restart.

The models themselves are not persisted: they are retrained on the same ground truth. The threshold certified
on the out-of-fold scores of the stored calibration set is applied to them, as it is after any retrain between
two checkpoints (DESIGN-NOTES section 14 states this assumption).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from agent.aggregate import AggregatorModel, log_votes
from agent.calibration import CertificateState, ThresholdResult
from agent.certificate import raised_audit_rate
from agent.learner import AUDIT_PER_ESCALATION, FINE_CALIBRATION, Learner
from agent.state import AgentSnapshot
from tools.base import Vote

FORMAT = 1  # the document's layout version


def snapshot_state(snapshot: AgentSnapshot, certification: str) -> dict[str, Any]:
    """The JSON-serialisable document of ``snapshot`` (its pool, certificate and certifier state)."""
    agg, calib, cert = snapshot.aggregator, snapshot.calibration, snapshot.certifier
    return {
        "format": FORMAT,
        "certification": certification,
        "version": snapshot.version,
        "drift": snapshot.drift,
        "tool_versions": dict(snapshot.tool_versions),
        "aggregator": {
            "tools": list(agg.tools), "weights": agg.weights.tolist(), "prior_weight": agg.prior_weight,
            "log_prior": agg.log_prior.tolist(), "version": agg.version, "fitted_on": agg.fitted_on,
            "metrics": dict(agg.metrics), "votes_seen": None if agg.votes_seen is None else agg.votes_seen.tolist(),
        },
        "calibration": {"threshold": calib.threshold, "n_calibration": calib.n_calibration,
                        "n_above": calib.n_above, "errors_above": calib.errors_above,
                        "error_bound": calib.error_bound},
        "certifier": None if cert is None else {"tests": cert.tests, "next_size": cert.next_size,
                                                "losses": cert.losses, "certified_at_test": cert.certified_at_test,
                                                "checkpoints": [list(c) for c in cert.checkpoints],
                                                "segment": cert.segment},
    }


def _aggregator(doc: Mapping[str, Any]) -> AggregatorModel:
    seen = doc.get("votes_seen")
    return AggregatorModel(tuple(doc["tools"]), np.asarray(doc["weights"], dtype=np.float64),
                           float(doc["prior_weight"]), np.asarray(doc["log_prior"], dtype=np.float64),
                           int(doc["version"]), int(doc["fitted_on"]), dict(doc.get("metrics") or {}),
                           None if seen is None else np.asarray(seen, dtype=np.float64))


def restore_snapshot(learner: Learner, doc: Mapping[str, Any], stored_id: int | None = None) -> bool:
    """Put a persisted snapshot back in force on ``learner`` (after ``learner.load``). False, and nothing
    changed, when the document does not fit this learner (another tool set or label set, another rule)."""
    if doc.get("format") != FORMAT or doc.get("certification") != learner.policy.certification:
        return False
    agg = _aggregator(doc["aggregator"])
    if agg.tools != tuple(t.name for t in learner.tools) or agg.log_prior.shape[0] != len(learner.labels):
        return False
    c = doc["calibration"]
    calib = ThresholdResult(c["threshold"], int(c["n_calibration"]), int(c["n_above"]), int(c["errors_above"]),
                            float(c["error_bound"]))
    state = doc.get("certifier")
    if state is not None:
        learner.certifier.restore(CertificateState(int(state["tests"]), int(state["next_size"]), int(state["losses"]),
                                                   state["certified_at_test"],
                                                   tuple((int(a), int(b)) for a, b in state.get("checkpoints", ())),
                                                   int(state.get("segment", 0))),
                                  calib)
    learner.monitor.set_reference(None if calib.threshold is None
                                  else 1.0 - calib.n_above / max(calib.n_calibration, 1))
    audit_rate = 1.0 if calib.threshold is None else raised_audit_rate(
        learner.policy, calib, fine=FINE_CALIBRATION, per_escalation=AUDIT_PER_ESCALATION)
    versions = {**learner.snapshot.tool_versions, "aggregator": f"aggregator-v{agg.version}"}
    learner.snapshot = AgentSnapshot(agg, calib, audit_rate, versions, learner.snapshot.version + 1,
                                     bool(doc.get("drift", False)), learner.certifier.state(), stored_id,
                                     learner.tools, learner.snapshot.trained_on)
    return True


def vote_arrays(votes: Sequence[Vote], tools: Sequence[str], labels: Sequence[str]
                ) -> tuple[np.ndarray, np.ndarray] | None:
    """Stored decision-time votes of one item as the learner's ``(logp (T, L), voted (T,))``; None without a vote.

    A stored distribution keeps the top labels only (``agent.stored_votes.sparse_distribution``): the mass it left
    out is spread evenly over the missing labels (each was under 1%), which the log floor makes immaterial."""
    index = {name: t for t, name in enumerate(tools)}
    where = {lab: i for i, lab in enumerate(labels)}
    logp = np.zeros((len(tools), len(labels)))
    voted = np.zeros(len(tools), dtype=bool)
    for vote in votes:
        t = index.get(vote.tool)
        if t is None or vote.distribution is None:
            continue
        probs = np.full(len(labels), np.nan)
        for lab, p in vote.distribution.items():
            if lab in where:
                probs[where[lab]] = p
        missing = np.isnan(probs)
        if missing.any():
            probs[missing] = min(0.01, max(0.0, 1.0 - float(np.nansum(probs))) / int(missing.sum()))
        logp[t] = log_votes(probs)
        voted[t] = True
    return (logp, voted) if voted.any() else None
