"""The bounded training window and the retrain schedule (agent/schedule.py)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import chisquare

from agent.schedule import MIN_RETRAIN_STEP, TrainingWindow, retrain_step


def test_retrain_step_is_geometric_early_and_bounded_later():
    assert retrain_step(0, 50) == MIN_RETRAIN_STEP
    assert retrain_step(200, 50) == 20  # a tenth of the ground truth
    assert retrain_step(10_000, 50) == 50
    assert retrain_step(10**7, 50) == 50  # never more than retrain_every, however long the stream
    steps = [retrain_step(n, 250) for n in range(0, 100_000, 97)]
    assert steps == sorted(steps)


def test_all_rows_train_up_to_the_cap():
    window = TrainingWindow(cap=100, class_floor=5)
    for i in range(100):
        assert window.add(i % 3) == i
    assert window.rows() is None


def test_past_the_cap_the_training_set_is_bounded_and_keeps_the_recent_rows():
    window = TrainingWindow(cap=200, recent_share=0.5, class_floor=10, seed=1)
    rng = np.random.default_rng(0)
    for _ in range(20_000):
        window.add(int(rng.integers(0, 4)))
    rows = window.rows()
    assert rows is not None
    assert len(rows) <= window.bound(4)
    assert np.all(np.diff(rows) > 0)  # increasing, no duplicates
    assert set(range(20_000 - 100, 20_000)) <= set(rows.tolist())  # the 100 most recent rows
    assert len(rows) >= 200  # recent part + a full reservoir


def test_a_rare_class_keeps_its_floor_however_old():
    window = TrainingWindow(cap=100, class_floor=7, seed=2)
    for _ in range(7):
        window.add(5)  # a rare class seen only at the start
    for _ in range(50_000):
        window.add(0)
    rows = window.rows()
    assert rows is not None
    assert set(range(7)) <= set(rows.tolist())


def test_the_reservoir_is_a_uniform_sample_of_older_rows():
    """Over many seeds, each tenth of the older rows holds a tenth of the reservoir (chi-square, 400 seeds)."""
    counts = np.zeros(10)
    n, cap = 2_050, 100
    for seed in range(400):
        window = TrainingWindow(cap=cap, recent_share=0.5, class_floor=1, seed=seed)
        for _ in range(n):
            window.add(0)
        older = np.asarray(window._reservoir)
        counts += np.bincount(older * 10 // (n - window.n_recent), minlength=10)
    assert counts.sum() == 400 * 50
    assert chisquare(counts).pvalue > 1e-3  # uniform: fails by chance once in 1,000 runs


def test_the_same_answers_give_the_same_training_set():
    def rows(seed: int) -> list[int]:
        window = TrainingWindow(cap=50, class_floor=2, seed=seed)
        for i in range(1_000):
            window.add(i % 5)
        out = window.rows()
        assert out is not None
        return out.tolist()

    assert rows(3) == rows(3)
    assert rows(3) != rows(4)


@pytest.mark.parametrize(("cap", "share"), [(1, 0.5), (100, 0.0), (100, 1.0)])
def test_bad_settings_are_refused(cap: int, share: float):
    with pytest.raises(ValueError):
        TrainingWindow(cap=cap, recent_share=share)


def test_after_a_drift_restart_old_rows_train_only_as_class_floors():
    window = TrainingWindow(cap=1_000, class_floor=5)
    for i in range(600):
        window.add(i % 3)  # classes 0, 1, 2 before the drift
    assert window.rows() is None  # under the cap: everything trains
    window.restart()
    for i in range(40):
        window.add(0 if i % 2 else 3)  # after it: class 0 again and a new class 3
    rows = window.rows()
    assert rows is not None
    new = set(range(600, 640))
    assert new <= set(rows.tolist())  # every row of the new regime trains
    old = sorted(set(rows.tolist()) - new)
    # Before the restart, only the five most recent rows of classes 1 and 2 (class 0's five most recent are new).
    assert old == [586, 587, 589, 590, 592, 593, 595, 596, 598, 599]
    for i in range(2_000):
        window.add(i % 4)
    rows = window.rows()
    assert rows is not None and len(rows) <= window.bound(4)
    assert rows.min() >= 600  # past the cap again, the reservoir holds rows of the new regime only
