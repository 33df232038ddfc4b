"""--model resolution: names, folders and files, with errors that say what to do."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchsr.errors import CheckpointError, ModelError
from batchsr.resolve import available_models, resolve_model


def test_default_model_folder_resolves_per_backend() -> None:
    assert "espcn" in available_models()
    onnx = resolve_model("espcn", backend="onnx")
    assert onnx.path.name.endswith(".onnx") and onnx.scale == 4 and onnx.margin == 4
    assert onnx.size_bytes == onnx.path.stat().st_size
    # The shipped bmodels (built by tpu-mlir here): sail and the emulator take the F16.
    for backend in ("sail", "cmodel"):
        bm = resolve_model("espcn", backend=backend)
        assert bm.path.name == "espcn_bm1684x_f16.bmodel" and bm.format == "bmodel"
        assert bm.artifact is not None and bm.artifact.quantize == "F16"
        assert set(bm.artifact.shapes) == {(4, 1, 128, 128), (1, 1, 128, 128)}


def test_a_bmodel_of_a_model_folder_keeps_its_manifest(tmp_path: Path) -> None:
    """Naming one of a folder's bmodels by path keeps the folder's facts; a swapped
    file (sha256 not the manifest's) is refused."""
    import shutil

    int8 = resolve_model("models/espcn/espcn_bm1684x_int8.bmodel", backend="sail")
    assert (int8.margin, int8.scale, int8.in_channels) == (4, 4, 1)
    assert int8.artifact is not None and int8.artifact.quantize == "INT8"
    folder = tmp_path / "espcn"
    shutil.copytree("models/espcn", folder, ignore=shutil.ignore_patterns("tpu-mlir", "*.log"))
    (folder / "espcn_bm1684x_f16.bmodel").write_bytes(
        (folder / "espcn_bm1684x_int8.bmodel").read_bytes()
    )
    with pytest.raises(ModelError, match="the bmodel and the manifest disagree"):
        resolve_model(str(folder), backend="sail")


def test_files_resolve_by_kind(tmp_path: Path, espcn_onnx: Path) -> None:
    assert resolve_model(str(espcn_onnx), backend="onnx").format == "onnx"
    ckpt = resolve_model("models/espcn/espcn.safetensors", backend="onnx")
    assert (ckpt.format, ckpt.scale, ckpt.margin, ckpt.in_channels) == ("safetensors", 4, 4, 1)
    odd = tmp_path / "model.h5"
    odd.write_bytes(b"x")
    with pytest.raises(ModelError, match=r"unknown model file type '\.h5'"):
        resolve_model(str(odd), backend="onnx")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        resolve_model(str(junk), backend="onnx")


def test_unknown_name_lists_the_models_there() -> None:
    with pytest.raises(ModelError, match=r"Models here: .*espcn"):
        resolve_model("espcnn", backend="onnx")
