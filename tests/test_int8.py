"""The INT8 CPU path: compile's onnx-int8 target, the shipped espcn_int8.onnx (its
quality on held-out photos, the kernels onnxruntime runs it with) and how a run picks
it (``model.quantize``)."""

from __future__ import annotations

import importlib.util
import shutil
from dataclasses import replace
from itertools import islice
from pathlib import Path

import numpy as np
import pytest

from batchsr.engines.onnx import OnnxEngine
from batchsr.errors import ConfigError, ModelError
from batchsr.manifest import file_sha256, load_manifest, write_manifest
from batchsr.resolve import resolve_model
from batchsr.sample_tiles import iter_tiles
from batchsr.selfcheck import compare
from compile.build import compile_model
from compile.onnx import make_fusable
from compile.onnx_int8 import INT8_OPS, optimized_ops
from tests.helpers.paths import CONTEST, CONTEST_INPUTS, REPO

ESPCN = REPO / "models" / "espcn"
TILE = (4, 1, 128, 128)  # the pipeline's default tile batch for a Y model
#: The issue's bar for INT8 against the float output.
MIN_PSNR_DB = 38.0


def _grace_hopper() -> Path:
    """matplotlib's sample photo (matplotlib is a requirement; never a calibration image)."""
    spec = importlib.util.find_spec("matplotlib")
    assert spec is not None and spec.origin is not None
    return Path(spec.origin).parent / "mpl-data" / "sample_data" / "grace_hopper.jpg"


def _held_out(name: str) -> Path:
    if name == "grace_hopper.jpg":
        return _grace_hopper()
    path = CONTEST / name
    if not path.is_file():
        pytest.skip(f"contest input {path} not found (../shared is not checked out)")
    return path


# The contest inputs are in the full run only: the fast set keeps one photo (0.4-0.7 s
# each).
@pytest.mark.parametrize(
    "photo",
    ["grace_hopper.jpg", *(pytest.param(n, marks=pytest.mark.slow) for n in CONTEST_INPUTS)],
)
def test_shipped_int8_is_within_38_db_of_the_float_model_on_held_out_photos(photo: str) -> None:
    """Every tile the pipeline cuts from a photo that calibration never saw (it used
    examples/), through the engine a run opens: INT8 against float32, >= 38 dB."""
    path = _held_out(photo)
    calibrated_on = {p.name for p in (REPO / "examples").iterdir()}
    assert path.name not in calibrated_on
    tiles = np.stack(list(iter_tiles([path], TILE, pad=4, scale=4)))
    tiles = tiles[: len(tiles) - len(tiles) % 4]
    assert len(tiles) >= 8
    int8 = resolve_model("espcn", backend="onnx", quantize="INT8")
    engines = [OnnxEngine(m, scale=4) for m in (int8.path, ESPCN / "espcn.onnx")]
    got, want = (
        np.concatenate(
            [e.run(np.ascontiguousarray(tiles[i : i + 4])) for i in range(0, len(tiles), 4)]
        )
        for e in engines
    )
    for engine in engines:
        engine.close()
    diff, psnr = compare(got, want)
    assert psnr >= MIN_PSNR_DB, f"{photo}: {psnr:.2f} dB, max |d| {diff:.4f}"
    assert diff < 0.25  # no tile broken outright (seen: 0.19 at the sharpest edges)


def test_onnxruntime_runs_every_conv_of_the_shipped_int8_model_in_int8() -> None:
    """The graph onnxruntime runs after its optimizations: each Conv a QLinearConv, each
    activation a QLinearLeakyRelu, the residual add a QLinearAdd; float only where the
    input enters (the mean subtraction) and after the output's DequantizeLinear (the
    pixel shuffle)."""
    ops = optimized_ops(ESPCN / "espcn_int8.onnx")
    kinds = [op for _domain, op in ops]
    assert kinds.count("QLinearConv") == 4 and kinds.count("QLinearLeakyRelu") == 2
    assert "QLinearAdd" in kinds
    assert not {"Conv", "PRelu", "LeakyRelu", "Add"} & set(kinds)
    floats = {op for op in kinds if op not in INT8_OPS}
    assert floats == {"QuantizeLinear", "DequantizeLinear", "Sub", "Transpose", "DepthToSpace"}


def test_prelu_of_one_slope_becomes_the_leaky_relu_it_equals(tmp_path: Path) -> None:
    """The rewrite that lets the activations run in int8 changes no output (the bundled
    float ONNX has it already: it is undone here, as torch exports ``nn.PReLU()``)."""
    import onnx

    from batchsr.engines.onnx_graph import as_prelu

    prelu, leaky = tmp_path / "prelu.onnx", tmp_path / "leaky.onnx"
    onnx.save(as_prelu(onnx.load(str(ESPCN / "espcn.onnx"))), str(prelu))
    assert make_fusable(ESPCN / "espcn.onnx", tmp_path / "same.onnx") == 0
    assert make_fusable(prelu, leaky) == 2
    x = np.random.default_rng(0).random((2, 1, 40, 56), dtype=np.float32)
    a, b = (OnnxEngine(p, scale=4) for p in (prelu, leaky))
    np.testing.assert_allclose(a.run(x), b.run(x), atol=1e-6)


