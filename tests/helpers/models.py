"""Small seeded models exported to ONNX for the tests (torch is imported when called)."""

from __future__ import annotations

import warnings
from pathlib import Path


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
