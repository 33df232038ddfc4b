"""The shared vocabulary is spelled once: config tables, CLI choices and the pipeline's
wiring read ``batchsr.vocab``, and no other module re-spells one of its value sets."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path
from typing import get_args

import batchsr.vocab as vocab
from batchsr.config import Config, QueueConfig, WorkerConfig, load_config
from batchsr.errors import ConfigError
from batchsr.vocab import EDGES, INPUT_EDGE, MULTI_WORKER_STAGES, STAGES, TILE_MODES

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [
    p
    for folder in ("batchsr", "compile")
    for p in (ROOT / folder).rglob("*.py")
    if "py310" not in p.parts and p.name != "vocab.py"
]
SOURCES.append(ROOT / "run.py")


def _value_sets() -> dict[frozenset[str], str]:
    """Every closed set the vocabulary names (two or more values), by its values."""
    sets: dict[frozenset[str], str] = {}
    for name in vocab.__all__:
        values = getattr(vocab, name)
        args = get_args(values)
        if args and all(isinstance(a, str) for a in args) and len(args) > 1:
            sets[frozenset(args)] = name
    return sets


def _literal_sets(tree: ast.AST) -> list[tuple[int, frozenset[str]]]:
    """String sets spelled in source: ``Literal[...]`` and tuple/list/set displays."""
    found = []
    for node in ast.walk(tree):
        elts: list[ast.expr] = []
        if isinstance(node, ast.Subscript) and getattr(node.value, "id", "") == "Literal":
            # Literal["a", "b"] is itself a tuple display, seen once below.
            if not isinstance(node.slice, ast.Tuple):
                elts = [node.slice]
        elif isinstance(node, ast.Tuple | ast.List | ast.Set):
            elts = list(node.elts)
        if len(elts) > 1 and all(
            isinstance(e, ast.Constant) and isinstance(e.value, str) for e in elts
        ):
            found.append((node.lineno, frozenset(e.value for e in elts)))  # type: ignore[attr-defined]
    return found


def test_no_module_respells_a_vocabulary_set() -> None:
    sets = _value_sets()
    clashes = [
        f"{path.relative_to(ROOT)}:{line} re-spells vocab.{sets[values]}"
        for path in SOURCES
        for line, values in _literal_sets(ast.parse(path.read_text()))
        if values in sets
    ]
    assert not clashes, "\n".join(clashes)


def test_the_scan_sees_a_respelled_set() -> None:
    source = 'MODES = ("crop", "plain", "average", "blend")\nX: Literal["cpu", "cuda"]\n'
    sets = _value_sets()
    found = [values for _, values in _literal_sets(ast.parse(source)) if values in sets]
    assert len(found) == 2


def test_config_tables_are_the_vocabulary() -> None:
    assert tuple(f.name for f in dataclasses.fields(QueueConfig)) == EDGES
    # The worker counts, then the one setting that is not a count.
    counts = tuple(f.name for f in dataclasses.fields(WorkerConfig))
    assert counts == (*MULTI_WORKER_STAGES, "background_nice")
    assert set(MULTI_WORKER_STAGES) < set(STAGES)
    assert [INPUT_EDGE[s] for s in STAGES] == list(EDGES)


def test_the_wiring_streams_are_the_edges_in_pipeline_order() -> None:
    from batchsr.pipeline.wiring import Streams

    assert tuple(f.name for f in dataclasses.fields(Streams)) == EDGES


def test_config_literals_refuse_values_outside_the_vocabulary() -> None:

    assert load_config(overrides={"tiling.mode": TILE_MODES[-1]}).tiling.mode == "blend"
    for key, bad in (
        ("tiling.mode", "stretch"),
        ("model.backend", "tensorrt"),
        ("output.filter", "BLUR"),
        ("output.ext", "gif"),
        ("model.quantize", "INT4"),
    ):
        try:
            load_config(overrides={key: bad})
        except ConfigError as err:
            assert bad in str(err)
        else:
            raise AssertionError(f"{key} = {bad!r} was accepted")
    assert isinstance(Config(), Config)


def test_cli_choices_are_the_vocabulary() -> None:
    from batchsr.cli.upscale import build_parser

    choices = {a.dest: tuple(a.choices) for a in build_parser()._actions if a.choices is not None}
    assert choices["backend"] == vocab.BACKENDS
    assert choices["device"] == vocab.DEVICES
    assert choices["tile_mode"] == TILE_MODES
    assert choices["border"] == vocab.BORDER_MODES
    assert choices["ext"] == vocab.OUTPUT_EXTS
    assert tuple(choices["filter"]) == vocab.FILTER_NAMES
    assert choices["quantize"] == vocab.QUANTIZE


def test_quantize_flag_takes_either_case_and_sets_model_quantize() -> None:
    from batchsr.cli.flags import overrides_from
    from batchsr.cli.upscale import build_parser

    args = build_parser().parse_args(["--input", "x", "--quantize", "int8"])
    assert overrides_from(args)["model.quantize"] == "INT8"
    assert load_config(overrides=overrides_from(args)).model.quantize == "INT8"
    assert load_config().model.quantize is None


def test_compile_cli_choices_are_the_vocabulary() -> None:
    from compile.__main__ import _parser

    choices = {a.dest: tuple(a.choices) for a in _parser()._actions if a.choices is not None}
    assert choices["target"] == vocab.COMPILE_TARGETS
    assert choices["quantize"] == vocab.QUANTIZE
