"""The seed's deployment model as an ONNX file: its RGB ESPCN at a static 1x3x128x128,
for the benchmarks' second row (a static-shape model, as the seed deployed it)."""

from __future__ import annotations

import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SEED_PT = REPO.parent / "shared" / "anchors" / "espcn_ex.pt"

__all__ = ["SEED_PT", "seed_like_onnx"]


def seed_like_onnx(folder: Path) -> tuple[Path, str]:
    """A static 1x3x128x128 RGB ESPCN in ``folder`` and what it is: the seed's
    ``espcn_ex.pt`` where ../shared has it, else our ESPCN architecture with RGB
    channels and random weights."""
    import torch

    path = folder / "seed_espcn.onnx"
    x = torch.rand(1, 3, 128, 128)
    if SEED_PT.is_file():
        module = torch.jit.load(str(SEED_PT))
        what = "the seed's espcn_ex.pt"
    else:
        from batchsr.models import get_arch

        module = get_arch("espcn").create(in_channels=3, out_channels=3, upscale=4).module
        what = "our ESPCN, RGB, random weights (../shared absent)"
    # The seed's file is TorchScript, which only the TorchScript-based exporter reads
    # (deprecated, and it says so at length).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, (x,), str(path), dynamo=False, input_names=["input"], output_names=["output"]
        )
    return path, what
