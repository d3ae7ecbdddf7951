"""Helpers of the learner's training and out-of-fold rescoring: training rows by source batch, a learning tool's
votes from synchronous code, and untrained copies of a learning tool for the fold models."""

from __future__ import annotations

import asyncio
import copy
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tools.base import Batch, Forkable, Learnable, Tool, ToolContext, Votes


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


def copies(tools: tuple[Tool, ...]) -> tuple[Tool, ...]:
    """The tools with each learning tool replaced by a shallow copy (non-learning tools as they are).

    A retrain fits the copies, so the models the published snapshot decides with are never changed under it: a
    learning tool's ``fit`` rebinds its model attribute (the atomic swap) and never mutates the old model, so the
    copy's fit leaves the original deciding as it was. Caches (features, encodings) stay shared."""
    return tuple(copy.copy(tool) if isinstance(tool, Learnable) else tool for tool in tools)
