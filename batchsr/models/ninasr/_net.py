"""NinaSR (Coloquinte's torchSR, 2021), written for batchsr.

The module layout (``head.0.bias`` rescale, ``head.1.weight``, ``body.N.body.{0,2,3}``
with the local attention at ``body.N.body.2.body.{1,3}``, ``tail.0``, ``tail.2.bias``)
matches torchSR's ``torchsr/models/ninasr.py`` (MIT), so its ninasr_b0/b1/b2
checkpoints load by key; no code is taken from it.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["ATTENTION_STRIDE", "NinaSR"]

DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)
# The attention pools over 31x31 windows every 16 pixels and upsamples back.
ATTENTION_STRIDE = 16


class _Rescale(nn.Module):
    """Adds ``sign * DIV2K_RGB_MEAN``; a frozen parameter, as the layout stores it."""

    def __init__(self, sign: float) -> None:
        super().__init__()
        mean = torch.tensor(DIV2K_RGB_MEAN).reshape(1, 3, 1, 1)
        self.bias = nn.Parameter(sign * mean, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bias


class _LocalAttention(nn.Module):
    """Squeeze-excite over local windows: avg-pool, two 1x1 convs, sigmoid, upsample."""

    def __init__(self, feat: int, *, reduction: int = 4, stride: int = ATTENTION_STRIDE) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.AvgPool2d(
                2 * stride - 1, stride=stride, padding=stride - 1, count_include_pad=False
            ),
            nn.Conv2d(feat, feat // reduction, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(feat // reduction, feat, 1),
            nn.Sigmoid(),
            nn.Upsample(scale_factor=stride, mode="nearest"),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The upsampled map covers a multiple of the stride; crop it to x. Slicing
        # unconditionally (a no-op when sizes agree) keeps the graph free of
        # shape-dependent branches, so it exports with dynamic height and width.
        return self.body(x)[:, :, : x.shape[2], : x.shape[3]] * x


class _ResBlock(nn.Module):
    def __init__(self, feat: int, mid: int, *, in_scale: float, out_scale: float) -> None:
        super().__init__()
        self.in_scale = in_scale
        self.out_scale = out_scale
        self.body = nn.Sequential(
            nn.Conv2d(feat, mid, 3, padding=1),
            nn.ReLU(inplace=True),
            _LocalAttention(mid),
            nn.Conv2d(mid, feat, 3, padding=1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x * self.in_scale) * (2 * self.out_scale) + x


class NinaSR(nn.Module):
    """NinaSR: residual blocks with local attention, normalised for variance.

    Args:
        n_resblocks: residual blocks (b0: 10, b1: 26, b2: 84).
        n_feats: feature channels (b0: 16, b1: 32, b2: 56).
        scale: upscale factor.
        expansion: the blocks' inner width over ``n_feats`` (2 in torchSR).
    """

    def __init__(
        self, *, n_resblocks: int, n_feats: int, scale: int, expansion: float = 2.0
    ) -> None:
        super().__init__()
        self.head = nn.Sequential(_Rescale(-1.0), nn.Conv2d(3, n_feats, 3, padding=1, bias=False))
        # Each block's input is scaled by 1/sqrt of the variance accumulated so far and
        # its output by 2 * 4 / n_resblocks, so deep variants train without norm layers.
        out_scale = 4 / n_resblocks
        variance = 1.0
        blocks = []
        for _ in range(n_resblocks):
            blocks.append(
                _ResBlock(
                    n_feats,
                    int(n_feats * expansion),
                    in_scale=1.0 / math.sqrt(variance),
                    out_scale=out_scale,
                )
            )
            variance += out_scale**2
        self.body = nn.Sequential(*blocks)
        self.tail = nn.Sequential(
            nn.Conv2d(n_feats, 3 * scale * scale, 3, padding=1),
            nn.PixelShuffle(scale),
            _Rescale(1.0),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) float32 RGB in [0, 1] -> (N, 3, H*scale, W*scale), not clamped."""
        x = self.head(x)
        return self.tail(self.body(x) + x)
