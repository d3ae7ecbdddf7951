"""Reading labeled datasets for replay: CSV with ``text,label`` (other columns become metadata), or
``filename,label`` beside image files."""

from __future__ import annotations

import contextlib
import csv
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from policies import InputError
from policies.template import DataKind
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
    path = dataset_file(path)
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if data_kind(path, reader) == "image":
            return _load_images(path, reader)
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


def dataset_file(path: str | Path) -> Path:
    """The CSV of a dataset: ``path``, or ``labels.csv`` in an image data set's folder (image paths relative to it)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"dataset {path} does not exist")
    if path.is_dir():
        if not (path / "labels.csv").is_file():
            raise InputError(f"dataset {path} is a folder without labels.csv; give the CSV file")
        path = path / "labels.csv"
    return path


def data_kind(path: Path, reader: csv.DictReader) -> DataKind:
    """``image`` for ``filename,label`` rows (no ``text``), else ``text``; a reader without a ``label`` column is
    refused."""
    fields = reader.fieldnames or []
    if "label" not in fields:
        raise InputError(f"dataset {path} has no 'label' column (columns: {', '.join(fields)})")
    return "image" if "filename" in fields and "text" not in fields else "text"


def dataset_labels(path: str | Path) -> tuple[list[str], DataKind]:
    """The sorted label set of a dataset :func:`load_csv` reads, and its data kind, from its ``label`` column alone
    (``labelagent policy init --from-csv``, ``bench.template``)."""
    path = dataset_file(path)
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        kind = data_kind(path, reader)
        labels = sorted({(row.get("label") or "").strip() for row in reader} - {""})
    if not labels:
        raise InputError(f"dataset {path} has no labeled rows")
    return labels, kind


def _load_images(path: Path, reader: csv.DictReader) -> list[LabeledItem]:
    """``filename,label`` rows; each file (relative to the CSV's folder) becomes the item's image bytes.

    The bytes are passed as they are: decoding (with limits) is the image tools' job. EXIF time and
    GPS become metadata when present.
    """
    from tools.images import decode_image, exif_metadata

    base = path.parent.resolve()
    out: list[LabeledItem] = []
    for n, row in enumerate(reader, start=1):
        label, name = (row.get("label") or "").strip(), (row.get("filename") or "").strip()
        if not label or not name:
            raise InputError(f"dataset {path}, row {n}: empty label or filename")
        file = (base / name).resolve()
        if not file.is_relative_to(base) or not file.is_file():
            raise InputError(f"dataset {path}, row {n}: image {name!r} is not a file inside {base}")
        data = file.read_bytes()
        meta: dict[str, object] = {"filename": name}
        with contextlib.suppress(InputError):  # undecodable: the image tools abstain on it with the reason
            meta.update(exif_metadata(decode_image(data)))
        out.append(LabeledItem(Item(f"row-{n:06d}", None, meta, data), label))
    if not out:
        raise InputError(f"dataset {path} has no rows")
    return out
