"""An INT8 ONNX for onnxruntime on the CPU: static QDQ quantization, calibrated on tiles
cut by the pipeline's decoder and tiler (``batchsr.sample_tiles``).

The choices, each measured on ``models/espcn`` (calibrated on examples/, PSNR against the
float ONNX on held-out photos; benchmarks/README.md, "INT8 on the CPU"):

- Weights int8, symmetric, one scale per output channel; activations uint8 with a zero
  point, ranges from the calibration tiles' min and max. Per-tensor weights gave
  41.8 dB, symmetric int8 activations 44.2 dB (and onnxruntime turns int8 activations
  back into uint8 for its x86 kernels, which left the skip convolution in float),
  percentile ranges 44.3 dB; this choice 47.4 dB.
- A PRelu with a single slope is rewritten as the LeakyRelu it equals before
  quantizing: onnxruntime has an int8 kernel for LeakyRelu (QLinearLeakyRelu) but none
  for PRelu, whose QDQ form runs in float between a DequantizeLinear and a
  QuantizeLinear. With the PRelus in float the INT8 model was 1.4x as fast as the
  (PRelu) float one. ``compile`` now exports them as LeakyRelu, so this step finds none
  in its own exports; against that fused float model INT8's engine is 1.5-1.9x
  (benchmarks/roofline.py).
- No reduced range: the 8-bit products cannot saturate on a CPU with AVX512-VNNI or
  AVX-VNNI (their dot products add into int32). On AVX2 without VNNI onnxruntime's
  u8 x s8 kernel adds pairs in int16 and may saturate; ``quant_psnr_db`` in the
  manifest is what the build machine measured.

Input and output stay float32, so ``OnnxEngine`` runs the file as it runs the float one.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from batchsr.errors import CompileError, ConfigError
from batchsr.sample_tiles import iter_tiles
from batchsr.selfcheck import compare, min_psnr_for
from batchsr.vocab import NCHW
from compile.onnx import make_fusable

if TYPE_CHECKING:
    from onnxruntime import InferenceSession

__all__ = [
    "INT8_OPS",
    "Int8Onnx",
    "calibration_batches",
    "int8_name",
    "optimized_ops",
    "quantize_onnx_int8",
]

#: Optimized-graph ops that compute in 8 bits (onnxruntime's contrib QLinear kernels).
INT8_OPS = frozenset({"QLinearConv", "QLinearLeakyRelu", "QLinearAdd", "QLinearMul"})


@dataclass(frozen=True, slots=True)
class Int8Onnx:
    """An INT8 ONNX written by :func:`quantize_onnx_int8`.

    Attributes:
        path: the file.
        samples: calibration batches it was calibrated on.
        psnr_db: PSNR of its output against the float ONNX's on those batches.
        rewritten: PRelus rewritten as LeakyRelu.
    """

    path: Path
    samples: int
    psnr_db: float
    rewritten: int


def int8_name(stem: str) -> str:
    """The file name of the INT8 form of ``STEM.onnx``."""
    return f"{stem}_int8.onnx"


def calibration_batches(
    images: Sequence[Path], shapes: Sequence[NCHW], *, pad: int, scale: int, limit: int
) -> list[NDArray[np.float32]]:
    """Up to ``limit`` NCHW batches per shape of tiles cut as the pipeline cuts them
    (decoder, input plane, ``crop`` tiling with margin ``pad``); a last partial group of
    a shape is dropped.

    Raises:
        ConfigError: the images give no whole batch of a shape, or one cannot be decoded.
    """
    batches: list[NDArray[np.float32]] = []
    for shape in shapes:
        group: list[NDArray[np.float32]] = []
        count = 0
        for tile in iter_tiles(images, shape, pad=pad, scale=scale):
            group.append(tile)
            if len(group) == shape[0]:
                batches.append(np.stack(group))
                group, count = [], count + 1
                if count >= limit:
                    break
        if count == 0:
            raise ConfigError(
                f"the calibration images give no tile of {'x'.join(map(str, shape))} "
                "(`calibration`, `shapes`): give larger images or a smaller shape"
            )
    return batches


def _session(path: Path, *, optimized: Path | None = None) -> InferenceSession:
    import onnxruntime as ort

    options = ort.SessionOptions()
    # Serializing the optimized graph warns that it holds CPU-specific (NCHWc) nodes,
    # which is why it is written: to see them.
    options.log_severity_level = 3
    if optimized is not None:
        options.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _run_all(path: Path, name: str, batches: Sequence[NDArray[np.float32]]) -> NDArray[np.float32]:
    session = _session(path)
    outs = [session.run(None, {name: b})[0] for b in batches]
    return np.concatenate([np.asarray(o, dtype=np.float32) for o in outs])


def optimized_ops(path: Path) -> list[tuple[str, str]]:
    """(domain, op type) of each node of the graph onnxruntime's CPU provider runs for
    the ONNX at ``path``, after its graph optimizations: what really runs in int8."""
    import onnx

    with tempfile.TemporaryDirectory(prefix="batchsr-ort-") as tmp:
        optimized = Path(tmp) / "optimized.onnx"
        _session(path, optimized=optimized)
        graph = onnx.load(str(optimized)).graph
        return [(node.domain, node.op_type) for node in graph.node]


def _input_name(path: Path) -> str:
    import onnx

    graph = onnx.load(str(path)).graph
    weights = {t.name for t in graph.initializer}
    (first,) = [i.name for i in graph.input if i.name not in weights]
    return first


class _Batches:
    """onnxruntime's calibration data reader over prepared batches: a virtual subclass
    of its ``CalibrationDataReader`` (which takes any class with ``get_next``), so that
    importing this module does not import onnxruntime.quantization (0.9 s)."""

    def __init__(self, name: str, batches: Sequence[NDArray[np.float32]]) -> None:
        self._name = name
        self._left: Iterator[NDArray[np.float32]] = iter(batches)

    def get_next(self) -> dict[str, NDArray[np.float32]] | None:
        batch = next(self._left, None)
        return None if batch is None else {self._name: batch}


def quantize_onnx_int8(
    float_onnx: Path, out: Path, batches: Sequence[NDArray[np.float32]]
) -> Int8Onnx:
    """Write the INT8 QDQ form of ``float_onnx`` to ``out``, calibrated on ``batches``.

    Args:
        float_onnx: the float32 ONNX (one NCHW input, dynamic or static).
        out: the ``.onnx`` file to write.
        batches: NCHW float32 calibration inputs (:func:`calibration_batches`), which
            also check the result.

    Raises:
        CompileError: onnxruntime cannot quantize the graph, or the INT8 output is
            further from the float output than an INT8 build should be.
    """
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    name = _input_name(float_onnx)
    with tempfile.TemporaryDirectory(prefix="batchsr-int8-") as tmp:
        leaky, prepared = Path(tmp) / "leaky.onnx", Path(tmp) / "prepared.onnx"
        rewritten = make_fusable(float_onnx, leaky)
        try:
            # onnxruntime's own clean-up (shape inference, constant folding) that the
            # quantizer expects; without it the quantizer logs a warning to the root
            # logger, which a library must not make print.
            quant_pre_process(str(leaky), str(prepared), skip_symbolic_shape=True)
            quantize_static(
                str(prepared),
                str(out),
                _Batches(name, batches),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                reduce_range=False,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
            )
        except Exception as err:  # onnxruntime raises untyped errors
            out.unlink(missing_ok=True)
            raise CompileError(f"onnxruntime cannot quantize {float_onnx}: {err}") from err
    _diff, psnr = compare(_run_all(out, name, batches), _run_all(float_onnx, name, batches))
    floor = min_psnr_for("INT8")
    if psnr < floor:
        out.unlink()
        raise CompileError(
            f"the INT8 ONNX reaches {psnr:.1f} dB against the float one on the calibration "
            f"tiles, under the {floor:.0f} dB an INT8 build should; check that the "
            "`calibration` images are photos like the ones it will upscale"
        )
    return Int8Onnx(path=out, samples=len(batches), psnr_db=psnr, rewritten=rewritten)
