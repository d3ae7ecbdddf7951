"""Fetching URLs safely (SSRF guard): scheme, resolved address, redirects, size and time all checked.

``fetch_url`` accepts only ``http``/``https``. It resolves the host itself and refuses loopback, private,
link-local, reserved, multicast, unspecified and otherwise non-global addresses (IPv4-mapped and 6to4 /
Teredo IPv6 forms are unwrapped; numeric hosts such as ``2130706433`` or ``0x7f.1`` resolve like any other
host, so they are refused too). The request is then sent to the checked IP itself (the ``Host`` header and
the TLS server name keep the original host), so a DNS answer that changes between check and connect
(rebinding) cannot redirect it. Redirects are followed by hand, each hop checked the same way, up to
``limits.max_redirects``. The body is streamed and the fetch stops at ``limits.max_bytes``; the whole
fetch, redirects included, must finish within ``limits.timeout_seconds``.

``allow`` lists ``host`` or ``host:port`` entries exempt from the address check (for tests on loopback);
an allowed host is still connected to by the IP it resolved to. The ``client`` should not use a proxy
(``trust_env=False``): a proxy would make the connection itself.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Collection
from dataclasses import dataclass, field

import httpx

from policies.exceptions import ToolError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
REDIRECTS = frozenset({301, 302, 303, 307, 308})
SCHEMES = {"http": 80, "https": 443}


@dataclass(slots=True, frozen=True)
class FetchLimits:
    max_bytes: int = 10 * 2**20
    timeout_seconds: float = 10.0
    max_redirects: int = 5


@dataclass(slots=True)
class FetchResult:
    url: str  # the final URL (after redirects), with its original host
    status_code: int
    headers: httpx.Headers
    content: bytes
    address: str  # the IP the final response came from
    redirects: list[str] = field(default_factory=list)


def forbidden_reason(ip: IPAddress) -> str | None:
    """Why an address may not be fetched from, or None when it is a public (global) address."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if inner is not None:
            reason = forbidden_reason(inner)
            return f"{reason} (inside IPv6 {ip})" if reason else None
    for attr in ("loopback", "unspecified", "link_local", "multicast", "private", "reserved"):
        if getattr(ip, f"is_{attr}"):
            return f"{attr.replace('_', '-')} address {ip}"
    if not ip.is_global:
        return f"non-global address {ip}"
    return None


def _allowed(host: str, port: int, allow: Collection[str]) -> bool:
    return host in allow or f"{host}:{port}" in allow or f"[{host}]:{port}" in allow


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to (numeric forms included), via the event loop's resolver."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise ToolError(f"fetch: cannot resolve host {host!r} ({exc})") from None
    out: list[IPAddress] = []
    for info in infos:
        addr = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if addr not in out:
            out.append(addr)
    if not out:
        raise ToolError(f"fetch: host {host!r} resolves to no address")
    return out


async def check_url(url: httpx.URL, allow: Collection[str]) -> IPAddress:
    """The address to connect to for ``url``; :class:`ToolError` when the URL may not be fetched."""
    if url.scheme not in SCHEMES:
        raise ToolError(f"fetch: scheme {url.scheme!r} refused (only http and https)")
    if url.userinfo:
        raise ToolError("fetch: URLs with credentials are refused")
    host = url.raw_host.decode("ascii", "replace").lower().strip("[]")
    if not host:
        raise ToolError(f"fetch: no host in {url}")
    port = url.port or SCHEMES[url.scheme]
    addresses = await resolve(host, port)
    if _allowed(host, port, allow):
        return addresses[0]
    for ip in addresses:  # every answer must be safe, not just the first
        reason = forbidden_reason(ip)
        if reason:
            raise ToolError(f"fetch: {url.scheme}://{host}:{port} refused: resolves to a {reason}")
    return addresses[0]


async def _one(client: httpx.AsyncClient, url: httpx.URL, ip: IPAddress, max_bytes: int) -> FetchResult | httpx.URL:
    """One hop sent to ``ip``: the result, or the next URL when it is a redirect."""
    host = url.raw_host.decode("ascii")
    pinned = url.copy_with(host=str(ip))
    headers = {"Host": url.netloc.decode("ascii")}
    extensions = {"sni_hostname": host} if url.scheme == "https" else {}
    request = client.build_request("GET", pinned, headers=headers, extensions=extensions)
    response = await client.send(request, stream=True, follow_redirects=False)
    try:
        if response.status_code in REDIRECTS:
            location = response.headers.get("location")
            if not location:
                raise ToolError(f"fetch: {url} answered {response.status_code} without a Location")
            return url.join(location)
        declared = response.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max_bytes:
            raise ToolError(f"fetch: {url} is {declared} bytes, over the limit of {max_bytes}")
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > max_bytes:
                raise ToolError(f"fetch: {url} is over the limit of {max_bytes} bytes; stopped reading")
        return FetchResult(str(url), response.status_code, response.headers, bytes(body), str(ip))
    finally:
        await response.aclose()


async def fetch_url(url: str, *, client: httpx.AsyncClient, limits: FetchLimits = FetchLimits(),
                    allow: Collection[str] = frozenset()) -> FetchResult:
    """GET ``url`` safely; every refusal, cap or transport failure is a :class:`ToolError` saying why."""
    allow = {a.lower() for a in allow}
    try:
        current = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ToolError(f"fetch: invalid URL {url!r} ({exc})") from None
    hops: list[str] = []
    try:
        async with asyncio.timeout(limits.timeout_seconds):
            while True:
                ip = await check_url(current, allow)
                outcome = await _one(client, current, ip, limits.max_bytes)
                if isinstance(outcome, FetchResult):
                    outcome.redirects = hops
                    return outcome
                hops.append(str(current))
                if len(hops) > limits.max_redirects:
                    raise ToolError(f"fetch: more than {limits.max_redirects} redirects from {url}")
                current = outcome
    except TimeoutError:
        raise ToolError(f"fetch: {url} took longer than {limits.timeout_seconds:g}s") from None
    except httpx.HTTPError as exc:
        raise ToolError(f"fetch: {url}: {type(exc).__name__}: {exc}") from None
    except httpx.InvalidURL as exc:
        raise ToolError(f"fetch: invalid redirect from {url} ({exc})") from None
