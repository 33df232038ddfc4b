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
    with pytest.raises(ModelError, match="no artifact for backend 'sail'"):
        resolve_model("espcn", backend="sail")


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
