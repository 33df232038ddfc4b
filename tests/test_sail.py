"""The sail backend and the infer workers on several TPUs, through the sophon.sail fake
(tests/helpers/fakes/sophon/sail.py stands for the TPU hardware we lack)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import numpy as np
import pytest
from PIL import Image
from structlog.testing import capture_logs

from batchsr.config import load_config
from batchsr.engines import open_engine
from batchsr.engines.onnx import OnnxEngine
from batchsr.errors import EngineError, EngineUnavailableError, ShapeMismatchError
from batchsr.images import list_inputs
from batchsr.manifest import Artifact, Manifest, file_sha256, write_manifest
from batchsr.pipeline.run import run_pipeline
from batchsr.records import Failed
from batchsr.resolve import ResolvedModel, resolve_model
from tests.helpers.images import photo_like, write_png
from tests.helpers.paths import FAKES, REPO

STAGES = [[2, 3, 48, 48], [1, 3, 48, 48]]


@pytest.fixture
def sail(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The fake ``sophon.sail``, importable as the real one, reset around each test."""
    monkeypatch.syspath_prepend(str(FAKES))
    import sophon.sail as fake

    fake._fake.reset()
    yield fake
    fake._fake.release_hangs()
    fake._fake.reset()


def _bmodel(sail: ModuleType, folder: Path, onnx: Path, **kwargs: Any) -> ResolvedModel:
    """A fake bmodel and the manifest that lists its stages (as a model folder has)."""
    stages = kwargs.pop("stages", STAGES)
    path = sail.write_bmodel(folder / "espcn.bmodel", onnx=onnx, stages=stages, **kwargs)
    manifest = _manifest(path, [tuple(s) for s in stages])
    return ResolvedModel(
        name="espcn", path=path, format="bmodel", scale=4, margin=4, manifest=manifest
    )


def _engine(sail: ModuleType, tmp_path: Path, onnx: Path, **kwargs: Any):
    from batchsr.engines.sail import SailEngine

    model = _bmodel(sail, tmp_path, onnx, **kwargs)
    return SailEngine(model.path, device_id=1, shapes=[tuple(s) for s in STAGES])


def test_missing_sophon_says_how_to_install_the_wheel(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "sophon", None)
    model = ResolvedModel(name="m", path=tmp_path / "m.bmodel", format="bmodel")
    with pytest.raises(EngineUnavailableError, match=r"bm-smi.*pip install sophon-"):
        open_engine(model, load_config().model)


def test_engine_lists_combined_stages_and_matches_onnx_on_each(
    sail: ModuleType, tmp_path: Path, espcn_onnx: Path
) -> None:
    engine = _engine(sail, tmp_path, espcn_onnx, precision="F32")
    assert engine.input_shapes == ((2, 3, 48, 48), (1, 3, 48, 48)) and engine.scale == 4
    reference = OnnxEngine(espcn_onnx)
    x = np.random.default_rng(0).random((2, 3, 48, 48), dtype=np.float32)
    np.testing.assert_allclose(engine.run(x), reference.run(x), atol=1e-6)
    np.testing.assert_allclose(engine.run(x[:1].copy()), reference.run(x[:1].copy()), atol=1e-6)
    with pytest.raises(ShapeMismatchError):
        engine.run(np.zeros((3, 3, 48, 48), np.float32))
    engine.close()


