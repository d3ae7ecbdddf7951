"""The project's size rules (issue 13): no module over 400 lines and no function over 60 lines, outside the
schema migrations (generated scripts). Counted as the lines a file or a ``def`` spans, docstrings included."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("agent", "tools", "policies", "service", "bench")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def _modules() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py")
                  if "migrations" not in p.relative_to(ROOT).parts)


def _too_long(path: Path, root: Path = ROOT) -> list[str]:
    text = path.read_text(encoding="utf-8")
    name = path.relative_to(root).as_posix()
    found = []
    lines = text.count("\n") + (not text.endswith("\n"))
    if lines > MAX_MODULE_LINES:
        found.append(f"{name}: {lines} lines")
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            span = (node.end_lineno or node.lineno) - start + 1
            if span > MAX_FUNCTION_LINES:
                found.append(f"{name}:{node.lineno} {node.name}: {span} lines")
    return found


def test_the_checker_sees_long_functions_and_modules(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    long_def = tmp_path / "long.py"
    long_def.write_text(f"def f():\n{body}\n" + "\n" * MAX_MODULE_LINES)
    assert _too_long(long_def, tmp_path) == [f"long.py: {MAX_FUNCTION_LINES + 1 + MAX_MODULE_LINES} lines",
                                             f"long.py:1 f: {MAX_FUNCTION_LINES + 1} lines"]
    long_def.write_text(f"def f():\n{body[:body.rindex(chr(10))]}\n")
    assert _too_long(long_def, tmp_path) == []


def test_no_module_over_400_lines_and_no_function_over_60() -> None:
    modules = _modules()
    assert len(modules) > 100  # the walk found the code
    assert [hit for path in modules for hit in _too_long(path)] == []