def test_a_run_picks_the_artifact_of_model_quantize() -> None:
    """Unset: the first listed (float); INT8: the INT8 ONNX for onnx, the INT8 bmodel
    for sail; a quantization the folder lacks names the command that builds it."""
    assert resolve_model("espcn", backend="onnx").path.name == "espcn.onnx"
    assert resolve_model("espcn", backend="onnx", quantize="F32").path.name == "espcn.onnx"
    int8 = resolve_model("espcn", backend="onnx", quantize="INT8")
    assert int8.path.name == "espcn_int8.onnx" and int8.format == "onnx"
    assert int8.artifact is not None and int8.artifact.quantize == "INT8"
    assert int8.artifact.sha256 == file_sha256(int8.path)
    assert (int8.margin, int8.scale, int8.in_channels) == (4, 4, 1)
    assert int8.log_record()["quantize"] == "INT8"
    bm = resolve_model("espcn", backend="sail", quantize="INT8")
    assert bm.path.name == "espcn_bm1684x_int8.bmodel"
    with pytest.raises(ModelError, match=r"no onnx artifact in F16 \(`model.quantize = F16`"):
        resolve_model("espcn", backend="onnx", quantize="F16")
    with pytest.raises(ModelError, match=r"python -m compile .* --target onnx-int8"):
        resolve_model("espcn-niqe", backend="onnx", quantize="INT8")
    # A file named by path: its manifest entry must be what was asked for.
    path = str(ESPCN / "espcn_int8.onnx")
    assert resolve_model(path, backend="onnx", quantize="INT8").path.name == "espcn_int8.onnx"
    with pytest.raises(ModelError, match=r"computes in INT8, not `model.quantize = F32`"):
        resolve_model(path, backend="onnx", quantize="F32")


def _copy_float_folder(tmp_path: Path) -> Path:
    """models/espcn without its bmodels and INT8 ONNX: what the target starts from."""
    folder = tmp_path / "espcn"
    shutil.copytree(ESPCN, folder, ignore=shutil.ignore_patterns("*.bmodel", "*_int8.onnx"))
    listed = load_manifest(folder)
    kept = tuple(a for a in listed.artifacts if (folder / a.path).is_file())
    write_manifest(folder, replace(listed, artifacts=kept))
    return folder


def test_onnx_int8_target_adds_the_int8_onnx_to_the_folder(tmp_path: Path) -> None:
    folder = _copy_float_folder(tmp_path)
    before = load_manifest(folder)
    cali = REPO / "examples"
    result = compile_model(
        str(folder),
        folder,
        shapes=[(2, 1, 48, 48)],
        quantize="INT8",
        calibration=cali,
        input_num=6,
        target="onnx-int8",
    )
    assert result.int8 is not None and result.plan is None and result.bmodel is None
    assert result.int8.path == folder / "espcn_int8.onnx" and result.int8.samples == 6
    assert result.int8.rewritten == 0  # compile exported the PRelus as LeakyRelu already
    m = load_manifest(folder)
    assert [a.path for a in m.artifacts] == [*(a.path for a in before.artifacts), "espcn_int8.onnx"]
    art = m.artifacts[-1]
    assert (art.format, art.quantize, art.shapes) == ("onnx", "INT8", ((None, 1, None, None),))
    assert art.sha256 == file_sha256(folder / art.path)
    assert art.quant_psnr_db is not None and art.quant_psnr_db >= 38.0
    assert "--target onnx-int8" in art.command and f"--calibration {cali}" in art.command
    assert m.notes == before.notes  # the folder's provenance stays
    assert not (folder / "tpu-mlir").exists()
    # It runs as a run opens it, at any size, and stays near the float model.
    model = resolve_model(str(folder), backend="onnx", quantize="INT8")
    x = np.stack(list(islice(iter_tiles([_grace_hopper()], (1, 1, 72, 88), pad=4, scale=4), 3)))
    got = OnnxEngine(model.path, scale=4).run(x)
    assert got.shape == (3, 1, 288, 352)
    assert compare(got, OnnxEngine(folder / "espcn.onnx", scale=4).run(x))[1] >= 38.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"target": "onnx-int4"}, "unknown `target = onnx-int4`"),
        ({"quantize": "F16"}, r"builds an INT8 ONNX, not F16: use `quantize = INT8`"),
        ({"calibration": None}, r"calibrate on \(`calibration`\)"),
        ({"calibration": "empty"}, "holds no images"),
    ],
)
def test_onnx_int8_bad_input_is_refused_before_writing(
    tmp_path: Path, kwargs: dict[str, object], match: str
) -> None:
    out = tmp_path / "never"
    (tmp_path / "empty").mkdir()
    args: dict[str, object] = {
        "shapes": [TILE],
        "quantize": "INT8",
        "calibration": REPO / "examples",
        "target": "onnx-int8",
    }
    args.update(kwargs)
    if args["calibration"] == "empty":
        args["calibration"] = tmp_path / "empty"
    with pytest.raises(ConfigError, match=match):
        compile_model(str(ESPCN), out, **args)  # type: ignore[arg-type]
    assert not out.exists()


def test_compile_cli_spells_the_target_errors_as_its_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from compile.__main__ import main

    out = tmp_path / "never"
    argv = [str(ESPCN), "--shape", "4x1x128x128", "--target", "onnx-int8", "--out", str(out)]
    assert main([*argv, "--quantize", "f16", "--calibration", "examples"]) == 2
    err = capsys.readouterr().err
    assert "--target onnx-int8 builds an INT8 ONNX, not F16: use --quantize INT8" in err
    assert main(argv) == 2
    assert "calibrate on (--calibration)" in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(SystemExit):
        main(["--register", "--shape", "4x1x128x128", "--target", "onnx-int8", "--out", str(out)])
