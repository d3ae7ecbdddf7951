"""How the HTTP replay (:mod:`service.offline.http_replay`) reads the service's refusals: one error type and
the check of each answer, with a hint for the missing or weak API key."""

from __future__ import annotations

import httpx

from policies import LabelAgentError


class ReplayError(LabelAgentError):
    """The service refused a request, could not be reached, or did not label everything in time."""


def error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("message"))
    return str(body.get("detail", body) if isinstance(body, dict) else body)[:300]


def check_answer(response: httpx.Response, what: str) -> httpx.Response:
    if response.is_success:
        return response
    hint = ""
    if response.status_code == 401:
        hint = (" -- pass an operator API key with --api-key or LABELAGENT_KEY (`labelagent serve` prints one on a "
                "new database; `labelagent keys create --role operator` makes more)")
    elif response.status_code == 403:
        hint = " -- the replay creates a project and reads its metrics: it needs an operator key"
    raise ReplayError(f"{what}: HTTP {response.status_code}: {error_text(response)}{hint}")
