"""Weather enrichment: Open-Meteo values at the item's place and hour, written into its metadata.

For each item with a place (``lat``/``lon`` metadata, or EXIF GPS) and a time (``time``, ``datetime``
or EXIF ``DateTimeOriginal``), the tool writes ``item.metadata["wx_<variable>"]`` (e.g.
``wx_wind_speed_10m``) so that voters read them through their ``metadata_features``, and abstains
with evidence listing the values. ``enriches = True`` makes the planner call it before the voters.
Items without a place or time, or whose request failed, keep going without the values; the evidence
says why. When every request failed (API down, breaker open) it raises :class:`ToolError`, and the
graph degrades the items to the other tools.
"""

from __future__ import annotations

import httpx
import numpy as np

from policies.exceptions import ToolError
from policies.model import WeatherSpec
from tools.base import Batch, Item, ToolContext, Votes
from tools.environment import ToolEnvironment
from tools.open_meteo import ClientConfig, HourKey, OpenMeteoClient, hour_of, parse_time
from tools.outbound import GuardedTransport, require_allowed

UNITS = {"kmh": "km/h", "ms": "m/s", "mph": "mph", "kn": "kn"}


class WeatherTool:
    """Tool (not learnable). Construct from the spec and the project's labels."""

    kind = "weather"
    enriches = True

    def __init__(self, spec: WeatherSpec, labels: tuple[str, ...] | list[str], *,
                 transport: httpx.AsyncBaseTransport | None = None, env: ToolEnvironment | None = None) -> None:
        self.spec = spec
        self.name = spec.name
        self.cost = spec.cost
        self.labels = tuple(labels)
        env = env or ToolEnvironment()
        archive = spec.archive_url or env.open_meteo_archive_url
        forecast = spec.forecast_url or env.open_meteo_forecast_url
        for url in (archive, forecast):
            require_allowed(spec.name, url, env.endpoints())
        self.client = OpenMeteoClient(ClientConfig(
            archive_url=archive, forecast_url=forecast, hourly=tuple(spec.hourly),
            wind_speed_unit=spec.wind_speed_unit, place_decimals=spec.place_decimals,
            archive_lag_days=spec.archive_lag_days, timeout_seconds=spec.timeout_seconds,
            max_retries=spec.max_retries, backoff_seconds=spec.backoff_seconds,
            max_concurrency=spec.max_concurrency, breaker_failures=spec.breaker_failures,
            breaker_reset_seconds=spec.breaker_reset_seconds, cache_size=spec.cache_size,
        ), transport=GuardedTransport(env.guard_allow(), transport))

    def feature_keys(self) -> list[str]:
        """The metadata keys this tool writes (for a classifier's ``metadata_features``)."""
        return [self.spec.prefix + var for var in self.spec.hourly]

    def locate(self, item: Item) -> HourKey | str:
        """(rounded lat, rounded lon, hour) of the item, or why it has none."""
        meta = item.metadata
        lat, lon = _coordinate(meta.get(self.spec.lat_key)), _coordinate(meta.get(self.spec.lon_key))
        if lat is None or lon is None or not (-90 <= lat <= 90 and -180 <= lon <= 180):
            return f"no valid place (metadata {self.spec.lat_key!r}/{self.spec.lon_key!r})"
        moment = next((m for m in (parse_time(meta.get(k)) for k in self.spec.time_keys) if m is not None), None)
        if moment is None:
            return f"no valid time (metadata {' / '.join(repr(k) for k in self.spec.time_keys)})"
        place = self.client.place(lat, lon)
        return place[0], place[1], hour_of(moment).strftime("%Y-%m-%dT%H:00")

    async def predict(self, batch: Batch, context: ToolContext) -> Votes:
        n, n_labels = len(batch), len(context.labels)
        where = [self.locate(item) for item in batch.items]
        keys = [w for w in where if not isinstance(w, str)]
        found = await self.client.fetch(keys) if keys else {}
        if keys and all(isinstance(found[k], ToolError) for k in keys):
            raise ToolError(f"weather unavailable: {found[keys[0]]}")
        unit = UNITS[self.spec.wind_speed_unit]
        evidence = []
        for item, w in zip(batch.items, where, strict=True):
            if isinstance(w, str):
                evidence.append(f"{self.name}: {w}; no weather")
                continue
            values = found[w]
            if isinstance(values, ToolError):
                evidence.append(f"{self.name}: weather unavailable ({values})")
                continue
            for var, value in values.items():
                item.metadata[self.spec.prefix + var] = value
            shown = ", ".join(f"{var} {_fmt(value)}{' ' + unit if var.startswith('wind') else ''}"
                              for var, value in values.items())
            evidence.append(f"{self.name}: {w[2]}Z at {w[0]:g},{w[1]:g}: {shown}")
        votes = Votes.abstaining(self.name, n, n_labels, "", cost=self.cost)
        votes.evidence = evidence
        return votes


def _coordinate(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:g}"
