"""Service settings from the environment (prefix ``LABELAGENT_``), read once and cached.

Tests change the environment with ``monkeypatch.setenv`` and then call ``get_settings.cache_clear()``
(or build a ``Settings(...)`` directly and pass it where it is needed).
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tools.environment import ToolEnvironment
from tools.fetch import FetchLimits
from tools.images import ImageLimits


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LABELAGENT_", extra="ignore")

    database_url: str = Field(
        default="sqlite:///./labelagent.db",
        description="SQLAlchemy URL: sqlite:///path.db or postgresql+psycopg://user@host:5432/db.",
    )
    echo_sql: bool = Field(default=False, description="Log every SQL statement (debugging only).")
    sqlite_busy_timeout_ms: int = Field(default=10_000, ge=0, description="How long SQLite waits for a lock.")
    pool_size: int = Field(default=5, ge=1, description="PostgreSQL connection pool size.")
    max_overflow: int = Field(default=10, ge=0, description="PostgreSQL connections beyond pool_size.")

    batch_size: int = Field(default=256, ge=1, description="Items a worker claims per batch.")
    lease_seconds: int = Field(default=60, ge=1, description="How long a worker's claim on a batch lasts.")
    review_lease_seconds: int = Field(default=600, ge=1, description="How long a reviewer's claim on a task lasts.")
    max_attempts: int = Field(default=5, ge=1, description="Claims of one item before it is marked failed.")
    max_batch_items: int = Field(default=1000, ge=1, description="Most items accepted by one ingest call.")
    max_external_id_length: int = Field(default=256, ge=1, le=256)
    max_text_chars: int = Field(default=100_000, ge=1, description="Longest item text accepted by ingest.")
    max_body_bytes: int = Field(default=16 * 2**20, ge=1024,
                                description="Largest request body; larger ones get 413 without being read.")
    rate_limit_per_second: float = Field(
        default=50.0, ge=0,
        description="Requests per second per API key on average (0: no limit). Counted per API process.",
    )
    idempotency_timeout_seconds: float = Field(
        default=900.0, gt=0,
        description="How long an Idempotency-Key reserved by a request that has not answered (its process died) "
                    "blocks retries (409); after it the next retry runs the request again.",
    )
    docs_enabled: bool = Field(
        default=False,
        description="Serve /docs and /redoc (their pages load scripts from a CDN); /openapi.json is always served.",
    )
    events_recheck_seconds: float = Field(
        default=5.0, gt=0, description="How often an open /events stream re-checks its API key (it ends if revoked).",
    )
    rate_limit_burst: int = Field(default=200, ge=1, description="Requests an idle API key may send at once.")

    worker_poll_seconds: float = Field(default=1.0, gt=0, description="Longest idle wait of a worker between polls.")
    feedback_poll_seconds: float = Field(default=0.5, gt=0, description="How often a busy worker reads new answers.")
    retrain_wait_seconds: float = Field(
        default=10.0, ge=0,
        description="How long a project's next batch waits for its retrain in flight (once per retrain; 0: never): "
                    "a batch decided meanwhile uses the models the new answers are not in yet.",
    )
    feedback_lag_seconds: float = Field(
        default=60.0, gt=0,
        description="Trailing window a worker re-reads for answers committed out of id order; longer than any "
                    "submit transaction.",
    )
    refresh_seconds: float = Field(
        default=2.0, gt=0, description="How often a worker looks for new projects and newly activated policies.",
    )
    stop_grace_seconds: float = Field(
        default=30.0, ge=0, description="How long a stopping worker lets its current batch finish before releasing it.",
    )

    open_meteo_archive_url: str = Field(
        default="https://archive-api.open-meteo.com/v1/archive",
        description="Open-Meteo historical archive endpoint used by weather tools whose spec names none.",
    )
    open_meteo_forecast_url: str = Field(
        default="https://api.open-meteo.com/v1/forecast",
        description="Open-Meteo forecast endpoint used by weather tools whose spec names none.",
    )

    llm_base_url: str | None = Field(default=None, description="OpenAI-compatible endpoint of llm tools "
                                                               "(e.g. http://localhost:11434/v1).")
    llm_model: str | None = Field(default=None, description="Model name of llm tools whose spec names none.")
    llm_api_key: SecretStr | None = Field(default=None, description="API key of the llm endpoint, if it needs one.")
    embedding_cache_dir: str | None = Field(
        default=None, description="Folder where embedding tools keep their embeddings (by model and text hash) "
                                  "across restarts; none: memory only.")

    tool_endpoints: list[str] = Field(
        default_factory=list,
        description="URLs (or URL prefixes) a policy may name as a tool endpoint (llm base_url, remote_model url, "
                    "weather archive_url/forecast_url) besides the deployment's own llm_base_url and open_meteo_* "
                    "endpoints; anything else is refused when the policy is created (JSON list in the environment). "
                    "Their hosts may be private addresses.",
    )
    fetch_allow_hosts: list[str] = Field(
        default_factory=list,
        description="host or host:port entries exempt from the private-address check of URL fetching (tests only; "
                    "JSON list in the environment).",
    )
    fetch_max_bytes: int = Field(default=10 * 2**20, ge=1, description="Largest body a URL fetch reads.")
    fetch_timeout_seconds: float = Field(default=10.0, gt=0, description="Longest URL fetch, redirects included.")
    fetch_max_redirects: int = Field(default=5, ge=0, description="Most redirects a URL fetch follows.")

    max_image_pixels: int = Field(
        default=40_000_000, ge=1,
        description="Most pixels (width x height, read from the header before decoding) an item image may have; "
                    "larger ones are refused at ingest (422) and by workers (item failed) as decompression bombs.",
    )
    max_image_bytes: int = Field(default=10 * 2**20, ge=1, description="Largest image file accepted (uploaded, "
                                                                        "base64 or fetched from image_url).")
    max_call_pixels: int = Field(
        default=100_000_000, ge=1,
        description="Most pixels all the images of one ingest call may have together (read from the headers before "
                    "any is decoded); more is a 422.",
    )
    max_image_urls: int = Field(default=64, ge=0, description="Most image_url items in one ingest call.")
    fetch_call_seconds: float = Field(
        default=30.0, gt=0, description="Longest time all the image_url fetches of one ingest call may take together.",
    )
    image_formats: list[str] = Field(
        default_factory=lambda: ["PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF"],
        description="Image formats accepted (Pillow names; JSON list in the environment).",
    )

    @field_validator("image_formats")
    @classmethod
    def _known_formats(cls, value: list[str]) -> list[str]:
        from PIL import Image

        Image.init()
        names = [f.upper() for f in value]
        unknown = [f for f in names if f not in Image.OPEN]
        if unknown:
            raise ValueError(f"{', '.join(unknown)}: not image formats Pillow can open (e.g. PNG, JPEG, GIF, WEBP)")
        return names


def image_limits(settings: Settings) -> ImageLimits:
    """The image limits of ``settings`` (``max_image_*``, ``image_formats``), as the image tools take them."""
    return ImageLimits(max_pixels=settings.max_image_pixels, max_bytes=settings.max_image_bytes,
                       formats=tuple(f.upper() for f in settings.image_formats))


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings; ``get_settings.cache_clear()`` re-reads the environment."""
    return Settings()


def fetch_limits(settings: Settings) -> FetchLimits:
    """The URL fetch limits of ``settings`` (``fetch_*``)."""
    return FetchLimits(max_bytes=settings.fetch_max_bytes, timeout_seconds=settings.fetch_timeout_seconds,
                       max_redirects=settings.fetch_max_redirects)


def tool_environment(settings: Settings) -> ToolEnvironment:
    """What the tools take from this deployment (``open_meteo_*``, ``llm_*``, ``tool_endpoints``, ``fetch_*``,
    the image limits): the only way tools see the deployment."""
    key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else None
    return ToolEnvironment(open_meteo_archive_url=settings.open_meteo_archive_url,
                           open_meteo_forecast_url=settings.open_meteo_forecast_url,
                           llm_base_url=settings.llm_base_url, llm_model=settings.llm_model, llm_api_key=key,
                           image_limits=image_limits(settings), tool_endpoints=tuple(settings.tool_endpoints),
                           embedding_cache_dir=settings.embedding_cache_dir,
                           fetch_limits=fetch_limits(settings),
                           fetch_allow_hosts=frozenset(h.lower() for h in settings.fetch_allow_hosts))
