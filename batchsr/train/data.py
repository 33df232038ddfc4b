"""Training data: scikit-image's photos, LR/HR pairs made as the contest's were, patches.

Pairs are made as the contest's inputs were: the low-resolution image is a PIL BICUBIC
x4 downscale of the high-resolution photo, rounded to uint8.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from PIL import Image, ImageFilter

from batchsr.color import MATLAB_Y
from batchsr.errors import ConfigError
from batchsr.train.config import TrainConfig

__all__ = [
    "PatchSampler",
    "as_model_input",
    "hr_lr_pair",
    "load_rgb",
    "skimage_data_dir",
    "unsharp",
]


def skimage_data_dir() -> Path:
    """The ``skimage/data`` folder of the installed scikit-image wheel.

    Raises:
        ConfigError: scikit-image is not installed.
    """
    import importlib.util

    spec = importlib.util.find_spec("skimage")
    if spec is None or spec.origin is None:
        raise ConfigError("training needs scikit-image's bundled photos: pip install scikit-image")
    return Path(spec.origin).parent / "data"


def load_rgb(name: str) -> Image.Image:
    """A skimage/data photo as RGB (gray photos too)."""
    with Image.open(skimage_data_dir() / name) as im:
        return im.convert("RGB")


def hr_lr_pair(
    hr: Image.Image, scale: int, *, blur: float = 0.0
) -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
    """HR cropped to a multiple of ``scale`` and its PIL BICUBIC downscale, HWC uint8.

    ``blur`` > 0 first blurs the HR image (PIL GaussianBlur, radius = sigma in HR
    pixels) for the LR only; the HR returned is never blurred.
    """
    w, h = (hr.width // scale) * scale, (hr.height // scale) * scale
    hr = hr.crop((0, 0, w, h))
    src = hr.filter(ImageFilter.GaussianBlur(blur)) if blur > 0.0 else hr
    lr = src.resize((w // scale, h // scale), Image.Resampling.BICUBIC)
    return np.asarray(hr), np.asarray(lr)


def as_model_input(batch: torch.Tensor, channels: int) -> torch.Tensor:
    """RGB (N, 3, H, W) in [0, 1] as the model takes it: unchanged, or Y / 255 for
    one-channel (Y-only) models, as the pipeline's Y mode feeds them."""
    if channels == 3:
        return batch
    w = torch.tensor(MATLAB_Y, dtype=batch.dtype).view(1, 3, 1, 1) / 255.0
    return (batch * w).sum(dim=1, keepdim=True) + 16.0 / 255.0


class PatchSampler:
    """Aligned random LR/HR patch pairs with flips and 90-degree rotations."""

    def __init__(self, cfg: TrainConfig, scale: int, *, patch: int, seed: int) -> None:
        self._scale = scale
        self._patch = patch
        self._rng = np.random.default_rng(seed)
        self._pairs: list[tuple[NDArray[np.uint8], NDArray[np.uint8]]] = []
        for name in cfg.train:
            photo = load_rgb(name)
            for r in cfg.rescales:
                size = (round(photo.width * r), round(photo.height * r))
                src = photo if r == 1.0 else photo.resize(size, Image.Resampling.BICUBIC)
                for blur in cfg.lr_blurs:
                    hr, lr = hr_lr_pair(src, scale, blur=blur)
                    if min(lr.shape[:2]) >= self._patch:
                        self._pairs.append((hr, lr))
        if not self._pairs:
            raise ConfigError(f"no training image is {patch} LR pixels on its shorter side")
        # Sample images in proportion to their area, so every LR pixel is equally likely.
        areas = np.array([lr.shape[0] * lr.shape[1] for _, lr in self._pairs], dtype=np.float64)
        self._weights = areas / areas.sum()

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One batch: LR (N, 3, p, p) and HR (N, 3, p*s, p*s), float32 in [0, 1]."""
        p, s = self._patch, self._scale
        lrs, hrs = [], []
        for idx in self._rng.choice(len(self._pairs), size=size, p=self._weights):
            hr, lr = self._pairs[idx]
            y = int(self._rng.integers(0, lr.shape[0] - p + 1))
            x = int(self._rng.integers(0, lr.shape[1] - p + 1))
            lp = lr[y : y + p, x : x + p]
            hp = hr[y * s : (y + p) * s, x * s : (x + p) * s]
            k = int(self._rng.integers(0, 4))
            flip = bool(self._rng.integers(0, 2))
            lp, hp = np.rot90(lp, k), np.rot90(hp, k)
            if flip:
                lp, hp = lp[:, ::-1], hp[:, ::-1]
            lrs.append(lp)
            hrs.append(hp)
        lr_t = torch.from_numpy(np.stack(lrs).astype(np.float32) / 255.0).permute(0, 3, 1, 2)
        hr_t = torch.from_numpy(np.stack(hrs).astype(np.float32) / 255.0).permute(0, 3, 1, 2)
        return lr_t.contiguous(), hr_t.contiguous()


def unsharp(hr: torch.Tensor, *, amount: float, sigma: float) -> torch.Tensor:
    """``hr + amount * (hr - gaussian(hr))`` clamped to [0, 1]; (N, C, H, W) float32."""
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    g = torch.exp(-(t**2) / (2 * sigma**2))
    g = g / g.sum()
    c = hr.shape[1]
    padded = torch.nn.functional.pad(hr, (radius, radius, radius, radius), mode="reflect")
    blur = torch.nn.functional.conv2d(padded, g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    blur = torch.nn.functional.conv2d(blur, g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return (hr + amount * (hr - blur)).clamp(0.0, 1.0)
