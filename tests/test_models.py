"""The model zoo: detection, hyperparameters read off shapes, safe loading, the anchors."""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from batchsr.errors import CheckpointError, UnsupportedModelError
from batchsr.models import REGISTRY, SRModel, canonicalize, registry

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
ANCHOR = SHARED / "anchors" / "espcn_ex.pt"

torch.set_num_threads(2)

# An architecture id and the hyperparameters of one instance of it.
Variant = tuple[str, dict[str, Any]]

# Small variants keep the suite fast; every scale each architecture supports is here
# (x2/x3/x4; RRDBNet has x2 and x4).
VARIANTS: list[Variant] = [
    ("espcn", {"in_channels": 3, "out_channels": 3, "channels": 16, "upscale": 2}),
    ("espcn", {"in_channels": 3, "out_channels": 3, "channels": 16, "upscale": 3}),
    ("espcn", {"in_channels": 1, "out_channels": 1, "channels": 64, "upscale": 4}),
    *[("espcn_res", {"in_channels": 1, "channels": 16, "upscale": s}) for s in (2, 3, 4)],
    ("espcn_res", {"in_channels": 3, "channels": 16, "upscale": 4}),
    *[("fsrcnn", {"channels": 1, "d": 16, "s": 8, "m": 2, "upscale": s}) for s in (2, 3, 4)],
    *[("carn", {"scale": s, "num_feat": 16}) for s in (2, 3, 4)],
    ("carn", {"scale": 4, "num_feat": 16, "multi_scale": False}),
    *[("carn_m", {"scale": s, "num_feat": 16, "group": 4}) for s in (2, 3, 4)],
    # b0; b1 and b2 differ only in depth and width (see the variant-name test).
    *[("ninasr", {"n_resblocks": 10, "n_feats": 16, "scale": s}) for s in (2, 3, 4)],
    *[("edsr", {"n_resblocks": 16, "n_feats": 64, "scale": s}) for s in (2, 3, 4)],  # baseline
    # The full model's width (256) makes its residual scale 0.1; 2 blocks keep it small.
    ("edsr", {"n_resblocks": 2, "n_feats": 256, "scale": 2}),
    *[("rrdbnet", {"num_block": 2, "num_feat": 16, "num_grow_ch": 8, "scale": s}) for s in (2, 4)],
    *[("srvgg", {"num_feat": 16, "num_conv": 4, "upscale": s}) for s in (2, 3, 4)],
]

# One small variant per architecture for the margin test, whose images are 2 * margin wide.
MARGIN_VARIANTS: list[Variant] = [
    ("espcn", {"in_channels": 3, "out_channels": 3, "channels": 16, "upscale": 4}),
    ("espcn_res", {"in_channels": 1, "channels": 16, "upscale": 4}),
    ("fsrcnn", {"channels": 1, "d": 16, "s": 8, "m": 2, "upscale": 3}),
    ("carn", {"scale": 4, "num_feat": 8}),
    ("carn_m", {"scale": 3, "num_feat": 8, "group": 4}),
    ("edsr", {"n_resblocks": 2, "n_feats": 8, "scale": 4}),
    ("rrdbnet", {"num_block": 1, "num_feat": 8, "num_grow_ch": 4, "scale": 2}),
    ("rrdbnet", {"num_block": 1, "num_feat": 8, "num_grow_ch": 4, "scale": 4}),
    ("srvgg", {"num_feat": 8, "num_conv": 3, "upscale": 4}),
]


def _ids(v: Variant) -> str:
    arch, hp = v
    return arch + "-" + "-".join(f"{k}{val}" for k, val in sorted(hp.items()))


def _build(arch_id: str, hp: Mapping[str, Any], *, seed: int = 0) -> SRModel:
    torch.manual_seed(seed)
    return registry.get_arch(arch_id).create(**hp)


def _tile(model: SRModel, *, h: int = 12, w: int = 10, n: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, model.info.in_channels, h, w, generator=g)


def _same_outputs(a: SRModel, b: SRModel) -> None:
    x = _tile(a)
    with torch.no_grad():
        torch.testing.assert_close(a.module(x), b.module(x), rtol=0, atol=0)


@pytest.mark.parametrize("variant", VARIANTS, ids=_ids)
def test_state_dict_round_trip_detects_architecture_and_hyperparameters(
    variant: Variant,
) -> None:
    arch_id, hp = variant
    model = _build(arch_id, hp)
    sd = model.module.state_dict()
    assert registry.detect_arch(sd).id == arch_id
    loaded = registry.load_state_dict(sd, scale=model.info.scale)
    assert loaded.info == model.info
    _same_outputs(model, loaded)


@pytest.mark.parametrize("variant", VARIANTS, ids=_ids)
def test_output_shape_is_scale_times_input(variant: Variant) -> None:
    model = _build(*variant)
    m = model.info.size_multiple
    x = _tile(model, h=3 * m, w=5 * m, n=2)
    with torch.no_grad():
        y = model.module(x)
    s = model.info.scale
    assert y.shape == (2, model.info.out_channels, 3 * m * s, 5 * m * s)
    assert y.dtype == torch.float32


