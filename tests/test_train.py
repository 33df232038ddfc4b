"""Training: config validation, reproducibility, and the model folder it writes."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from batchsr.errors import ConfigError
from batchsr.manifest import load_manifest
from batchsr.models import load_checkpoint
from batchsr.train import NiqePhase, build_model_folder, load_train_config, psnr_y, train
from batchsr.train.report import training_md

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "train-espcn.toml"


def _tiny(**overrides: object):  # type: ignore[no-untyped-def]
    cfg = load_train_config(CONFIG)
    small = {
        "steps": 3,
        "batch": 2,
        "lr_patch": 8,
        "rescales": (0.5,),
        "lr_blurs": (0.0,),
        "log_every": 3,
        "niqe": None,
        "lattice": None,
        "polish": None,
    }
    return replace(cfg, train=("chelsea.png",), valid=("text.png",), **{**small, **overrides})


def test_training_is_reproducible_for_a_fixed_seed(tmp_path: Path) -> None:
    cfg = _tiny()
    a = train(cfg).model.module.state_dict()
    b = train(cfg).model.module.state_dict()
    c = train(replace(cfg, seed=cfg.seed + 1)).model.module.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize(
    "postprocess",
    [None, pytest.param("SHARPEN", marks=pytest.mark.slow)],  # ~3 s: 2 exports
)
def test_model_folder_round_trips_through_the_manifest(
    postprocess: str | None, tmp_path: Path
) -> None:
    cfg = _tiny(target_sharpen=0.5, postprocess=postprocess)
    result = train(cfg)
    manifest = load_manifest(build_model_folder(result, cfg, tmp_path / "m").parent)
    assert (manifest.scale, manifest.color, manifest.postprocess) == (4, "Y", postprocess)
    # An embedded filter reaches one more pixel, and the bare weights are no artifact.
    if postprocess is None:
        assert manifest.margin == 4
        assert {a.format for a in manifest.artifacts} == {"onnx", "safetensors"}
    else:
        assert manifest.margin == 5
        assert {a.format for a in manifest.artifacts} == {"onnx"}
    assert load_checkpoint(tmp_path / "m" / "espcn.safetensors").info == result.model.info
    assert (tmp_path / "m" / "TRAINING.md").read_text().count("| chelsea.png | train |") == 1


def test_config_rejects_unknown_keys_and_unlicensed_images(tmp_path: Path) -> None:
    text = CONFIG.read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace("[optim]", "[optim]\nmomentum = 0.9"))
    with pytest.raises(ConfigError, match="momentum"):
        load_train_config(bad)
    bad.write_text(text.replace('"chelsea.png"', '"motorcycle_left.png"'))
    with pytest.raises(ConfigError, match="no recorded open licence"):
        load_train_config(bad)
    bad.write_text(text.replace("lr_blurs = [0.0, 0.8, 1.6]", "lr_blurs = [-1.0]"))
    with pytest.raises(ConfigError, match="lr_blurs"):
        load_train_config(bad)


def test_psnr_y_is_infinite_for_equal_images_and_finite_otherwise() -> None:
    import numpy as np

    a = np.zeros((16, 16, 3), np.uint8)
    b = a.copy()
    b[8, 8] = 255
    assert psnr_y(a, a, border=4) == float("inf")
    # White on black is 219 levels of MATLAB Y; one such pixel in the 8x8 uncropped core.
    expected = 10.0 * np.log10(255.0**2 / (219.0**2 / 64.0))
    assert psnr_y(a, b, border=4) == pytest.approx(expected, abs=1e-9)


def test_niqe_phase_fine_tunes_after_the_l1_steps_and_is_recorded() -> None:
    phase = NiqePhase(weight=0.01, steps=1, lr_patch=48, batch=2, consistency=1.0)
    base = _tiny(rescales=(1.0,))
    plain = train(base)
    tuned = train(replace(base, niqe=phase))
    half = train(replace(base, niqe=replace(phase, blend=0.5)))
    assert len(tuned.niqe_losses) == 1
    l1, score = tuned.niqe_losses[0]
    assert 0.0 < l1 < 1.0 and score > 0.0
    a, b = plain.model.module.state_dict(), tuned.model.module.state_dict()
    assert not all(torch.equal(a[k], b[k]) for k in a)
    # The blend interpolates between the L1 weights and the tuned ones.
    c = half.model.module.state_dict()
    for k in a:
        torch.testing.assert_close(c[k], a[k] + 0.5 * (b[k] - a[k]))
    # The record as build_model_folder writes it (the round-trip tests cover the folder).
    record = training_md(half, replace(base, niqe=replace(phase, blend=0.5)), 0.0)
    assert "differentiable NIQE" in record and "L1 + 0.5 x (tuned - L1)" in record


def test_niqe_phase_refuses_patches_too_small_for_two_blocks(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"niqe\.lr_patch 40"):
        train(_tiny(niqe=NiqePhase(weight=0.01, steps=1, lr_patch=40, batch=1)))
    text = CONFIG.read_text().replace("weight = 0.008", "weight = 0")
    assert "weight = 0\n" in text
    (tmp_path / "t.toml").write_text(text)
    with pytest.raises(ConfigError, match=r"niqe\.weight"):
        load_train_config(tmp_path / "t.toml")


def test_a_y_only_model_trains_on_luma_and_exports_a_one_channel_folder(tmp_path: Path) -> None:
    """ESPCN-Res on Y: trained on MATLAB Y, with the NIQE phase on its Y outputs."""
    import numpy as np

    from batchsr.train import upscale_rgb

    hyper = (("channels", 8), ("in_channels", 1), ("upscale", 4))
    cfg = _tiny(
        architecture="espcn_res",
        hyperparameters=hyper,
        rescales=(1.0,),
        example_shape=(1, 1, 16, 20),
        check_shapes=((1, 1, 16, 20), (2, 1, 9, 13)),
        niqe=NiqePhase(weight=0.01, steps=2, lr_patch=48, batch=2),
    )
    result = train(cfg)
    assert result.model.info.color == "Y" and result.niqe_losses[0][1] > 0.0
    manifest = load_manifest(build_model_folder(result, cfg, tmp_path / "m").parent)
    assert (manifest.architecture, manifest.in_channels, manifest.color) == ("espcn_res", 1, "Y")
    assert manifest.artifact("onnx").shapes == ((None, 1, None, None),)  # type: ignore[union-attr]
    # The validation figures come from the pipeline's Y path: RGB out, chroma bicubic.
    lr = np.random.default_rng(0).integers(0, 256, (10, 12, 3), dtype=np.uint8)
    assert upscale_rgb(result.model, lr).shape == (40, 48, 3)
    assert all(np.isfinite(f.psnr_y_model) for f in result.valid)


def test_lattice_penalty_and_polish_run_and_are_recorded() -> None:
    """The default config's lattice penalty (both phases) and polish phase, tiny."""
    from batchsr.train import LatticeTerm, PolishPhase

    phase = NiqePhase(weight=0.01, steps=1, lr_patch=48, batch=2, blend=0.5)
    cfg = _tiny(
        rescales=(1.0,),
        niqe=phase,
        lattice=LatticeTerm(weight=0.06, l1_weight=0.01, batch=2, lr_patch=16),
        polish=PolishPhase(steps=1, batch=2),
    )
    result = train(cfg)
    assert len(result.polish_losses) == 1
    copy_l1, rms = result.polish_losses[0]
    assert 0.0 <= copy_l1 < 0.1 and rms >= 0.0
    # the polish moved the blended weights, a little
    start, tuned = result.endpoints
    final = result.model.module.state_dict()
    blended = {k: start[k] + 0.5 * (tuned[k] - start[k]) for k in start}
    assert not all(torch.equal(final[k], blended[k]) for k in final)
    record = training_md(result, cfg, 0.0)
    assert "lattice penalty" in record and "polish steps" in record
