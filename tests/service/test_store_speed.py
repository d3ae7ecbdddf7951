"""Storage throughput on the replay's hot path: claim a batch, record it, answer its reviews.

The replay must sustain >= 3,000 items/s end to end, so storage gets well under 0.2 ms per item. The bounds
asserted here are loose (shared CI machines are noisy); they catch a regression to per-row ORM writes
(SQLModel ``add_all`` ~6,800 rows/s would cost ~0.7 ms per item with four votes each). Run with ``-s`` to
see the measured numbers.
"""

from __future__ import annotations

import time

import pytest

from policies import Policy
from service.store import ReviewAnswer, SqlStore
from tests.factories import make_batch_result, make_items

BATCH = 256
BATCHES = 8
ACTIONS = ["accept"] * 8 + ["escalate", "audit"]
MAX_MS_PER_ITEM = {"sqlite": 0.5, "postgresql": 2.0}


@pytest.mark.slow
def test_storage_cost_per_item(store: SqlStore, project: str, policy: Policy) -> None:
    for start in range(0, BATCH * BATCHES, 1000):
        store.items.ingest(project, make_items(min(1000, BATCH * BATCHES - start), start=start))
    claim_s, record_s, review_s = [], [], []
    for _ in range(BATCHES):
        t0 = time.perf_counter()
        token, items = store.items.claim_batch(project, worker="bench", size=BATCH)
        t1 = time.perf_counter()
        result = make_batch_result(policy, items, [ACTIONS[i % len(ACTIONS)] for i in range(len(items))], n_tools=4)
        t2 = time.perf_counter()
        written = store.items.record_batch(project, result, token)
        t3 = time.perf_counter()
        tasks = store.reviews.claim_reviews(project, reviewer="oracle", limit=BATCH)
        store.reviews.submit_reviews([ReviewAnswer(t.task_id, t.token, "ham") for t in tasks])
        t4 = time.perf_counter()
        assert written.labeled + written.queued == BATCH and written.votes == 4 * BATCH
        claim_s.append(t1 - t0)
        record_s.append(t3 - t2)
        review_s.append(t4 - t3)
    backend = store.engine.dialect.name
    best = min(c + r + v for c, r, v in zip(claim_s, record_s, review_s, strict=True)) / BATCH * 1000
    print(f"\n{backend}: per {BATCH}-item batch (best of {BATCHES}): claim {min(claim_s) * 1000:.1f} ms, "
          f"record {min(record_s) * 1000:.1f} ms ({4 * BATCH} votes), reviews {min(review_s) * 1000:.1f} ms; "
          f"storage {best:.3f} ms/item")
    assert store.items.count_items(project)["labeled"] == BATCH * BATCHES
    assert best < MAX_MS_PER_ITEM[backend]
