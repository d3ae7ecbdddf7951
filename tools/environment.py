"""What tools take from the deployment rather than from the policy: endpoints, credentials, limits, egress rules.

The service builds one from its settings (``service.settings.tool_environment``) and hands it to
``tools.registry.build_tools``; tools never read settings or the process environment themselves, so
``tools/`` depends on ``policies/`` only. The defaults are the public Open-Meteo endpoints, no LLM
endpoint, no extra allowed endpoint and the default image and fetch limits.

Egress: a policy may name a tool endpoint (an llm ``base_url``, a remote model's ``url``, a weather tool's
``archive_url``/``forecast_url``) only when it is one of :meth:`ToolEnvironment.endpoints`: the deployment's own
endpoints plus the operator's ``tool_endpoints`` allowlist. The hosts of those endpoints are the only private or
loopback hosts a tool may reach (besides ``fetch_allow_hosts``); every other request goes through the SSRF guard
(``tools.outbound.GuardedTransport``) like an image fetch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx

from tools.fetch import FetchLimits
from tools.images import ImageLimits

OPEN_METEO_ARCHIVE_URL = "https://archive-api.open-meteo.com/v1/archive"
OPEN_METEO_FORECAST_URL = "https://api.open-meteo.com/v1/forecast"


@dataclass(frozen=True, slots=True)
class ToolEnvironment:
    open_meteo_archive_url: str = OPEN_METEO_ARCHIVE_URL  # for weather tools whose spec names no endpoint
    open_meteo_forecast_url: str = OPEN_METEO_FORECAST_URL
    llm_base_url: str | None = None  # OpenAI-compatible endpoint of llm tools whose spec names none
    llm_model: str | None = None
    llm_api_key: str | None = field(default=None, repr=False)  # sent only to llm_base_url
    image_limits: ImageLimits = field(default_factory=ImageLimits)  # what image tools decode
    embedding_cache_dir: str | None = None  # embedding tools keep their embeddings here across restarts
    tool_endpoints: tuple[str, ...] = ()  # URL prefixes (operator's allowlist) a policy may name as tool endpoints
    fetch_limits: FetchLimits = field(default_factory=FetchLimits)  # image URL fetches
    fetch_allow_hosts: frozenset[str] = frozenset()  # host / host:port exempt from the private-address check

    def endpoints(self) -> tuple[str, ...]:
        """Every endpoint a tool may call: the deployment's own ones and the operator's allowlist."""
        own = (self.open_meteo_archive_url, self.open_meteo_forecast_url, self.llm_base_url)
        return tuple(u for u in (*own, *self.tool_endpoints) if u)

    def guard_allow(self) -> frozenset[str]:
        """``host:port`` entries the SSRF guard lets through although they are private: the allowed endpoints'."""
        out = set(self.fetch_allow_hosts)
        for url in self.endpoints():
            try:
                parsed = httpx.URL(url)
            except (httpx.InvalidURL, TypeError):
                continue
            port = parsed.port or (443 if parsed.scheme == "https" else 80)
            out.add(f"{parsed.host.lower()}:{port}")
        return frozenset(out)
