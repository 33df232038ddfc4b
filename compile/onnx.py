"""Export a torch network to ONNX and check the export against torch.

Uses torch's ``torch.export``-based exporter (the default since torch 2.9; the
TorchScript-based one is deprecated). Inputs are named ``input``, outputs ``output``;
a dynamic export frees the batch, height and width axes.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from batchsr.errors import CompileError
from batchsr.vocab import NCHW

__all__ = [
    "DEFAULT_OPSET",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "TPU_MLIR_IR_VERSION",
    "TPU_MLIR_OPSET",
    "check_onnx",
    "export_onnx",
    "for_tpu_mlir",
    "make_fusable",
]

# 18 is the lowest opset the torch.export-based exporter implements natively (asking
# for 17 makes it down-convert afterwards).
DEFAULT_OPSET = 18
# tpu-mlir 1.30.2 checks and runs ONNX with its own onnx 1.14.1 and onnxruntime 1.16.3,
# which stop at IR version 9; torch 2.13 writes IR 10 ("Unsupported model IR version:
# 10" in model_transform). Opset 18 is the exporter's own and onnx 1.14 knows it (onnx's
# version converter has no 18 -> 17 adapter for Pad, so going lower is not an option for
# every zoo model); IR 8 is the version that goes with opset 18. The real model_transform
# is the check (tests/test_tpu_real.py), for every zoo architecture.
TPU_MLIR_OPSET = 18
TPU_MLIR_IR_VERSION = 8
INPUT_NAME = "input"
OUTPUT_NAME = "output"


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's expected, uninformative noise for the export call only."""
    with warnings.catch_warnings():
        # torch 2.13's export path still calls a pytree API it deprecated itself.
        warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)
        # It logs one warning per torchvision op it cannot register; we have no
        # torchvision (no CPU build here) and export no torchvision ops.
        logger = logging.getLogger("torch.onnx._internal.exporter._registration")
        level = logger.level
        logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            logger.setLevel(level)


