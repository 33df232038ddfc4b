"""Validation figures: PSNR-Y of the model and of PIL BICUBIC on held-out photos."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray
from PIL import Image

from batchsr.color import MATLAB_Y, upscale_image
from batchsr.models import SRModel
from batchsr.train.data import hr_lr_pair, load_rgb

__all__ = ["ValidFigure", "psnr_y", "upscale_rgb", "validate"]


def upscale_rgb(model: SRModel, lr: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """Whole-image upscale of HWC uint8 RGB as the pipeline does it: RGB models directly,
    Y-only models on MATLAB's Y with Cb/Cr upscaled bicubically."""

    def run(batch: NDArray[np.float32]) -> NDArray[np.float32]:
        with torch.no_grad():
            return model.module(torch.from_numpy(batch)).numpy()

    return upscale_image(run, lr, channels=model.info.in_channels)


def psnr_y(a: NDArray[np.uint8], b: NDArray[np.uint8], *, border: int) -> float:
    """PSNR on the Y channel of MATLAB's ``rgb2ycbcr`` (as BasicSR's ``test_y_channel``).

    Args:
        a, b: HWC RGB uint8 images of the same shape.
        border: pixels cropped from every side first (the scale, by convention).

    Returns:
        PSNR in dB (``inf`` for identical images).
    """

    def y(img: NDArray[np.uint8]) -> NDArray[np.float64]:
        return 16.0 + img.astype(np.float64) @ np.asarray(MATLAB_Y) / 255.0

    ya, yb = y(a), y(b)
    if border:
        ya, yb = ya[border:-border, border:-border], yb[border:-border, border:-border]
    mse = float(np.mean((ya - yb) ** 2))
    return math.inf if mse == 0.0 else 10.0 * math.log10(255.0**2 / mse)


@dataclass(frozen=True, slots=True)
class ValidFigure:
    """PSNR-Y of one held-out image: the model against PIL BICUBIC upscaling."""

    image: str
    psnr_y_model: float
    psnr_y_bicubic: float


def validate(model: SRModel, names: tuple[str, ...]) -> tuple[ValidFigure, ...]:
    """PSNR-Y (border = scale) of the model and of PIL BICUBIC on held-out images."""
    scale = model.info.scale
    figures = []
    for name in names:
        hr, lr = hr_lr_pair(load_rgb(name), scale)
        sr = upscale_rgb(model, lr)
        size = (hr.shape[1], hr.shape[0])
        bicubic = np.asarray(Image.fromarray(lr).resize(size, Image.Resampling.BICUBIC))
        figures.append(
            ValidFigure(
                image=name,
                psnr_y_model=psnr_y(sr, hr, border=scale),
                psnr_y_bicubic=psnr_y(bicubic, hr, border=scale),
            )
        )
    return tuple(figures)
