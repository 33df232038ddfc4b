"""The differentiable NIQE used in training follows the exact score and has gradients."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from batchsr.metrics import niqe
from batchsr.niqe_loss import niqe_features, niqe_of_batch

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = sorted((ROOT / "examples").glob("*.png"))


def _tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rgb.astype(np.float32) / 255.0).permute(2, 0, 1)[None]


def _variants(path: Path) -> list[np.ndarray]:
    """A photo, its x4 bicubic upscale of a downscale (smooth), and a sharpened one."""
    with Image.open(path) as im:
        photo = im.convert("RGB")
    w, h = photo.size
    smooth = photo.resize((w // 4, h // 4), Image.Resampling.BICUBIC).resize(
        (w, h), Image.Resampling.BICUBIC
    )
    return [np.asarray(v) for v in (photo, smooth, smooth.filter(ImageFilter.EDGE_ENHANCE))]


@pytest.mark.parametrize("path", PHOTOS, ids=[p.name for p in PHOTOS])
def test_matches_the_exact_score_on_whole_images(path: Path) -> None:
    for rgb in _variants(path):
        exact = niqe(rgb)
        smooth = float(niqe_of_batch(_tensor(rgb)))
        # Interpolated shapes and float32 statistics move the score by hundredths; a tenth at most.
        assert smooth == pytest.approx(exact, abs=0.1)


def test_ranks_smooth_below_sharp_as_the_exact_score_does() -> None:
    photo, smooth, sharpened = (_tensor(v) for v in _variants(PHOTOS[0]))
    assert float(niqe_of_batch(smooth)) > float(niqe_of_batch(sharpened))
    assert float(niqe_of_batch(smooth)) > float(niqe_of_batch(photo))


def test_gradient_reaches_every_pixel_and_lowers_the_score() -> None:
    _, smooth, _ = _variants(PHOTOS[0])
    x = _tensor(smooth[96:384, 96:480]).requires_grad_(True)
    score = niqe_of_batch(x)
    score.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert (x.grad.abs().sum(dim=1) > 0).float().mean() > 0.9
    # A small step against the gradient (RMS a quarter grey level) lowers the score: the
    # gradient means something despite the rounding it passes straight through.
    with torch.no_grad():
        stepped = x - 1e-3 * x.grad / x.grad.pow(2).mean().sqrt()
    assert float(niqe_of_batch(stepped)) < score.item()


def test_each_patch_of_a_batch_gives_its_own_blocks() -> None:
    rgb = np.asarray(Image.open(PHOTOS[1]).convert("RGB"))
    a, b = _tensor(rgb[:192, :288]), _tensor(rgb[100:292, 50:338])
    both = niqe_features(torch.cat([a, b]))
    assert both.shape == (12, 36)
    torch.testing.assert_close(both, torch.cat([niqe_features(a), niqe_features(b)]))


def test_too_small_patches_are_refused() -> None:
    with pytest.raises(ValueError, match="hold no 96x96"):
        niqe_features(torch.zeros(2, 3, 64, 200))
    with pytest.raises(ValueError, match="at least two"):
        niqe_of_batch(torch.rand(1, 3, 96, 96))
