"""compile: real ONNX export and manifest, tpu-mlir against fake tools, bad inputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx as onnx_lib
import pytest
import torch
from PIL import Image

from batchsr.errors import ConfigError, ModelError
from batchsr.manifest import file_sha256, load_manifest
from batchsr.models import get_arch
from batchsr.models.info import ModelInfo
from batchsr.resolve import resolve_model
from compile.build import check_shape, compile_model
from compile.plan import make_plan

SHAPE = (1, 3, 24, 24)
SHAPE4 = (2, 3, 24, 32)

# A fake tpu-mlir tool: records its argv (as run) and writes the files it would write.
FAKE_TOOL = """#!{python}
import json, os, sys
argv = sys.argv[1:]
with open(os.environ["FAKE_TPU_RECORD"], "a") as fh:
    fh.write(json.dumps([os.path.basename(sys.argv[0]), *argv]) + "\\n")
def value(flag):
    return argv[argv.index(flag) + 1]
tool = os.path.basename(sys.argv[0])
if os.environ.get("FAKE_TPU_FAIL") == tool:
    print("ValueError: unsupported op Foo in the graph")
    sys.exit(1)
outs = []
if tool == "model_transform.py":
    outs = [value("--mlir"), value("--test_result")]
elif tool == "run_calibration.py":
    assert os.listdir(value("--dataset")), "empty calibration folder"
    outs = [value("-o")]
elif tool == "model_deploy.py":
    assert os.path.isfile(value("--test_input")) and os.path.isfile(value("--test_reference"))
    outs = [value("--model")]
elif tool == "model_tool":
    outs = [value("-o")]
for out in outs:
    with open(out, "w") as fh:
        fh.write(tool)
print(tool, "done")
"""


@pytest.fixture(name="small_model")
def _small_model(tmp_path: Path) -> Path:
    """A small random-init ESPCN checkpoint (8 features), saved as a state dict."""
    torch.manual_seed(0)
    model = get_arch("espcn").create(channels=8, upscale=4, in_channels=3, out_channels=3)
    path = tmp_path / "espcn_small.pth"
    torch.save(model.module.state_dict(), path)
    return path


def _hide_tpu_envs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No .venv-tpu and no $BATCHSR_TPU_MLIR: only PATH decides."""
    monkeypatch.setattr("batchsr.tpumlir.REPO_VENV", tmp_path / "no-venv-tpu")
    monkeypatch.delenv("BATCHSR_TPU_MLIR", raising=False)


@pytest.fixture(name="fake_tools")
def _fake_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Fake tpu-mlir tools prepended to PATH; returns the record file."""
    _hide_tpu_envs(tmp_path, monkeypatch)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("model_transform.py", "run_calibration.py", "model_deploy.py", "model_tool"):
        exe = bin_dir / tool
        exe.write_text(FAKE_TOOL.format(python=sys.executable), encoding="utf-8")
        exe.chmod(0o755)
    record = tmp_path / "record.jsonl"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_TPU_RECORD", str(record))
    return record


@pytest.fixture(name="no_tools")
def _no_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A PATH without tpu-mlir (keeps the system tools bash needs), no tpu env."""
    _hide_tpu_envs(tmp_path, monkeypatch)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")


@pytest.fixture(name="images")
def _images(tmp_path: Path) -> Path:
    folder = tmp_path / "cali"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(((40, 50), (30, 30))):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


@pytest.mark.slow  # 3-4 s: the process's first torch.export lands here
def test_no_tools_writes_onnx_manifest_and_script(
    small_model: Path, tmp_path: Path, no_tools: None
) -> None:
    """Without tpu-mlir: a checked ONNX, a manifest without bmodel, a valid script."""
    out = tmp_path / "models" / "small"
    result = compile_model(str(small_model), out, shapes=[SHAPE, SHAPE4], quantize="F16")
    assert result.bmodel is None and result.script is not None
    subprocess.run(["bash", "-n", str(result.script)], check=True)
    text = result.script.read_text(encoding="utf-8")
    assert "set -euo pipefail" in text and "model_tool --combine" in text
    m = load_manifest(out)
    assert (m.name, m.architecture, m.scale, m.in_channels, m.out_channels) == (
        "small",
        "espcn",
        4,
        3,
        3,
    )
    assert [a.format for a in m.artifacts] == ["onnx"]
    onnx = m.artifacts[0]
    assert onnx.shapes == ((None, 3, None, None),)
    assert onnx.sha256 == file_sha256(out / onnx.path)
    assert onnx.size_bytes == (out / onnx.path).stat().st_size
    assert set(dict(m.tools)) == {"torch", "onnx", "onnxruntime"}
    assert "bmodel pending" in m.notes
    # The test input under the ONNX input's name, and tpu-mlir's own ONNX form.
    work = out / "tpu-mlir"
    x = np.load(work / "small_1x3x24x24_in.npz")["input"]
    assert x.dtype == np.float32 and x.shape == SHAPE and x.min() >= 0 and x.max() <= 1
    tpu_onnx = onnx_lib.load(str(work / "small_tpu.onnx"))
    assert tpu_onnx.ir_version == 8
    assert [o.version for o in tpu_onnx.opset_import if o.domain in ("", "ai.onnx")] == [18]
    # run.py resolves the folder: onnx for onnx, a clear error for sail.
    assert resolve_model(str(out), backend="onnx").path.name == "small.onnx"
    with pytest.raises(ModelError, match="no artifact for backend 'sail'"):
        resolve_model(str(out), backend="sail")


