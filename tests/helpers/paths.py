"""Where things are: the checkout, the contest data beside it, the sail fake."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
CONTEST = SHARED / "contest"
CONTEST_INPUTS = ("sample_0001.png", "sample_0002.png", "seed_0001.png", "seed_0005.png")
# The folder to put on sys.path / PYTHONPATH so that ``import sophon.sail`` finds the fake.
FAKES = Path(__file__).resolve().parent / "fakes"


def contest_inputs() -> list[Path]:
    """The four contest low-resolution inputs, or a skip when ../shared is absent."""
    paths = [CONTEST / name for name in CONTEST_INPUTS]
    if not all(p.is_file() for p in paths):
        pytest.skip(f"contest samples not found in {CONTEST} (../shared is not checked out)")
    return paths
