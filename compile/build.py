"""From a zoo model or checkpoint to a model folder: ONNX, bmodel (or its script) or INT8
ONNX, manifest.

``compile_model`` validates everything first (target, model, shapes, quantize,
calibration images, filter), then exports and checks the ONNX. For the ``bm1684x``
target it writes the form of it that tpu-mlir reads, the test and calibration npz
files, and either runs tpu-mlir (the environment ``batchsr.tpumlir.find_tpu_mlir``
finds) or writes ``build_bmodel.sh``; for ``onnx-int8`` it quantizes the ONNX for
onnxruntime (``compile.onnx_int8``).
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass, replace
from itertools import islice
from pathlib import Path

import numpy as np
import structlog
from numpy.typing import NDArray

from batchsr.bmodel_info import read_bmodel_info
from batchsr.errors import ConfigError, ModelError, setting
from batchsr.manifest import (
    MANIFEST_NAME,
    Artifact,
    Manifest,
    file_artifact,
    load_manifest,
    write_manifest,
)
from batchsr.models import SRModel, get_arch, load_checkpoint
from batchsr.models.info import ModelInfo
from batchsr.sample_tiles import iter_tiles
from batchsr.tpumlir import TpuMlir, find_tpu_mlir
from batchsr.vocab import COMPILE_TARGETS, NCHW, QUANTIZE
from compile.calibration import (
    calibration_images,
    synthetic_input,
    write_calibration,
    write_test_input,
)
from compile.model_folder import (
    PENDING_NOTES,
    FolderOnnx,
    python_tools,
    write_model_folder,
    write_onnx,
)
from compile.onnx import for_tpu_mlir
from compile.onnx_int8 import Int8Onnx, calibration_batches, int8_name, quantize_onnx_int8
from compile.plan import WORK_DIR, CompilePlan, bmodel_name, make_plan, shape_tag
from compile.tpu_mlir import run_plan, stage_facts, write_script

__all__ = [
    "CompileResult",
    "check_shape",
    "compile_command",
    "compile_model",
    "load_model",
    "parse_shape",
    "python_tools",
    "register_bmodel",
]

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class CompileResult:
    """What ``compile_model`` produced.

    Attributes:
        folder: the model folder.
        manifest: its manifest.
        plan: the tpu-mlir plan (None for the onnx-int8 target).
        bmodel: the built bmodel, or None when only the script was written.
        script: ``build_bmodel.sh`` when no tpu-mlir environment was found, else None.
        int8: the INT8 ONNX the onnx-int8 target built, else None.
    """

    folder: Path
    manifest: Manifest
    plan: CompilePlan | None
    bmodel: Path | None
    script: Path | None
    int8: Int8Onnx | None = None


def parse_shape(text: str) -> NCHW:
    """``"1x3x128x128"`` -> ``(1, 3, 128, 128)``.

    Raises:
        ConfigError: not four positive integers joined by ``x``.
    """
    parts = text.lower().split("x")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 4 or min(values) <= 0:
        raise ConfigError(f"shape {text!r} is not NxCxHxW with positive integers")
    n, c, h, w = values
    return (n, c, h, w)


def load_model(spec: str, *, models_dir: Path = MODELS_DIR) -> SRModel:
    """Load MODEL: a checkpoint path, a model folder name/path, or a zoo architecture id.

    A model folder is loaded from its safetensors artifact; an architecture id builds
    the network with its default hyperparameters and seeded random weights (for
    smoke builds and tests).

    Raises:
        ModelError: none of these matches ``spec``.
    """
    path = Path(spec)
    if path.is_file():
        return load_checkpoint(path)
    folder = path if path.is_dir() else models_dir / spec
    if (folder / "manifest.json").is_file():
        weights = load_manifest(folder).artifact("safetensors")
        if weights is None:
            raise ModelError(f"model folder {folder} has no safetensors artifact to compile from")
        return load_checkpoint(folder / weights.path)
    try:
        arch = get_arch(spec)
    except ModelError as err:
        raise ModelError(
            f"unknown model {spec!r}: not a checkpoint file, not a model folder under "
            f"{models_dir}, and not a zoo architecture ({err})"
        ) from err
    import torch

    torch.manual_seed(0)
    return arch.create()


def check_shape(shape: NCHW, info: ModelInfo) -> None:
    """Raise ConfigError when the model cannot take ``shape``."""
    _n, c, h, w = shape
    if c != info.in_channels:
        raise ConfigError(
            f"shape {shape_tag(shape)} has {c} channels; {info.architecture} takes "
            f"{info.in_channels}"
        )
    m = info.size_multiple
    if h % m or w % m:
        raise ConfigError(
            f"shape {shape_tag(shape)}: height and width must be multiples of {m} for "
            f"{info.architecture}"
        )
    if min(h, w) <= 2 * info.margin:
        raise ConfigError(
            f"shape {shape_tag(shape)}: tiles must be larger than twice the model's margin "
            f"({info.margin}) to leave a core"
        )


def compile_model(
    spec: str,
    out: Path,
    *,
    shapes: Sequence[NCHW],
    quantize: str,
    calibration: Path | None = None,
    filter_name: str | None = None,
    name: str | None = None,
    input_num: int = 100,
    models_dir: Path = MODELS_DIR,
    use_tools: bool = True,
    tpu_mlir: TpuMlir | None = None,
    target: str = "bm1684x",
) -> CompileResult:
    """Build the model folder ``out`` for ``spec``.

    Args:
        spec: zoo name (model folder or architecture id) or checkpoint path.
        out: the model folder to write.
        shapes: static NCHW tile shapes, one bmodel stage each; for onnx-int8, the
            tile batches calibration cuts (the INT8 ONNX takes any N, H and W).
        quantize: F32, F16, BF16 or INT8 (onnx-int8: INT8 only).
        calibration: folder of images for INT8 calibration (required for INT8).
        filter_name: a PIL filter to embed after the network (``batchsr.filters``).
        name: model and net name; defaults to ``out``'s folder name.
        input_num: calibration samples per shape.
        models_dir: where zoo model folders live.
        use_tools: run tpu-mlir if an environment is found; False always writes the
            script.
        tpu_mlir: the environment to run; None looks for one (``find_tpu_mlir``).
        target: ``bm1684x`` (bmodels with tpu-mlir) or ``onnx-int8`` (an INT8 QDQ
            ONNX for onnxruntime, ``NAME_int8.onnx``, beside the float one).

    Raises:
        ConfigError: bad target, shapes, quantize, calibration or filter (before any
            file is written).
        ModelError: ``spec`` cannot be resolved or loaded.
        CompileError: export, check, quantization or a tpu-mlir step fails.
    """
    # --- validate everything before writing anything (issue item 5) ---
    if target not in COMPILE_TARGETS:
        raise ConfigError(
            f"unknown {setting('target', target)}; choose one of {', '.join(COMPILE_TARGETS)}"
        )
    if quantize not in QUANTIZE:
        raise ConfigError(f"unknown quantize {quantize!r}; choose one of {', '.join(QUANTIZE)}")
    if target == "onnx-int8" and quantize != "INT8":
        raise ConfigError(
            f"{setting('target', target)} builds an INT8 ONNX, not {quantize}: use "
            f"{setting('quantize', 'INT8')}, or {setting('target', 'bm1684x')} for a "
            f"{quantize} bmodel"
        )
    if quantize == "INT8" and calibration is None:
        raise ConfigError("INT8 needs a folder of images to calibrate on (`calibration`)")
    images = calibration_images(calibration) if calibration is not None else []
    if input_num <= 0:
        raise ConfigError(f"{setting('input_num', input_num)}: must be positive")
    model = load_model(spec, models_dir=models_dir)
    if filter_name is not None:
        from batchsr.models.postprocess import with_filter

        model = with_filter(model, filter_name)  # ConfigError for an unknown name
    info = model.info
    for shape in shapes:
        check_shape(shape, info)
    command = compile_command(
        spec, out, shapes, quantize, calibration, filter_name, name, input_num, target
    )
    name = name or out.resolve().name
    if target == "onnx-int8":
        # Cut before anything is written: too small images are refused like bad flags.
        batches = calibration_batches(
            images, shapes, pad=info.margin, scale=info.scale, limit=input_num
        )
        log.info(
            "compile.start",
            model=spec,
            out=str(out),
            target=target,
            shapes=[shape_tag(s) for s in shapes],
        )
        return _compile_onnx_int8(model, out, name, shapes, batches, filter_name, command)
    plan = _tpu_plan(name, shapes, quantize, input_num)
    if images:
        for shape in shapes:
            if next(iter_tiles(images[:1], shape, pad=info.margin, scale=info.scale), None) is None:
                raise ConfigError(f"calibration images give no tile of {shape_tag(shape)}")
    log.info(
        "compile.start",
        model=spec,
        out=str(out),
        shapes=[shape_tag(s) for s in shapes],
        quantize=quantize,
        filter=filter_name,
    )

    # --- ONNX: dynamic N/H/W, checked against torch on every requested shape ---
    onnx, previous = _float_onnx(model, out, name, shapes)

    _write_tpu_inputs(onnx.path, out / WORK_DIR, plan, images, info, input_num)
    found = (tpu_mlir or find_tpu_mlir()) if use_tools else None
    bmodel: Path | None = None
    script: Path | None = None
    more: list[Artifact] = []
    tools: dict[str, str] = {}
    if found is not None:
        tools["tpu-mlir"] = found.version
        log.info("compile.tpu_mlir", source=found.source, version=found.version)
        bmodel, stages = run_plan(plan, out, found)
        more.append(
            file_artifact(
                bmodel,
                "bmodel",
                tuple(plan.shapes),
                quantize=quantize,
                stages=stages,
                command=command,
            )
        )
        notes = f"bmodel built by tpu-mlir for {quantize} at {', '.join(map(shape_tag, shapes))}."
    else:
        rerun = _register_command(out, name, quantize, shapes)
        script = write_script(plan, out, rerun=rerun)
        notes = (
            f"{PENDING_NOTES}: no tpu-mlir environment was found; run {script.name} where "
            f"it is (`make tpu-env`, or Python 3.10 with requirements-tpu-mlir.txt), then "
            f"`{rerun}`."
        )
        log.info("compile.script", path=str(script))
    # Adding to an existing model folder: its other artifacts (weights, other bmodels)
    # and its provenance notes stay; same-named files are replaced.
    manifest = write_model_folder(
        out,
        name,
        onnx,
        more=more,
        postprocess=filter_name,
        tools=tools,
        notes=notes,
        previous=previous,
    )
    return CompileResult(folder=out, manifest=manifest, plan=plan, bmodel=bmodel, script=script)


def _tpu_plan(
    name: str, shapes: Sequence[NCHW], quantize: str, input_num: int = 100
) -> CompilePlan:
    """The tpu-mlir steps for model ``name``. A build and a later ``--register`` of its
    bmodel must plan alike (the stage facts are read from the plan's work folder), so
    both name the TPU ONNX here."""
    return make_plan(
        model_name=name,
        onnx=f"{name}_tpu.onnx",
        shapes=shapes,
        quantize=quantize,
        input_num=input_num,
    )


def _float_onnx(
    model: SRModel, out: Path, name: str, shapes: Sequence[NCHW]
) -> tuple[FolderOnnx, Manifest | None]:
    """The folder's float ONNX, checked against torch on every shape, and the manifest
    already in ``out`` (None for a new folder).

    A model folder that already ships an ONNX (models/espcn) keeps it: the bmodel is
    built from the very file the onnx backend runs, once it is shown to be this model.
    """
    out.mkdir(parents=True, exist_ok=True)
    previous = load_manifest(out) if (out / MANIFEST_NAME).is_file() else None
    onnx_path, reuse = out / f"{name}.onnx", False
    shipped = previous.artifact("onnx") if previous is not None else None
    if shipped is not None and (out / shipped.path).is_file():
        onnx_path, reuse = out / shipped.path, True
    onnx = write_onnx(model, onnx_path, check_shapes=shapes, reuse=reuse)
    log.info("compile.onnx", path=str(onnx.path), max_abs_diff=onnx.max_abs_diff)
    return onnx, previous


def _compile_onnx_int8(
    model: SRModel,
    out: Path,
    name: str,
    shapes: Sequence[NCHW],
    batches: Sequence[NDArray[np.float32]],
    filter_name: str | None,
    command: str,
) -> CompileResult:
    """The onnx-int8 target: the float ONNX and its INT8 QDQ form, both in the manifest."""
    onnx, previous = _float_onnx(model, out, name, shapes)
    # Named for the file it quantizes: models/espcn's espcn.onnx -> espcn_int8.onnx.
    int8 = quantize_onnx_int8(onnx.path, out / int8_name(onnx.path.stem), batches)
    log.info(
        "compile.onnx_int8",
        path=str(int8.path),
        samples=int8.samples,
        psnr_db=round(int8.psnr_db, 2),
        prelu_rewritten=int8.rewritten,
    )
    artifact = file_artifact(
        int8.path,
        "onnx",
        onnx.shapes,
        quantize="INT8",
        command=command,
        quant_psnr_db=round(int8.psnr_db, 2),
    )
    # The float ONNX stays the folder's first onnx artifact, the one a run picks unless
    # it asks for INT8 (`model.quantize`).
    notes = (
        f"INT8 ONNX by onnxruntime's static quantization, calibrated on {int8.samples} "
        f"tile batches: {int8.psnr_db:.1f} dB against the float ONNX on them."
    )
    manifest = write_model_folder(
        out, name, onnx, more=[artifact], postprocess=filter_name, notes=notes, previous=previous
    )
    return CompileResult(
        folder=out, manifest=manifest, plan=None, bmodel=None, script=None, int8=int8
    )


def _write_tpu_inputs(
    onnx_path: Path,
    work: Path,
    plan: CompilePlan,
    images: list[Path],
    info: ModelInfo,
    input_num: int,
) -> None:
    """tpu-mlir's ONNX, test inputs and (INT8) calibration npz in the work folder."""
    for_tpu_mlir(onnx_path, work / plan.onnx)
    shapes = plan.shapes
    for shape, inp in zip(shapes, plan.test_inputs, strict=True):
        if images:
            n = shape[0]
            tiles = list(islice(iter_tiles(images, shape, pad=info.margin, scale=info.scale), n))
            while len(tiles) < n:  # too few tiles: repeat (still real pixels)
                tiles.append(tiles[len(tiles) % max(1, len(tiles))])
            x = np.stack(tiles)
        else:
            x = synthetic_input(shape)
        write_test_input(x, work / inp)
    for shape, cali in zip(shapes, plan.calibration_dirs, strict=False):  # INT8 only
        count = write_calibration(
            images, work / cali, shape, pad=info.margin, scale=info.scale, limit=input_num
        )
        log.info("compile.calibration", shape=shape_tag(shape), samples=count)


def register_bmodel(
    out: Path, *, quantize: str, shapes: Sequence[NCHW], tpu_mlir: TpuMlir | None = None
) -> Manifest:
    """Add a bmodel built by ``build_bmodel.sh`` to the folder's manifest.

    The cost-model figures come from the profiles the script kept; the tpu-mlir
    version from ``tpu_mlir`` (the environment that ran the script), if given.

    Raises:
        ModelError: the folder has no manifest or no bmodel file.
    """
    manifest = load_manifest(out)
    path = out / bmodel_name(manifest.name, quantize)
    if not path.is_file():
        raise ModelError(f"{path} does not exist; run {out / 'build_bmodel.sh'} first")
    kept = tuple(a for a in manifest.artifacts if a.path != path.name)
    if tpu_mlir is not None:
        # The bmodel must hold exactly the stages being registered.
        held = sorted(s for _, s in read_bmodel_info(path, tpu_mlir).stage_shapes())
        if held != sorted(shapes):
            raise ModelError(
                f"{path} holds stages {[shape_tag(s) for s in held]}, not the "
                f"shapes given (`shapes`: {[shape_tag(s) for s in shapes]})"
            )
    plan = _tpu_plan(manifest.name, shapes, quantize)
    art = file_artifact(
        path,
        "bmodel",
        tuple(shapes),
        quantize=quantize,
        stages=stage_facts(plan, out / WORK_DIR),
        command=f"{out / 'build_bmodel.sh'}",
    )
    version = tpu_mlir.version if tpu_mlir is not None else "unknown (built by build_bmodel.sh)"
    tools = {**dict(manifest.tools), "tpu-mlir": version}
    updated = replace(
        manifest,
        artifacts=(*kept, art),
        tools=tuple(sorted(tools.items())),
        notes=f"bmodel built by build_bmodel.sh for {quantize}.",
    )
    write_manifest(out, updated)
    return updated


def compile_command(
    spec: str,
    out: Path,
    shapes: Sequence[NCHW],
    quantize: str,
    calibration: Path | None,
    filter_name: str | None,
    name: str | None,
    input_num: int,
    target: str = "bm1684x",
) -> str:
    """The ``python -m compile`` command line that builds this folder again."""
    argv = ["python", "-m", "compile", spec]
    for s in shapes:
        argv += ["--shape", shape_tag(s)]
    if target != "bm1684x":
        argv += ["--target", target]
    argv += ["--quantize", quantize]
    if calibration is not None:
        argv += ["--calibration", str(calibration), "--input-num", str(input_num)]
    if filter_name is not None:
        argv += ["--filter", filter_name]
    if name is not None:
        argv += ["--name", name]
    return shlex.join([*argv, "--out", str(out)])


def _register_command(out: Path, name: str, quantize: str, shapes: Sequence[NCHW]) -> str:
    argv = ["python", "-m", "compile", "--register", "--quantize", quantize]
    for s in shapes:
        argv += ["--shape", shape_tag(s)]
    return shlex.join([*argv, "--out", str(out)])
