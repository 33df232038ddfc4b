"""The low-priority threads of the stages off the contest-timed path: a run's NIQE
(and decode, save) work runs at ``workers.background_nice``, the timed path does not,
and a call's result, error and cancellation behave as in anyio's own threads."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import anyio
import numpy as np
import pytest
from numpy.typing import NDArray

from batchsr.config import load_config
from batchsr.engines.onnx import OnnxEngine
from batchsr.errors import ConfigError
from batchsr.images import list_inputs
from batchsr.pipeline.background import BackgroundThreads
from batchsr.pipeline.run import run_pipeline
from batchsr.resolve import ResolvedModel
from tests.helpers.images import photo_folder


def _nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@pytest.fixture
def base_nice() -> int:
    """The test process's nice value, which must be 0 for the values below to hold."""
    if not sys.platform.startswith("linux"):
        pytest.skip("threads have their own nice value on Linux only")
    if _nice():
        pytest.skip("the test process already runs niced")
    return 0


@pytest.mark.asyncio
async def test_calls_run_niced_and_return_or_raise(base_nice: int) -> None:
    async with BackgroundThreads(2, nice=7) as threads:
        assert [await threads.run(_nice) for _ in range(3)] == [7, 7, 7]
        with pytest.raises(ZeroDivisionError):
            await threads.run(lambda: 1 / 0)
    assert _nice() == base_nice  # the caller's thread is untouched


@pytest.mark.asyncio
async def test_zero_leaves_normal_priority(base_nice: int) -> None:
    async with BackgroundThreads(1, nice=0) as threads:
        assert await threads.run(_nice) == base_nice


@pytest.mark.asyncio
async def test_a_cancelled_caller_waits_for_the_call_to_finish() -> None:
    """As with anyio's own threads: when a stop cancels a save, the run does not end
    while the file is still being written."""
    finished = threading.Event()

    def slow() -> str:
        time.sleep(0.3)
        finished.set()
        return "done"

    async with BackgroundThreads(1, nice=0) as threads:
        with anyio.move_on_after(0.05) as scope:
            await threads.run(slow)
        assert scope.cancel_called and finished.is_set()


class _Noting(OnnxEngine):
    """A real ONNX engine that notes the nice value of each call's thread."""

    def __init__(self, path: Path, seen: list[int]) -> None:
        super().__init__(path)
        self.seen = seen

    def run(self, batch: NDArray[np.float32]) -> NDArray[np.float32]:
        self.seen.append(_nice())
        return super().run(batch)


@pytest.mark.asyncio
async def test_a_run_scores_at_the_background_priority_and_infers_at_normal(
    tmp_path: Path, espcn_onnx: Path, base_nice: int
) -> None:
    """The scorer's thread has the configured nice value; the engine's calls (the
    timed path) run at the process's own."""
    scored: list[int] = []
    inferred: list[int] = []

    def scorer(rgb: NDArray[np.uint8]) -> float:
        scored.append(_nice())
        return float(rgb.mean())

    folder = photo_folder(tmp_path / "in", 3, 40, 48)
    model = ResolvedModel(name="tiny", path=espcn_onnx, format="onnx", margin=4)
    for nice in (5, 0):
        scored.clear()
        inferred.clear()
        config = load_config(None, {"workers.background_nice": nice, "tiling.tile": 32})
        with anyio.fail_after(60):
            result = await run_pipeline(
                list_inputs(folder), config=config, model=model, out_dir=tmp_path / f"o{nice}",
                scorer=scorer, engine_factory=lambda: _Noting(espcn_onnx, inferred),
            )  # fmt: skip
        assert result.summary.ok == 3
        assert scored == [nice] * 3
        assert inferred and set(inferred) == {base_nice}


def test_nice_values_outside_0_to_19_are_refused() -> None:
    for bad in (-1, 20):
        with pytest.raises(ConfigError, match=r"workers\.background_nice"):
            load_config(None, {"workers.background_nice": bad})
