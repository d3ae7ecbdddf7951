"""Fixtures for the tools tests: the real datasets, skipped with a clear message when absent."""

from __future__ import annotations

import numpy as np
import pytest

from tests.tools.helpers import read_dataset


@pytest.fixture(scope="session")
def sms_rows() -> list[dict[str, str]]:
    """The SMS spam collection (text, label), shuffled with a fixed seed."""
    rows = read_dataset("sms_spam.csv")
    order = np.random.default_rng(7).permutation(len(rows))
    return [rows[i] for i in order]


@pytest.fixture(scope="session")
def banking_rows() -> list[dict[str, str]]:
    """banking77 (text, label, split)."""
    return read_dataset("banking77.csv")
