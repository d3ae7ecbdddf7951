"""A loopback server speaking Open-Meteo's response format, serving ``storms.csv`` as its archive.

``GET /v1/archive`` and ``GET /v1/forecast`` take ``latitude``, ``longitude``, ``start_date``,
``end_date``, ``hourly`` (comma-separated) and ``wind_speed_unit`` (``kmh`` default, ``ms``, ``mph``,
``kn``) and answer like Open-Meteo: ``{"latitude", "longitude", "utc_offset_seconds", "timezone",
"hourly_units": {...}, "hourly": {"time": [...], <variable>: [...]}}``; bad parameters get a 400 with
``{"error": true, "reason": ...}``.

At a storm track point's place (0.1 degree) and hour, ``wind_speed_10m`` is the storm's ``wind``
(knots, converted to the asked unit) and ``pressure_msl`` its ``pressure``; elsewhere calm background
values. ``temperature_2m``, ``precipitation`` and ``weather_code`` are synthetic (derived from latitude
and wind), only so that every variable of the client is served.

Tests start it with :func:`start_server` (port 0 on 127.0.0.1) and may inject failures; by hand::

    python -m service.offline.testing.open_meteo --port 8765 [--data ../shared/data/storms.csv]
"""

from __future__ import annotations

import argparse
import csv
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from policies import Policy
from policies.model import WeatherSpec
from tools.environment import ToolEnvironment

KNOT = {"kn": 1.0, "kmh": 1.852, "ms": 0.514444, "mph": 1.150779}
UNIT_NAMES = {"kn": "kn", "kmh": "km/h", "ms": "m/s", "mph": "mp/h"}
UNITS = {"temperature_2m": "°C", "precipitation": "mm", "weather_code": "wmo code", "pressure_msl": "hPa",
         "wind_speed_10m": None}
BACKGROUND = (8.0, 1013.0)  # knots, hPa
MAX_DAYS = 31


def load_storm_table(path: str | Path) -> dict[tuple[float, float, str], tuple[float, float]]:
    """(lat, lon rounded to 0.1, "YYYY-MM-DDTHH:00") -> (wind knots, pressure hPa) from storms.csv."""
    table: dict[tuple[float, float, str], tuple[float, float]] = {}
    with Path(path).open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            try:
                moment = datetime.fromisoformat(row["datetime"].replace("Z", "+00:00"))
                key = (round(float(row["lat"]), 1), round(float(row["lon"]), 1),
                       (moment + timedelta(minutes=30)).strftime("%Y-%m-%dT%H:00"))
                table[key] = (float(row["wind"]), float(row["pressure"]))
            except (KeyError, ValueError):
                continue
    return table


@dataclass
class ServerState:
    """What the handler serves, plus knobs for tests: failures to inject and counters."""

    table: dict[tuple[float, float, str], tuple[float, float]]
    fail_status: int | None = None  # answer every request with this status while set
    fail_next: int = 0  # answer the next N requests with ``fail_status_next``
    fail_status_next: int = 503
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take_failure(self) -> int | None:
        with self.lock:
            self.requests += 1
            if self.fail_next > 0:
                self.fail_next -= 1
                return self.fail_status_next
            return self.fail_status


