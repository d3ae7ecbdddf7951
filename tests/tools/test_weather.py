"""Weather enrichment against the loopback Open-Meteo test server: values, units, cache, retries, breaker."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from policies import ToolError
from policies.model import WeatherSpec
from service.offline.testing.open_meteo import RunningServer, serving
from tools.base import Batch, Item, ToolContext
from tools.environment import ToolEnvironment
from tools.open_meteo import parse_time
from tools.outbound import CircuitBreaker
from tools.weather import WeatherTool

LABELS = ("calm", "storm")
CTX = ToolContext(LABELS)
TABLE = {(27.5, -79.0, "1975-06-27T00:00"): (25.0, 1013.0), (30.1, -60.2, "2001-09-10T06:00"): (100.0, 950.0)}


@pytest.fixture
def server() -> Iterator[RunningServer]:
    with serving(TABLE) as running:
        yield running


def tool(server: RunningServer, **over: object) -> WeatherTool:
    fields: dict[str, object] = {"name": "wx", "archive_url": server.archive_url, "forecast_url": server.forecast_url,
                                 "backoff_seconds": 0.0, **over}
    spec = WeatherSpec(**fields)  # type: ignore[arg-type]
    return WeatherTool(spec, LABELS, env=allowing(spec))


def allowing(spec: WeatherSpec) -> ToolEnvironment:
    """A deployment whose operator allows the spec's (loopback) endpoints."""
    return ToolEnvironment(tool_endpoints=tuple(u for u in (spec.archive_url, spec.forecast_url) if u))


def storm_items() -> list[Item]:
    return [Item("a", metadata={"lat": 27.5, "lon": -79.0, "datetime": "1975-06-27T00:00Z"}),
            Item("b", metadata={"lat": 30.14, "lon": -60.22, "time": "2001-09-10T05:50:00+00:00"}),
            Item("c", metadata={"lat": 30.1, "lon": -60.2, "datetime": "2001-09-10T07:00Z"}),  # background
            Item("d", metadata={"lat": 12.0}),  # no place
            Item("e", metadata={"lat": 12.0, "lon": 3.0, "time": "yesterday"})]  # no time


def predict(t: WeatherTool, items: list[Item]):  # type: ignore[no-untyped-def]
    return asyncio.run(t.predict(Batch(items), CTX))


def test_enriches_metadata_and_abstains_with_the_values_as_evidence(server: RunningServer) -> None:
    t = tool(server, wind_speed_unit="kn")
    items = storm_items()
    votes = predict(t, items)
    assert votes.abstain.all()
    assert items[0].metadata["wx_wind_speed_10m"] == 25.0 and items[0].metadata["wx_pressure_msl"] == 1013.0
    assert items[1].metadata["wx_wind_speed_10m"] == 100.0 and items[1].metadata["wx_pressure_msl"] == 950.0
    assert items[2].metadata["wx_wind_speed_10m"] == 8.0  # same day and place, another hour
    assert {"wx_temperature_2m", "wx_precipitation", "wx_weather_code"} <= set(items[0].metadata)
    assert "wind_speed_10m 100 kn" in votes.evidence[1] and "pressure_msl 950" in votes.evidence[1]
    assert "no valid place" in votes.evidence[3] and "no valid time" in votes.evidence[4]
    assert "wx_wind_speed_10m" not in items[3].metadata
    assert server.state.requests == 2  # one request per (place, day)


@pytest.mark.parametrize(("unit", "expected"), [("kn", 100.0), ("kmh", 185.2), ("ms", 51.4), ("mph", 115.1)])
def test_wind_speed_unit_is_honoured(server: RunningServer, unit: str, expected: float) -> None:
    items = storm_items()[1:2]
    predict(tool(server, wind_speed_unit=unit, hourly=["wind_speed_10m"]), items)
    assert items[0].metadata["wx_wind_speed_10m"] == pytest.approx(expected, abs=0.05)


def test_cache_by_place_and_hour(server: RunningServer) -> None:
    t = tool(server)
    predict(t, storm_items())
    before = server.state.requests
    again = storm_items()
    predict(t, again)
    assert server.state.requests == before
    assert again[1].metadata["wx_pressure_msl"] == 950.0