def test_fake_rejects_shapes_and_dtypes_the_bmodel_does_not_hold(
    sail: ModuleType, tmp_path: Path, espcn_onnx: Path
) -> None:
    path = _bmodel(sail, tmp_path, espcn_onnx).path
    engine = sail.Engine(str(path), 0, sail.IOMode.SYSIO)
    assert engine.get_input_shape("espcn", "input") == [2, 3, 48, 48]  # the maximum
    with pytest.raises(sail.SailEngineError, match="bad input"):
        engine.process("espcn", {"input": np.zeros((1, 3, 40, 48), np.float32)})
    handle = engine.get_handle()
    wrong = sail.Tensor(handle, [1, 3, 48, 48], sail.Dtype.BM_INT8, True, True)
    out = sail.Tensor(handle, [1, 3, 192, 192], sail.Dtype.BM_FLOAT32, True, True)
    with pytest.raises(sail.SailEngineError, match="bad input"):
        engine.process("espcn", {"input": wrong}, {"input": [1, 3, 48, 48]}, {"output": out})
    with pytest.raises(sail.SailEngineError, match="invalid bmodel"):
        sail.Engine(str(espcn_onnx), 0, sail.IOMode.SYSIO)


def test_int8_io_is_scaled_and_f16_io_is_refused(
    sail: ModuleType, tmp_path: Path, espcn_onnx: Path
) -> None:
    engine = _engine(
        sail,
        tmp_path,
        espcn_onnx,
        precision="F32",
        input_dtype="BM_INT8",
        input_scale=127.0,
        output_dtype="BM_INT8",
        output_scale=1 / 64,
    )
    x = np.random.default_rng(1).random((2, 3, 48, 48), dtype=np.float32)
    diff = np.abs(engine.run(x) - OnnxEngine(espcn_onnx).run(x))
    assert diff.max() < 0.05  # one output step (1/64) plus input rounding
    with pytest.raises(EngineError, match=r"BM_FLOAT16 input.*quant_input"):
        _engine(sail, tmp_path, espcn_onnx, input_dtype="BM_FLOAT16")


def test_tensor_form_releases_the_gil_and_numpy_form_holds_it(
    sail: ModuleType, tmp_path: Path, espcn_onnx: Path
) -> None:
    """A Python thread ticking beside one device call gets nothing done while the
    numpy form occupies the device, and keeps ticking while the Tensor form does."""
    from batchsr.engines.sail import SailEngine

    sail._fake.host_compute = False
    sail._fake.device_time_s = 0.2
    path = _bmodel(sail, tmp_path, espcn_onnx).path
    x = np.zeros((2, 3, 48, 48), np.float32)
    inside = {}
    for form in ("tensor", "numpy"):
        engine = SailEngine(path, device_id=0, form=form)  # type: ignore[arg-type]
        ticks: list[float] = []
        stop = threading.Event()

        def tick(ticks: list[float] = ticks, stop: threading.Event = stop) -> None:
            while not stop.is_set():
                ticks.append(time.perf_counter())
                time.sleep(0)  # yield often; only Python-level progress is measured

        ticker = threading.Thread(target=tick)
        ticker.start()
        engine.run(x)
        stop.set()
        ticker.join()
        t0, t1, used = sail._fake.busy[0][-1]
        assert used == form
        inside[form] = sum(t0 + 0.01 < t < t1 - 0.01 for t in ticks)
        engine.close()
    assert inside["numpy"] == 0 and inside["tensor"] > 100, inside


def _folder(tmp_path: Path, n: int, *, size: tuple[int, int] = (70, 90)) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(n):
        write_png(folder / f"img_{i:02d}.png", photo_like(*size, seed=i))
    return folder


