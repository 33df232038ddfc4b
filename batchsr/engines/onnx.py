"""onnxruntime backend (CPU, or CUDA where the CUDA provider is present)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from batchsr.engines.base import EngineBase, Shape
from batchsr.errors import EngineError, EngineUnavailableError

try:
    import onnxruntime as ort
except ImportError as err:  # pragma: no cover - onnxruntime is a core requirement
    raise EngineUnavailableError(
        "onnxruntime is not installed; run `pip install -r requirements.txt`"
    ) from err

__all__ = ["OnnxEngine"]


class OnnxEngine(EngineBase):
    """An onnxruntime session over one ``.onnx`` file.

    Args:
        path: the model file: one float32 NCHW input, one float32 NCHW output.
        device: ``cpu``, or ``cuda`` to prefer the CUDA provider when it is available.
        threads: intra-op threads; 0 leaves onnxruntime's default (one per core).
        scale: the upscale factor if known (from the manifest); otherwise it is read
            from static shapes or measured with one small probe run.

    Attributes:
        rewrites: what :func:`batchsr.engines.onnx_graph.fusable` changed in the graph
            as it was loaded (same values, faster kernels); empty if nothing.
    """

    def __init__(
        self, path: Path, *, device: str = "cpu", threads: int = 0, scale: int | None = None
    ) -> None:
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        # The pipeline overlaps engines with other stages: idle threads spinning for
        # work would steal cores from decode, save and NIQE (measured: a third more CPU
        # per image for the same wall time).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = ["CPUExecutionProvider"]
        if device == "cuda":
            available = ort.get_available_providers()
            if "CUDAExecutionProvider" not in available:
                # Silently running on the CPU would give CPU figures under a CUDA label.
                raise EngineUnavailableError(
                    f"device cuda was asked for, but this onnxruntime has no CUDA provider "
                    f"(it has {', '.join(available)}); install onnxruntime-gpu with a "
                    "working CUDA, or use device cpu"
                )
            providers.insert(0, "CUDAExecutionProvider")
        source, self.rewrites = _fusable_source(path)
        try:
            self._session = ort.InferenceSession(source, options, providers=providers)
        except Exception as err:  # onnxruntime raises its own untyped errors
            raise EngineError(f"onnxruntime cannot load {path}: {err}") from err
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise EngineError(
                f"{path}: expected one input and one output, found {len(inputs)} and {len(outputs)}"
            )
        self._input_name = inputs[0].name
        self._shapes = (_shape_of(inputs[0].shape, path),)
        self.providers = tuple(self._session.get_providers())
        self._scale = scale or _static_scale(inputs[0].shape, outputs[0].shape) or self._probe()

    def _run(self, batch: NDArray[np.float32]) -> NDArray[np.float32]:
        try:
            (out,) = self._session.run(None, {self._input_name: batch})
        except Exception as err:
            raise EngineError(f"onnxruntime failed on a batch of {batch.shape}: {err}") from err
        return np.asarray(out, dtype=np.float32)

    def close(self) -> None:
        del self._session

    def _probe(self) -> int:
        n, c, h, w = self._shapes[0]
        probe = np.zeros((n or 1, c, h or 16, w or 16), dtype=np.float32)
        (out,) = self._session.run(None, {self._input_name: probe})
        return int(out.shape[2] // probe.shape[2])


# A protobuf message cannot be serialised past 2 GiB; leave such models to onnxruntime.
_MAX_REWRITE_BYTES = 1 << 30


def _fusable_source(path: Path) -> tuple[str | bytes, tuple[str, ...]]:
    """What to open the session from: the rewritten model's bytes, or the path itself
    when nothing applies or the file cannot be read here (onnxruntime then says why).

    ``import onnx`` costs most of a second (ml_dtypes), so it is paid only for a file
    that names the op the rewrite is for; models that ``compile`` writes have none.
    """
    try:
        if path.stat().st_size > _MAX_REWRITE_BYTES:
            return str(path), ()
        data = path.read_bytes()
    except OSError:
        return str(path), ()
    if b"PRelu" not in data:
        return str(path), ()
    import onnx

    from batchsr.engines.onnx_graph import fusable

    try:
        model = onnx.load_from_string(data)
    except Exception:  # a broken file is onnxruntime's to report, in its own words
        return str(path), ()
    # Weights in separate files are found relative to the model's path, which bytes lack.
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        return str(path), ()
    rewritten = fusable(model)
    if not rewritten.changes:
        return str(path), ()
    return rewritten.model.SerializeToString(), rewritten.changes


def _shape_of(dims: list[object], path: Path) -> Shape:
    if len(dims) != 4 or not isinstance(dims[1], int):
        raise EngineError(f"{path}: input shape {dims} is not NCHW with a fixed channel count")
    n, c, h, w = (d if isinstance(d, int) and d > 0 else None for d in dims)
    assert c is not None
    return (n, c, h, w)


def _static_scale(inp: list[object], out: list[object]) -> int | None:
    if isinstance(inp[2], int) and isinstance(out[2], int) and inp[2] > 0:
        return out[2] // inp[2]
    return None
