"""The engine boundary: the one protocol the pipeline sees of a backend.

Backends (onnxruntime, torch, sophon.sail) live in their own modules and are the only
modules that import their runtime. The pipeline hands an engine float32 NCHW batches
in the model's input range and gets float32 NCHW batches back, ``scale`` times larger.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from batchsr.errors import ShapeMismatchError

__all__ = ["Engine", "EngineBase", "Shape", "check_batch", "preferred_first", "shape_matches"]

# NCHW; None marks a dynamic axis (any batch, or any height/width).
Shape = tuple[int | None, int, int | None, int | None]


@runtime_checkable
class Engine(Protocol):
    """A loaded model that upscales batches.

    An engine instance belongs to one worker: ``run`` is never called concurrently on
    the same instance, and it may block (the pipeline calls it in a worker thread).
    """

    @property
    def input_shapes(self) -> tuple[Shape, ...]:
        """The NCHW input shapes the engine accepts, most preferred first.

        A static model holds one or more exact shapes (a combined bmodel may hold
        several); a dynamic one uses None for the free axes.
        """
        ...

    @property
    def scale(self) -> int:
        """Output height and width over input height and width."""
        ...

    def run(self, batch: NDArray[np.float32]) -> NDArray[np.float32]:
        """Upscale one batch.

        Args:
            batch: float32 NCHW, C-contiguous, matching one of ``input_shapes``.

        Returns:
            float32 array of shape (N, C_out, H * scale, W * scale).

        Raises:
            ShapeMismatchError: the batch matches none of ``input_shapes``.
            EngineError: the backend failed.
        """
        ...

    def close(self) -> None:
        """Release the backend's resources; the engine is unusable afterwards."""
        ...


def preferred_first(shapes: Iterable[tuple[int, int, int, int]]) -> tuple[Shape, ...]:
    """Static stage shapes in the order ``Engine.input_shapes`` lists them: the largest
    tile first (the most work per device call), then the larger batch."""
    return tuple(sorted(set(shapes), key=lambda s: (-s[1] * s[2] * s[3], -s[0])))


def shape_matches(shape: tuple[int, ...], accepted: Shape) -> bool:
    """True if a concrete NCHW ``shape`` fits ``accepted`` (None matches anything)."""
    return len(shape) == 4 and all(
        a is None or a == s for s, a in zip(shape, accepted, strict=True)
    )


def check_batch(batch: NDArray[np.float32], accepted: tuple[Shape, ...]) -> None:
    """Raise :class:`ShapeMismatchError` unless ``batch`` fits one of ``accepted``."""
    if batch.dtype != np.float32 or not any(shape_matches(batch.shape, a) for a in accepted):
        raise ShapeMismatchError(
            f"batch {batch.dtype}{list(batch.shape)} fits none of the engine's input "
            f"shapes {[list(a) for a in accepted]} (None = any)"
        )


class EngineBase:
    """What every backend's engine shares: the :class:`Engine` properties over the
    shapes and scale it was opened with, and the batch check before each call. A
    backend sets ``_shapes`` and ``_scale`` when it opens and implements ``_run``
    (given a batch that fits) and ``close``."""

    _shapes: tuple[Shape, ...]
    _scale: int

    @property
    def input_shapes(self) -> tuple[Shape, ...]:
        return self._shapes

    @property
    def scale(self) -> int:
        return self._scale

    def run(self, batch: NDArray[np.float32]) -> NDArray[np.float32]:
        check_batch(batch, self._shapes)
        return self._run(batch)

    def _run(self, batch: NDArray[np.float32]) -> NDArray[np.float32]:
        raise NotImplementedError
