"""Reading labeled datasets for replay: CSV with ``text,label`` (other columns become metadata)."""

from __future__ import annotations

import csv
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from policies import InputError
from tools.base import Item

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


@dataclass(frozen=True, slots=True)
class LabeledItem:
    item: Item
    label: str


def _number(value: str) -> object:
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return float(value)
    except ValueError:
        return value


# Columns never shown to the agent, per dataset file stem, on top of ``drop_columns``: they give the answer
# away (storms: wind and pressure are what the weather tool must fetch; category and name follow the label).
DEFAULT_DROP_COLUMNS: dict[str, tuple[str, ...]] = {
    "storms": ("name", "category", "wind", "pressure"),
}


def load_csv(path: str | Path, *, drop_columns: Sequence[str] = (), default_drops: bool = True) -> list[LabeledItem]:
    """Rows of a CSV with a ``label`` column; ``text`` is the item's text; other columns are metadata.

    ``drop_columns`` are never shown to the agent (e.g. columns that give the answer away), nor, with
    ``default_drops``, the dataset's entry in :data:`DEFAULT_DROP_COLUMNS`.
    Keys are the row numbers (``row-000001``...), stable across runs.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"dataset {path} does not exist")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        fields = reader.fieldnames or []
        if "label" not in fields:
            raise InputError(f"dataset {path} has no 'label' column (columns: {', '.join(fields)})")
        hidden = {"label", "text", *drop_columns, *(DEFAULT_DROP_COLUMNS.get(path.stem, ()) if default_drops else ())}
        out: list[LabeledItem] = []
        for n, row in enumerate(reader, start=1):
            label = (row.get("label") or "").strip()
            if not label:
                raise InputError(f"dataset {path}, row {n}: empty label")
            meta = {k: _number(v) for k, v in row.items() if k not in hidden and k is not None and v not in (None, "")}
            out.append(LabeledItem(Item(f"row-{n:06d}", row.get("text"), meta), label))
    if not out:
        raise InputError(f"dataset {path} has no rows")
    return out