def build_response(state: ServerState, query: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
    def one(name: str) -> str | None:
        values = query.get(name)
        return values[0] if values else None

    try:
        lat, lon = float(one("latitude") or "nan"), float(one("longitude") or "nan")
    except ValueError:
        return 400, {"error": True, "reason": "Latitude and longitude must be numbers"}
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return 400, {"error": True, "reason": "Latitude must be in range of -90 to 90°. Longitude must be in range "
                                              "of -180 to 180°."}
    try:
        start = date.fromisoformat(one("start_date") or "")
        end = date.fromisoformat(one("end_date") or one("start_date") or "")
    except ValueError:
        return 400, {"error": True, "reason": "start_date and end_date must be dates (YYYY-MM-DD)"}
    if end < start or (end - start).days >= MAX_DAYS:
        return 400, {"error": True, "reason": f"end_date must be on or after start_date, at most {MAX_DAYS} days"}
    unit = one("wind_speed_unit") or "kmh"
    if unit not in KNOT:
        return 400, {"error": True, "reason": f"Invalid wind_speed_unit {unit!r}"}
    hourly = [v for v in (one("hourly") or "").split(",") if v]
    unknown = [v for v in hourly if v not in UNITS]
    if unknown:
        return 400, {"error": True, "reason": f"Cannot initialize WeatherVariable from invalid String value "
                                              f"{unknown[0]} for key hourly"}
    rlat, rlon = round(lat, 1), round(lon, 1)
    times: list[str] = []
    columns: dict[str, list[float]] = {v: [] for v in hourly}
    day = start
    while day <= end:
        for hour in range(24):
            stamp = f"{day.isoformat()}T{hour:02d}:00"
            times.append(stamp)
            wind, pressure = state.table.get((rlat, rlon, stamp), BACKGROUND)
            values = {
                "wind_speed_10m": round(wind * KNOT[unit], 1),
                "pressure_msl": pressure,
                "temperature_2m": round(30.0 - 0.4 * abs(lat) + 2.0 * ((hour + 9) % 24 >= 12), 1),
                "precipitation": round(max(0.0, (wind - 20.0) / 10.0), 1),
                "weather_code": 95 if wind >= 64 else 63 if wind >= 34 else 3,
            }
            for v in hourly:
                columns[v].append(values[v])
        day += timedelta(days=1)
    units = {v: (UNIT_NAMES[unit] if v == "wind_speed_10m" else UNITS[v]) for v in hourly}
    return 200, {"latitude": rlat, "longitude": rlon, "generationtime_ms": 0.1, "utc_offset_seconds": 0,
                 "timezone": "GMT", "timezone_abbreviation": "GMT", "elevation": 0.0,
                 "hourly_units": {"time": "iso8601", **units}, "hourly": {"time": times, **columns}}


def _handler(state: ServerState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            status = state.take_failure()
            if status is not None:
                body: dict[str, Any] = {"error": True, "reason": f"injected failure {status}"}
            elif parts.path not in ("/v1/archive", "/v1/forecast"):
                status, body = 404, {"error": True, "reason": f"no endpoint {parts.path}"}
            else:
                status, body = build_response(state, parse_qs(parts.query))
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if status == 429:
                self.send_header("Retry-After", "0")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            return

    return Handler


@dataclass
class RunningServer:
    server: ThreadingHTTPServer
    thread: threading.Thread
    state: ServerState

    @property
    def base_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def archive_url(self) -> str:
        return self.base_url + "/v1/archive"

    @property
    def forecast_url(self) -> str:
        return self.base_url + "/v1/forecast"

    def stop(self) -> None:
        """Stop serving and close the socket: later connections are refused."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def start_server(table: dict[tuple[float, float, str], tuple[float, float]], host: str = "127.0.0.1",
                 port: int = 0) -> RunningServer:
    state = ServerState(table)
    server = ThreadingHTTPServer((host, port), _handler(state))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="open-meteo-test", daemon=True)
    thread.start()
    return RunningServer(server, thread, state)


@contextmanager
def serving(table: dict[tuple[float, float, str], tuple[float, float]]) -> Iterator[RunningServer]:
    running = start_server(table)
    try:
        yield running
    finally:
        if running.thread.is_alive():
            running.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="../shared/data/storms.csv", help="storms.csv to serve as the archive")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args(argv)
    running = start_server(load_storm_table(args.data), args.host, args.port)
    print(f"Open-Meteo test server on {running.base_url} ({len(running.state.table)} storm points)\n"
          f"  export LABELAGENT_OPEN_METEO_ARCHIVE_URL={running.archive_url}\n"
          f"  export LABELAGENT_OPEN_METEO_FORECAST_URL={running.forecast_url}", flush=True)
    try:
        running.thread.join()
    except KeyboardInterrupt:
        running.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def allowing(policy: Policy) -> ToolEnvironment:
    """The deployment an operator configures for ``policy`` pointed at a loopback Open-Meteo: every endpoint its
    weather tools name is listed in the allowlist (``LABELAGENT_TOOL_ENDPOINTS``), so the SSRF guard lets them
    through. For replays and benchmarks against :func:`serving`; a served deployment reads its own settings."""
    urls = [url for spec in policy.tools if isinstance(spec, WeatherSpec)
            for url in (spec.archive_url, spec.forecast_url) if url]
    return ToolEnvironment(tool_endpoints=tuple(urls))
