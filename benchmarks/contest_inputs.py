"""Benchmark inputs: the contest samples repeated to any count (symlinks), or synthetic
contest-size images where ../shared is absent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["CONTEST", "SAMPLES", "make_inputs"]

REPO = Path(__file__).resolve().parents[1]
CONTEST = REPO.parent / "shared" / "contest"
SAMPLES = ("sample_0001.png", "sample_0002.png", "seed_0001.png", "seed_0005.png")


def make_inputs(folder: Path, count: int) -> str:
    folder.mkdir(parents=True)
    sources = [CONTEST / s for s in SAMPLES if (CONTEST / s).is_file()]
    if len(sources) == len(SAMPLES):
        for i in range(count):
            (folder / f"{i:04d}.png").symlink_to(sources[i % len(sources)])
        return "contest samples"
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (340, 510, 3), dtype=np.uint8)
    for i in range(count):
        Image.fromarray(np.roll(base, i, axis=1)).save(folder / f"{i:04d}.png")
    return "synthetic 510x340"
