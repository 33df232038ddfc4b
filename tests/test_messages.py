"""The library speaks in settings, not flags: no string in batchsr/ or compile/ outside
the command-line modules names a flag of ours. Flags of other programs (tpu-mlir's
model_tool, pip, ray) and whole commands for the user to copy (``python -m ...``) are
theirs to name."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9_-]*")
#: Other programs' flags that messages may tell the user to use or avoid.
FOREIGN = {"--info", "--head", "--force-reinstall", "--quant_input", "--quant_output"}


#: Modules whose words are the command line's: the CLIs, and TRAINING.md's record of the
#: training command that made a model.
CLI_WORDS = ("batchsr/cli/", "__main__.py", "batchsr/train/report.py")


def _is_cli(rel: str) -> bool:
    return "py310" in rel or any(rel.startswith(c) or rel.endswith(c) for c in CLI_WORDS)


def _docstrings(tree: ast.AST) -> set[int]:
    kinds = (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    return {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, kinds)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }


def flag_mentions(source: str) -> list[tuple[int, str]]:
    """(line, flag) for each of our flags a non-docstring string names; a string that
    is a flag alone is an argv element for another program, not words."""
    tree = ast.parse(source)
    skip = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):  # an f-string reads as its literal parts
            parts = [v for v in node.values if isinstance(v, ast.Constant)]
            skip |= {id(v) for v in parts}
            text = "".join(str(v.value) for v in parts)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
        else:
            continue
        if id(node) in skip or FLAG.fullmatch(text.strip()) or "python -m " in text:
            continue
        found += [(node.lineno, f) for f in FLAG.findall(text) if f not in FOREIGN]
    return found


def test_library_messages_name_no_flag() -> None:
    mentions = [
        f"{rel}:{line} names {flag}"
        for folder in ("batchsr", "compile")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if not _is_cli(rel := path.relative_to(ROOT).as_posix())
        for line, flag in flag_mentions(path.read_text())
    ]
    assert not mentions, "\n".join(mentions)


def test_the_scan_finds_a_flag_in_a_message_but_not_in_argv_or_docs() -> None:
    source = '"""Use --tile."""\nraise E(f"--tile {n} too small")\nargv = ["--mlir", x]\n'
    assert flag_mentions(source) == [(2, "--tile")]
