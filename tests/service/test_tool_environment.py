"""The tools get the deployment's endpoints, credentials and limits from the settings, and only through them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from service.settings import Settings, tool_environment
from tools.images import ImageLimits


def test_settings_become_the_tools_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABELAGENT_OPEN_METEO_ARCHIVE_URL", "http://127.0.0.1:8765/v1/archive")
    monkeypatch.setenv("LABELAGENT_LLM_API_KEY", "sk-test")
    env = tool_environment(Settings(llm_base_url="http://127.0.0.1:11434/v1", llm_model="tiny",
                                    max_image_pixels=1_000, max_image_bytes=2_000, image_formats=["PNG"]))
    assert env.open_meteo_archive_url == "http://127.0.0.1:8765/v1/archive"
    assert env.open_meteo_forecast_url == Settings().open_meteo_forecast_url
    assert (env.llm_base_url, env.llm_model, env.llm_api_key) == ("http://127.0.0.1:11434/v1", "tiny", "sk-test")
    assert env.image_limits == ImageLimits(max_pixels=1_000, max_bytes=2_000, formats=("PNG",))
    assert "sk-test" not in repr(env)


def test_tools_agent_and_policies_do_not_import_the_service() -> None:
    root = Path(__file__).resolve().parents[2]
    importing = re.compile(r"^\s*(from|import) service\b", re.MULTILINE)
    offenders = [str(p.relative_to(root)) for package in ("tools", "agent", "policies")
                 for p in sorted((root / package).rglob("*.py")) if importing.search(p.read_text(encoding="utf-8"))]
    assert offenders == []
