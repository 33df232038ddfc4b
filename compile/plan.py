"""A frozen plan of the tpu-mlir steps that turn an ONNX file into one BM1684X bmodel.

Pure: builds command lines as tuples of strings and names the files each step
produces; nothing here touches the disk or runs anything (see ``compile.tpu_mlir``).
Every path in a step is relative to the plan's work folder (``tpu-mlir/`` inside the
model folder), which is the working directory the commands run in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from batchsr.errors import ConfigError
from batchsr.vocab import NCHW, QUANTIZE

__all__ = [
    "CHIP",
    "DEPLOY_PROFILE",
    "TOLERANCE",
    "WORK_DIR",
    "CompilePlan",
    "Step",
    "bmodel_name",
    "make_plan",
    "shape_tag",
]

# BM1684X only: F16/BF16 do not exist on BM1684 (reference 1.6).
CHIP = "bm1684x"
WORK_DIR = "tpu-mlir"
# What model_deploy names its cost-model report, in its working folder.
DEPLOY_PROFILE = "compiler_profile_0.txt"
# Passed explicitly because the default changed between releases (0.8,0.5 in the
# stored repo, per-type in 1.30.2); these are 1.30.2's per-type defaults (ref. 1.4).
TOLERANCE: dict[str, str] = {
    "F32": "0.99,0.99",
    "F16": "0.99,0.90",
    "BF16": "0.99,0.90",
    "INT8": "0.90,0.80",
}


@dataclass(frozen=True, slots=True)
class Step:
    """One tpu-mlir command.

    Attributes:
        tool: the tool's name as run (``model_transform.py``, ``model_tool``, ...).
        argv: the whole command line, ``argv[0] == tool``.
        outputs: files it must leave behind, relative to the work folder.
        profile: for a deploy, the name its ``compiler_profile_0.txt`` (the cost
            model's cycle count for one call) is moved to before the next deploy
            overwrites it.
    """

    tool: str
    argv: tuple[str, ...]
    outputs: tuple[str, ...]
    profile: str | None = None


@dataclass(frozen=True, slots=True)
class CompilePlan:
    """The steps that build one (possibly combined) bmodel.

    Attributes:
        model_name: ``--model_name`` of every transform: the net name inside the
            bmodel; the same for every shape so that ``model_tool --combine`` makes
            one net with one stage per shape (reference 1.5).
        onnx: the ONNX file, relative to the work folder.
        quantize: F32, F16, BF16 or INT8.
        shapes: the static NCHW shapes, one stage each.
        steps: the commands, in order.
        bmodel: the final bmodel, relative to the work folder.
        test_inputs: per shape, the ``input`` npz the transform and deploy validate on.
        test_references: per shape, the top-level MLIR's outputs on that input, which
            the transform writes after checking them against onnxruntime, and which
            deploy compares the TPU-level MLIR with (the names are the MLIR's own
            tensor names, e.g. ``output_DepthToSpace``, so an npz of ours keyed
            ``output`` would match nothing).
        profiles: per shape, the cost-model report deploy leaves beside its bmodel
            (``compiler_profile_0.txt``, moved to this name after each deploy).
        calibration_dirs: per shape, the npz folder run_calibration reads (INT8 only).
    """

    model_name: str
    onnx: str
    quantize: str
    shapes: tuple[NCHW, ...]
    steps: tuple[Step, ...]
    bmodel: str
    test_inputs: tuple[str, ...]
    test_references: tuple[str, ...]
    calibration_dirs: tuple[str, ...]
    profiles: tuple[str, ...] = ()


def _elements(shape: NCHW) -> int:
    n, c, h, w = shape
    return n * c * h * w


def shape_tag(shape: NCHW) -> str:
    """``1x3x128x128`` for ``(1, 3, 128, 128)``."""
    return "x".join(str(v) for v in shape)


def bmodel_name(model_name: str, quantize: str) -> str:
    """File name of the final bmodel in the model folder."""
    return f"{model_name}_{CHIP}_{quantize.lower()}.bmodel"


def make_plan(
    *,
    model_name: str,
    onnx: str,
    shapes: Sequence[NCHW],
    quantize: str,
    input_num: int = 100,
) -> CompilePlan:
    """Plan transform -> (calibration) -> deploy per shape, then combine.

    Args:
        model_name: the net name (see :class:`CompilePlan`).
        onnx: the ONNX file name relative to the work folder, in a form tpu-mlir's
            onnx 1.14 reads (``compile.onnx.for_tpu_mlir``).
        shapes: static NCHW shapes, at least one, no duplicates.
        quantize: one of :data:`QUANTIZE`.
        input_num: calibration samples per shape (INT8).

    Raises:
        ConfigError: no shapes, duplicate shapes or an unknown quantize type.
    """
    if quantize not in QUANTIZE:
        raise ConfigError(f"unknown quantize {quantize!r}; choose one of {', '.join(QUANTIZE)}")
    if not shapes:
        raise ConfigError("give at least one shape (`shapes`)")
    if len(set(shapes)) != len(shapes):
        raise ConfigError(f"duplicate shapes in {[shape_tag(s) for s in shapes]}")
    final = f"../{bmodel_name(model_name, quantize)}"
    q = quantize.lower()
    steps: list[Step] = []
    parts: list[tuple[NCHW, str]] = []
    ins, refs, calis, profiles = [], [], [], []
    for shape in shapes:
        tag = shape_tag(shape)
        stem = f"{model_name}_{tag}"
        mlir = f"{stem}.mlir"
        test_in = f"{stem}_in.npz"
        test_ref = f"{stem}_top_outputs.npz"
        ins.append(test_in)
        refs.append(test_ref)
        steps.append(
            Step(
                tool="model_transform.py",
                argv=(
                    "model_transform.py",
                    "--model_name",
                    model_name,
                    "--model_def",
                    onnx,
                    "--input_shapes",
                    "[[" + ",".join(str(v) for v in shape) + "]]",
                    # Identity preprocessing: the inputs are npz tensors already in
                    # [0,1] (RGB, or Y for one-channel models), which tpu-mlir passes
                    # through unchanged; the flags only keep the MLIR's recorded
                    # preprocessing honest (ref. 1.2, 4.4).
                    "--mean",
                    ",".join(["0"] * shape[1]),
                    "--scale",
                    ",".join(["1"] * shape[1]),
                    "--pixel_format",
                    "gray" if shape[1] == 1 else "rgb",
                    "--test_input",
                    test_in,
                    "--test_result",
                    test_ref,
                    "--mlir",
                    mlir,
                ),
                outputs=(mlir, test_ref),
            )
        )
        deploy_extra: tuple[str, ...] = ()
        if quantize == "INT8":
            cali_dir = f"cali_{tag}"
            table = f"{stem}_cali_table"
            calis.append(cali_dir)
            steps.append(
                Step(
                    tool="run_calibration.py",
                    argv=(
                        "run_calibration.py",
                        mlir,
                        "--dataset",
                        cali_dir,
                        "--input_num",
                        str(input_num),
                        "-o",
                        table,
                    ),
                    outputs=(table,),
                )
            )
            # Symmetric: the docs prefer it when accurate enough (it is faster), and
            # deploy's --test_reference check against ONNX tells us when it is not;
            # --asymmetric is the fallback (reference 1.4).
            deploy_extra = ("--calibration_table", table)
        out = final if len(shapes) == 1 else f"{stem}_{CHIP}_{q}.bmodel"
        parts.append((shape, out))
        profile = f"{stem}_{CHIP}_{q}.profile.txt"
        profiles.append(profile)
        steps.append(
            Step(
                tool="model_deploy.py",
                argv=(
                    "model_deploy.py",
                    "--mlir",
                    mlir,
                    "--quantize",
                    quantize,
                    *deploy_extra,
                    # --chip, not --processor: accepted by every release (ref. 1.4).
                    "--chip",
                    CHIP,
                    "--test_input",
                    test_in,
                    "--test_reference",
                    test_ref,
                    "--tolerance",
                    TOLERANCE[quantize],
                    "--model",
                    out,
                ),
                outputs=(out,),
                profile=profile,
            )
        )
    if len(shapes) > 1:
        # Same --model_name for every part: one net, one stage per shape (ref. 1.5).
        # Largest stage first: tpu-mlir's pyruntime_bm (the emulator's binding) sizes a
        # net's I/O buffers from stage 0, so a smaller stage 0 leaves the others no room.
        biggest_first = [out for _, out in sorted(parts, key=lambda p: -_elements(p[0]))]
        steps.append(
            Step(
                tool="model_tool",
                argv=("model_tool", "--combine", *biggest_first, "-o", final),
                outputs=(final,),
            )
        )
    return CompilePlan(
        model_name=model_name,
        onnx=onnx,
        quantize=quantize,
        shapes=tuple(shapes),
        steps=tuple(steps),
        bmodel=final,
        test_inputs=tuple(ins),
        test_references=tuple(refs),
        calibration_dirs=tuple(calis),
        profiles=tuple(profiles),
    )
