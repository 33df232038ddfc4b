"""Shared fixtures: small real models, generated images, log capture.

Models are real (a seeded random-init ESPCN exported to ONNX in a temp folder, or the
repo's trained default); images are PNGs the tests write themselves. Tests that use
the contest data in ``../shared`` skip with a stated reason when it is absent.

Only fixtures live here; what tests import (functions, fake engines, reference cases,
paths) is in ``tests/helpers/``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from tests.helpers.images import photo_like, write_png
from tests.helpers.models import export_espcn


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


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


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """Three small PNGs of different sizes (one smaller than a tile)."""
    folder = tmp_path / "in"
    folder.mkdir()
    for i, (h, w) in enumerate([(70, 90), (40, 33), (101, 64)]):
        write_png(folder / f"img_{i:02d}.png", photo_like(h, w, seed=i))
    return folder
