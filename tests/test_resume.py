"""--resume: an interrupted run continues where it stopped, and the final report equals
an uninterrupted run's apart from timings; foreign output folders are refused."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from batchsr.config import load_config
from batchsr.errors import ConfigError
from batchsr.images import list_inputs
from batchsr.pipeline.run import RunResult, run_pipeline
from batchsr.resolve import ResolvedModel
from batchsr.resume import STATE_NAME, RunState, plan_resume
from tests.helpers.images import photo_folder, photo_like, write_png


def _score(rgb) -> float:
    return float(rgb.mean()) / 10.0


async def _run(folder: Path, out: Path, model: Path, *, resume: bool, tile: int = 32) -> RunResult:
    config = load_config(None, {"tiling.tile": tile})
    pixel_hash = config.pixel_hash("model-digest")
    plan = plan_resume(list_inputs(folder), out, pixel_hash=pixel_hash, resume=resume)
    state = RunState(out, pixel_hash=pixel_hash, append=resume)
    try:
        with anyio.fail_after(60):
            return await run_pipeline(
                plan.todo,
                config=config,
                model=ResolvedModel("m", model, "onnx", margin=4),
                out_dir=out,
                scorer=_score,
                carried=plan.done,
                state=state,
            )
    finally:
        state.close()


def _rows_without_timings(result: RunResult) -> list[tuple[str, str | None]]:
    rows = json.loads(result.report_path.read_text())["A"][0]["images"]
    return [(r["img_name"], r["niqe"]) for r in rows]


@pytest.mark.asyncio
async def test_resume_after_an_interrupted_run_completes_the_same_report(
    tmp_path: Path, espcn_onnx: Path
) -> None:
    folder = photo_folder(tmp_path / "in", 5, 40, 50)
    reference = await _run(folder, tmp_path / "ref", espcn_onnx, resume=False)

    out = tmp_path / "out"
    await _run(folder, out, espcn_onnx, resume=False)
    # Simulate a kill after two images: the state keeps two whole lines and a torn one,
    # and the later outputs never reached the disk.
    lines = (out / STATE_NAME).read_text().splitlines()
    names = [json.loads(line)["name"] for line in lines[:2]]
    (out / STATE_NAME).write_text("\n".join(lines[:2]) + "\n" + lines[2][:10])
    for png in out.glob("*.png"):
        if png.stem not in names:
            png.unlink()

    resumed = await _run(folder, out, espcn_onnx, resume=True)
    assert resumed.summary.resumed == 2 and resumed.summary.ok == 5
    assert _rows_without_timings(resumed) == _rows_without_timings(reference)
    # a second resume has nothing left to do
    again = await _run(folder, out, espcn_onnx, resume=True)
    assert again.summary.resumed == 5


@pytest.mark.asyncio
async def test_resume_reruns_changed_inputs_and_missing_outputs(
    tmp_path: Path, espcn_onnx: Path
) -> None:
    folder = photo_folder(tmp_path / "in", 3, 40, 50)
    out = tmp_path / "out"
    await _run(folder, out, espcn_onnx, resume=False)
    write_png(folder / "1.png", photo_like(40, 50, seed=99))  # new content, same name
    (out / "2.png").unlink()
    plan = plan_resume(
        list_inputs(folder),
        out,
        pixel_hash=load_config(None, {"tiling.tile": 32}).pixel_hash("model-digest"),
        resume=True,
    )
    assert [j.name for j in plan.todo] == ["1", "2"] and [r.name for r in plan.done] == ["0"]


@pytest.mark.asyncio
async def test_output_folder_of_another_configuration_is_refused(
    tmp_path: Path, espcn_onnx: Path
) -> None:
    folder = photo_folder(tmp_path / "in", 1, 40, 50, name="a")
    out = tmp_path / "out"
    await _run(folder, out, espcn_onnx, resume=False, tile=32)
    with pytest.raises(ConfigError, match="another configuration"):
        await _run(folder, out, espcn_onnx, resume=False, tile=48)
    # the same configuration may rerun in place
    await _run(folder, out, espcn_onnx, resume=False, tile=32)
    stray = photo_folder(tmp_path / "stray", 1, 8, 8, name="x")
    with pytest.raises(ConfigError, match="another configuration"):
        plan_resume(list_inputs(folder), stray, pixel_hash="h", resume=False)


def test_output_folder_that_would_overwrite_inputs_is_refused(tmp_path: Path) -> None:
    write_png(tmp_path / "a.png", photo_like(20, 20))
    with pytest.raises(ConfigError, match="would overwrite the input"):
        plan_resume(list_inputs(tmp_path), tmp_path, pixel_hash="h", resume=False)
    assert (tmp_path / "a.png").stat().st_size > 0


def test_resume_with_other_settings_names_them_and_overwrite_replaces(
    tmp_path: Path, espcn_onnx: Path
) -> None:
    """--resume into a folder of other settings is refused, naming what differs; the
    outputs are untouched; --overwrite replaces them."""
    from tests.helpers.cli import run_cli

    folder = photo_folder(tmp_path / "in", 1, 40, 50, name="a")
    out = tmp_path / "out"
    base = ["--model", str(espcn_onnx), "--input", str(folder), "--output", str(out), "-q"]
    assert run_cli(*base, "--tile", "32", "--no-score", cwd=tmp_path).returncode == 0
    before = (out / "a.png").read_bytes()
    refused = run_cli(*base, "--tile", "48", "--tile-mode", "blend", "--resume", cwd=tmp_path)
    assert refused.returncode == 2
    (line,) = refused.stderr.strip().splitlines()
    assert 'mode "crop" -> "blend"' in line and "tile 32 -> 48" in line
    assert "--overwrite" in line and "--resume to continue" not in line
    assert (out / "a.png").read_bytes() == before
    done = run_cli(*base, "--tile", "48", "--tile-mode", "blend", "--overwrite", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    again = run_cli(*base, "--tile", "48", "--tile-mode", "blend", "--resume", cwd=tmp_path)
    assert again.returncode == 0, again.stderr


def test_a_run_stopped_before_its_first_image_can_still_be_resumed(tmp_path: Path) -> None:
    """Its state file holds only the settings line: --resume knows the folder as ours."""
    folder = photo_folder(tmp_path / "in", 1, 20, 20, name="a")
    out = tmp_path / "out"
    out.mkdir()
    write_png(out / "stale.png", photo_like(8, 8))  # e.g. an earlier run's output
    settings = {"tile": 32}
    RunState(out, pixel_hash="h1", append=False, settings=settings).close()
    plan = plan_resume(list_inputs(folder), out, pixel_hash="h1", resume=True, settings=settings)
    assert [j.name for j in plan.todo] == ["a"]
    with pytest.raises(ConfigError, match="tile 32 -> 48"):
        plan_resume(list_inputs(folder), out, pixel_hash="h2", resume=True, settings={"tile": 48})
