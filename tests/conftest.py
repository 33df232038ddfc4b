"""Shared fixtures: small real models, generated images, log capture.

Models are real (a seeded random-init ESPCN exported to ONNX in a temp folder, or the
repo's trained default); images are PNGs the tests write themselves. Tests that use
the contest data in ``../shared`` skip with a stated reason when it is absent.
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import structlog
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CONTEST = SHARED / "contest"
CONTEST_INPUTS = ("sample_0001.png", "sample_0002.png", "seed_0001.png", "seed_0005.png")


def contest_inputs() -> list[Path]:
    """The four contest low-resolution inputs, or a skip when ../shared is absent."""
    paths = [CONTEST / name for name in CONTEST_INPUTS]
    if not all(p.is_file() for p in paths):
        pytest.skip(f"contest samples not found in {CONTEST} (../shared is not checked out)")
    return paths


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


def export_espcn(
    path: Path, *, seed: int = 0, static: tuple[int, int, int, int] | None = None, channels: int = 3
) -> Path:
    """Export a seeded random-init ESPCN x4 (RGB) to ONNX; dynamic N/H/W unless ``static``."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(channels, 16, 5, padding=2),
        nn.Tanh(),
        nn.Conv2d(16, 8, 3, padding=1),
        nn.Tanh(),
        nn.Conv2d(8, channels * 16, 3, padding=1),
        nn.PixelShuffle(4),
    ).eval()
    shape = static or (1, channels, 32, 32)
    dynamic = (
        None if static else {"input": {0: "n", 2: "h", 3: "w"}, "output": {0: "n", 2: "H", 3: "W"}}
    )
    with warnings.catch_warnings():
        # The TorchScript-based exporter is deprecated in torch 2.9+ but exports these
        # plain convolutions exactly and quickly; the warning is expected.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (torch.rand(*shape),),
            str(path),
            input_names=["input"],
            output_names=["output"],
            dynamic_axes=dynamic,
            dynamo=False,
        )
    return path


@pytest.fixture(scope="session")
def espcn_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small random-init ESPCN x4 ONNX with dynamic batch, height and width."""
    return export_espcn(tmp_path_factory.mktemp("models") / "espcn_tiny.onnx")


@pytest.fixture(scope="session")
def espcn_onnx_y(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-channel (Y) ESPCN x4, as ESPCN-PyTorch's models are."""
    return export_espcn(tmp_path_factory.mktemp("models") / "espcn_y.onnx", channels=1)


@pytest.fixture(scope="session")
def espcn_onnx_static(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same network fixed at 2x3x48x48, as a static-shape bmodel would be."""
    return export_espcn(
        tmp_path_factory.mktemp("models") / "espcn_static.onnx", static=(2, 3, 48, 48)
    )


def photo_like(height: int, width: int, *, seed: int = 0) -> np.ndarray:
    """A smooth random RGB image with some texture (HxWx3 uint8)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack(
        [128 + 100 * np.sin(xx / 17.0 + c) * np.cos(yy / 23.0 - c) for c in range(3)], axis=2
    )
    noise = rng.normal(0, 12, size=(height, width, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def write_png(path: Path, rgb: np.ndarray) -> Path:
    Image.fromarray(rgb).save(path)
    return path


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """Three small PNGs of different sizes (one smaller than a tile)."""
    folder = tmp_path / "in"
    folder.mkdir()
    for i, (h, w) in enumerate([(70, 90), (40, 33), (101, 64)]):
        write_png(folder / f"img_{i:02d}.png", photo_like(h, w, seed=i))
    return folder


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``python run.py ARGS`` as a user would; never raises on a failing exit."""
    return subprocess.run(
        [sys.executable, str(REPO / "run.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
