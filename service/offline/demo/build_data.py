"""Build the demo's shipped dataset, ``service/offline/demo/data/sms_spam_demo.csv.gz``, from the SMS Spam Collection.

    python -m service.offline.demo.build_data path/to/sms_spam.csv

A seeded sample of :data:`ROWS` messages (the canonical file has 5,574; the package ships this subset, never the
whole file) in a seeded random order, which is the demo's stream order, as ``text,label`` CSV, gzipped without a
timestamp so the same input gives the same bytes. Source, authors and license: ``data/LICENSE-sms_spam.txt``.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import random
from pathlib import Path

ROWS = 3000
SEED = 19
OUT = Path(__file__).resolve().parent / "data" / "sms_spam_demo.csv.gz"


def build(source: Path, out: Path = OUT, *, rows: int = ROWS, seed: int = SEED) -> int:
    with source.open(newline="", encoding="utf-8") as f:
        records = [(r["text"], r["label"]) for r in csv.DictReader(f)]
    if len(records) < rows:
        raise SystemExit(f"{source} has {len(records)} rows; the demo needs {rows}")
    sample = random.Random(seed).sample(records, rows)  # a uniform sample, in a random order
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["text", "label"])
    writer.writerows(sample)
    with out.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        gz.write(text.getvalue().encode("utf-8"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="sms_spam.csv (columns text,label)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    print(f"wrote {build(args.source, args.out)} rows to {args.out}")


if __name__ == "__main__":
    main()
