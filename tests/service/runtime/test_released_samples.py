"""i20 with two workers: worker A sent cold-start samples to review; worker B, holding a certificate, released the
ones nobody had claimed into the queue (``WaitingQueue.step``). When humans answer them, A's learner reads the
stored kind with the answers (``Trainer.learn``) and trains on them without adding them to its calibration set.
The other way round: waiting items B promoted to samples calibrate in A's learner too."""

from __future__ import annotations

import asyncio

from agent.decisions import COLD_START_PRIORITY, COLD_START_REASON
from agent.ports import RELEASED_REASON
from agent.queue_order import calibration_target
from agent.runner import BatchLabeler
from service.runtime.base import ProjectLoop, RuntimeState
from service.runtime.cycle import ProjectWorker
from service.runtime.feedback import AnswerFeed
from service.runtime.learning import Trainer
from service.store import ReviewAnswer, SqlStore
from tests.service.runtime.helpers import KeywordVoter, MemoryVoter, runtime_policy, stream_items, truth_of

N = 30


def _answered(store: SqlStore, *, release: int) -> tuple[int, int]:
    """Worker A decides N items in cold start; ``release`` of the samples are released (as worker B does) before
    a reviewer answers every task; returns A's ground truth and calibration set sizes after feeding the answers."""
    policy = runtime_policy("two")
    store.projects.create_project(policy.project, policy)
    items = stream_items(N)
    store.items.ingest(policy.project, items)
    labeler = BatchLabeler(policy, [KeywordVoter(), MemoryVoter()])
    worker = ProjectWorker(store, policy.project, labeler, name="a", batch_size=N)
    state = RuntimeState(store, name="a")
    feed = AnswerFeed(store, policy.project, lag_seconds=0.0)
    assert feed.start() == []  # no answer yet
    loop = ProjectLoop(policy.project, policy, worker, feed)

    async def run() -> None:
        outcome = await worker.process_batch()
        assert outcome.items == N and labeler.learner.pending.outstanding("cold_start") == N
        if release:
            claimed = store.reviews.claim_reviews(policy.project, reviewer="bob", limit=N - release)
            released = store.reviews.release_samples(policy.project, policy_version=policy.version,
                                                     reason=RELEASED_REASON, actor="b")
            assert len(released) == release
            tasks = claimed + store.reviews.claim_reviews(policy.project, reviewer="bob", limit=N)
        else:
            tasks = store.reviews.claim_reviews(policy.project, reviewer="bob", limit=N)
        assert len(tasks) == N
        store.reviews.submit_reviews([ReviewAnswer(t.task_id, t.token, truth_of(t.item)) for t in tasks],
                                     project=policy.project)
        await Trainer(state).learn(loop)

    asyncio.run(run())
    learner = labeler.learner
    return learner.n_ground_truth, len(learner._iid_rows)


def test_answers_to_samples_another_worker_released_train_but_do_not_calibrate(store: SqlStore) -> None:
    assert _answered(store, release=12) == (N, N - 12)


def test_without_a_release_every_answered_sample_calibrates(store: SqlStore) -> None:
    assert _answered(store, release=0) == (N, N)


def test_answers_to_waiting_items_another_worker_promoted_calibrate(store: SqlStore) -> None:
    """Worker A decides more cold-start items than the samples' cap: the rest wait, and reviewers cannot claim them.
    Once every sample is answered, worker B promotes the waiting items to samples; A's learner reads the stored
    kind with the answers and adds them to its calibration set."""
    policy = runtime_policy("promoted")
    store.projects.create_project(policy.project, policy)
    n, cap = 60, calibration_target(policy)
    store.items.ingest(policy.project, stream_items(n))
    labeler = BatchLabeler(policy, [KeywordVoter(), MemoryVoter()])
    worker = ProjectWorker(store, policy.project, labeler, name="a", batch_size=n)
    loop = ProjectLoop(policy.project, policy, worker, AnswerFeed(store, policy.project, lag_seconds=0.0))
    loop.feed.start()

    def answer_all() -> int:
        tasks = store.reviews.claim_reviews(policy.project, reviewer="bob", limit=n)
        store.reviews.submit_reviews([ReviewAnswer(t.task_id, t.token, truth_of(t.item)) for t in tasks],
                                     project=policy.project)
        return len(tasks)

    async def run() -> None:
        decided = 0
        while decided < n:  # batches are small while the agent learns
            decided += (await worker.process_batch()).items
        assert labeler.learner.pending.outstanding("cold_start") == cap < n
        assert answer_all() == cap  # the waiting items are nobody's
        promoted = store.reviews.promote_waiting(policy.project, policy_version=policy.version, limit=cap,
                                                 reason=COLD_START_REASON, priority=COLD_START_PRIORITY, actor="b")
        assert len(promoted) == n - cap and answer_all() == n - cap
        await Trainer(RuntimeState(store, name="a")).learn(loop)

    asyncio.run(run())
    assert (labeler.learner.n_ground_truth, len(labeler.learner._iid_rows)) == (n, n)
