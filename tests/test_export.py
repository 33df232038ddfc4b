"""ONNX export of zoo models, and the committed default model folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from batchsr.color import upscale_image
from batchsr.errors import CompileError, ConfigError
from batchsr.filters import FILTER_NAMES, apply_filter, kernel_of
from batchsr.manifest import file_sha256, load_manifest
from batchsr.models import get_arch, load_checkpoint
from batchsr.models.postprocess import with_filter
from compile.onnx import INPUT_NAME, OUTPUT_NAME, check_onnx, export_onnx

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FOLDER = ROOT / "models" / "espcn"

torch.set_num_threads(2)

# One small variant per architecture (x4 where it exists: the contest's scale).
EXPORTED: list[tuple[str, dict[str, Any]]] = [
    ("espcn", {"in_channels": 3, "out_channels": 3, "channels": 16, "upscale": 4}),
    ("espcn_res", {"in_channels": 1, "channels": 16, "upscale": 4}),
    ("fsrcnn", {"channels": 1, "d": 16, "s": 8, "m": 2, "upscale": 4}),
    ("carn", {"scale": 4, "num_feat": 8}),
    ("carn_m", {"scale": 4, "num_feat": 8, "group": 4}),
    # One residual block: a second is another copy of the same ops to trace (NinaSR's,
    # with its local attention, is 29 of its 51 ONNX nodes).
    ("ninasr", {"n_resblocks": 1, "n_feats": 8, "scale": 4}),
    ("edsr", {"n_resblocks": 1, "n_feats": 8, "scale": 4}),
    ("rrdbnet", {"num_block": 1, "num_feat": 8, "num_grow_ch": 4, "scale": 4}),
    ("rrdbnet", {"num_block": 1, "num_feat": 8, "num_grow_ch": 4, "scale": 2}),
    ("srvgg", {"num_feat": 8, "num_conv": 2, "upscale": 4}),
]


@pytest.mark.slow  # every architecture through torch.export twice: ~30 s in all
@pytest.mark.parametrize(
    ("arch_id", "hp"),
    EXPORTED,
    ids=[f"{a}-x{hp.get('scale', hp.get('upscale'))}" for a, hp in EXPORTED],
)
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
    assert (manifest.name, manifest.scale) == ("espcn", 4)
    assert manifest.architecture in ("espcn", "espcn_res")
    c = manifest.in_channels
    assert (c, manifest.out_channels, manifest.color) in ((3, 3, "RGB"), (1, 1, "Y"))
    # ESPCN reaches 4 LR pixels; an embedded filter one HR pixel, so one LR pixel more.
    assert manifest.margin == 4 + (manifest.postprocess is not None)
    for art in manifest.artifacts:
        path = DEFAULT_FOLDER / art.path
        assert art.size_bytes == path.stat().st_size
        assert art.sha256 == file_sha256(path), f"{art.path} changed since the manifest"
        if art.format == "bmodel":  # static stages, built by tpu-mlir (test_tpu_real)
            assert all(s[1] == c and None not in s for s in art.shapes) and art.stages
        else:
            assert art.shapes == ((None, c, None, None),)
    onnx_art = manifest.artifact("onnx")
    assert onnx_art is not None
    model = load_checkpoint(DEFAULT_FOLDER / "espcn.safetensors")
    atol = 1e-4
    if manifest.postprocess is not None:
        model = with_filter(model, manifest.postprocess)
        # The embedded 8-bit rounding may flip a level where the two runtimes straddle it.
        atol += float(np.abs(kernel_of(manifest.postprocess).as_array()).sum()) / 255.0
    assert model.info.margin == manifest.margin and model.info.scale == manifest.scale
    session = ort.InferenceSession(
        str(DEFAULT_FOLDER / onnx_art.path), providers=["CPUExecutionProvider"]
    )
    x = np.random.default_rng(0).random((2, c, 19, 23), dtype=np.float32)
    (got,) = session.run([OUTPUT_NAME], {INPUT_NAME: x})
    with torch.no_grad():
        expected = model.module(torch.from_numpy(x)).numpy()
    assert got.shape == (2, c, 76, 92)
    assert float(np.abs(got - expected).max()) <= atol


def _to_uint8(nchw: np.ndarray) -> np.ndarray:
    """(1, 3, H, W) float in [0, 1] -> HWC uint8, as the pipeline saves it."""
    return np.round(np.clip(nchw[0].transpose(1, 2, 0), 0.0, 1.0) * 255.0).astype(np.uint8)


@pytest.mark.parametrize("name", FILTER_NAMES)
def test_embedded_filter_in_onnx_agrees_with_the_cpu_filter_away_from_the_border(
    name: str, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    model = get_arch("espcn").create(in_channels=3, out_channels=3, channels=8, upscale=4)
    # A larger last layer makes the output overshoot [0, 1], which the clamp must handle.
    with torch.no_grad():
        model.module.sub_pixel[0].weight.mul_(300.0)
    filtered = with_filter(model, name)
    assert filtered.info.margin == model.info.margin + 1
    path = export_onnx(filtered.module, tmp_path / "f.onnx", shape=(1, 3, 9, 11), dynamic=True)
    x = np.random.default_rng(0).random((1, 3, 13, 17), dtype=np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (embedded,) = session.run([OUTPUT_NAME], {INPUT_NAME: x})
    with torch.no_grad():
        plain = model.module(torch.from_numpy(x)).numpy()
    assert plain.min() < 0.0 and plain.max() > 1.0
    cpu = apply_filter(_to_uint8(plain), name).astype(np.int16)
    diff = np.abs(_to_uint8(embedded).astype(np.int16) - cpu)
    assert int(diff[1:-1, 1:-1].max()) <= 1


def test_unknown_filter_name_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown filter 'BLUR'"):
        apply_filter(np.zeros((4, 4, 3), np.uint8), "BLUR")


class _DataDependent(torch.nn.Module):
    """Branches on a tensor value, which torch.export cannot trace."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return x * 2
        return x


