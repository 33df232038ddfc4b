"""The pipeline's layers (issue 19): a stage imports only what lies below the stages,
never another stage; the modules below them, and the tools that cut tiles or read
images as the pipeline does, import no stage; the wiring's streams are the edges."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

from batchsr.pipeline.wiring import Streams
from batchsr.vocab import EDGES, STAGES

ROOT = Path(__file__).resolve().parents[1]
STAGE_MODULES = {f"batchsr.pipeline.{stage}" for stage in STAGES}
BELOW_STAGES = ["batchsr/tiling.py", "batchsr/images.py", "batchsr/files.py"]
TOOLS = [
    "batchsr/resume.py",
    "batchsr/sample_tiles.py",
    "batchsr/metrics/folder.py",
    "compile/calibration.py",
]


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth (function-level imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def test_no_stage_imports_another_stage() -> None:
    crossings = [
        f"{stage} imports {other}"
        for stage in sorted(STAGE_MODULES)
        for other in sorted(_imports(ROOT / (stage.replace(".", "/") + ".py")) & STAGE_MODULES)
        if other != stage
    ]
    assert not crossings, "\n".join(crossings)


def test_modules_below_the_stages_and_the_tools_import_no_stage() -> None:
    crossings = [
        f"{path} imports {module}"
        for path in BELOW_STAGES + TOOLS
        for module in sorted(_imports(ROOT / path))
        if module.startswith("batchsr.pipeline")
    ]
    assert not crossings, "\n".join(crossings)


def test_the_streams_are_the_edges_in_pipeline_order() -> None:
    assert tuple(f.name for f in dataclasses.fields(Streams)) == EDGES
