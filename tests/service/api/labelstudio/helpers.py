"""What the Label Studio tests share: the project's name and labels, the routes, the JSON examples of Label Studio's
documentation (``fixtures/``, each naming its source) and small readers of the responses."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

FIXTURES = Path(__file__).parent / "fixtures"
LABELS = ["sports", "politics", "technology"]
P = "topics"
ML = f"/label-studio/{P}"
LS = f"/projects/{P}/label-studio"


def fixture(name: str) -> Any:
    return copy.deepcopy(json.loads((FIXTURES / name).read_text())["payload"])


def status(client: TestClient, key: str) -> dict[str, Any]:
    response = client.get(f"/projects/{P}/items/{key}")
    assert response.status_code == 200, response.text
    return response.json()


def choice(result: list[dict[str, Any]]) -> str:
    (only,) = [r for r in result if r["type"] == "choices"]
    (label,) = only["value"]["choices"]
    return label
