"""SRVGGNetCompact (Wang et al., Real-ESRGAN's compact general model), written for batchsr.

The module layout (``body.N`` convs and PReLUs in one ModuleList, then a pixel
shuffle) matches Real-ESRGAN's ``realesrgan/archs/srvgg_arch.py`` (BSD-3-Clause), so
its ``realesr-general-x4v3`` style checkpoints load by key; no code is taken from it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SRVGGNetCompact"]


class SRVGGNetCompact(nn.Module):
    """A plain stack of 3x3 convs with PReLU in low resolution, a pixel shuffle, and a
    nearest-neighbour upscale of the input added as the base image.
    """

    def __init__(
        self,
        *,
        in_channels: int = 3,
        out_channels: int = 3,
        num_feat: int = 64,
        num_conv: int = 16,
        upscale: int = 4,
    ) -> None:
        super().__init__()
        self.upscale = upscale
        layers: list[nn.Module] = [nn.Conv2d(in_channels, num_feat, 3, padding=1)]
        layers.append(nn.PReLU(num_feat))
        for _ in range(num_conv):
            layers += [nn.Conv2d(num_feat, num_feat, 3, padding=1), nn.PReLU(num_feat)]
        layers.append(nn.Conv2d(num_feat, out_channels * upscale * upscale, 3, padding=1))
        self.body = nn.ModuleList(layers)
        self.upsampler = nn.PixelShuffle(upscale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in, H, W) float32 in [0, 1] -> (N, out, H*upscale, W*upscale), not clamped."""
        out = x
        for layer in self.body:
            out = layer(out)
        base = F.interpolate(x, scale_factor=self.upscale, mode="nearest")
        return self.upsampler(out) + base
