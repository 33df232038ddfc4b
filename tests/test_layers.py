"""The layer map of docs/architecture.md, enforced: every module of batchsr and compile
has a layer, imports only modules of its own layer or below, and no pipeline stage
imports another stage. Read from the source (AST), so lazy imports inside functions
count too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Bottom to top. A module belongs to the layer of the longest prefix naming it.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "vocabulary and records",
        (
            "batchsr",
            "batchsr.vocab",
            "batchsr.errors",
            "batchsr.records",
            "batchsr.paths",
            "batchsr.logging",
            "batchsr.allocator",
            "batchsr.versions",
        ),
    ),
    (
        "pixels, files and models",
        (
            "batchsr.native",
            "batchsr.border",
            "batchsr.resample",
            "batchsr.color",
            "batchsr.filters",
            "batchsr.png",
            "batchsr.files",
            "batchsr.images",
            "batchsr.tiling",
            "batchsr.metrics",
            "batchsr.metrics.niqe",
            "batchsr.metrics.artifacts",
            "batchsr.lattice_loss",
            "batchsr.niqe_loss",
            "batchsr.models",
            "batchsr.manifest",
            "batchsr.tpumlir",
            "batchsr.bmodel_info",
        ),
    ),
    ("settings and engines", ("batchsr.config", "batchsr.resolve", "batchsr.engines")),
    (
        "stage support",
        (
            "batchsr.pipeline.stage",
            "batchsr.pipeline.budget",
            "batchsr.pipeline.stop",
            "batchsr.pipeline.background",
        ),
    ),
    (
        "stages",
        tuple(
            f"batchsr.pipeline.{s}"
            for s in ("decode", "tile", "infer", "stitch", "save", "score", "report")
        ),
    ),
    (
        "assembly",
        (
            "batchsr.pipeline",
            "batchsr.pipeline.wiring",
            "batchsr.pipeline.geometry",
            "batchsr.pipeline.run",
            "batchsr.resume",
        ),
    ),
    (
        "tools",
        (
            "batchsr.analysis",
            "batchsr.timeline",
            "batchsr.tune",
            "batchsr.sample_tiles",
            "batchsr.selfcheck",
            "batchsr.cluster",
        ),
    ),
    ("compile and folder scoring", ("compile", "batchsr.metrics.folder")),
    ("training", ("batchsr.train",)),
    ("command line", ("batchsr.cli",)),
)
STAGES = "stages"


def _modules() -> dict[str, Path]:
    found = {}
    for folder in ("batchsr", "compile"):
        for path in (ROOT / folder).rglob("*.py"):
            if "py310" in path.parts:  # scripts for tpu-mlir's Python 3.10, run by path
                continue
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _layer(module: str) -> tuple[int, str]:
    best: tuple[int, int, str] | None = None  # (prefix length, index, layer name)
    for index, (layer, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            named = module == prefix or module.startswith(prefix + ".")
            if named and (best is None or len(prefix) > best[0]):
                best = (len(prefix), index, layer)
    if best is None:
        raise LookupError(module)
    return best[1], best[2]


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The batchsr/compile modules ``path`` imports (a package import counts as its
    ``__init__``; ``from pkg import mod`` as ``pkg.mod``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*up, *([base] if base else [])])
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        out |= {t for t in targets if t in known}
    out.discard(name)
    return out


def _violations() -> list[str]:
    modules = _modules()
    known = set(modules)
    problems = []
    for name, path in sorted(modules.items()):
        own, own_layer = _layer(name)
        for target in sorted(_imports(name, path, known)):
            theirs, their_layer = _layer(target)
            if theirs > own:
                problems.append(f"{name} ({own_layer}) imports {target} ({their_layer}), above it")
            elif theirs == own and own_layer == STAGES:
                problems.append(f"stage {name} imports stage {target}")
    return problems


def test_every_module_has_a_layer() -> None:
    unplaced = []
    for name in _modules():
        try:
            _layer(name)
        except LookupError:
            unplaced.append(name)
    assert not unplaced, f"add these to LAYERS and docs/architecture.md: {unplaced}"


def test_no_module_imports_one_above_it_and_no_stage_another() -> None:
    problems = _violations()
    assert not problems, "\n".join(problems)


def test_the_check_sees_an_upward_and_a_sideways_import(tmp_path: Path) -> None:
    sideways = tmp_path / "infer.py"
    sideways.write_text("from batchsr.pipeline.stitch import x\nimport batchsr.cli\n")
    known = {"batchsr.pipeline.stitch", "batchsr.cli"}
    found = _imports("batchsr.pipeline.infer", sideways, known)
    assert found == known
    assert _layer("batchsr.pipeline.stitch") == _layer("batchsr.pipeline.infer")
    assert _layer("batchsr.cli.render")[0] > _layer("batchsr.pipeline.infer")[0]


def test_the_map_in_the_docs_names_every_layer() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    missing = [layer for layer, _ in LAYERS if layer not in text]
    if missing:
        pytest.fail(f"docs/architecture.md does not describe layers {missing}")