def test_fake_tools_exact_commands_int8_combined(
    small_model: Path, tmp_path: Path, fake_tools: Path, images: Path
) -> None:
    """With tools on PATH: the exact command lines, in order, and a bmodel artifact."""
    out = tmp_path / "m8"
    result = compile_model(
        str(small_model),
        out,
        shapes=[SHAPE, SHAPE4],
        quantize="INT8",
        calibration=images,
        input_num=3,
        filter_name="SHARPEN",
    )
    calls = [json.loads(line) for line in fake_tools.read_text().splitlines()]
    common = ["--mean", "0,0,0", "--scale", "1,1,1", "--pixel_format", "rgb"]
    expected = []
    for tag, dims in (("1x3x24x24", "[[1,3,24,24]]"), ("2x3x24x32", "[[2,3,24,32]]")):
        stem = f"m8_{tag}"
        expected += [
            [
                "model_transform.py",
                "--model_name",
                "m8",
                "--model_def",
                "m8_tpu.onnx",
                "--input_shapes",
                dims,
                *common,
                "--test_input",
                f"{stem}_in.npz",
                "--test_result",
                f"{stem}_top_outputs.npz",
                "--mlir",
                f"{stem}.mlir",
            ],
            [
                "run_calibration.py",
                f"{stem}.mlir",
                "--dataset",
                f"cali_{tag}",
                "--input_num",
                "3",
                "-o",
                f"{stem}_cali_table",
            ],
            [
                "model_deploy.py",
                "--mlir",
                f"{stem}.mlir",
                "--quantize",
                "INT8",
                "--calibration_table",
                f"{stem}_cali_table",
                "--chip",
                "bm1684x",
                "--test_input",
                f"{stem}_in.npz",
                "--test_reference",
                f"{stem}_top_outputs.npz",
                "--tolerance",
                "0.90,0.80",
                "--model",
                f"{stem}_bm1684x_int8.bmodel",
            ],
        ]
    expected.append(
        [
            "model_tool",
            "--combine",
            # largest stage first: the emulator binding sizes buffers from stage 0
            "m8_2x3x24x32_bm1684x_int8.bmodel",
            "m8_1x3x24x24_bm1684x_int8.bmodel",
            "-o",
            "../m8_bm1684x_int8.bmodel",
        ]
    )
    assert calls == expected
    # Calibration samples: float32 NCHW [0,1] tiles of the exact shape.
    cali = sorted((out / "tpu-mlir" / "cali_2x3x24x32").glob("*.npz"))
    assert 1 <= len(cali) <= 3
    sample = np.load(cali[0])["input"]
    assert sample.shape == SHAPE4 and sample.dtype == np.float32
    assert sample.min() >= 0.0 and sample.max() <= 1.0
    m = load_manifest(out)
    bmodel = m.artifact("bmodel")
    assert bmodel is not None and result.bmodel == out / "m8_bm1684x_int8.bmodel"
    assert (bmodel.path, bmodel.quantize, bmodel.shapes) == (
        "m8_bm1684x_int8.bmodel",
        "INT8",
        (SHAPE, SHAPE4),
    )
    assert m.postprocess == "SHARPEN" and m.margin == 5
    assert dict(m.tools)["tpu-mlir"] == "unknown"
    assert resolve_model(str(out), backend="sail").path.name == "m8_bm1684x_int8.bmodel"


