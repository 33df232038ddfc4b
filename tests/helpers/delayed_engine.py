"""A test-only engine with a known, fixed cost per batch.

It runs a real ONNX model and then sleeps, the way a TPU call releases the GIL while
the device is busy, so a pipeline with it has one stage whose slowness is known. It
notes the batch shapes it was called with, for tests of what reaches the engine.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from batchsr.engines.base import Shape
from batchsr.engines.onnx import OnnxEngine

__all__ = ["DelayedEngine"]


class DelayedEngine:
    """An :class:`~batchsr.engines.base.Engine` that takes ``delay_s`` longer per batch
    and appends each batch's shape to ``calls``."""

    def __init__(self, path: Path, *, delay_s: float = 0.0) -> None:
        self._inner = OnnxEngine(path)
        self.delay_s = delay_s
        self.calls: list[tuple[int, ...]] = []

    @property
    def input_shapes(self) -> tuple[Shape, ...]:
        return self._inner.input_shapes

    @property
    def scale(self) -> int:
        return self._inner.scale

    def run(self, batch: NDArray[np.float32]) -> NDArray[np.float32]:
        self.calls.append(batch.shape)
        if self.delay_s:
            time.sleep(self.delay_s)
        return self._inner.run(batch)

    def close(self) -> None:
        self._inner.close()
