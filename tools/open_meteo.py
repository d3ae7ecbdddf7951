"""An Open-Meteo HTTP client for enrichment tools: cache, timeouts, retries, a circuit breaker, bounded concurrency.

One request fetches one rounded place for one UTC day (``start_date = end_date``) from the archive
endpoint (old dates) or the forecast endpoint (recent and future dates); the 24 hourly rows are
cached by (rounded place, hour). 5xx, 429 and transport errors are retried with exponential backoff
(``Retry-After`` honoured, capped); after ``breaker_failures`` consecutive failed requests the breaker
opens and requests fail at once until ``breaker_reset_seconds`` have passed, when one trial request
decides whether it closes again. Every failure is a :class:`ToolError` whose message says why.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx

from policies.exceptions import ToolError
from tools.outbound import Caller, CircuitBreaker, RetryPolicy, request_with_retries

Place = tuple[float, float]
HourKey = tuple[float, float, str]  # (lat, lon, "YYYY-MM-DDTHH:00")


@dataclass(slots=True, frozen=True)
class ClientConfig:
    archive_url: str
    forecast_url: str
    hourly: tuple[str, ...]
    wind_speed_unit: str = "kmh"
    place_decimals: int = 1
    archive_lag_days: int = 5
    timeout_seconds: float = 5.0
    max_retries: int = 2
    backoff_seconds: float = 0.2
    max_concurrency: int = 8
    breaker_failures: int = 5
    breaker_reset_seconds: float = 30.0
    cache_size: int = 200_000


def parse_time(value: Any) -> datetime | None:
    """An aware UTC datetime from ISO 8601 text (``Z`` allowed, naive = UTC) or EXIF ``YYYY:MM:DD HH:MM:SS``."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        if len(text) >= 19 and text[4] == ":" and text[7] == ":":  # EXIF DateTimeOriginal
            text = text[:10].replace(":", "-") + "T" + text[11:]
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return None
    else:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def hour_of(moment: datetime) -> datetime:
    """The nearest whole hour (UTC)."""
    return (moment + timedelta(minutes=30)).replace(minute=0, second=0, microsecond=0)


class OpenMeteoClient:
    """Per-tool client state (cache and breaker); an ``httpx.AsyncClient`` is opened per ``fetch`` call.

    ``transport``: the ``httpx`` transport (the tool passes ``tools.outbound.GuardedTransport``, the SSRF guard);
    ``clock`` drives the breaker. Nothing of a refused response's body goes into an error (only its status).
    """

    def __init__(self, config: ClientConfig, *, transport: httpx.AsyncBaseTransport | None = None,
                 clock: Callable[[], float] = time.monotonic, today: Callable[[], date] | None = None) -> None:
        self.config = config
        self.transport = transport
        self.breaker = CircuitBreaker(config.breaker_failures, config.breaker_reset_seconds, clock)
        self._cache: OrderedDict[HourKey, dict[str, float | None]] = OrderedDict()
        self._today = today or (lambda: datetime.now(UTC).date())
        self.requests = 0  # HTTP requests sent (attempts), for tests and metrics
        self._caller = Caller(
            self.breaker, RetryPolicy(config.max_retries, config.backoff_seconds, config.timeout_seconds),
            unavailable="Open-Meteo unavailable", describe=lambda r: f"HTTP {r.status_code}",
            refuse=lambda _r, reason: ToolError(f"Open-Meteo {reason}"))

    def place(self, lat: float, lon: float) -> Place:
        d = self.config.place_decimals
        return round(lat, d), round(lon, d)

    def cached(self, key: HourKey) -> dict[str, float | None] | None:
        value = self._cache.get(key)
        if value is not None:
            self._cache.move_to_end(key)
        return value

    async def fetch(self, wanted: Sequence[HourKey]) -> dict[HourKey, dict[str, float | None] | ToolError]:
        """Values for each (place, hour) key, or the :class:`ToolError` that prevented getting them."""
        out: dict[HourKey, dict[str, float | None] | ToolError] = {}
        days: dict[tuple[float, float, str], list[HourKey]] = {}
        for key in wanted:
            hit = self.cached(key)
            if hit is not None:
                out[key] = hit
            else:
                days.setdefault((key[0], key[1], key[2][:10]), []).append(key)
        if not days:
            return out
        semaphore = asyncio.Semaphore(self.config.max_concurrency)
        timeout = httpx.Timeout(self.config.timeout_seconds)
        async with httpx.AsyncClient(timeout=timeout, transport=self.transport, trust_env=False) as client:

            async def one(day: tuple[float, float, str]) -> None:
                async with semaphore:
                    try:
                        rows = await self._fetch_day(client, *day)
                    except ToolError as exc:
                        for key in days[day]:
                            out[key] = exc
                        return
                for hour, values in rows.items():
                    self._store((day[0], day[1], hour), values)
                for key in days[day]:
                    out[key] = rows.get(key[2]) or ToolError(f"no hourly row for {key[2]} in the response")

            await asyncio.gather(*(one(day) for day in days))
        return out

    def _store(self, key: HourKey, values: dict[str, float | None]) -> None:
        if self.config.cache_size <= 0:
            return
        self._cache[key] = values
        self._cache.move_to_end(key)
        while len(self._cache) > self.config.cache_size:
            self._cache.popitem(last=False)

    def endpoint(self, day: str) -> str:
        old = date.fromisoformat(day) < self._today() - timedelta(days=self.config.archive_lag_days)
        return self.config.archive_url if old else self.config.forecast_url

    async def _fetch_day(self, client: httpx.AsyncClient, lat: float, lon: float,
                         day: str) -> dict[str, dict[str, float | None]]:
        params: dict[str, str | float] = {"latitude": lat, "longitude": lon, "start_date": day, "end_date": day,
                  "hourly": ",".join(self.config.hourly), "wind_speed_unit": self.config.wind_speed_unit,
                  "timezone": "GMT"}
        url = self.endpoint(day)
        return await request_with_retries(lambda: client.get(url, params=params), self._parse, self._caller,
                                          on_attempt=self._count)

    def _count(self) -> None:
        self.requests += 1

    def _parse(self, response: httpx.Response) -> dict[str, dict[str, float | None]]:
        try:
            body = response.json()
            hourly = body["hourly"]
            times = hourly["time"]
            columns = {var: hourly[var] for var in self.config.hourly}
        except (ValueError, KeyError, TypeError) as exc:
            raise ToolError(f"Open-Meteo response not in the expected format ({type(exc).__name__}: {exc})") from None
        rows: dict[str, dict[str, float | None]] = {}
        for i, stamp in enumerate(times):
            rows[str(stamp)[:13] + ":00"] = {var: _number(col[i] if i < len(col) else None)
                                            for var, col in columns.items()}
        return rows


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None