def test_single_shape_f16_deploys_straight_to_folder() -> None:
    """One shape: no combine step; deploy writes the final bmodel."""
    plan = make_plan(model_name="n", onnx="../n.onnx", shapes=[(1, 3, 64, 64)], quantize="F16")
    assert [s.tool for s in plan.steps] == ["model_transform.py", "model_deploy.py"]
    assert plan.steps[-1].argv[-2:] == ("--model", "../n_bm1684x_f16.bmodel")
    assert "--calibration_table" not in plan.steps[-1].argv


@pytest.mark.parametrize(("channels", "fmt", "mean"), [(3, "rgb", "0,0,0"), (1, "gray", "0")])
def test_transform_preprocessing_flags_follow_the_input_channels(
    channels: int, fmt: str, mean: str
) -> None:
    """Y-only models (one channel) are declared gray, with one mean and scale."""
    plan = make_plan(
        model_name="n", onnx="../n.onnx", shapes=[(1, channels, 64, 64)], quantize="F16"
    )
    argv = plan.steps[0].argv
    flags = {argv[i]: argv[i + 1] for i in range(1, len(argv) - 1) if argv[i].startswith("--")}
    assert (flags["--pixel_format"], flags["--mean"], flags["--scale"]) == (
        fmt,
        mean,
        mean.replace("0", "1"),
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"spec": "no_such_model"}, "unknown model"),
        ({"shapes": [(1, 1, 24, 24)]}, "channels"),
        ({"shapes": [(1, 3, 8, 8)]}, "margin"),
        ({"quantize": "INT8"}, "calibration"),
        ({"quantize": "INT4"}, "quantize"),
        ({"quantize": "INT8", "calibration": Path("/nonexistent")}, "does not exist"),
        ({"filter_name": "BLUR"}, "filter"),
    ],
)
def test_bad_input_raises_before_writing(
    small_model: Path, tmp_path: Path, kwargs: dict[str, object], match: str
) -> None:
    """Bad inputs raise a clear error and leave no files behind."""
    out = tmp_path / "never"
    args: dict[str, object] = {"spec": str(small_model), "shapes": [SHAPE], "quantize": "F16"}
    args.update(kwargs)
    spec = str(args.pop("spec"))
    with pytest.raises((ConfigError, ModelError), match=match):
        compile_model(spec, out, **args)  # type: ignore[arg-type]
    assert not out.exists()


def test_size_multiple_is_enforced() -> None:
    """A shape that is not a multiple the model needs (pixel-unshuffle RRDB) is refused."""
    info = ModelInfo(
        architecture="rrdbnet", scale=2, in_channels=3, out_channels=3, margin=4, size_multiple=2
    )
    check_shape((1, 3, 64, 64), info)
    with pytest.raises(ConfigError, match="multiples of 2"):
        check_shape((1, 3, 64, 63), info)


def test_cli_without_tools_then_register(small_model: Path, tmp_path: Path, no_tools: None) -> None:
    """The CLI exits 0 with the script written; --register adds the built bmodel."""
    from compile.__main__ import main

    out = tmp_path / "cli"
    bad = [str(small_model), "--shape", "1x1x24x24", "--quantize", "F16", "--out", str(out)]
    assert main(bad) == 2
    assert not out.exists()
    argv = [str(small_model), "--shape", "1x3x24x24", "--quantize", "BF16", "--out", str(out)]
    assert main(argv) == 0
    assert (out / "build_bmodel.sh").is_file() and (out / "compile.log").is_file()
    assert (
        main(["--register", "--shape", "1x3x24x24", "--quantize", "BF16", "--out", str(out)]) == 2
    )
    (out / "cli_bm1684x_bf16.bmodel").write_bytes(b"fake bmodel")
    assert (
        main(["--register", "--shape", "1x3x24x24", "--quantize", "BF16", "--out", str(out)]) == 0
    )
    bmodel = load_manifest(out).artifact("bmodel")
    assert bmodel is not None and bmodel.size_bytes == 11 and bmodel.shapes == (SHAPE,)


def test_cli_tool_failure_is_one_line_and_leaves_only_the_log(
    small_model: Path,
    tmp_path: Path,
    fake_tools: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A tool that fails (a graph tpu-mlir cannot convert): exit 2, one error line naming
    the tool and the log, and the new folder holds nothing but compile.log."""
    from compile.__main__ import main

    monkeypatch.setenv("FAKE_TPU_FAIL", "model_deploy.py")
    out = tmp_path / "failing"
    assert main([str(small_model), "--shape", "1x3x24x24", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: model_deploy.py failed")
    assert err[0].endswith(f"tool output in {out / 'compile.log'}")
    assert [p.name for p in out.iterdir()] == ["compile.log"]
    assert "unsupported op Foo" in (out / "compile.log").read_text()
