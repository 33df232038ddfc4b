"""ESPCN (Shi et al., 2016, "Real-Time Single Image and Video Super-Resolution Using an
Efficient Sub-Pixel Convolutional Neural Network"), written for batchsr.

The module layout (``feature_maps.0/2``, ``sub_pixel.0``) matches the public
ESPCN-PyTorch project (Lornatang, Apache-2.0), so its checkpoints and the seed's
weights load by key; no code is taken from it.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["ESPCN", "espcn_layers"]


def espcn_layers(
    in_channels: int, out_channels: int, channels: int, upscale: int, act: type[nn.Module]
) -> tuple[nn.Sequential, nn.Sequential]:
    """ESPCN-PyTorch's modules, keys ``feature_maps.0/2`` and ``sub_pixel.0``:
    Conv5x5(in, channels) act Conv3x3(channels, channels // 2) act, and
    Conv3x3(channels // 2, out * upscale**2) PixelShuffle(upscale)."""
    hidden = channels // 2
    feature_maps = nn.Sequential(
        nn.Conv2d(in_channels, channels, 5, padding=2),
        act(),
        nn.Conv2d(channels, hidden, 3, padding=1),
        act(),
    )
    sub_pixel = nn.Sequential(
        nn.Conv2d(hidden, out_channels * upscale * upscale, 3, padding=1),
        nn.PixelShuffle(upscale),
    )
    return feature_maps, sub_pixel


class ESPCN(nn.Module):
    """Three convolutions in low resolution, then a pixel shuffle.

    ``feature_maps``: Conv5x5(in, channels) Tanh Conv3x3(channels, channels // 2) Tanh;
    ``sub_pixel``: Conv3x3(channels // 2, out * upscale**2) PixelShuffle(upscale).
    The receptive-field radius is 2 + 1 + 1 = 4 input pixels.
    """

    def __init__(
        self, *, in_channels: int, out_channels: int, channels: int = 64, upscale: int
    ) -> None:
        super().__init__()
        self.feature_maps, self.sub_pixel = espcn_layers(
            in_channels, out_channels, channels, upscale, nn.Tanh
        )
        self._init_weights()

    def _init_weights(self) -> None:
        # He-style normal init for the feature convs and a near-zero init for the
        # sub-pixel conv, as the ESPCN paper's training recipe does: the output starts
        # near 0 and the tanh features do not saturate early on.
        for conv in self.modules():
            if not isinstance(conv, nn.Conv2d):
                continue
            if conv is self.sub_pixel[0]:
                nn.init.normal_(conv.weight, mean=0.0, std=0.001)
            else:
                fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
                nn.init.normal_(conv.weight, mean=0.0, std=math.sqrt(2.0 / fan_out))
            assert conv.bias is not None
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Upscale a batch.

        Args:
            x: float32 (N, in_channels, H, W) in [0, 1].

        Returns:
            float32 (N, out_channels, H * upscale, W * upscale), not clamped.
        """
        return self.sub_pixel(self.feature_maps(x))
