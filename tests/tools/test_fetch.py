"""SSRF guard: private targets refused before any connection, on the first hop and on redirects; caps."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import ip_address

import httpx
import pytest

from policies import ToolError
from tools.fetch import FetchLimits, FetchResult, fetch_url, forbidden_reason


class Server:
    """A loopback HTTP server; ``respond(handler)`` answers each request; ``hits`` counts requests."""

    def __init__(self, respond: Callable[[BaseHTTPRequestHandler], None]) -> None:
        self.hits = 0
        self.release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits += 1
                respond(self)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def netloc(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> Server:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def ok(body: bytes = b"hello") -> Callable[[BaseHTTPRequestHandler], None]:
    def respond(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)
    return respond


def redirect(location: str) -> Callable[[BaseHTTPRequestHandler], None]:
    def respond(h: BaseHTTPRequestHandler) -> None:
        h.send_response(302)
        h.send_header("Location", location)
        h.send_header("Content-Length", "0")
        h.end_headers()
    return respond


@pytest.fixture
def target() -> Iterator[Server]:
    with Server(ok(b"secret")) as server:
        yield server


def fetch(url: str, allow: set[str] | None = None, **limits: float) -> FetchResult:
    async def go() -> FetchResult:
        async with httpx.AsyncClient(trust_env=False) as client:
            return await fetch_url(url, client=client, limits=FetchLimits(**limits), allow=allow or set())  # type: ignore[arg-type]
    return asyncio.run(go())


def test_allowlisted_loopback_server_is_fetched(target: Server) -> None:
    result = fetch(f"http://{target.netloc}/x", allow={target.netloc})
    assert result.content == b"secret" and result.status_code == 200 and result.address == "127.0.0.1"
    assert target.hits == 1


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:{port}/",
    "http://localhost:{port}/",
    "http://2130706433:{port}/",  # decimal 127.0.0.1
    "http://0x7f000001:{port}/",  # hex
    "http://0177.0.0.1:{port}/",  # octal
    "http://[::1]:{port}/",
    "http://[::ffff:127.0.0.1]:{port}/",  # IPv4-mapped IPv6
])
def test_loopback_forms_are_refused_before_connecting(target: Server, url: str) -> None:
    with pytest.raises(ToolError, match=r"refused|Invalid IPv4"):  # httpx itself rejects some octal forms
        fetch(url.format(port=target.port))
    assert target.hits == 0


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data/", "http://167772161/",  # 10.0.0.1
                                 "http://[fe80::1]/", "http://0.0.0.0/", "http://224.0.0.1/", "http://192.168.1.1/",
                                 "http://100.64.0.1/", "http://[::ffff:a9fe:a9fe]/"])
def test_private_and_metadata_addresses_are_refused(url: str) -> None:
    with pytest.raises(ToolError, match="refused"):
        fetch(url, timeout_seconds=2.0)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/", "gopher://127.0.0.1/"])
def test_other_schemes_are_refused(url: str) -> None:
    with pytest.raises(ToolError, match="scheme"):
        fetch(url)


def test_redirect_from_allowed_host_to_private_address_is_refused(target: Server) -> None:
    for location in (f"http://{target.netloc}/private", f"http://2130706433:{target.port}/", "http://10.0.0.1/"):
        with Server(redirect(location)) as front:
            with pytest.raises(ToolError, match="refused"):
                fetch(f"http://{front.netloc}/", allow={front.netloc})
            assert front.hits == 1
    assert target.hits == 0


def test_redirects_followed_when_allowed_and_capped(target: Server) -> None:
    with Server(redirect(f"http://{target.netloc}/final")) as front:
        result = fetch(f"http://{front.netloc}/", allow={front.netloc, target.netloc})
        assert result.content == b"secret" and result.redirects == [f"http://{front.netloc}/"]
    with Server(redirect("/again")) as loop_server:
        with pytest.raises(ToolError, match="more than 3 redirects"):
            fetch(f"http://{loop_server.netloc}/", allow={loop_server.netloc}, max_redirects=3)
        assert loop_server.hits == 4


def test_size_cap_by_header_and_by_streaming() -> None:
    with Server(ok(b"x" * 5000)) as big, pytest.raises(ToolError, match="over the limit of 1000"):
        fetch(f"http://{big.netloc}/", allow={big.netloc}, max_bytes=1000)

    def chunked(h: BaseHTTPRequestHandler) -> None:  # no Content-Length: only counting stops it
        h.protocol_version = "HTTP/1.0"
        h.send_response(200)
        h.end_headers()
        for _ in range(50):
            h.wfile.write(b"y" * 1000)

    with Server(chunked) as streaming, pytest.raises(ToolError, match="stopped reading"):
        fetch(f"http://{streaming.netloc}/", allow={streaming.netloc}, max_bytes=1000)


def test_time_cap() -> None:
    def stall(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", "10")
        h.end_headers()
        h.wfile.write(b"a")
        h.wfile.flush()
        outer_release.wait(10)

    with Server(stall) as slow:
        outer_release = slow.release
        with pytest.raises(ToolError, match=r"longer than 0\.3s"):
            fetch(f"http://{slow.netloc}/", allow={slow.netloc}, timeout_seconds=0.3)


def test_forbidden_reason_unwraps_ipv6_forms() -> None:
    assert forbidden_reason(ip_address("::ffff:10.1.2.3")) is not None
    assert forbidden_reason(ip_address("2002:7f00:1::1")) is not None  # 6to4 of 127.0.0.1
    assert forbidden_reason(ip_address("93.184.216.34")) is None
    assert forbidden_reason(ip_address("2606:4700::1111")) is None


def test_tools_get_the_fetch_settings_through_the_tool_environment() -> None:
    from service.settings import Settings, tool_environment

    env = tool_environment(Settings(fetch_allow_hosts=["127.0.0.1:8000"], fetch_max_redirects=2))
    assert env.fetch_limits.max_redirects == 2 and env.fetch_allow_hosts == {"127.0.0.1:8000"}
