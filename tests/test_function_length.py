"""No library function is longer than 80 lines: long functions hide the faults a reader should
see. Flat tables (argument lists, validation rows) may be exempted here, each with its reason."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "effnet"
LIMIT = 80
# "module path:function" -> why a longer body is still one flat table.
EXEMPT: dict[str, str] = {}


def long_functions() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                key = f"{path.relative_to(PACKAGE.parent).as_posix()}:{node.name}"
                if length > LIMIT and key not in EXEMPT:
                    found.append(f"{key} ({length} lines)")
    return found


def test_no_library_function_over_80_lines():
    assert long_functions() == []


def test_exemptions_are_still_needed():
    # An exemption whose function shrank (or vanished) is removed, so the list stays honest.
    for key in EXEMPT:
        file, name = key.split(":")
        tree = ast.parse((PACKAGE.parent / file).read_text())
        lengths = [
            n.end_lineno - n.lineno + 1
            for n in ast.walk(tree)
            if isinstance(n, ast.FunctionDef) and n.name == name
        ]
        assert lengths and max(lengths) > LIMIT, f"{key} no longer needs its exemption"
