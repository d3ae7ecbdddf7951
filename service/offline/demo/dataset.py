"""The demo's shipped stream: a subset of the SMS Spam Collection (CC BY 4.0; ``data/LICENSE-sms_spam.txt``)."""

from __future__ import annotations

import csv
import gzip
import io
from dataclasses import dataclass
from importlib import resources

DATASET_FILE = "sms_spam_demo.csv.gz"
LICENSE_FILE = "LICENSE-sms_spam.txt"
ATTRIBUTION = ("SMS Spam Collection, T. A. Almeida and J. M. Gómez Hidalgo (UCI Machine Learning Repository), "
               "CC BY 4.0")


@dataclass(frozen=True, slots=True)
class DemoRow:
    key: str  # the item's external id: its position in the stream
    text: str
    label: str


def row_key(index: int) -> str:
    return f"sms-{index:05d}"


def load_rows() -> list[DemoRow]:
    """The shipped rows, in stream order."""
    raw = resources.files("service.offline.demo").joinpath("data", DATASET_FILE).read_bytes()
    reader = csv.DictReader(io.StringIO(gzip.decompress(raw).decode("utf-8")))
    return [DemoRow(row_key(i), r["text"], r["label"]) for i, r in enumerate(reader)]


def license_text() -> str:
    return resources.files("service.offline.demo").joinpath("data", LICENSE_FILE).read_text(encoding="utf-8")
