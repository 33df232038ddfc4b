"""No function in ``batchsr/pipeline/`` is longer than 60 lines (issue 19): a stage or
the wiring that outgrows that is doing several things, and one of them belongs in a
helper, a class of its own, or a module below the stages."""

from __future__ import annotations

import ast
from pathlib import Path

PIPELINE = Path(__file__).resolve().parents[1] / "batchsr" / "pipeline"
MAX_LINES = 60


def _lengths(source: str) -> list[tuple[str, int, int]]:
    """``(name, def line, lines)`` of every function, methods and nested ones
    included, counted from the ``def`` line to the last line of its body."""
    return [
        (node.name, node.lineno, (node.end_lineno or node.lineno) - node.lineno + 1)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    ]


def test_no_pipeline_function_is_over_60_lines() -> None:
    too_long = [
        f"{path.name}:{line} {name} is {length} lines"
        for path in sorted(PIPELINE.glob("*.py"))
        for name, line, length in _lengths(path.read_text(encoding="utf-8"))
        if length > MAX_LINES
    ]
    assert not too_long, "\n".join(too_long)


def test_the_count_runs_from_the_def_line_to_the_last_line() -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    source = f"@decorator\nasync def long():\n{body}\n\ndef short():\n    pass\n"
    assert _lengths(source) == [("long", 2, MAX_LINES + 1), ("short", MAX_LINES + 4, 2)]
