"""The real tpu-mlir 1.30.2 and its BM1684X emulator, not fakes.

Builds the default model's bmodels at small shapes with the real tools (F32, F16, BF16,
INT8; one shape and combined two-stage), checks what they hold with ``model_tool
--info``, runs them through the pipeline on the emulator (``--backend cmodel``) and
against the ONNX output, loads the seed's 2023 bmodel, and turns emulator crashes,
hangs and bad bmodels into the errors a user should see.

Needs ``.venv-tpu`` (``make tpu-env``); skipped with that reason without it. Slow:
each build takes 10-30 s on 2 cores, an emulator call about a second at 32x32 and about
100 s for the seed's 1x3x128x128 model.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from batchsr.bmodel_info import parse_info, read_bmodel_info
from batchsr.errors import EngineError, EngineUnavailableError, ModelError
from batchsr.manifest import load_manifest, write_manifest
from batchsr.models import get_arch, load_torchscript
from batchsr.tpumlir import REPO_VENV, TpuMlir, find_tpu_mlir
from compile.build import CompileResult, compile_model
from compile.onnx import export_onnx, for_tpu_mlir
from compile.plan import WORK_DIR, make_plan
from compile.tpu_mlir import run_plan
from tests.helpers.paths import REPO, SHARED

pytestmark = [pytest.mark.slow, pytest.mark.tpu]

EXAMPLES = REPO / "examples"
TILE = 32  # small stages keep builds and emulator calls short
ONE = (1, 1, TILE, TILE)
TWO = (2, 1, TILE, TILE)
CLI_TIMEOUT_S = 600


@pytest.fixture(scope="session")
def tpu() -> TpuMlir:
    if not (REPO_VENV / "bin" / "python").exists():
        pytest.skip(f"no tpu-mlir environment at {REPO_VENV}: run `make tpu-env`")
    found = find_tpu_mlir()
    assert found is not None and found.version == "1.30.2"
    return found


@pytest.fixture(scope="session")
def builds(tpu: TpuMlir, tmp_path_factory: pytest.TempPathFactory) -> dict[str, CompileResult]:
    """The default model built four ways; the folders are shared by the tests below."""
    root = tmp_path_factory.mktemp("bmodels")
    specs = {
        "F32": ([ONE], None),
        "F16": ([ONE, TWO], None),
        "BF16": ([TWO], None),
        "INT8": ([ONE, TWO], EXAMPLES),
    }
    return {
        q: compile_model(
            "espcn",
            root / f"espcn_{q.lower()}",
            shapes=shapes,
            quantize=q,
            calibration=cali,
            input_num=24,
            tpu_mlir=tpu,
        )
        for q, (shapes, cali) in specs.items()
    }


@pytest.mark.parametrize("quantize", ["F32", "F16", "BF16", "INT8"])
def test_real_build_passes_deploy_check_and_holds_its_stages(
    builds: dict[str, CompileResult], tpu: TpuMlir, quantize: str
) -> None:
    """Each build passed model_deploy's emulator comparison and holds exactly its shapes."""
    result = builds[quantize]
    assert result.bmodel is not None and result.bmodel.is_file() and result.script is None
    info = read_bmodel_info(result.bmodel, tpu)
    assert info.chip == "BM1684X"
    assert [n.name for n in info.nets] == [result.manifest.name]
    assert sorted(s for _, s in info.stage_shapes()) == sorted(result.plan.shapes)
    # Largest stage first: the emulator binding sizes the net's buffers from stage 0.
    assert info.stage_shapes()[0][1] == max(result.plan.shapes, key=lambda s: s[0])
    (art,) = [a for a in result.manifest.artifacts if a.format == "bmodel"]
    assert art.quantize == quantize and dict(result.manifest.tools)["tpu-mlir"] == "1.30.2"
    assert (
        art.command.startswith("python -m compile espcn")
        and f"--quantize {quantize}" in art.command
    )
    # deploy's own checks, parsed from its output: the bmodel on the emulator matches
    # the TPU-level MLIR, and the cost model gave a cycle count for each stage.
    assert [s.shape for s in art.stages] == list(result.plan.shapes)
    for stage in art.stages:
        assert stage.cycles is not None and stage.cycles > 0
        assert stage.estimated_ms is not None and stage.estimated_ms > 0
        assert stage.emulator_check in ("EQUAL", "CLOSE", "SIMILAR")
        assert stage.emulator_cosine is None or stage.emulator_cosine >= 0.99
        assert stage.quant_check in ("EQUAL", "CLOSE", "SIMILAR")
        assert stage.quant_cosine is None or stage.quant_cosine >= 0.9


