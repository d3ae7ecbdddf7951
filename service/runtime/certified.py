"""One certified snapshot across restarts and workers (issue 14), between the learner and the store.

- :func:`publish` persists the snapshot a worker is about to decide with (once per snapshot) and returns it with
  its stored id, which the batch's auto labels and audits then carry (``label.snapshot_id``).
- :func:`restore_labeler` is how a worker starts on an existing project: the ground truth, the calibration records
  of the kinds that calibrate (the window applied *after* filtering by kind), the decision-time votes of the
  reviewed items, a retrain; then the latest persisted snapshot of the policy version is put back in force, so the
  first batch is decided with the certificate, pool weights and certifier state in force before the restart (or,
  for a second worker joining, the one the first worker decides with).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from agent.persist import restore_snapshot, snapshot_state, vote_arrays
from agent.ports import CALIBRATION_KINDS, GroundTruth
from agent.runner import BatchLabeler
from agent.state import AgentSnapshot
from service.store import SqlStore, StoredSnapshot

Published = tuple[AgentSnapshot, AgentSnapshot]  # (the learner's snapshot, the same with its stored id)


def publish(store: SqlStore, project: str, labeler: BatchLabeler, worker: str,
            last: Published | None) -> Published:
    """The learner's current snapshot with a stored id, persisting it first unless ``last`` already did (or it came
    from the store). Never writes to the learner: a retrain in a thread may publish meanwhile."""
    snapshot = labeler.learner.snapshot
    if snapshot.stored_id is not None:
        return snapshot, snapshot
    if last is not None and last[0] is snapshot:
        return last
    state = snapshot_state(snapshot, labeler.policy.certification)
    stored_id = store.learning.save_snapshot(project, labeler.policy.version, learner_version=snapshot.version,
                                             state=state, worker=worker)
    return snapshot, replace(snapshot, stored_id=stored_id)


def restore_labeler(store: SqlStore, project: str, labeler: BatchLabeler,
                    answers: Sequence[GroundTruth]) -> StoredSnapshot | None:
    """Load ``labeler``'s learner from the store (see the module doc); returns the snapshot put back in force (None:
    none persisted for this policy version, or one that does not fit these tools; the learner then recertifies)."""
    policy, learner = labeler.policy, labeler.learner
    calibration = store.learning.load_calibration(project, policy.calibration_window, kinds=CALIBRATION_KINDS)
    names = [tool.name for tool in labeler.tools]
    stored_votes = store.learning.load_votes(project, [a.item.key for a in answers], policy_version=policy.version)
    votes = {key: arrays for key, item_votes in stored_votes.items()
             if (arrays := vote_arrays(item_votes, names, policy.labels)) is not None}
    trained_on = store.learning.load_vote_training(project, list(votes), policy_key=policy.key,
                                                   policy_version=policy.version)
    learner.load(answers, calibration, votes, trained_on)
    stored = store.learning.latest_snapshot(project, policy.version)
    if stored is None or not restore_snapshot(learner, stored.state, stored.id):
        return None
    return stored
