"""ONNX export of zoo models, and the committed default model folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from batchsr.errors import CompileError
from batchsr.manifest import file_sha256, load_manifest
from batchsr.models import get_arch, load_checkpoint
from compile.onnx import INPUT_NAME, OUTPUT_NAME, check_onnx, export_onnx

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FOLDER = ROOT / "models" / "espcn"

torch.set_num_threads(2)

# One small variant per architecture (x4 where it exists: the contest's scale).
EXPORTED: list[tuple[str, dict[str, Any]]] = [
    ("espcn", {"in_channels": 3, "out_channels": 3, "channels": 16, "upscale": 4}),
]


@pytest.mark.parametrize(("arch_id", "hp"), EXPORTED, ids=[a for a, _ in EXPORTED])
def test_static_and_dynamic_onnx_match_torch(
    arch_id: str, hp: dict[str, Any], tmp_path: Path
) -> None:
    torch.manual_seed(0)
    model = get_arch(arch_id).create(**hp)
    m = model.info.size_multiple
    c = model.info.in_channels
    static = (1, c, 6 * m, 5 * m)
    path = export_onnx(model.module, tmp_path / "s.onnx", shape=static, dynamic=False)
    assert check_onnx(model.module, path, shapes=[static]) <= 1e-4
    dims = [d.dim_value for d in onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim]
    assert dims == list(static)

    path = export_onnx(model.module, tmp_path / "d.onnx", shape=(2, c, 5 * m, 7 * m), dynamic=True)
    shapes = [(1, c, 3 * m, 4 * m), (3, c, 9 * m, 2 * m)]
    assert check_onnx(model.module, path, shapes=shapes) <= 1e-4


def test_check_onnx_reports_a_mismatch_with_torch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = get_arch("espcn").create(in_channels=1, out_channels=1, channels=8, upscale=2)
    path = export_onnx(model.module, tmp_path / "m.onnx", shape=(1, 1, 8, 6), dynamic=False)
    with torch.no_grad():
        model.module.sub_pixel[0].bias.add_(0.01)
    with pytest.raises(CompileError, match="differs from torch"):
        check_onnx(model.module, path, shapes=[(1, 1, 8, 6)])


@pytest.mark.skipif(
    not (DEFAULT_FOLDER / "manifest.json").is_file(), reason="models/espcn is not built yet"
)
def test_default_model_folder_is_consistent_and_its_onnx_matches_its_weights() -> None:
    manifest = load_manifest(DEFAULT_FOLDER)
    assert (manifest.name, manifest.architecture, manifest.scale) == ("espcn", "espcn", 4)
    assert (manifest.in_channels, manifest.out_channels, manifest.color) == (3, 3, "RGB")
    assert manifest.margin == 4
    for art in manifest.artifacts:
        path = DEFAULT_FOLDER / art.path
        assert art.size_bytes == path.stat().st_size
        assert art.sha256 == file_sha256(path), f"{art.path} changed since the manifest"
        assert art.shapes == ((None, 3, None, None),)
    onnx_art, st_art = manifest.artifact("onnx"), manifest.artifact("safetensors")
    assert onnx_art is not None and st_art is not None
    model = load_checkpoint(DEFAULT_FOLDER / st_art.path)
    assert model.info.margin == manifest.margin and model.info.scale == manifest.scale
    session = ort.InferenceSession(
        str(DEFAULT_FOLDER / onnx_art.path), providers=["CPUExecutionProvider"]
    )
    x = np.random.default_rng(0).random((2, 3, 19, 23), dtype=np.float32)
    (got,) = session.run([OUTPUT_NAME], {INPUT_NAME: x})
    with torch.no_grad():
        expected = model.module(torch.from_numpy(x)).numpy()
    assert got.shape == (2, 3, 76, 92)
    assert float(np.abs(got - expected).max()) <= 1e-4
