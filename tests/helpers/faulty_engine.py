"""A test-only engine that misbehaves at chosen calls: it stands in for a device that
raises, hangs, or returns garbage, which real hardware does and we cannot provoke."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from tests.helpers.delayed_engine import DelayedEngine

__all__ = ["FaultScript", "FaultyEngine"]


class FaultScript:
    """What happens at each engine call, counted across every engine of a run.

    Args:
        faults: call number (0-based) -> ``raise``, ``hang`` or ``shape``; ``always``
            maps every call to that fault.
    """

    def __init__(self, faults: dict[int, str] | None = None, *, always: str | None = None) -> None:
        self.faults = faults or {}
        self.always = always
        self.calls = 0
        self.release = threading.Event()  # lets hung calls end when the test is over
        self._lock = threading.Lock()

    def next(self) -> str | None:
        with self._lock:
            n, self.calls = self.calls, self.calls + 1
        return self.always or self.faults.get(n)


class FaultyEngine(DelayedEngine):
    """A real ONNX engine whose calls follow a :class:`FaultScript`."""

    def __init__(self, path: Path, script: FaultScript) -> None:
        super().__init__(path, delay_s=0.0)
        self._script = script

    def run(self, batch: NDArray[np.float32]) -> NDArray[np.float32]:
        fault = self._script.next()
        if fault == "raise":
            raise RuntimeError("device error 0x42 (injected)")
        if fault == "hang":
            self._script.release.wait(30)
        out = super().run(batch)
        if fault == "shape":
            return out[:, :, :-4, :]
        return out