def export_onnx(
    model: torch.nn.Module,
    path: Path,
    *,
    shape: NCHW,
    dynamic: bool,
    opset: int = DEFAULT_OPSET,
) -> Path:
    """Export ``model`` to an ONNX file.

    Args:
        model: the network; exported in eval mode on the CPU (its mode is restored).
        path: where to write the ``.onnx`` file (parent folders are created).
        shape: the NCHW example input shape; the static shape when not ``dynamic``.
            With ``dynamic``, use H and W >= 2 and not equal to each other or to N,
            or torch.export may specialise an axis to the example's value.
        dynamic: free the batch, height and width axes (named ``batch``, ``height``,
            ``width``); the channel axis stays fixed.
        opset: ONNX opset version.

    Returns:
        ``path``, its single-slope PRelus written as the equal LeakyRelus, which
        onnxruntime fuses into its convolutions (``batchsr.engines.onnx_graph``).

    Raises:
        CompileError: torch cannot export the model.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.rand(*shape, dtype=torch.float32, generator=torch.Generator().manual_seed(0))
    dynamic_shapes = None
    if dynamic:
        dims = {
            0: torch.export.Dim("batch", min=1),
            2: torch.export.Dim("height", min=1),
            3: torch.export.Dim("width", min=1),
        }
        dynamic_shapes = (dims,)
    was_training = model.training
    model.eval()
    try:
        with _quiet_exporter(), torch.no_grad():
            program = torch.onnx.export(
                model,
                (example,),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                opset_version=opset,
                dynamic_shapes=dynamic_shapes,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
        if program is None:
            raise CompileError(f"torch.onnx.export returned no program for {path}")
        program.save(str(path))
        make_fusable(path)
    except (RuntimeError, ValueError, TypeError, torch.onnx.OnnxExporterError) as err:
        raise CompileError(
            f"cannot export {type(model).__name__} to ONNX at {shape} (dynamic={dynamic}): {err}"
        ) from err
    finally:
        model.train(was_training)
    return path


def make_fusable(src: Path, dst: Path | None = None) -> int:
    """Write ``src`` (to ``dst``, else in place) with each single-slope PRelu as the
    LeakyRelu it equals (``batchsr.engines.onnx_graph.fusable``); how many there were.

    The engine would rewrite them at every load, but paying for ``import onnx`` to do so;
    the INT8 build needs them so too (onnxruntime has no int8 PRelu).
    """
    import onnx

    from batchsr.engines.onnx_graph import fusable

    rewritten = fusable(onnx.load(str(src)))
    if rewritten.changes or dst is not None:
        onnx.save(rewritten.model, str(dst or src))
    return len(rewritten.changes)


def check_onnx(
    model: torch.nn.Module,
    path: Path,
    *,
    shapes: Sequence[NCHW],
    atol: float = 1e-4,
    seed: int = 0,
) -> float:
    """Run an exported file with onnxruntime (CPU) and compare it with torch.

    Args:
        model: the network the file was exported from.
        path: the ``.onnx`` file.
        shapes: NCHW input shapes to compare on (random inputs in [0, 1]); for a
            static export, its one shape.
        atol: the largest absolute difference allowed.
        seed: seeds the random inputs.

    Returns:
        The largest absolute difference over all shapes.

    Raises:
        CompileError: the file is invalid, fails to run, has the wrong output shape,
            or differs from torch by more than ``atol``.
    """
    import onnx
    import onnxruntime as ort
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

    # onnxruntime's errors derive from Exception directly, one class per status code.
    ort_errors = (
        ort_state.Fail,
        ort_state.InvalidArgument,
        ort_state.InvalidGraph,
        ort_state.InvalidProtobuf,
        ort_state.NoSuchFile,
        ort_state.RuntimeException,
    )
    try:
        onnx.checker.check_model(str(path))
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except (onnx.checker.ValidationError, *ort_errors) as err:
        raise CompileError(f"{path}: invalid ONNX model ({err})") from err
    rng = np.random.default_rng(seed)
    worst = 0.0
    was_training = model.training
    model.eval()
    try:
        for shape in shapes:
            x = rng.random(shape, dtype=np.float32)
            with torch.no_grad():
                expected = model(torch.from_numpy(x)).numpy()
            try:
                (got,) = session.run([OUTPUT_NAME], {INPUT_NAME: x})
            except ort_errors as err:
                raise CompileError(f"{path}: onnxruntime failed on input {shape}: {err}") from err
            if got.shape != expected.shape:
                raise CompileError(
                    f"{path}: output shape {got.shape} for input {shape}, torch gives "
                    f"{expected.shape}; re-export it"
                )
            diff = float(np.max(np.abs(got - expected))) if got.size else 0.0
            if not diff <= atol:
                raise CompileError(
                    f"{path}: differs from torch by {diff:.3g} > {atol:g} on input {shape}"
                )
            worst = max(worst, diff)
    finally:
        model.train(was_training)
    return worst


def for_tpu_mlir(src: Path, dst: Path) -> Path:
    """Write ``src`` as ONNX that tpu-mlir's onnx/onnxruntime read (opset <= 18, IR 8).

    A graph of a newer opset is first rewritten by onnx's own version converter; the
    IR version is then lowered, which only relabels the file, since an opset-18 graph
    uses nothing IR 8 lacks. The result is checked by onnx here and by the real
    ``model_transform`` (its comparison with onnxruntime) when it runs.

    Raises:
        CompileError: the graph cannot be expressed in what tpu-mlir reads.
    """
    import onnx
    from onnx import version_converter

    model = onnx.load(str(src))
    opset = max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    try:
        converted = (
            version_converter.convert_version(model, TPU_MLIR_OPSET)
            if opset > TPU_MLIR_OPSET
            else model
        )
        converted.ir_version = TPU_MLIR_IR_VERSION
        onnx.checker.check_model(converted)
    except (onnx.checker.ValidationError, RuntimeError, ValueError) as err:
        raise CompileError(
            f"{src}: cannot convert to ONNX opset {TPU_MLIR_OPSET} / IR "
            f"{TPU_MLIR_IR_VERSION}, the newest tpu-mlir 1.30 reads: {err}"
        ) from err
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(converted, str(dst))
    return dst
