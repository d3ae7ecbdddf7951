"""Helpers of the learner's training and out-of-fold rescoring: training rows by source batch, a learning tool's
votes from synchronous code, and untrained copies of a learning tool for the fold models."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from agent.aggregate import log_votes
from agent.cascade import bound_votes
from tools.base import (
    Batch,
    ExampleSource,
    Forkable,
    Learnable,
    ModelInfo,
    ReadsExamples,
    Tool,
    ToolContext,
    TrainingSet,
    Votes,
)
from tools.softmax import one_blas_thread

FOLD_THREADS = max(1, min(4, os.cpu_count() or 1))  # fold models fitted at once (sparse products release the GIL)
PARALLEL_FROM = 2_000  # training rows from which fold fits run in threads (below, switches cost more)


def add_piece(pieces: list[tuple[Batch | None, list[Any]]], source: Batch | None, entry: object) -> None:
    """Append a training row (a row of ``source``, or an item without cached features) to ``pieces``."""
    if pieces and pieces[-1][0] is source:
        pieces[-1][1].append(entry)
    else:
        pieces.append((source, [entry]))


def predict_now(tool: Tool, batch: Batch, context: ToolContext, runner: asyncio.Runner | None = None) -> Votes:
    """A learning tool's votes, from this synchronous code. Its ``predict`` is CPU work, async only for the graph:
    run it to completion on a private event loop (in a helper thread when this thread already runs a loop).
    ``runner``: that loop, reused by a caller that asks many times (a new loop per call cost about as much as a small
    fold model's ``predict``)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(tool.predict(batch, context)) if runner is None else runner.run(tool.predict(batch, context))
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, tool.predict(batch, context)).result()


def _private_loop(needed: bool) -> contextlib.AbstractContextManager[asyncio.Runner | None]:
    """One event loop for a serial retrain's ``predict_now`` calls; none when not ``needed`` or when this thread
    already runs a loop (a restore's retrain called from async code: ``predict_now`` then uses a helper thread, and
    a second loop could not even be closed here)."""
    if not needed:
        return contextlib.nullcontext()
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.Runner()
    return contextlib.nullcontext()


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


@dataclass(frozen=True, slots=True)
class FoldJob:
    """One fold model to fit and ask: its learning tool's index, the fold's scored items (positions ``sel`` among
    the scored calibration items, their batch ``held``) and the training rows outside the fold."""

    sel: np.ndarray
    tool_index: int
    model: Learnable
    data: TrainingSet
    held: Batch
    bound: float = 1.0  # the surest vote the tool may cast (agent.cascade.vote_bound), as in the graph


def fold_jobs(tools: Sequence[Tool], fold_tools: dict[tuple[int, int], Learnable], data: TrainingSet,
              window: np.ndarray | None, calibration: tuple[np.ndarray, np.ndarray, int],
              bounds: Sequence[float] | None = None) -> list[FoldJob]:
    """The fold models of a rescoring: ``calibration`` = (every calibration item's training row, its fold, the first
    one scored); for each fold, its copy of each learning tool (kept in ``fold_tools``, warm-started) is to be fitted
    on the training rows (``window``'s, or all) outside the fold and asked for its votes on the fold's scored items,
    bounded as the graph bounds that tool's votes (``bounds``, per tool; none by default)."""
    rows, folds, start = calibration
    everything = np.arange(len(data)) if window is None else window
    scored = folds[start:]
    jobs: list[FoldJob] = []
    for f in np.unique(scored).tolist():
        sel = np.nonzero(scored == f)[0]
        train = np.setdiff1d(everything, rows[folds == f], assume_unique=True)
        fold_data = TrainingSet(data.batch.subset(train), data.y[train], data.labels)
        held = data.batch.subset(rows[start:][sel])
        for t, tool in enumerate(tools):
            if not isinstance(tool, Learnable):
                continue
            model = fold_tools.get((f, t))
            if model is None:
                model = fold_tools[(f, t)] = fork(tool)
            jobs.append(FoldJob(sel, t, model, fold_data, held, 1.0 if bounds is None else bounds[t]))
    return jobs


def fit_together(fits: Sequence[tuple[Learnable, TrainingSet]], jobs: Sequence[FoldJob], labels: tuple[str, ...], *,
                 parallel: bool) -> tuple[list[ModelInfo], list[Votes]]:
    """Fit the retrain's models (``fits``: each tool on its rows) and the fold models (``jobs``, each then asked for
    its votes), in a pool of ``FOLD_THREADS`` threads when ``parallel`` (large fits: sparse products release the GIL),
    else one after the other in this thread. Each fits its own model on its own rows: the results do not depend on
    what runs beside them. BLAS stays at one thread. Returns the fits' infos and the jobs' votes, in order."""
    context = ToolContext(labels)

    def fit_and_vote(job: FoldJob, runner: asyncio.Runner | None = None) -> Votes:
        job.model.fit(job.data)
        return bound_votes(predict_now(job.model, job.held, context, runner), job.bound)

    threads = min(FOLD_THREADS if parallel else 1, len(fits) + len(jobs))
    if threads <= 1:
        with one_blas_thread(), _private_loop(bool(jobs)) as runner:
            return [tool.fit(d) for tool, d in fits], [fit_and_vote(job, runner) for job in jobs]
    with one_blas_thread(), ThreadPoolExecutor(threads) as pool:  # the largest first: the retrain's own fits
        infos = [pool.submit(tool.fit, d) for tool, d in fits]
        votes = [pool.submit(fit_and_vote, job) for job in jobs]
        return [f.result() for f in infos], [v.result() for v in votes]


def rescored_votes(decided: Sequence[tuple[np.ndarray | None, np.ndarray | None]], shape: tuple[int, int],
                   fitted: tuple[Sequence[FoldJob], Sequence[Votes]]) -> tuple[np.ndarray, np.ndarray]:
    """(logp, voted) of the scored calibration items, ``shape`` = (tools, labels): their decision-time votes
    (``decided``: one (logp, voted) per item, None where unknown), the learning tools' replaced by the fold models'
    (``fitted``: the jobs and their votes). Tools that do not learn keep their decision-time votes."""
    n_t, n_l = shape
    logp = np.zeros((len(decided), n_t, n_l))
    voted = np.zeros((len(decided), n_t), dtype=bool)
    for j, (lp, v) in enumerate(decided):
        if lp is not None and v is not None:
            logp[j], voted[j] = lp, v
    write_votes(*fitted, (logp, voted))
    return logp, voted


def write_votes(jobs: Sequence[FoldJob], votes: Sequence[Votes], out: tuple[np.ndarray, np.ndarray]) -> None:
    """The fold models' votes into ``out`` = (logp, voted), row-aligned with the scored calibration items."""
    logp, voted = out
    for job, v in zip(jobs, votes, strict=True):
        ok = ~v.abstain
        voted[job.sel, job.tool_index] = ok
        logp[job.sel[ok], job.tool_index] = log_votes(v.probs[ok])
