"""Small seeded models exported to ONNX for the tests (torch is imported when called)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn


def export_traced(
    net: nn.Module, path: Path, *, shape: tuple[int, int, int, int], dynamic: bool = True
) -> Path:
    """Export ``net`` to ONNX with torch's TorchScript-based (tracing) exporter; dynamic
    N/H/W unless not ``dynamic``, then fixed at ``shape`` (the example input's).

    For tests that need an ONNX of some network, not a test of ``compile.onnx``: this
    exporter is deprecated in torch 2.9+ but exports plain convolutional networks
    exactly, in about a tenth of the time torch.export takes with dynamic shapes (a
    two-block RRDBNet: 0.6 s instead of 6.7 s).
    """
    import torch

    dynamic_axes = (
        {"input": {0: "n", 2: "h", 3: "w"}, "output": {0: "n", 2: "H", 3: "W"}} if dynamic else None
    )
    net.eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's deprecation warning is expected
        torch.onnx.export(
            net,
            (torch.rand(*shape),),
            str(path),
            input_names=["input"],
            output_names=["output"],
            dynamic_axes=dynamic_axes,
            dynamo=False,
        )
    return path


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
    )
    return export_traced(net, path, shape=static or (1, channels, 32, 32), dynamic=static is None)
