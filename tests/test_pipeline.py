"""The whole pipeline on real small images with a real ONNX model (onnxruntime, CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import numpy as np
import pytest
from anyio import wait_all_tasks_blocked
from PIL import Image
from structlog.testing import capture_logs

from batchsr.config import load_config
from batchsr.engines.onnx import OnnxEngine
from batchsr.images import list_inputs
from batchsr.pipeline.decode import run_decode
from batchsr.pipeline.run import run_pipeline
from batchsr.records import Decoded, Job
from batchsr.resolve import ResolvedModel, resolve_model
from batchsr.tiling import TileGeometry, prepare_image, to_uint8
from tests.helpers.images import photo_folder, photo_like, write_png
from tests.helpers.paths import contest_inputs


def _model(path: Path) -> ResolvedModel:
    return ResolvedModel(name=path.stem, path=path, format="onnx", margin=4)


def _size(path: Path) -> tuple[int, int]:
    with Image.open(path) as img:
        return img.size


def _rgb(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def _fake_niqe(rgb: np.ndarray) -> float:
    """Stands in for NIQE where a test checks plumbing, not the metric: deterministic
    in the pixels, so a wrong or swapped image shows up as a wrong value."""
    return float(rgb.mean()) / 10.0


async def _run(folder: Path, out: Path, model: Path, **overrides: object):
    config = load_config(None, {"output.score": True, **overrides})
    with anyio.fail_after(60):
        return await run_pipeline(
            list_inputs(folder), config=config, model=_model(model), out_dir=out, scorer=_fake_niqe
        )


@pytest.mark.asyncio
@pytest.mark.parametrize("tile", [32, 0])
async def test_pipeline_writes_whole_image_inference_outputs_and_contest_report(
    image_folder: Path, tmp_path: Path, espcn_onnx: Path, tile: int
) -> None:
    """Tiled (32 px) or whole-image (--tile 0): the outputs equal whole-image inference."""
    result = await _run(image_folder, tmp_path / "out", espcn_onnx, **{"tiling.tile": tile})
    report = json.loads(result.report_path.read_text())
    (entry,) = report["A"]
    assert set(entry) == {"model_size", "time_all", "runtime_avg", "niqe_avg", "images"}
    assert entry["model_size"] == espcn_onnx.stat().st_size
    assert [r["img_name"] for r in entry["images"]] == ["img_00", "img_01", "img_02"]
    engine = OnnxEngine(espcn_onnx)
    niqes = []
    for row, src in zip(entry["images"], sorted(image_folder.iterdir()), strict=True):
        assert len(row["runtime"].split(".")[1]) == 4 and float(row["runtime"]) > 0
        rgb = _rgb(src)
        saved = _rgb(tmp_path / "out" / f"{row['img_name']}.png")
        assert saved.shape == (rgb.shape[0] * 4, rgb.shape[1] * 4, 3)
        # The pipeline extends the image by the model's margin (4) before inference.
        geometry = TileGeometry(0, 0, 4, 1, False, 4)
        whole = to_uint8(engine.run(prepare_image(rgb, geometry)[0][None])[0][:, 16:-16, 16:-16])
        if tile == 0:
            assert np.array_equal(saved, whole)
        elif min(rgb.shape[:2]) >= 32:
            # Tiled with the receptive-field margin: equal to whole-image inference
            # (up to a rounding flip where float noise straddles .5).
            assert np.mean(saved != whole) < 1e-4
            assert np.abs(saved.astype(int) - whole).max() <= 1
        assert float(row["niqe"]) == pytest.approx(_fake_niqe(saved), abs=5e-5)
        niqes.append(_fake_niqe(saved))
    assert float(entry["niqe_avg"]) == pytest.approx(np.mean(niqes), abs=5e-5)
    assert result.summary.ok == 3 and result.summary.failed == 0


@pytest.mark.asyncio
async def test_a_broken_image_is_one_error_row_and_the_rest_complete(
    image_folder: Path, tmp_path: Path, espcn_onnx: Path
) -> None:
    (image_folder / "img_01b.png").write_bytes(b"this is not a png")
    with capture_logs() as logs:
        result = await _run(image_folder, tmp_path / "out", espcn_onnx)
    rows = json.loads(result.report_path.read_text())["A"][0]["images"]
    assert [r["img_name"] for r in rows] == ["img_00", "img_01", "img_01b", "img_02"]
    bad = rows[2]
    assert bad["runtime"] is None and bad["niqe"] is None and "decode" in bad["error"]
    assert all(r.get("error") is None and r["niqe"] for i, r in enumerate(rows) if i != 2)
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == [
        "img_00.png",
        "img_01.png",
        "img_02.png",
    ]
    failures = [e for e in logs if e["event"] == "image_failed"]
    assert len(failures) == 1 and failures[0]["log_level"] == "error"


@pytest.mark.asyncio
async def test_static_batch_model_fills_batches_across_images_and_pads_only_the_last(
    image_folder: Path, tmp_path: Path, espcn_onnx_static: Path
) -> None:
    with capture_logs() as logs:
        result = await _run(image_folder, tmp_path / "out", espcn_onnx_static)
    assert result.geometry.batch == 2 and result.geometry.tile_h == 48
    infer = [e for e in logs if e.get("stage") == "infer" and e["event"] == "item_done"]
    padded = [e["padded"] for e in sorted(infer, key=lambda e: e["batch_id"])]
    assert all(p == 0 for p in padded[:-1])
    # some batch holds tiles of two images
    assert any(len(e["image_ids"]) == 2 for e in infer)
    assert result.summary.ok == 3


@pytest.mark.asyncio
async def test_every_stage_logs_one_record_per_item_with_timings(
    image_folder: Path, tmp_path: Path, espcn_onnx: Path
) -> None:
    with capture_logs() as logs:
        await _run(image_folder, tmp_path / "out", espcn_onnx, **{"workers.infer": 2})
    assert logs[0]["event"] == "run_started" and logs[-1]["event"] == "run_finished"
    per_stage: dict[str, list[dict]] = {}
    for e in logs:
        if e["event"] == "item_done":
            per_stage.setdefault(e["stage"], []).append(e)
            assert e["t_end"] >= e["t_start"] and e["wait_in_s"] >= 0 and e["wait_out_s"] >= 0
    for stage in ("decode", "tile", "save", "score", "report"):
        assert sorted(e["image_id"] for e in per_stage[stage]) == [0, 1, 2], stage
    assert {e["worker"] for e in per_stage["infer"]} <= {0, 1}
    summary = logs[-1]["summary"]
    assert summary["ok"] == 3 and summary["images"] == 3


@pytest.mark.asyncio
async def test_buffers_bound_the_images_in_flight(tmp_path: Path, espcn_onnx: Path) -> None:
    """On a folder much larger than the buffers, no stage ever sees more queued items
    than its buffer holds."""
    folder = photo_folder(tmp_path / "many", 16, 24, 30, name="{i:03d}")
    with capture_logs() as logs:
        result = await _run(
            folder,
            tmp_path / "out",
            espcn_onnx,
            **{
                f"queues.{e}": 1
                for e in ("paths", "decoded", "tiles", "inferred", "stitched", "saved", "scored")
            },
        )
    assert result.summary.ok == 16
    assert max(e["queue_in"] for e in logs if e["event"] == "item_done") <= 1


@pytest.mark.asyncio
async def test_a_stalled_downstream_stops_decode_after_filling_its_buffer(tmp_path: Path) -> None:
    """Backpressure: with nobody reading decode's output, decode takes exactly
    buffer + 1 jobs (one held in a blocked send) and then waits."""
    for i in range(10):
        write_png(tmp_path / f"{i}.png", photo_like(8, 8, seed=i))
    jobs = [Job(i, str(i), tmp_path / f"{i}.png") for i in range(10)]
    paths_tx, paths_rx = anyio.create_memory_object_stream[Job](10)
    out_tx, out_rx = anyio.create_memory_object_stream[Decoded](2)
    for job in jobs:
        paths_tx.send_nowait(job)
    paths_tx.close()
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: run_decode(paths_rx, out_tx, max_pixels=10**6))
        with anyio.fail_after(10):
            while out_tx.statistics().tasks_waiting_send == 0:
                await wait_all_tasks_blocked()
        assert out_tx.statistics().current_buffer_used == 2
        assert paths_rx.statistics().current_buffer_used == 10 - 3
        received = [await out_rx.receive() for _ in range(10)]
        assert [r.id for r in received] == list(range(10))
    with out_rx, pytest.raises(anyio.EndOfStream):
        await out_rx.receive()


@pytest.mark.asyncio
async def test_contest_samples_run_through_the_pipeline(tmp_path: Path, espcn_onnx: Path) -> None:
    folder = tmp_path / "contest"
    folder.mkdir()
    for path in contest_inputs():
        (folder / path.name).symlink_to(path)
    result = await _run(folder, tmp_path / "out", espcn_onnx)
    assert result.summary.ok == 4
    for path in contest_inputs():
        w, h = _size(path)
        assert _size(tmp_path / "out" / path.name) == (w * 4, h * 4)


@pytest.mark.asyncio
async def test_default_espcn_runs_alike_on_onnx_and_torch(
    image_folder: Path, tmp_path: Path
) -> None:
    """The shipped model folder resolves per backend: ONNX for onnx, safetensors for
    torch; both give the same pixels up to a rounding flip."""
    outputs = {}
    for backend in ("onnx", "torch"):
        model = resolve_model("espcn", backend=backend)
        assert model.format == ("onnx" if backend == "onnx" else "safetensors")
        config = load_config(None, {"output.score": False, "model.backend": backend})
        with anyio.fail_after(60):
            result = await run_pipeline(
                list_inputs(image_folder), config=config, model=model, out_dir=tmp_path / backend
            )
        assert result.summary.ok == 3 and result.geometry.pad == model.margin == 4
        assert json.loads(result.report_path.read_text())["A"][0]["model_size"] == model.size_bytes
        outputs[backend] = _rgb(tmp_path / backend / "img_00.png").astype(int)
    assert np.abs(outputs["onnx"] - outputs["torch"]).max() <= 1


@pytest.mark.asyncio
@pytest.mark.parametrize("mode", ["crop", "plain", "average", "blend"])
async def test_every_tile_mode_runs_through_the_pipeline(
    image_folder: Path, tmp_path: Path, espcn_onnx: Path, mode: str
) -> None:
    with capture_logs() as logs:
        result = await _run(
            image_folder, tmp_path / "out", espcn_onnx, **{"tiling.mode": mode, "tiling.tile": 32}
        )
    assert result.summary.ok == 3 and result.geometry.mode == mode
    assert logs[0]["geometry"]["mode"] == mode
    for src in sorted(image_folder.iterdir()):
        h, w = _rgb(src).shape[:2]
        assert _size(tmp_path / "out" / f"{src.stem}.png") == (w * 4, h * 4)


@pytest.mark.asyncio
async def test_one_channel_model_runs_in_y_only_mode(
    image_folder: Path, tmp_path: Path, espcn_onnx_y: Path
) -> None:
    result = await _run(image_folder, tmp_path / "out", espcn_onnx_y)
    assert result.geometry.y_only and result.summary.ok == 3
    saved = _rgb(tmp_path / "out" / "img_00.png")
    assert saved.shape == (280, 360, 3)
    # chroma comes from the input: the output is not grey
    assert np.abs(saved[..., 0].astype(int) - saved[..., 2]).mean() > 5


@pytest.mark.asyncio
async def test_filter_sharpens_the_saved_and_scored_pixels(
    image_folder: Path, tmp_path: Path, espcn_onnx: Path
) -> None:
    from batchsr.filters import apply_filter

    plain = await _run(image_folder, tmp_path / "plain", espcn_onnx)
    sharp = await _run(
        image_folder, tmp_path / "sharp", espcn_onnx, **{"output.filter": "EDGE_ENHANCE"}
    )
    before = _rgb(tmp_path / "plain" / "img_00.png")
    after = _rgb(tmp_path / "sharp" / "img_00.png")
    assert np.array_equal(after, apply_filter(before, "EDGE_ENHANCE"))
    assert sharp.rows[0].niqe == pytest.approx(_fake_niqe(after))
    assert plain.rows[0].niqe != sharp.rows[0].niqe