def test_retries_5xx_and_429_then_succeeds(server: RunningServer) -> None:
    server.state.fail_next, server.state.fail_status_next = 2, 503
    items = storm_items()[:1]
    predict(tool(server, max_retries=2), items)
    assert items[0].metadata["wx_pressure_msl"] == 1013.0 and server.state.requests == 3
    server.state.fail_next, server.state.fail_status_next = 1, 429
    items = storm_items()[1:2]
    predict(tool(server, max_retries=1), items)
    assert items[0].metadata["wx_pressure_msl"] == 950.0


def test_client_errors_are_not_retried_and_say_why(server: RunningServer) -> None:
    server.state.fail_status = 400
    t = tool(server, max_retries=3)
    with pytest.raises(ToolError, match=r"HTTP 400$") as raised:
        predict(t, storm_items()[:1])
    assert "injected failure" not in str(raised.value)  # the status, never the body (it would reach the evidence)
    assert server.state.requests == 1


def test_partial_failure_keeps_the_other_items(server: RunningServer) -> None:
    server.state.fail_next, server.state.fail_status_next = 1, 500  # the first day request fails, no retries
    t = tool(server, max_retries=0, max_concurrency=1)
    items = storm_items()[:2]
    votes = predict(t, items)
    failed = [i for i, item in enumerate(items) if "wx_pressure_msl" not in item.metadata]
    assert len(failed) == 1
    assert "weather unavailable (Open-Meteo unavailable: HTTP 500" in votes.evidence[failed[0]]


def test_server_down_raises_tool_error_and_breaker_opens(server: RunningServer) -> None:
    t = tool(server, max_retries=1, breaker_failures=2, breaker_reset_seconds=3600)
    server.stop()
    with pytest.raises(ToolError, match="weather unavailable: Open-Meteo unavailable: ConnectError"):
        predict(t, storm_items()[:1])
    assert t.client.breaker.state == "open"
    sent = t.client.requests
    with pytest.raises(ToolError, match="circuit open after 2 consecutive failures"):
        predict(t, storm_items()[1:2])
    assert t.client.requests == sent  # refused before any connection


def test_timeout_is_a_tool_error() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    spec = WeatherSpec(name="wx", archive_url="http://127.0.0.1:9/a", forecast_url="http://127.0.0.1:9/f",
                       max_retries=0, timeout_seconds=0.5)
    t = WeatherTool(spec, LABELS, transport=httpx.MockTransport(slow), env=allowing(spec))
    with pytest.raises(ToolError, match=r"timeout after 0.5s"):
        predict(t, storm_items()[:1])


def test_bad_payload_is_a_tool_error() -> None:
    spec = WeatherSpec(name="wx", archive_url="http://127.0.0.1:9/a", forecast_url="http://127.0.0.1:9/f")
    t = WeatherTool(spec, LABELS, env=allowing(spec),
                    transport=httpx.MockTransport(lambda r: httpx.Response(200, json={"hourly": {}})))
    with pytest.raises(ToolError, match="not in the expected format"):
        predict(t, storm_items()[:1])


def test_breaker_half_open_lets_one_trial_through() -> None:
    now = [0.0]
    breaker = CircuitBreaker(failures=2, reset_seconds=10, clock=lambda: now[0])
    breaker.failure("x")
    breaker.check()
    breaker.failure("y")
    with pytest.raises(ToolError, match="circuit open"):
        breaker.check()
    now[0] = 10.0
    breaker.check()  # the trial
    with pytest.raises(ToolError):
        breaker.check()  # only one at a time
    breaker.failure("z")  # the trial failed: open again
    assert breaker.state == "open"
    now[0] = 20.0
    breaker.check()
    breaker.success()
    assert breaker.state == "closed"


def test_archive_for_old_dates_forecast_for_recent(server: RunningServer) -> None:
    t = tool(server)
    assert t.client.endpoint("1975-06-27") == server.archive_url
    from datetime import UTC, datetime

    assert t.client.endpoint(datetime.now(UTC).date().isoformat()) == server.forecast_url


def test_parse_time_forms() -> None:
    assert parse_time("1975-06-27T00:00Z").isoformat() == "1975-06-27T00:00:00+00:00"  # type: ignore[union-attr]
    assert parse_time("2020:05:01 13:14:15").hour == 13  # type: ignore[union-attr]  # EXIF
    assert parse_time("2020-05-01T12:00:00+02:00").hour == 10  # type: ignore[union-attr]
    assert parse_time("nonsense") is None and parse_time(None) is None
