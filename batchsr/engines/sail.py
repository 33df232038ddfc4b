"""sophon.sail backend: bmodels on a SOPHGO BM1684X TPU.

Facts this module relies on (``shared/docs/tpu-reference.md``, sophon-sail v3.10.7):

- ``Engine(bmodel_path, tpu_id, IOMode.SYSIO)`` loads a bmodel with host-side inputs
  and outputs (section 2.2). SYSIO is what the contest demo and the seed use, and the
  only mode in which sail fills and reads host memory for us.
- The numpy form of ``process`` holds the GIL for the whole inference; the Tensor forms
  release it (``py::call_guard<py::gil_scoped_release>``). Several engines and devices
  driven from one process therefore need the Tensor form, so that is the one we call:
  tensors are made once per engine and shape, filled with ``update_data`` (or
  ``scale_from`` for quantised I/O), run with ``process(graph, in, shapes, out)`` and
  read back with ``asnumpy`` (or ``scale_to``).
- A static net with several stages (``model_tool --combine`` of one ``--model_name``)
  accepts any one of its stage shapes exactly (section 2.3); nets with different names
  are separate graphs. sail has no call that lists a net's stages
  (``get_input_shape`` returns the current, initially the maximum, shape), so the
  stages come from the model folder's manifest when there is one; otherwise each
  graph contributes its maximum shape.
- One Engine is single-threaded (no mutex in engine.cpp): the pipeline gives every
  infer worker its own.

``sophon`` is imported only when a :class:`SailEngine` is created, so machines without
the SDK can run every other backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from batchsr.engines.base import EngineBase, Shape, preferred_first
from batchsr.errors import EngineError, EngineUnavailableError, ShapeMismatchError

__all__ = ["INSTALL_HINT", "ProcessForm", "SailEngine", "import_sail"]

ProcessForm = Literal["tensor", "numpy"]

INSTALL_HINT = (
    "sophon.sail is not importable. On a TPU host: install libsophon (the driver; "
    "`bm-smi` must list the TPUs), read the driver version from `bm-smi`, then install "
    "the sail wheel built for that driver and this Python "
    "(`pip install sophon-<version>-py3-none-any.whl --force-reinstall`; the wheel ships "
    "with the SOPHON SDK, or build it with sophon-sail's python/sophon_whl.sh). "
    "See docs/tpu.md."
)

# Dtypes whose host values sail converts with the tensor's scale (tpu-reference.md 2.2:
# INT8/UINT8/INT32 I/O is (de)quantised with get_input_scale/get_output_scale).
_SCALED_DTYPES = ("BM_INT8", "BM_UINT8", "BM_INT32")


def import_sail() -> ModuleType:
    """Import ``sophon.sail``.

    Raises:
        EngineUnavailableError: the wheel (or libsophon under it) is missing.
    """
    try:
        import sophon.sail as sail
    except ImportError as err:
        raise EngineUnavailableError(f"{INSTALL_HINT} ({err})") from err
    return sail


@dataclass(frozen=True, slots=True)
class _Stage:
    """One exact input shape of one graph, with tensors made once for it."""

    graph: str
    shape: tuple[int, int, int, int]
    in_tensor: Any
    out_tensor: Any
    out_shape: tuple[int, ...]


class SailEngine(EngineBase):
    """One sail Engine on one TPU, running the graphs of one bmodel.

    Args:
        path: the ``.bmodel`` file.
        device_id: TPU index as ``bm-smi`` lists it.
        shapes: the NCHW stage shapes the bmodel holds (from the manifest); None uses
            each graph's maximum input shape.
        scale: the upscale factor if known; otherwise read from the output shape.
        form: ``tensor`` (releases the GIL; the default) or ``numpy`` (holds the GIL
            for the whole call; kept to measure exactly that).

    Raises:
        EngineUnavailableError: sophon.sail is not installed.
        EngineError: the bmodel cannot be loaded, or its I/O is not one float
            (or int-scaled) NCHW input and output per graph.
    """

    def __init__(
        self,
        path: Path,
        *,
        device_id: int = 0,
        shapes: Sequence[tuple[int | None, ...]] | None = None,
        scale: int | None = None,
        form: ProcessForm = "tensor",
    ) -> None:
        sail = import_sail()
        self._sail = sail
        self.device_id = device_id
        self.form: ProcessForm = form
        try:
            self._engine = sail.Engine(str(path), device_id, sail.IOMode.SYSIO)
        except Exception as err:  # sail raises SailEngineError or a plain RuntimeError
            raise EngineError(
                f"sail cannot load {path} on TPU {device_id}: {err}; check `bm-smi` lists "
                f"that TPU and that the bmodel was compiled for its chip (bm1684x)"
            ) from err
        self._path = path
        self._stages: dict[tuple[int, ...], _Stage] = {}
        self._io: dict[str, tuple[str, str, Any, Any, float, float]] = {}
        handle = self._engine.get_handle()
        graph_max: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
        # A bmodel is static per stage; dynamic (None) axes in a manifest say nothing.
        wanted = {
            tuple(int(d) for d in s)  # type: ignore[arg-type]
            for s in shapes or ()
            if all(d is not None for d in s)
        } or None
        for graph in self._engine.get_graph_names():
            (in_name, *more_in) = self._engine.get_input_names(graph)
            (out_name, *more_out) = self._engine.get_output_names(graph)
            if more_in or more_out:
                raise EngineError(
                    f"{path}: graph {graph!r} has {1 + len(more_in)} inputs and "
                    f"{1 + len(more_out)} outputs; an SR model needs one of each"
                )
            in_dtype = self._engine.get_input_dtype(graph, in_name)
            out_dtype = self._engine.get_output_dtype(graph, out_name)
            for dtype, what in ((in_dtype, "input"), (out_dtype, "output")):
                if dtype.name != "BM_FLOAT32" and dtype.name not in _SCALED_DTYPES:
                    raise EngineError(
                        f"{path}: graph {graph!r} has {dtype.name} {what}; sail converts only "
                        f"float32 and int-scaled I/O. Recompile without --quant_input/"
                        f"--quant_output so F16/BF16 models keep float32 I/O"
                    )
            in_scale = float(self._engine.get_input_scale(graph, in_name))
            out_scale = float(self._engine.get_output_scale(graph, out_name))
            self._io[graph] = (in_name, out_name, in_dtype, out_dtype, in_scale, out_scale)
            max_in = tuple(self._engine.get_max_input_shapes(graph)[in_name])
            max_out = tuple(self._engine.get_max_output_shapes(graph)[out_name])
            if len(max_in) != 4 or len(max_out) != 4:
                raise EngineError(f"{path}: graph {graph!r} input {list(max_in)} is not NCHW")
            graph_max[graph] = (max_in, max_out)
        # A wanted shape goes to the graph whose maximum it is, else to the first graph
        # it fits under (a stage of a combined net is at most the net's maximum).
        wanted_shapes = sorted(wanted) if wanted else [m for m, _ in graph_max.values()]
        for shape in wanted_shapes:
            fits = [g for g, (m, _) in graph_max.items() if len(shape) == 4 and _fits(shape, m)]
            exact = [g for g in fits if graph_max[g][0] == shape]
            if not fits or shape in self._stages:
                continue
            graph = (exact or fits)[0]
            max_in, max_out = graph_max[graph]
            ratio = max_out[2] // max_in[2]
            out_shape = (shape[0], max_out[1], shape[2] * ratio, shape[3] * ratio)
            in_dtype, out_dtype = self._io[graph][2:4]
            self._stages[shape] = _Stage(
                graph=graph,
                shape=shape,  # type: ignore[arg-type]
                in_tensor=sail.Tensor(handle, list(shape), in_dtype, True, True),
                out_tensor=sail.Tensor(handle, list(out_shape), out_dtype, True, True),
                out_shape=out_shape,
            )
        if not self._stages:
            raise EngineError(
                f"{path}: none of the shapes {sorted(wanted or [])} fits a graph of the "
                f"bmodel (graphs {self._engine.get_graph_names()}); the manifest and the "
                f"bmodel disagree: rebuild them together"
            )
        first = next(iter(self._stages.values()))
        self._scale = scale or first.out_shape[2] // first.shape[2]
        # Most preferred first: the largest stage does the most work per call.
        # Stage shapes are fully static (ints), whatever the Shape alias allows.
        static = [(int(n), int(c), int(h), int(w)) for n, c, h, w in self._stages]
        self._shapes: tuple[Shape, ...] = preferred_first(static)

    def _run(self, batch: NDArray[np.float32]) -> NDArray[np.float32]:
        stage = self._stages[batch.shape]
        in_name, out_name, in_dtype, out_dtype, in_scale, out_scale = self._io[stage.graph]
        # sail "fixes" a non-contiguous numpy input by writing into the caller's buffer
        # (tpu-reference.md 2.2): always hand it a contiguous float32 copy or view.
        data = np.ascontiguousarray(batch, dtype=np.float32)
        try:
            if self.form == "numpy":
                out = self._engine.process(stage.graph, {in_name: data})[out_name]
            else:
                if in_dtype.name in _SCALED_DTYPES:
                    stage.in_tensor.scale_from(data, in_scale)
                else:
                    stage.in_tensor.update_data(data)
                self._engine.process(
                    stage.graph,
                    {in_name: stage.in_tensor},
                    {in_name: list(stage.shape)},
                    {out_name: stage.out_tensor},
                )
                if out_dtype.name in _SCALED_DTYPES:
                    out = stage.out_tensor.scale_to(out_scale)
                else:
                    out = stage.out_tensor.asnumpy()
        except Exception as err:
            raise EngineError(
                f"sail on TPU {self.device_id} failed on a batch of {list(batch.shape)} "
                f"(graph {stage.graph!r}): {type(err).__name__}: {err}"
            ) from err
        out = np.asarray(out, dtype=np.float32).reshape(stage.out_shape)
        if out.shape[0] != batch.shape[0]:
            raise ShapeMismatchError(f"sail returned {list(out.shape)} for {list(batch.shape)}")
        # asnumpy may share the tensor's host buffer, which the next call overwrites.
        return out.copy() if self.form == "tensor" else out

    def close(self) -> None:
        self._stages.clear()
        del self._engine


def _fits(shape: tuple[int, ...], maximum: tuple[int, ...]) -> bool:
    return all(0 < a <= b for a, b in zip(shape, maximum, strict=True))
