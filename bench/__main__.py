"""``python -m bench [MODULE [options]]``: every benchmark module in turn, or the one named (with its options)."""

from __future__ import annotations

import importlib
import sys
import time
from collections.abc import Sequence

# Each is ``bench.<name>`` with ``main(argv) -> int`` that writes its section of docs/BENCHMARKS.md.
MODULES: tuple[str, ...] = ("service", "quality", "throughput", "encoders", "scale")
ON_REQUEST: tuple[str, ...] = ("hostile", "mixtures")  # run only when named (``python -m bench hostile``)


def run(name: str, argv: Sequence[str]) -> int:
    module = importlib.import_module(f"bench.{name}")
    started = time.perf_counter()
    print(f"bench: {name}", flush=True)
    code = int(module.main(list(argv)))
    print(f"bench: {name} done in {time.perf_counter() - started:.0f}s (exit {code})", flush=True)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help"):
        print(__doc__)
        print("modules: " + ", ".join(MODULES))
        return 0
    if not args:
        return max((run(name, []) for name in MODULES), default=0)
    name, rest = args[0], args[1:]
    if name not in MODULES + ON_REQUEST:
        print(f"bench: unknown module {name!r}; one of: {', '.join(MODULES)} (options go after the module's name)",
              file=sys.stderr)
        return 2
    return run(name, rest)


if __name__ == "__main__":
    raise SystemExit(main())
