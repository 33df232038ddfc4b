"""Deterministic NIQE test images, rebuilt from the recipes in tests/data/niqe_reference.json.

Shared by ``tests/test_niqe.py`` (which compares ``batchsr.metrics.niqe`` to the recorded
official values) and ``benchmarks/make_niqe_refs.py`` (which records those values with
the official BasicSR code, in its own environment). Only numpy and Pillow are used, so
both sides rebuild bit-identical images from a recipe.

Inputs that are not 8-bit RGB are converted inline the way the pipeline converts them:
grey replicated to three channels, alpha dropped (``Image.convert("RGB")``), 16-bit
values scaled to 8 bits with rounding (``round(v * 255 / 65535)``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

__all__ = ["CASES", "CONTEST_DIR", "make_case", "needs_contest"]

# ../shared/contest next to the repository root (read-only contest data, not in the repo).
CONTEST_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "contest"

# Each recipe names its kind and parameters; "needs_contest" ones read CONTEST_DIR.
CASES: list[dict[str, Any]] = [
    {
        "name": "contest_official_resrgan_sr_0002",
        "kind": "contest",
        "file": "official_resrgan_sr_0002.png",
    },
    {"name": "contest_sample_0001", "kind": "contest", "file": "sample_0001.png"},
    {"name": "contest_sample_0002", "kind": "contest", "file": "sample_0002.png"},
    {"name": "contest_seed_0001", "kind": "contest", "file": "seed_0001.png"},
    {"name": "contest_seed_0005", "kind": "contest", "file": "seed_0005.png"},
    {"name": "contest_sample_0001_x4_2040x1632", "kind": "contest_x4", "file": "sample_0001.png"},
    {"name": "contest_seed_0005_x4_2040x1152", "kind": "contest_x4", "file": "seed_0005.png"},
    {"name": "texture_x4_2040x1632", "kind": "texture_x4", "h": 408, "w": 510, "seed": 7},
    {"name": "noise_200x317", "kind": "noise", "h": 200, "w": 317, "seed": 1},
    {"name": "noise_97x193_two_blocks", "kind": "noise", "h": 97, "w": 193, "seed": 2},
    {"name": "texture_250x401", "kind": "texture", "h": 250, "w": 401, "seed": 3},
    {"name": "gradient_300x500", "kind": "gradient", "h": 300, "w": 500},
    {"name": "half_flat_192x384", "kind": "half_flat", "h": 192, "w": 384, "seed": 4},
    {"name": "gray_L_300x300", "kind": "gray", "h": 300, "w": 300, "seed": 5},
    {"name": "gray16_I16_290x310", "kind": "gray16", "h": 290, "w": 310, "seed": 6},
    {"name": "rgb16_200x300", "kind": "rgb16", "h": 200, "w": 300, "seed": 8},
    {"name": "rgba_230x270", "kind": "rgba", "h": 230, "w": 270, "seed": 9},
    {"name": "single_block_96x96", "kind": "noise", "h": 96, "w": 96, "seed": 10},
    {"name": "single_block_150x120", "kind": "noise", "h": 150, "w": 120, "seed": 11},
    {"name": "flat_200x300", "kind": "flat", "h": 200, "w": 300, "value": 128},
    {"name": "too_small_80x120", "kind": "noise", "h": 80, "w": 120, "seed": 12},
]


def needs_contest(recipe: dict[str, Any]) -> bool:
    """Whether the recipe reads a contest image from CONTEST_DIR."""
    return str(recipe["kind"]).startswith("contest")


def _texture(h: int, w: int, seed: int) -> NDArray[np.uint8]:
    """Smooth random colour texture: noise at 1/8 resolution, bicubic-upscaled."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(h // 8, 2), max(w // 8, 2), 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC))


def _to_rgb8_16bit(v: NDArray[np.uint16]) -> NDArray[np.uint8]:
    # The pipeline's 16-bit rule: round(v * 255 / 65535), in integers.
    return ((v.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def make_case(recipe: dict[str, Any]) -> NDArray[np.uint8]:
    """Build the (H, W, 3) uint8 RGB image a recipe describes.

    Raises:
        FileNotFoundError: a contest recipe whose image is not in CONTEST_DIR.
    """
    kind = recipe["kind"]
    h, w = int(recipe.get("h", 0)), int(recipe.get("w", 0))
    rng = np.random.default_rng(int(recipe.get("seed", 0)))
    if kind == "contest":
        with Image.open(CONTEST_DIR / recipe["file"]) as im:
            return np.asarray(im.convert("RGB"))
    if kind == "contest_x4":
        with Image.open(CONTEST_DIR / recipe["file"]) as im:
            rgb = im.convert("RGB")
            return np.asarray(rgb.resize((rgb.width * 4, rgb.height * 4), Image.Resampling.BICUBIC))
    if kind == "texture_x4":
        small = Image.fromarray(_texture(h, w, int(recipe["seed"])))
        return np.asarray(small.resize((w * 4, h * 4), Image.Resampling.BICUBIC))
    if kind == "noise":
        return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    if kind == "texture":
        return _texture(h, w, int(recipe["seed"]))
    if kind == "gradient":
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
        r = 255 * xx / (w - 1)
        g = 255 * yy / (h - 1)
        b = 127.5 + 100 * np.sin((xx + yy) / 60)
        return np.rint(np.stack([r, g, b], axis=-1)).astype(np.uint8)
    if kind == "half_flat":
        img = _texture(h, w, int(recipe["seed"])).copy()
        img[:, w // 2 :] = 90  # right half flat: those blocks have NaN features
        return img
    if kind == "flat":
        return np.full((h, w, 3), int(recipe["value"]), dtype=np.uint8)
    if kind == "gray":
        grey = Image.fromarray(_texture(h, w, int(recipe["seed"]))).convert("L")
        return np.asarray(grey.convert("RGB"))  # L -> RGB replicates the channel
    if kind == "gray16":
        v = np.asarray(Image.fromarray(_texture(h, w, int(recipe["seed"])))).astype(np.uint16)
        v16 = (v[..., 1] * 257 + rng.integers(0, 257, (h, w))).astype(np.uint16)
        im16 = Image.fromarray(v16)  # mode I;16
        grey = _to_rgb8_16bit(np.asarray(im16))
        return np.repeat(grey[..., None], 3, axis=-1)
    if kind == "rgb16":
        v = _texture(h, w, int(recipe["seed"])).astype(np.uint16) * 257
        v16 = np.clip(v + rng.integers(-200, 200, v.shape), 0, 65535).astype(np.uint16)
        return _to_rgb8_16bit(v16)
    if kind == "rgba":
        rgba = np.dstack([_texture(h, w, int(recipe["seed"])), rng.integers(0, 256, (h, w))])
        return np.asarray(Image.fromarray(rgba.astype(np.uint8), "RGBA").convert("RGB"))
    raise ValueError(f"unknown NIQE test case kind {kind!r}")
