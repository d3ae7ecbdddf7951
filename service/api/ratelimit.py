"""Per-key rate limits: an in-memory token bucket per API key.

The buckets live in the process: with several API processes each allows the configured rate, so the deployment
allows that rate times the number of processes. Good enough to stop a runaway client; a shared limit would need
the database or Redis.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Hashable


class RateLimiter:
    """``rate`` requests per second per key on average, bursts of up to ``burst``; ``rate`` 0 disables it."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self.clock = clock
        self._buckets: dict[Hashable, tuple[float, float]] = {}  # key -> (tokens, time of the last refill)
        self._lock = threading.Lock()

    def acquire(self, key: Hashable) -> int:
        """Take one token for ``key``: 0 when the request may go ahead, else the whole seconds to wait."""
        if self.rate <= 0:
            return 0
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0
            self._buckets[key] = (tokens, now)
            return max(1, math.ceil((1.0 - tokens) / self.rate))
