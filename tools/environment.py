"""What tools take from the deployment rather than from the policy: endpoints, credentials, limits.

The service builds one from its settings (``service.settings.tool_environment``) and hands it to
``tools.registry.build_tools``; tools never read settings or the process environment themselves, so
``tools/`` depends on ``policies/`` only. The defaults are the public Open-Meteo endpoints, no LLM
endpoint and the default image limits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tools.images import ImageLimits

OPEN_METEO_ARCHIVE_URL = "https://archive-api.open-meteo.com/v1/archive"
OPEN_METEO_FORECAST_URL = "https://api.open-meteo.com/v1/forecast"


@dataclass(frozen=True, slots=True)
class ToolEnvironment:
    open_meteo_archive_url: str = OPEN_METEO_ARCHIVE_URL  # for weather tools whose spec names no endpoint
    open_meteo_forecast_url: str = OPEN_METEO_FORECAST_URL
    llm_base_url: str | None = None  # OpenAI-compatible endpoint of llm tools whose spec names none
    llm_model: str | None = None
    llm_api_key: str | None = field(default=None, repr=False)
    image_limits: ImageLimits = field(default_factory=ImageLimits)  # what image tools decode
    embedding_cache_dir: str | None = None  # embedding tools keep their embeddings here across restarts
