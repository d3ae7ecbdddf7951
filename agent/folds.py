"""Helpers of the learner's training and out-of-fold rescoring: training rows by source batch, a learning tool's
votes from synchronous code, and untrained copies of a learning tool for the fold models."""

from __future__ import annotations

import asyncio
import copy
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from agent.aggregate import log_votes
from tools.base import Batch, ExampleSource, Forkable, Learnable, ReadsExamples, Tool, ToolContext, TrainingSet, Votes
from tools.softmax import one_blas_thread

FOLD_THREADS = max(1, min(4, os.cpu_count() or 1))  # fold models fitted at once (sparse products release the GIL)
PARALLEL_FROM = 2_000  # training rows from which fold fits run in threads (below, switches cost more)


def add_piece(pieces: list[tuple[Batch | None, list[Any]]], source: Batch | None, entry: object) -> None:
    """Append a training row (a row of ``source``, or an item without cached features) to ``pieces``."""
    if pieces and pieces[-1][0] is source:
        pieces[-1][1].append(entry)
    else:
        pieces.append((source, [entry]))


def predict_now(tool: Tool, batch: Batch, context: ToolContext) -> Votes:
    """A learning tool's votes, from this synchronous code. Its ``predict`` is CPU work, async only for the graph:
    run it to completion on a private event loop (in a helper thread when this thread already runs a loop)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(tool.predict(batch, context))
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, tool.predict(batch, context)).result()


def fork(tool: Learnable) -> Learnable:
    """An untrained copy of a learning tool with the same settings."""
    return tool.fork() if isinstance(tool, Forkable) else copy.deepcopy(tool)


def stage(tools: Sequence[Tool]) -> tuple[Tool, ...]:
    """The tools a retrain fits: each learning tool copied (``copy.copy``: the copy keeps the current model and
    settings, and its ``fit`` swaps the copy's model only, so the original keeps deciding until the copies are
    published), each tool reading examples from one of them re-pointed at that copy; other tools are shared."""
    copies: dict[int, Tool] = {id(t): copy.copy(t) for t in tools if isinstance(t, Learnable)}
    staged: list[Tool] = []
    for tool in tools:
        twin = copies.get(id(tool))
        if twin is None and isinstance(tool, ReadsExamples) and id(tool.retrieval) in copies:
            source = copies[id(tool.retrieval)]
            reader = copy.copy(tool)
            reader.retrieval = source if isinstance(source, ExampleSource) else None
            twin = reader
        staged.append(tool if twin is None else twin)
    return tuple(staged)


def vote_out_of_fold(tools: Sequence[Tool], fold_tools: dict[tuple[int, int], Learnable], data: TrainingSet,
                     window: np.ndarray | None, calibration: tuple[np.ndarray, np.ndarray, int],
                     out: tuple[np.ndarray, np.ndarray]) -> None:
    """The learning tools' out-of-fold votes on the calibration items: ``calibration`` = (every calibration item's
    training row, its fold, the first one scored); for each fold, its copy of each learning tool (kept in
    ``fold_tools``, warm-started) is fitted on the training rows (``window``'s, or all) outside the fold, and its
    votes on the fold's scored items are written into ``out`` = (logp, voted), row-aligned with the scored items."""
    rows, folds, start = calibration
    logp, voted = out
    labels = data.labels
    everything = np.arange(len(data)) if window is None else window
    context = ToolContext(labels)
    scored = folds[start:]
    jobs: list[tuple[np.ndarray, int, Learnable, TrainingSet, Batch]] = []
    for f in np.unique(scored).tolist():
        sel = np.nonzero(scored == f)[0]
        train = np.setdiff1d(everything, rows[folds == f], assume_unique=True)
        fold_data = TrainingSet(data.batch.subset(train), data.y[train], labels)
        held = data.batch.subset(rows[start:][sel])
        for t, tool in enumerate(tools):
            if not isinstance(tool, Learnable):
                continue
            model = fold_tools.get((f, t))
            if model is None:
                model = fold_tools[(f, t)] = fork(tool)
            jobs.append((sel, t, model, fold_data, held))

    def fit_and_vote(job: tuple[np.ndarray, int, Learnable, TrainingSet, Batch]) -> Votes:
        _, _, model, fold_data, held = job
        model.fit(fold_data)
        return predict_now(model, held, context)

    # Each job fits its own model on its own rows (deterministic, whatever runs beside it); BLAS stays at one thread.
    threads = FOLD_THREADS if everything.size >= PARALLEL_FROM else 1
    with one_blas_thread(), ThreadPoolExecutor(min(threads, max(len(jobs), 1))) as pool:
        for (sel, t, *_), votes in zip(jobs, pool.map(fit_and_vote, jobs), strict=True):
            ok = ~votes.abstain
            voted[sel, t] = ok
            logp[sel[ok], t] = log_votes(votes.probs[ok])