@pytest.mark.parametrize("variant", VARIANTS, ids=_ids)
def test_checkpoint_files_load_from_safetensors_and_weights_only_pth(
    variant: Variant, tmp_path: Path
) -> None:
    arch_id, hp = variant
    model = _build(arch_id, hp)
    sd = model.module.state_dict()
    # Layouts that do not record their scale read it from metadata or the file name.
    st = tmp_path / "m.safetensors"
    meta = {"scale": str(model.info.scale)}
    save_file({k: v.contiguous() for k, v in sd.items()}, str(st), metadata=meta)
    pth = tmp_path / f"{arch_id}_x{model.info.scale}.pth"
    # Public checkpoints wrap and prefix their weights; loading must see through both.
    torch.save({"params_ema": {f"module.{k}": v for k, v in sd.items()}, "iter": 7}, pth)
    for path in (st, pth):
        loaded = registry.load_checkpoint(path)
        assert loaded.info == model.info
        _same_outputs(model, loaded)


@pytest.mark.parametrize("variant", MARGIN_VARIANTS, ids=_ids)
def test_margin_of_context_makes_a_tile_equal_whole_image_inference(
    variant: Variant,
) -> None:
    model = _build(*variant)
    m, s, k = model.info.margin, model.info.scale, model.info.size_multiple
    pad = -(-m // k) * k  # context rounded up to the size multiple keeps the grid aligned
    core = 2 * k
    x = _tile(model, h=2 * pad + core + 2 * k, w=2 * pad + core + 4 * k)
    y0, x0 = pad + 2 * k, pad + 2 * k  # the tile's core starts away from the image border
    tile = x[:, :, y0 - pad : y0 + core + pad, x0 - pad : x0 + core + pad]
    with torch.no_grad():
        whole = model.module(x)[:, :, y0 * s : (y0 + core) * s, x0 * s : (x0 + core) * s]
        part = model.module(tile)[:, :, pad * s : (pad + core) * s, pad * s : (pad + core) * s]
    torch.testing.assert_close(part, whole, rtol=0, atol=1e-5)


def test_espcn_margin_equals_its_receptive_field_radius() -> None:
    """A pixel change moves outputs at most ``margin`` LR pixels away, and does move them there."""
    model = _build("espcn", {"in_channels": 1, "out_channels": 1, "upscale": 2})
    x = torch.zeros(1, 1, 21, 21)
    bumped = x.clone()
    bumped[0, 0, 10, 10] = 1.0
    with torch.no_grad():
        diff = (model.module(bumped) - model.module(x)).abs()[0, 0]
    rows = torch.nonzero(diff.amax(dim=1) > 0).flatten() // model.info.scale
    margin = model.info.margin
    assert (rows.min().item(), rows.max().item()) == (10 - margin, 10 + margin)


def test_canonicalize_unwraps_wrappers_and_strips_module_prefix() -> None:
    t = torch.zeros(2)
    raw = {"state_dict": {"module.a.weight": t, "module.b.bias": t}, "epoch": 3}
    assert set(canonicalize(raw)) == {"a.weight", "b.bias"}
    assert set(canonicalize({"params": {"x": t}, "params_ema": {"y": t}})) == {"y"}


def test_canonicalize_rejects_a_mapping_without_tensors() -> None:
    with pytest.raises(CheckpointError, match="no tensors"):
        canonicalize({"epoch": 3, "name": "x"})


def test_unknown_key_layout_raises_unsupported_model_error() -> None:
    with pytest.raises(UnsupportedModelError, match="matches no known architecture"):
        registry.load_state_dict({"encoder.0.weight": torch.zeros(4, 3, 3, 3)})


def test_inconsistent_shapes_raise_checkpoint_error() -> None:
    sd = _build("espcn", {"in_channels": 3, "out_channels": 3, "upscale": 4}).module.state_dict()
    sd["sub_pixel.0.weight"] = torch.zeros(47, 32, 3, 3)  # 47 is not 3 * r * r
    with pytest.raises(CheckpointError, match=r"sub_pixel\.0\.weight"):
        registry.load_state_dict(sd)


def test_pickled_objects_are_refused_not_unpickled(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    net = _build("espcn", {"in_channels": 1, "out_channels": 1, "upscale": 2}).module
    torch.save({"model": net}, path)  # a whole pickled module, not a state dict
    with pytest.raises(CheckpointError, match="never unpickles"):
        registry.read_state_dict(path)


def test_torchscript_archive_needs_the_explicit_loader(tmp_path: Path) -> None:
    model = _build("espcn", {"in_channels": 1, "out_channels": 1, "upscale": 2})
    path = tmp_path / "m.pt"
    # Making a TorchScript file is deprecated in torch 2.13; it is the format under test.
    with pytest.warns(DeprecationWarning):
        torch.jit.save(torch.jit.script(model.module), str(path))
    assert zipfile.is_zipfile(path)
    with pytest.raises(CheckpointError, match="load_torchscript"):
        registry.load_checkpoint(path)
    scripted = registry.load_torchscript(path)
    x = _tile(model)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model.module(x))


def test_missing_checkpoint_file_raises_checkpoint_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        registry.load_checkpoint(tmp_path / "absent.pth")


def test_registry_ids_are_unique_and_every_variant_arch_is_registered() -> None:
    ids = [a.id for a in REGISTRY]
    assert len(ids) == len(set(ids))
    assert {arch for arch, _ in VARIANTS} == set(ids)


def test_fsrcnn_without_a_known_scale_raises_checkpoint_error(tmp_path: Path) -> None:
    model = _build("fsrcnn", {"channels": 1, "d": 8, "s": 4, "m": 1, "upscale": 3})
    path = tmp_path / "fsrcnn.pth"
    torch.save(model.module.state_dict(), path)
    with pytest.raises(CheckpointError, match="does not record its scale"):
        registry.load_checkpoint(path)
    assert registry.load_checkpoint(path, scale=3).info == model.info


def test_a_scale_that_contradicts_the_shapes_raises_checkpoint_error() -> None:
    sd = _build("edsr", {"n_resblocks": 1, "n_feats": 8, "scale": 4}).module.state_dict()
    with pytest.raises(CheckpointError, match="x4 model, but x2"):
        registry.load_state_dict(sd, scale=2)


def test_multi_scale_carn_defaults_to_x4_and_runs_the_scale_asked_for() -> None:
    sd = _build("carn", {"scale": 2, "num_feat": 8}).module.state_dict()
    assert registry.load_state_dict(sd).info.scale == 4
    three = registry.load_state_dict(sd, scale=3)
    with torch.no_grad():
        assert three.module(torch.rand(1, 3, 5, 4)).shape == (1, 3, 15, 12)


@pytest.mark.parametrize(
    ("hp", "tag"),
    [((10, 16), "b0"), ((26, 32), "b1"), ((84, 56), "b2")],
)
def test_ninasr_variants_are_named_by_their_torchsr_names(hp: tuple[int, int], tag: str) -> None:
    sd = _build("ninasr", {"n_resblocks": hp[0], "n_feats": hp[1], "scale": 2}).module.state_dict()
    assert tag in registry.load_state_dict(sd).info.tags


def test_edsr_residual_scale_follows_the_width_of_the_public_variants() -> None:
    full = registry.load_state_dict(
        _build("edsr", {"n_resblocks": 1, "n_feats": 256, "scale": 2}).module.state_dict()
    )
    base = registry.load_state_dict(
        _build("edsr", {"n_resblocks": 1, "n_feats": 64, "scale": 2}).module.state_dict()
    )
    assert full.info.kwargs()["res_scale"] == 0.1
    assert base.info.kwargs()["res_scale"] == 1.0


@pytest.mark.skipif(not ANCHOR.is_file(), reason=f"seed anchor {ANCHOR} is absent")
def test_seed_anchor_equals_our_espcn_with_its_weights_per_rgb_channel() -> None:
    """The seed's espcn_ex.pt is a Y-trained 1-channel ESPCN applied to each RGB channel."""
    scripted = registry.load_torchscript(ANCHOR)
    ours = registry.load_state_dict(dict(scripted.state_dict()))
    assert ours.info.architecture == "espcn"
    assert (ours.info.in_channels, ours.info.out_channels, ours.info.scale) == (1, 1, 4)
    # The anchor was traced at 1x3x128x128; run it there.
    x = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = scripted(x)
        got = ours.module(x.reshape(3, 1, 128, 128)).reshape(1, 3, 512, 512)
    assert expected.shape == (1, 3, 512, 512)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_espcn_res_skip_is_pil_bicubic_away_from_the_border(scale: int) -> None:
    """With the residual branch silenced, ESPCN-Res is PIL's BICUBIC upscale."""
    import numpy as np
    from PIL import Image

    model = registry.get_arch("espcn_res").create(in_channels=1, channels=8, upscale=scale)
    with torch.no_grad():
        model.module.sub_pixel[0].weight.zero_()
    lr = np.random.default_rng(scale).random((13, 17), dtype=np.float32)
    with torch.no_grad():
        ours = model.module(torch.from_numpy(lr)[None, None])[0, 0].numpy()
    pil = Image.fromarray(lr, mode="F").resize((17 * scale, 13 * scale), Image.Resampling.BICUBIC)
    edge = 2 * scale  # zero padding vs PIL's clamped edge: the residual learns that part
    np.testing.assert_allclose(
        ours[edge:-edge, edge:-edge], np.asarray(pil)[edge:-edge, edge:-edge], atol=1e-5
    )


def test_espcn_res_is_told_apart_from_espcn_by_its_prelu_keys() -> None:
    res = registry.get_arch("espcn_res").create(in_channels=1, channels=16, upscale=4)
    plain = registry.get_arch("espcn").create(in_channels=1, out_channels=1, channels=16, upscale=4)
    assert registry.detect_arch(res.module.state_dict()).id == "espcn_res"
    assert registry.detect_arch(plain.module.state_dict()).id == "espcn"
    assert res.info.color == "Y" and res.info.margin == 4
