"""Out-of-fold rescoring: fold models fitted in threads give exactly the serial votes."""

from __future__ import annotations

import numpy as np
import pytest

import agent.folds as folds
from policies.model import RetrievalSpec, TextClassifierSpec
from tools.base import Batch, Item, Learnable, ToolContext, TrainingSet
from tools.retrieval import Retrieval
from tools.text_classifier import TextClassifier

LABELS = ("a", "b", "c", "d", "e", "f")


def _data(n: int, seed: int) -> TrainingSet:
    rng = np.random.default_rng(seed)
    words = {lab: [f"{lab}word{i}" for i in range(30)] for lab in LABELS}
    shared = [f"common{i}" for i in range(60)]
    y = rng.integers(0, len(LABELS), size=n)
    items = [Item(f"k{i}", " ".join([*rng.choice(words[LABELS[c]], 4), *rng.choice(shared, 6)]))
             for i, c in enumerate(y.tolist())]
    return TrainingSet(Batch(items), y, LABELS)


def _rescore(threads_from: int, monkeypatch: pytest.MonkeyPatch) -> tuple[np.ndarray, np.ndarray]:
    monkeypatch.setattr(folds, "PARALLEL_FROM", threads_from)
    data = _data(900, seed=3)
    tools = (TextClassifier(TextClassifierSpec(name="clf", c=10.0), LABELS),
             Retrieval(RetrievalSpec(name="nn"), LABELS))
    rows = np.arange(0, 900, 3)
    fold_of = rows % 4
    logp = np.zeros((rows.size, len(tools), len(LABELS)))
    voted = np.zeros((rows.size, len(tools)), dtype=bool)
    fold_tools: dict[tuple[int, int], Learnable] = {}
    jobs = folds.fold_jobs(tools, fold_tools, data, None, (rows, fold_of, 0))
    _, votes = folds.fit_together((), jobs, LABELS, parallel=len(data) >= folds.PARALLEL_FROM)
    folds.write_votes(jobs, votes, (logp, voted))
    assert len(fold_tools) == 8  # one warm copy per fold and learning tool
    return logp, voted


def test_fold_models_in_threads_vote_exactly_as_in_series(monkeypatch: pytest.MonkeyPatch) -> None:
    serial = _rescore(10**9, monkeypatch)
    threaded = _rescore(0, monkeypatch)
    assert serial[1][:, 0].all() and serial[1][:, 1].mean() > 0.5  # out-of-fold votes from both tools
    np.testing.assert_array_equal(threaded[0], serial[0])
    np.testing.assert_array_equal(threaded[1], serial[1])
    right = (serial[0][:, 0].argmax(axis=1) == _data(900, seed=3).y[np.arange(0, 900, 3)]).mean()
    assert right > 0.8  # the fold models learned something (the comparison is not between two empty votes)


def test_the_retrains_own_fits_beside_the_fold_models_give_the_serial_models() -> None:
    data = _data(900, seed=5)
    probe = Batch([Item(f"p{i}", it.text or "") for i, it in enumerate(_data(60, seed=6).batch.items)])

    def run(parallel: bool) -> tuple[list[np.ndarray], list[np.ndarray]]:
        tools = (TextClassifier(TextClassifierSpec(name="clf", c=10.0), LABELS),
                 Retrieval(RetrievalSpec(name="nn"), LABELS))
        rows = np.arange(0, 900, 3)
        jobs = folds.fold_jobs(tools, {}, data, None, (rows, rows % 4, 0))
        infos, votes = folds.fit_together([(t, data) for t in tools], jobs, LABELS, parallel=parallel)
        assert [i.trained_on for i in infos] == [900, 900] and len(votes) == len(jobs) == 8
        own = [folds.predict_now(t, probe, ToolContext(LABELS)).probs for t in tools]
        return own, [v.probs for v in votes]

    serial, threaded = run(False), run(True)
    for a, b in zip(serial[0] + serial[1], threaded[0] + threaded[1], strict=True):
        np.testing.assert_array_equal(a, b)
    assert (serial[0][0].argmax(axis=1) == _data(60, seed=6).y).mean() > 0.8  # the retrain's own model learned


def test_a_serial_rescoring_called_from_async_code_votes_as_from_a_plain_thread(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A restore retrains from the worker's coroutine: the fold votes then come through a helper thread, not the
    serial retrain's private event loop (which could neither run nor close inside a running loop)."""
    import asyncio

    plain = _rescore(10**9, monkeypatch)

    async def inside_a_loop() -> tuple[np.ndarray, np.ndarray]:
        return _rescore(10**9, monkeypatch)

    from_async = asyncio.run(inside_a_loop())
    np.testing.assert_array_equal(from_async[0], plain[0])
    np.testing.assert_array_equal(from_async[1], plain[1])
