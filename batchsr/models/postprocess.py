"""A PIL sharpening filter embedded into a model as a fixed depthwise convolution.

The embedded filter reproduces what the CPU path does to the stitched image: it
clamps the model output to [0, 1] and rounds it to 8-bit levels first (PIL filters the
saved uint8 pixels), then applies the 3x3 kernel. Without those two steps, kernels
whose absolute weights sum to 9 or more would amplify the rounding and clamping
differences past a grey level.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from batchsr.filters import kernel_of
from batchsr.models.arch import SRModel

__all__ = ["EmbeddedFilter", "with_filter"]


class EmbeddedFilter(nn.Module):
    """Clamp to [0, 1], round to 1/255 steps, then a fixed 3x3 depthwise conv.

    Args:
        name: a :data:`batchsr.filters.FILTER_NAMES` entry.
        channels: image channels (the same kernel runs on each).
    """

    weight: torch.Tensor
    bias: torch.Tensor

    def __init__(self, name: str, *, channels: int = 3) -> None:
        super().__init__()
        kernel = kernel_of(name)
        weight = torch.from_numpy(kernel.as_array()).expand(channels, 1, 3, 3).clone()
        self.register_buffer("weight", weight)
        self.register_buffer("bias", torch.full((channels,), kernel.offset))
        self.name = name
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) float32 -> same shape; the border is padded by replication."""
        x = torch.round(x.clamp(0.0, 1.0) * 255.0) / 255.0
        x = F.pad(x, (1, 1, 1, 1), mode="replicate")
        return F.conv2d(x, self.weight, self.bias, groups=self.channels)


def with_filter(model: SRModel, name: str) -> SRModel:
    """The model followed by an embedded filter.

    The filter reaches one output pixel further, so the margin grows by one input
    pixel (ceil(1 / scale)).
    """
    module = nn.Sequential(model.module, EmbeddedFilter(name, channels=model.info.out_channels))
    info = replace(model.info, margin=model.info.margin + 1, tags=(*model.info.tags, name.lower()))
    return SRModel(module=module.eval(), info=info)