def _rgb(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


async def _run(folder: Path, out: Path, model: ResolvedModel, **overrides: object):
    # No warm-up call: the fake's faults are injected by call number, counted from the
    # first call the run makes.
    config = load_config(None, {"output.score": False, "model.warmup": False, **overrides})
    with anyio.fail_after(60):
        return await run_pipeline(list_inputs(folder), config=config, model=model, out_dir=out)


@pytest.mark.asyncio
async def test_pipeline_on_two_tpus_with_two_engines_each_matches_the_onnx_backend(
    sail: ModuleType, tmp_path: Path, espcn_onnx: Path
) -> None:
    sail._fake.device_time_s = 0.005
    folder = _folder(tmp_path, 5)
    model = _bmodel(sail, tmp_path, espcn_onnx, precision="F32")
    with capture_logs() as logs:
        result = await _run(
            folder,
            tmp_path / "sail",
            model,
            **{"model.backend": "sail", "model.devices": "0,1", "model.engines_per_device": 2},
        )
    assert result.summary.ok == 5 and result.summary.failed == 0
    start = next(e for e in logs if e["event"] == "run_started")
    assert start["infer_devices"] == [0, 1, 0, 1]
    infer = [e for e in logs if e.get("stage") == "infer" and e["event"] == "item_done"]
    assert {(e["worker"], e["device"]) for e in infer} <= {(0, 0), (1, 1), (2, 0), (3, 1)}
    assert set(sail._fake.busy) == {0, 1}
    # 5 images x 6 tiles in batches of 2; the geometry knows batch 1 for a tail.
    assert result.geometry.batch == 2 and result.geometry.tail_batches == (1,)
    onnx_model = ResolvedModel(name="espcn", path=espcn_onnx, format="onnx", margin=4)
    reference = await _run(
        folder, tmp_path / "onnx", onnx_model, **{"tiling.tile": 48, "tiling.batch": 2}
    )
    assert reference.summary.ok == 5
    for src in sorted(folder.iterdir()):
        got, want = _rgb(tmp_path / "sail" / src.name), _rgb(tmp_path / "onnx" / src.name)
        assert got.shape == want.shape and np.abs(got.astype(int) - want).max() <= 1


@pytest.mark.asyncio
async def test_last_partial_batch_uses_the_smaller_stage(
    sail: ModuleType, tmp_path: Path, espcn_onnx: Path
) -> None:
    """3 images of 6 tiles with stages 8 and 4: batches of 8, 8, then the last 2 tiles
    padded to 4 rather than 8."""
    folder = _folder(tmp_path, 3)
    model = _bmodel(sail, tmp_path, espcn_onnx, stages=[[8, 3, 48, 48], [4, 3, 48, 48]])
    with capture_logs() as logs:
        result = await _run(folder, tmp_path / "out", model, **{"model.backend": "sail"})
    assert result.summary.ok == 3 and result.geometry.tail_batches == (4,)
    infer = [e for e in logs if e.get("stage") == "infer" and e["event"] == "item_done"]
    assert sorted((e["tiles"], e["padded"]) for e in infer) == [(2, 2), (8, 0), (8, 0)]


def _manifest(path: Path, shapes: list[tuple[int, int, int, int]]) -> Manifest:
    return Manifest(
        name="espcn",
        architecture="espcn",
        scale=4,
        in_channels=3,
        out_channels=3,
        margin=4,
        artifacts=(
            Artifact(
                path=path.name,
                format="bmodel",
                shapes=tuple(shapes),
                size_bytes=path.stat().st_size,
                sha256=file_sha256(path),
                quantize="F16",
            ),
        ),
    )


def test_model_folder_whose_manifest_lists_a_combined_bmodel_opens_every_stage(
    sail: ModuleType, tmp_path: Path, espcn_onnx: Path
) -> None:
    folder = tmp_path / "espcn"
    folder.mkdir()
    path = sail.write_bmodel(folder / "espcn_f16.bmodel", onnx=espcn_onnx, stages=STAGES)
    write_manifest(folder, _manifest(path, [(2, 3, 48, 48), (1, 3, 48, 48)]))
    model = resolve_model(str(folder), backend="sail")
    assert model.format == "bmodel"
    engine = open_engine(model, load_config(None, {"model.devices": "1"}).model)
    assert engine.input_shapes == ((2, 3, 48, 48), (1, 3, 48, 48))
    engine.close()


@pytest.mark.asyncio
async def test_a_failing_device_call_becomes_error_rows_and_the_engine_is_recreated(
    sail: ModuleType, tmp_path: Path, espcn_onnx: Path
) -> None:
    sail._fake.inject(0, "raise")
    folder = _folder(tmp_path, 6)
    model = _bmodel(sail, tmp_path, espcn_onnx)
    with capture_logs() as logs:
        result = await _run(folder, tmp_path / "out", model, **{"model.backend": "sail"})
    failed = [r for r in result.rows if isinstance(r, Failed)]
    assert 1 <= len(failed) <= 2 and len(result.rows) == 6  # one batch of 2 tiles
    assert all("TPU 0" in r.message and "SailEngineError" in r.message for r in failed)
    assert any(e["event"] == "engine_recreated" for e in logs)
    assert result.summary.ok == 6 - len(failed)


@pytest.mark.asyncio
async def test_a_hung_device_call_times_out_and_the_run_ends(
    sail: ModuleType, tmp_path: Path, espcn_onnx: Path
) -> None:
    """TPU 0 hangs on its first call (and so stays busy): its worker abandons the call,
    its replacement engine times out too and retires; TPU 1 does the rest."""
    sail._fake.inject(0, "hang")
    sail._fake.device_time_s = 0.05  # TPU 1 is still busy when TPU 0's worker recovers
    folder = _folder(tmp_path, 6)
    model = _bmodel(sail, tmp_path, espcn_onnx)
    try:
        with capture_logs() as logs:
            result = await _run(
                folder,
                tmp_path / "out",
                model,
                **{
                    "model.backend": "sail",
                    "model.devices": "0,1",
                    "model.engine_timeout_s": 0.5,
                },
            )
    finally:
        sail._fake.release_hangs()
    failed = [r for r in result.rows if isinstance(r, Failed)]
    assert len(result.rows) == 6 and 1 <= len(failed) <= 4
    assert all("TPU 0" in r.message and "abandoned" in r.message for r in failed)
    assert any(e["event"] == "infer_worker_retired" for e in logs)


@pytest.mark.asyncio
async def test_when_every_worker_has_failed_the_remaining_images_become_error_rows(
    sail: ModuleType, tmp_path: Path, espcn_onnx: Path
) -> None:
    sail._fake.inject(0, "raise", count=1000)
    folder = _folder(tmp_path, 5)
    model = _bmodel(sail, tmp_path, espcn_onnx)
    result = await _run(folder, tmp_path / "out", model, **{"model.backend": "sail"})
    assert result.summary.failed == 5 and result.summary.ok == 0
    messages = [r.message for r in result.rows]
    assert any("no infer worker left" in m for m in messages)


def _model_folder(sail: ModuleType, tmp_path: Path, onnx: Path) -> Path:
    """A model folder whose manifest lists an F16 bmodel and the ONNX it came from."""
    folder = tmp_path / "espcn"
    folder.mkdir()
    bmodel = sail.write_bmodel(folder / "espcn_f16.bmodel", onnx=onnx, stages=STAGES)
    (folder / "espcn.onnx").write_bytes(onnx.read_bytes())
    manifest = _manifest(bmodel, [(2, 3, 48, 48), (1, 3, 48, 48)])
    onnx_artifact = Artifact(
        path="espcn.onnx",
        format="onnx",
        shapes=((None, 3, None, None),),
        size_bytes=onnx.stat().st_size,
        sha256=file_sha256(onnx),
    )
    write_manifest(folder, replace(manifest, artifacts=(*manifest.artifacts, onnx_artifact)))
    return folder


def test_selfcheck_passes_an_f16_bmodel_against_its_onnx_reference(
    sail: ModuleType, tmp_path: Path, espcn_onnx: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from batchsr.cli import main

    folder = _model_folder(sail, tmp_path, espcn_onnx)
    image = write_png(tmp_path / "real.png", photo_like(60, 80, seed=3))
    assert main(["selfcheck", str(folder), "--device", "1", "--image", str(image)]) == 0
    out = capsys.readouterr().out
    assert f"reference {folder / 'espcn.onnx'}" in out
    cases = [line for line in out.splitlines() if "PSNR" in line and "max abs diff" in line]
    assert len(cases) == 4  # (random, real) x two stages
    assert all(float(line.split("PSNR ")[1].split(" dB")[0]) > 40 for line in cases)
    assert "latency   min" in out and "median" in out
    assert out.strip().splitlines()[-1].startswith("PASS: ")


def test_selfcheck_fails_when_the_bmodel_computes_something_else(
    sail: ModuleType, tmp_path: Path, espcn_onnx: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from batchsr.cli import main
    from tests.helpers.models import export_espcn

    other = export_espcn(tmp_path / "other.onnx", seed=7)
    path = sail.write_bmodel(tmp_path / "m.bmodel", onnx=other, stages=[[1, 3, 48, 48]])
    assert main(["selfcheck", str(path), "--reference", str(espcn_onnx), "--repeats", "1"]) == 1
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("FAIL: PSNR") and "does not compute what the reference does" in last


def test_cli_flags_set_devices_engines_and_timeout() -> None:
    from batchsr.cli.flags import overrides_from
    from batchsr.cli.upscale import build_parser

    args = build_parser().parse_args(
        ["-i", "x", "--devices", "0,1", "--engines-per-device", "3", "--engine-timeout", "2.5"]
    )
    model = load_config(None, overrides_from(args)).model
    assert model.device_ids == (0, 1) and model.engines_per_device == 3
    assert model.engine_timeout_s == 2.5


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("devices", "0,x", "model.devices = '0,x'"),
        ("devices", "1,1", "distinct TPU ids"),
        ("engines_per_device", 0, "use 1-16"),
        ("engine_timeout_s", -1, "use 0 (none) or more"),
    ],
)
def test_bad_tpu_settings_raise_config_errors(key: str, value: object, message: str) -> None:
    from batchsr.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        load_config(None, {f"model.{key}": value})
    assert message in str(info.value)


def test_partial_batch_pads_to_the_smallest_held_batch_size() -> None:
    from batchsr.tiling import TileGeometry

    geometry = TileGeometry(48, 48, 4, 8, True, 4, tail_batches=(1, 4))
    assert [geometry.padded_size(k) for k in (1, 2, 4, 5, 8)] == [1, 4, 4, 8, 8]


def test_cli_runs_a_bmodel_on_two_tpus_and_exits_despite_a_hung_call(
    image_folder: Path, tmp_path: Path, espcn_onnx: Path
) -> None:
    """As a user runs it: ``--model X.bmodel --devices 0,1``; TPU 0's first call never
    returns within the run, yet the process reports and exits."""

    sys.path.insert(0, str(FAKES))
    try:
        from sophon.sail import write_bmodel
    finally:
        sys.path.remove(str(FAKES))
    bmodel = write_bmodel(tmp_path / "espcn.bmodel", onnx=espcn_onnx, stages=[[2, 3, 48, 48]])
    env = {
        **os.environ,
        "PYTHONPATH": str(FAKES),
        "FAKE_SAIL_HANG": "0",
        "FAKE_SAIL_HANG_S": "120",
        "FAKE_SAIL_DEVICE_TIME_S": "0.05",
    }
    out = tmp_path / "out"
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(REPO / "run.py"), "--model", str(bmodel), "--input",
         str(image_folder), "--output", str(out), "--no-score", "--devices", "0,1",
         "--engine-timeout", "1", "--no-warmup"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert time.perf_counter() - t0 < 40  # not the 120 s the hung call would take
    assert proc.returncode == 0, proc.stderr
    assert "3 images:" in proc.stdout and "still running" in proc.stderr
    rows = json.loads((out / "report.json").read_text())["A"][0]["images"]
    assert len(rows) == 3
    assert all("TPU 0" in r["error"] for r in rows if r.get("error"))
