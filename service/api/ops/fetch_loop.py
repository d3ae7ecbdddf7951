"""One event loop thread for the process's ``image_url`` fetches, instead of an event loop per ingest call.

Every ingest call with image URLs used to run ``asyncio.run`` in its request thread: under attack dozens of event
loops, one per call, competed for the GIL with the server's own loop. :func:`run` hands the call's fetches to a single
daemon thread's loop (started on first use) and waits for them; the fetches of every call share that loop (each
call's deadline and concurrency cap are its own, see :func:`service.api.ops.images.load_images`).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_loops: list[asyncio.AbstractEventLoop] = []  # at most one: the running fetch loop


def _loop() -> asyncio.AbstractEventLoop:
    with _lock:
        if not _loops or _loops[0].is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="labelagent-fetch-loop", daemon=True).start()
            _loops[:] = [loop]
        return _loops[0]


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on the fetch loop and wait for its result (or exception) in the calling thread."""
    return asyncio.run_coroutine_threadsafe(coro, _loop()).result()


async def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on the fetch loop and await its result from another event loop (no thread waits for it)."""
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, _loop()))