def test_register_after_build_script(tpu: TpuMlir, tmp_path: Path) -> None:
    """build_bmodel.sh run in the tpu env, then --register: the manifest gains the bmodel."""
    out = tmp_path / "espcn_script"
    result = compile_model("espcn", out, shapes=[ONE], quantize="F16", use_tools=False)
    assert result.script is not None
    done = subprocess.run(
        ["bash", str(result.script)], env=tpu.env(), capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    main = subprocess.run(
        [sys.executable, "-m", "compile", "--register", "--quantize", "F16", "--shape",
         "1x1x32x32", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert main.returncode == 0, main.stderr
    manifest = load_manifest(out)
    (art,) = [a for a in manifest.artifacts if a.format == "bmodel"]
    assert (
        art.shapes == (ONE,)
        and art.stages[0].cycles
        and dict(manifest.tools)["tpu-mlir"] == "1.30.2"
    )
    assert read_bmodel_info(out / art.path, tpu).stage_shapes() == (("espcn_script", ONE),)


@pytest.mark.parametrize(
    ("arch", "kwargs"),
    [
        ("espcn", {"in_channels": 3, "out_channels": 3, "channels": 64, "upscale": 4}),
        ("espcn_res", {"in_channels": 1, "channels": 32, "upscale": 4}),
        ("fsrcnn", {"channels": 1, "d": 56, "s": 12, "m": 4, "upscale": 4}),
        ("carn", {"scale": 4, "num_feat": 64}),
        ("carn_m", {"scale": 4, "num_feat": 64, "group": 4}),
        ("ninasr", {"n_resblocks": 10, "n_feats": 16, "scale": 4}),  # NinaSR b0
        ("edsr", {"n_resblocks": 16, "n_feats": 64, "scale": 4}),  # EDSR baseline
        ("rrdbnet", {"num_block": 2, "num_feat": 32, "num_grow_ch": 16, "scale": 4}),
        ("srvgg", {"num_feat": 64, "num_conv": 16, "upscale": 4}),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_zoo_onnx_loads_in_real_model_transform(
    tpu: TpuMlir, tmp_path: Path, arch: str, kwargs: dict[str, object]
) -> None:
    """model_transform reads our ONNX (IR 8) and its MLIR matches its own onnxruntime
    1.16 on a random input, for every architecture family of the zoo."""
    import torch

    torch.manual_seed(0)
    model = get_arch(arch).create(**kwargs)
    c = model.info.in_channels
    shape = (1, c, 32, 32)
    # Static: torch.export needs 100 s to trace NinaSR with free axes; the dynamic form
    # of the default model goes through the builds above.
    onnx = export_onnx(model.module, tmp_path / f"{arch}.onnx", shape=shape, dynamic=False)
    work = tmp_path / WORK_DIR
    for_tpu_mlir(onnx, work / f"{arch}_tpu.onnx")
    plan = make_plan(model_name=arch, onnx=f"{arch}_tpu.onnx", shapes=[shape], quantize="F32")
    rng = np.random.default_rng(0)
    np.savez(work / plan.test_inputs[0], input=rng.random(shape, dtype=np.float32))
    transform_only = replace(plan, steps=plan.steps[:1])
    run_plan(transform_only, tmp_path, tpu)  # raises CompileError if the check fails
    assert (work / plan.test_references[0]).is_file()


def _workers_of(pid: int | None = None) -> list[Any]:
    """Live emulator worker processes below ``pid`` (default: this test process)."""
    import psutil

    found = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            if "cmodel_worker.py" in " ".join(child.cmdline()):
                found.append(child)
        except (psutil.ZombieProcess, psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def _crop(path: Path, box: tuple[int, int, int, int], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    with Image.open(path) as im:
        im.convert("RGB").crop(box).save(out / path.name)
    return out


def _run(model: Path, backend: str, inp: Path, out: Path, *extra: str) -> np.ndarray:
    done = subprocess.run(
        [sys.executable, str(REPO / "run.py"), "--model", str(model), "--backend", backend,
         "--input", str(inp), "--output", str(out), "--no-score", "--quiet", *extra],
        cwd=REPO, capture_output=True, text=True, timeout=CLI_TIMEOUT_S, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (png,) = sorted(out.glob("*.png"))
    return np.asarray(Image.open(png)).astype(np.int16)


@pytest.fixture(scope="module")
def held_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 72x56 crop of a real photo: several tiles of 32, edge tiles included."""
    return _crop(EXAMPLES / "coffee.png", (200, 150, 272, 206), tmp_path_factory.mktemp("img"))


@pytest.mark.parametrize(("quantize", "levels", "min_psnr"), [("F16", 2, 50.0), ("INT8", 16, 40.0)])
def test_pipeline_on_emulator_matches_onnx(
    builds: dict[str, CompileResult],
    held_out: Path,
    tmp_path: Path,
    quantize: str,
    levels: int,
    min_psnr: float,
) -> None:
    """--backend cmodel saves what --backend onnx saves, within the quantisation's error.

    Measured on this crop (saved 8-bit RGB, 224x288): F16 differs by at most 1 grey
    level (mean 0.05); INT8 (symmetric, calibrated on 24 tiles of examples/) by at
    most 12, mean 1.01, PSNR 45.4 dB. The bounds leave a margin over those figures.
    """
    folder = builds[quantize].folder
    emu = _run(folder, "cmodel", held_out, tmp_path / "cmodel")
    ref = _run(folder, "onnx", held_out, tmp_path / "onnx")
    assert emu.shape == ref.shape == (56 * 4, 72 * 4, 3)
    diff = np.abs(emu - ref)
    psnr = 10 * np.log10(255.0**2 / np.mean(diff.astype(np.float64) ** 2))
    assert diff.max() <= levels and psnr >= min_psnr


def test_emulator_crash_and_hang_are_engine_faults(builds: dict[str, CompileResult]) -> None:
    """A killed worker (as a segfault kills it) and a call past the timeout raise
    EngineError and leave no process behind; a new engine works again."""
    from batchsr.engines.cmodel import CmodelEngine

    bmodel = builds["F16"].bmodel
    assert bmodel is not None
    x = np.random.default_rng(0).random(TWO, dtype=np.float32)
    engine = CmodelEngine(bmodel, timeout_s=120)
    try:
        pid = engine.pid
        assert pid is not None
        threading.Timer(0.3, os.kill, (pid, signal.SIGSEGV)).start()
        with pytest.raises(EngineError, match=r"worker died.*signal 11"):
            engine.run(x)
        with pytest.raises(EngineError, match="not running"):
            engine.run(x)
    finally:
        engine.close()
    hung = CmodelEngine(bmodel, timeout_s=0.2)  # a 2x1x32x32 call takes about 1.5 s
    try:
        pid = hung.pid
        assert pid is not None
        with pytest.raises(EngineError, match=r"no answer from the emulator after 0\.2 s"):
            hung.run(x)
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    finally:
        hung.close()
    again = CmodelEngine(bmodel, timeout_s=120)
    try:
        assert again.run(x).shape == (2, 1, 4 * TILE, 4 * TILE)
    finally:
        again.close()


def _emulator_run(
    model: Path, held_out: Path, tmp_path: Path, images: int, *extra: str
) -> tuple[subprocess.Popen[str], list[Any]]:
    """Start ``run.py --backend cmodel`` on copies of the crop; return it once its first
    emulator worker is up, with that worker."""
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(images):
        shutil.copy(next(held_out.glob("*.png")), folder / f"{i}.png")
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "run.py"), "--model", str(model), "--backend", "cmodel",
         "--input", str(folder), "--output", str(tmp_path / "out"), "--no-score", "--quiet",
         *extra],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    workers: list[Any] = []
    while not workers and time.monotonic() < deadline and proc.poll() is None:
        workers = _workers_of(proc.pid)
        time.sleep(0.05)
    if not workers:
        proc.kill()
        pytest.fail(f"no emulator worker started: {proc.communicate()[1][-2000:]}")
    return proc, workers


def test_pipeline_survives_a_worker_crash(
    builds: dict[str, CompileResult], held_out: Path, tmp_path: Path
) -> None:
    """Killing the emulator worker mid-run costs that batch's image only; the engine is
    reopened once and the run ends with a valid report."""
    proc, (victim, *_) = _emulator_run(
        builds["F16"].folder, held_out, tmp_path, 3, "--queue-size", "1"
    )
    try:
        time.sleep(1.0)  # let it start computing, then die as a segfault kills it
        victim.send_signal(signal.SIGSEGV)
        _out, err = proc.communicate(timeout=CLI_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    rows = report["A"][0]["images"]
    assert sorted(r["img_name"] for r in rows) == ["0", "1", "2"]
    failed = [r for r in rows if r.get("error")]
    assert 1 <= len(failed) < 3, rows
    assert all("emulator worker died" in r["error"] for r in failed)
    assert "engine_recreated" in (tmp_path / "out" / "run.jsonl").read_text()
    assert proc.returncode == 0, err


def test_ctrl_c_stops_an_emulator_run_at_once(
    builds: dict[str, CompileResult], held_out: Path, tmp_path: Path
) -> None:
    """SIGINT during an emulator call: exit 130 within seconds (the call is abandoned and
    its worker killed, not waited for), a valid report, no worker left behind."""
    import psutil

    proc, workers = _emulator_run(builds["F16"].folder, held_out, tmp_path, 4)
    try:
        time.sleep(1.5)  # inside a call
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
        stopped_s = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert stopped_s < 10
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert len(report["A"][0]["images"]) <= 4
    _, alive = psutil.wait_procs(workers, timeout=5)
    assert not alive


def test_seed_bmodel_runs_on_emulator(tpu: TpuMlir) -> None:
    """The seed's tpu-mlir 1.4 (2023) F16 bmodel loads and computes its TorchScript twin."""
    import torch

    bmodel = SHARED / "anchors" / "espcn_ex.bmodel"
    script = SHARED / "anchors" / "espcn_ex.pt"
    if not bmodel.is_file() or not script.is_file():
        pytest.skip(f"seed anchors not found in {bmodel.parent} (../shared is not checked out)")
    from batchsr.engines.cmodel import CmodelEngine
    from batchsr.selfcheck import compare

    engine = CmodelEngine(bmodel, timeout_s=900, tpu=tpu)
    try:
        assert engine.input_shapes == ((1, 3, 128, 128),) and engine.scale == 4
        x = np.random.default_rng(0).random((1, 3, 128, 128), dtype=np.float32)
        got = engine.run(x)
    finally:
        engine.close()
    with torch.no_grad():
        want = load_torchscript(script)(torch.from_numpy(x)).numpy()
    diff, psnr = compare(got, want)
    assert psnr > 60 and diff < 0.01


def _deploy(tpu: TpuMlir, work: Path, *args: str) -> None:
    done = subprocess.run(
        [tpu.tools["model_deploy.py"], *args], cwd=work, env=tpu.env(), capture_output=True,
        text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:]


def test_quantised_io_and_another_chip(builds: dict[str, CompileResult], tpu: TpuMlir) -> None:
    """An INT8 bmodel with int8 input and output (--quant_input/--quant_output) takes and
    returns float32 through the emulator engine, scaled as tpu-mlir's runner scales it;
    a bmodel for BM1684 is refused by name."""
    from batchsr.engines.cmodel import CmodelEngine

    int8 = builds["INT8"]
    work = int8.folder / WORK_DIR
    stem = f"{int8.manifest.name}_1x1x{TILE}x{TILE}"
    _deploy(tpu, work, "--mlir", f"{stem}.mlir", "--quantize", "INT8", "--calibration_table",
            f"{stem}_cali_table", "--chip", "bm1684x", "--quant_input", "--quant_output",
            "--model", "qio.bmodel")  # fmt: skip
    info = read_bmodel_info(work / "qio.bmodel", tpu)
    (stage,) = info.nets[0].stages
    assert {stage.inputs[0].dtype, stage.outputs[0].dtype} <= {"int8", "uint8"}
    x = np.random.default_rng(0).random(ONE, dtype=np.float32)
    quantised = CmodelEngine(work / "qio.bmodel", tpu=tpu)
    floating = CmodelEngine(int8.bmodel, tpu=tpu)  # type: ignore[arg-type]
    try:
        got, want = quantised.run(x), floating.run(x)
    finally:
        quantised.close()
        floating.close()
    assert got.dtype == np.float32 and got.shape == want.shape == (1, 1, 4 * TILE, 4 * TILE)
    # The int8 output is one more rounding of the same values: within two of its steps.
    step = stage.outputs[0].scale
    assert float(np.max(np.abs(got - want))) <= 2 * step + 1e-6
    _deploy(tpu, work, "--mlir", f"{stem}.mlir", "--quantize", "F32", "--chip", "bm1684",
            "--model", "bm1684.bmodel")  # fmt: skip
    assert read_bmodel_info(work / "bm1684.bmodel", tpu).chip == "BM1684"
    with pytest.raises(ModelError, match=r"is a bmodel for BM1684; .* are BM1684X"):
        CmodelEngine(work / "bm1684.bmodel", tpu=tpu)


def _selfcheck(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "run.py"), "selfcheck", *args],
        cwd=REPO, capture_output=True, text=True, timeout=CLI_TIMEOUT_S, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("quantize", ["F16", "INT8"])
def test_selfcheck_emulate_passes_per_stage(
    builds: dict[str, CompileResult], quantize: str
) -> None:
    """selfcheck --emulate: per stage shape, real tiles of examples/ and noise, each pass."""
    done = _selfcheck(str(builds[quantize].folder), "--emulate", "--samples", "4")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert "BM1684X emulator" in lines[0] and quantize in lines[0]
    for shape in ("1x1x32x32", "2x1x32x32"):
        (real,) = [ln for ln in lines if ln.strip().startswith(f"real   {shape} (4 tiles)")]
        assert "PSNR" in real and real.endswith(": pass")
        psnr = float(real.split("PSNR ")[1].split(" dB")[0])
        assert psnr >= (50.0 if quantize == "F16" else 38.0)
    assert lines[-1].startswith("PASS: ")


def test_selfcheck_emulate_fails_against_another_model(
    builds: dict[str, CompileResult], tmp_path: Path
) -> None:
    """A bmodel checked against another network's ONNX fails, exit 1, naming the PSNR."""
    import torch

    torch.manual_seed(1)
    other = get_arch("espcn_res").create(in_channels=1, channels=8, upscale=4)
    onnx = export_onnx(other.module, tmp_path / "other.onnx", shape=(2, 1, 18, 26), dynamic=True)
    done = _selfcheck(
        str(builds["F16"].folder), "--emulate", "--samples", "2", "--reference", str(onnx)
    )
    assert done.returncode == 1
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("FAIL: PSNR") and "does not compute what the reference does" in last


def test_bad_bmodels_give_one_clear_error(
    builds: dict[str, CompileResult], tpu: TpuMlir, tmp_path: Path
) -> None:
    """Truncated, corrupt, another chip's, or disagreeing with its manifest: ModelError."""
    from batchsr.engines.cmodel import CmodelEngine

    good = builds["F16"].bmodel
    assert good is not None
    truncated = tmp_path / "truncated.bmodel"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    garbage = tmp_path / "garbage.bmodel"
    garbage.write_bytes(b"not a bmodel at all" * 100)
    for bad in (truncated, garbage):
        with pytest.raises(ModelError, match="model_tool cannot read it"):
            CmodelEngine(bad, tpu=tpu)
    text = subprocess.run(
        [tpu.tools["model_tool"], "--info", str(good)], env=tpu.env(), capture_output=True,
        text=True, check=True,
    ).stdout  # fmt: skip
    assert parse_info(text).chip == "BM1684X"
    other = parse_info(text.replace("chip: BM1684X", "chip: BM1684"))
    assert other.chip == "BM1684"
    with pytest.raises(ModelError, match="the bmodel and the manifest disagree"):
        CmodelEngine(good, shapes=[(4, 1, TILE, TILE)], tpu=tpu)
    # A model folder whose manifest lists other stages than its bmodel holds.
    folder = tmp_path / "disagree"
    shutil.copytree(builds["F16"].folder, folder)
    m = load_manifest(folder)
    arts = tuple(
        replace(a, shapes=((4, 1, TILE, TILE),)) if a.format == "bmodel" else a for a in m.artifacts
    )
    write_manifest(folder, replace(m, artifacts=arts))
    done = subprocess.run(
        [sys.executable, str(REPO / "run.py"), "--model", str(folder), "--backend", "cmodel",
         "--input", str(EXAMPLES), "--output", str(tmp_path / "o"), "--quiet"],
        cwd=REPO, capture_output=True, text=True, timeout=CLI_TIMEOUT_S, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "the bmodel and the manifest disagree" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_missing_tpu_env_says_make_tpu_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without .venv-tpu (and nothing on PATH), cmodel says what to run."""
    from batchsr.engines.cmodel import CmodelEngine

    monkeypatch.setattr("batchsr.tpumlir.REPO_VENV", tmp_path / "none")
    monkeypatch.delenv("BATCHSR_TPU_MLIR", raising=False)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    with pytest.raises(EngineUnavailableError, match="make tpu-env"):
        CmodelEngine(tmp_path / "x.bmodel")


def test_cli_cmodel_without_tpu_env_writes_nothing(tmp_path: Path) -> None:
    """run.py --backend cmodel with no usable tpu-mlir: one line, exit 2, no output folder."""
    out = tmp_path / "out"
    env = {**os.environ, "BATCHSR_TPU_MLIR": str(tmp_path / "no-such-env")}
    done = subprocess.run(
        [sys.executable, str(REPO / "run.py"), "--model", "espcn", "--backend", "cmodel",
         "--input", str(EXAMPLES), "--output", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT_S, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: ") and "make tpu-env" in line
    assert not out.exists()


@pytest.fixture(autouse=True)
def _no_stray_workers() -> Iterator[None]:
    """Every test leaves no emulator worker of its own running (others' are not ours)."""
    yield
    strays = _workers_of()
    for p in strays:
        p.kill()
    assert not strays
