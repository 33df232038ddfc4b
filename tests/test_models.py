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
from batchsr.models import (
    REGISTRY,
    SRModel,
    canonicalize,
    detect_arch,
    get_arch,
    load_checkpoint,
    load_state_dict,
    load_torchscript,
    read_state_dict,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
ANCHOR = SHARED / "anchors" / "espcn_ex.pt"

torch.set_num_threads(2)

# (architecture id, hyperparameters): small variants keep the suite fast; every
# scale each architecture supports is here.
VARIANTS: list[tuple[str, dict[str, Any]]] = [
    ("espcn", {"in_channels": 3, "out_channels": 3, "channels": 16, "upscale": 2}),
    ("espcn", {"in_channels": 3, "out_channels": 3, "channels": 16, "upscale": 3}),
    ("espcn", {"in_channels": 1, "out_channels": 1, "channels": 64, "upscale": 4}),
]


def _ids(v: tuple[str, dict[str, Any]]) -> str:
    arch, hp = v
    return arch + "-" + "-".join(f"{k}{val}" for k, val in sorted(hp.items()))


def _build(arch_id: str, hp: Mapping[str, Any], *, seed: int = 0) -> SRModel:
    torch.manual_seed(seed)
    return get_arch(arch_id).create(**hp)


def _tile(model: SRModel, *, h: int = 12, w: int = 10, n: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, model.info.in_channels, h, w, generator=g)


def _same_outputs(a: SRModel, b: SRModel) -> None:
    x = _tile(a)
    with torch.no_grad():
        torch.testing.assert_close(a.module(x), b.module(x), rtol=0, atol=0)


@pytest.mark.parametrize("variant", VARIANTS, ids=_ids)
def test_state_dict_round_trip_detects_architecture_and_hyperparameters(
    variant: tuple[str, dict[str, Any]],
) -> None:
    arch_id, hp = variant
    model = _build(arch_id, hp)
    sd = model.module.state_dict()
    assert detect_arch(sd).id == arch_id
    loaded = load_state_dict(sd)
    assert loaded.info == model.info
    _same_outputs(model, loaded)


@pytest.mark.parametrize("variant", VARIANTS, ids=_ids)
def test_output_shape_is_scale_times_input(variant: tuple[str, dict[str, Any]]) -> None:
    arch_id, hp = variant
    model = _build(arch_id, hp)
    m = model.info.size_multiple
    x = _tile(model, h=3 * m, w=5 * m, n=2)
    with torch.no_grad():
        y = model.module(x)
    s = model.info.scale
    assert y.shape == (2, model.info.out_channels, 3 * m * s, 5 * m * s)
    assert y.dtype == torch.float32


@pytest.mark.parametrize("variant", VARIANTS, ids=_ids)
def test_checkpoint_files_load_from_safetensors_and_weights_only_pth(
    variant: tuple[str, dict[str, Any]], tmp_path: Path
) -> None:
    arch_id, hp = variant
    model = _build(arch_id, hp)
    sd = model.module.state_dict()
    st = tmp_path / "m.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(st))
    pth = tmp_path / "m.pth"
    # Public checkpoints wrap and prefix their weights; loading must see through both.
    torch.save({"params_ema": {f"module.{k}": v for k, v in sd.items()}, "iter": 7}, pth)
    for path in (st, pth):
        loaded = load_checkpoint(path)
        assert loaded.info == model.info
        _same_outputs(model, loaded)


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
        load_state_dict({"encoder.0.weight": torch.zeros(4, 3, 3, 3)})


def test_inconsistent_shapes_raise_checkpoint_error() -> None:
    sd = _build("espcn", {"in_channels": 3, "out_channels": 3, "upscale": 4}).module.state_dict()
    sd["sub_pixel.0.weight"] = torch.zeros(47, 32, 3, 3)  # 47 is not 3 * r * r
    with pytest.raises(CheckpointError, match=r"sub_pixel\.0\.weight"):
        load_state_dict(sd)


def test_pickled_objects_are_refused_not_unpickled(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    net = _build("espcn", {"in_channels": 1, "out_channels": 1, "upscale": 2}).module
    torch.save({"model": net}, path)  # a whole pickled module, not a state dict
    with pytest.raises(CheckpointError, match="never unpickles"):
        read_state_dict(path)


def test_torchscript_archive_needs_the_explicit_loader(tmp_path: Path) -> None:
    model = _build("espcn", {"in_channels": 1, "out_channels": 1, "upscale": 2})
    path = tmp_path / "m.pt"
    # Making a TorchScript file is deprecated in torch 2.13; it is the format under test.
    with pytest.warns(DeprecationWarning):
        torch.jit.save(torch.jit.script(model.module), str(path))
    assert zipfile.is_zipfile(path)
    with pytest.raises(CheckpointError, match="load_torchscript"):
        load_checkpoint(path)
    scripted = load_torchscript(path)
    x = _tile(model)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model.module(x))


def test_missing_checkpoint_file_raises_checkpoint_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "absent.pth")


def test_registry_ids_are_unique_and_every_variant_arch_is_registered() -> None:
    ids = [a.id for a in REGISTRY]
    assert len(ids) == len(set(ids))
    assert {arch for arch, _ in VARIANTS} <= set(ids)


@pytest.mark.skipif(not ANCHOR.is_file(), reason=f"seed anchor {ANCHOR} is absent")
def test_seed_anchor_equals_our_espcn_with_its_weights_per_rgb_channel() -> None:
    """The seed's espcn_ex.pt is a Y-trained 1-channel ESPCN applied to each RGB channel."""
    scripted = load_torchscript(ANCHOR)
    ours = load_state_dict(dict(scripted.state_dict()))
    assert ours.info.architecture == "espcn"
    assert (ours.info.in_channels, ours.info.out_channels, ours.info.scale) == (1, 1, 4)
    # The anchor was traced at 1x3x128x128; run it there.
    x = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = scripted(x)
        got = ours.module(x.reshape(3, 1, 128, 128)).reshape(1, 3, 512, 512)
    assert expected.shape == (1, 3, 512, 512)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