def test_an_unexportable_model_raises_compile_error(tmp_path: Path) -> None:
    with pytest.raises(CompileError, match="cannot export _DataDependent"):
        export_onnx(_DataDependent(), tmp_path / "m.onnx", shape=(1, 3, 4, 5), dynamic=False)


def _shipped_upscale(lr: np.ndarray) -> np.ndarray:
    manifest = load_manifest(DEFAULT_FOLDER)
    art = manifest.artifact("onnx")
    assert art is not None
    session = ort.InferenceSession(
        str(DEFAULT_FOLDER / art.path), providers=["CPUExecutionProvider"]
    )
    return upscale_image(
        lambda x: session.run([OUTPUT_NAME], {INPUT_NAME: x})[0],
        lr,
        channels=manifest.in_channels,
    )


def test_default_model_is_near_bicubic_fidelity_and_far_more_natural() -> None:
    """rocket.png was held out of training.

    The default is NIQE-tuned and blended back toward its L1 weights: on the held-out
    set of benchmarks/quality.py its mean PSNR-Y is above bicubic's, and on this one
    photo it may be a little below; its NIQE is far below bicubic's.
    """
    from PIL import Image

    from batchsr.metrics import niqe
    from batchsr.train import psnr_y

    with Image.open(ROOT / "examples" / "rocket.png") as im:
        photo = im.convert("RGB")
    w, h = photo.size
    hr = photo.crop((0, 0, w // 4 * 4, h // 4 * 4))
    lr = hr.resize((hr.width // 4, hr.height // 4), Image.Resampling.BICUBIC)
    bicubic = lr.resize(hr.size, Image.Resampling.BICUBIC)
    ours = psnr_y(_shipped_upscale(np.asarray(lr)), np.asarray(hr), border=4)
    assert ours > psnr_y(np.asarray(bicubic), np.asarray(hr), border=4) - 0.4
    # Contest-sized input (510 px wide), x4: NIQE far below bicubic's.
    big = photo.resize((w * 4, h * 4), Image.Resampling.BICUBIC)
    assert niqe(_shipped_upscale(np.asarray(photo))) < niqe(np.asarray(big)) - 1.5
