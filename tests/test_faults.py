"""Engine faults on any backend: a call that raises, hangs past --engine-timeout or
returns the wrong shape costs the rows of its batch only; the run never hangs; if
every engine dies the run still ends with a valid report and says so."""

from __future__ import annotations

import json
import time
from pathlib import Path

import anyio
import pytest

from batchsr.config import load_config
from batchsr.images import list_inputs
from batchsr.pipeline.run import RunResult, run_pipeline
from batchsr.resolve import ResolvedModel
from tests.helpers.faulty_engine import FaultScript, FaultyEngine
from tests.helpers.images import photo_folder


async def _run(tmp_path: Path, model: Path, script: FaultScript, *, images: int) -> RunResult:
    folder = photo_folder(tmp_path / "in", images, 40, 48, name="{i:02d}")
    # One whole image per call and one worker, so call n is image n.
    config = load_config(
        None,
        {
            "tiling.tile": 0,
            "model.engine_timeout_s": 0.5,
            "output.score": False,
            "model.warmup": False,  # the scripts number the engine's calls from the first
        },
    )
    try:
        with anyio.fail_after(60):
            return await run_pipeline(
                list_inputs(folder),
                config=config,
                out_dir=tmp_path / "out",
                model=ResolvedModel("m", model, "onnx", margin=4),
                engine_factory=lambda: FaultyEngine(model, script),
            )
    finally:
        script.release.set()


@pytest.mark.asyncio
async def test_raise_hang_and_wrong_shape_cost_only_their_images(
    tmp_path: Path, espcn_onnx: Path
) -> None:
    script = FaultScript({1: "raise", 3: "shape", 5: "hang"})
    t0 = time.monotonic()
    result = await _run(tmp_path, espcn_onnx, script, images=8)
    assert time.monotonic() - t0 < 20
    rows = json.loads(result.report_path.read_text())["A"][0]["images"]
    failed = {r["img_name"]: r["error"] for r in rows if r.get("error")}
    assert set(failed) == {"01", "03", "05"}
    assert "device error 0x42" in failed["01"]
    assert "ShapeMismatchError" in failed["03"]
    assert "timed out" in failed["05"] or "timeout" in failed["05"]
    assert result.summary.ok == 5 and not result.engines_lost


@pytest.mark.asyncio
async def test_when_every_engine_dies_the_run_ends_with_a_valid_report(
    tmp_path: Path, espcn_onnx: Path
) -> None:
    result = await _run(tmp_path, espcn_onnx, FaultScript(always="raise"), images=6)
    assert result.engines_lost and result.summary.ok == 0
    rows = json.loads(result.report_path.read_text())["A"][0]["images"]
    assert len(rows) == 6 and all(r["error"] for r in rows)
