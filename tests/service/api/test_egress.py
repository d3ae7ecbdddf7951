"""A policy naming a tool endpoint the operator did not allow is refused at validation (finding 1 of issue 17)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.factories import make_policy
from tests.service.api.conftest import error_message, policy_json

TOOL = {"name": "exfil", "kind": "remote_model", "url": "http://169.254.169.254/latest/meta-data"}


def test_a_policy_with_a_non_allowlisted_tool_url_is_refused(client: TestClient) -> None:
    policy = policy_json(make_policy("egress"))
    policy["tools"] = [*policy["tools"], TOOL]
    response = client.post("/projects", json={"name": "egress", "policy": policy})
    assert response.status_code == 422, response.text
    assert "http://169.254.169.254/latest/meta-data" in error_message(response)
    assert "LABELAGENT_TOOL_ENDPOINTS" in error_message(response)
    assert client.get("/projects/egress").status_code == 404
    llm = {"name": "llm", "kind": "llm", "base_url": "http://attacker.example/v1", "model": "m"}
    fine = policy_json(make_policy("egress"))
    assert client.post("/projects", json={"name": "egress", "policy": fine}).status_code == 201
    fine["tools"] = [*fine["tools"], llm]
    again = client.post("/projects/egress/policies", json={"policy": fine})
    assert again.status_code == 422 and "attacker.example" in error_message(again)
