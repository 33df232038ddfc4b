"""EDSR (Lim et al., 2017, "Enhanced Deep Residual Networks for Single Image
Super-Resolution"), written for batchsr.

The module layout (``sub_mean``/``add_mean`` 1x1 convs, ``head.0``, ``body.N.body.{0,2}``
then ``body.n_resblocks``, ``tail.0.{0,2}`` upsampler convs, ``tail.1``) matches
torchSR's ``torchsr/models/edsr.py`` (Coloquinte, MIT, itself from
sanghyun-son/EDSR-PyTorch), so torchSR's edsr64_x*.pt and edsr_x*.pt load by key; no
code is taken from either.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["EDSR"]

DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)
# EDSR computes in [0, 255]: its mean shift and weights were trained at that range.
RGB_RANGE = 255.0


class _MeanShift(nn.Conv2d):
    """A frozen 1x1 conv adding ``sign * 255 * DIV2K_RGB_MEAN`` (a conv, as the layout has)."""

    def __init__(self, sign: float) -> None:
        super().__init__(3, 3, 1)
        assert self.bias is not None
        with torch.no_grad():
            self.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
            self.bias.copy_(sign * RGB_RANGE * torch.tensor(DIV2K_RGB_MEAN))
        self.requires_grad_(False)


class _ResBlock(nn.Module):
    def __init__(self, feat: int, res_scale: float) -> None:
        super().__init__()
        self.res_scale = res_scale
        self.body = nn.Sequential(
            nn.Conv2d(feat, feat, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(feat, feat, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) * self.res_scale + x


def _upsampler(feat: int, scale: int) -> nn.Sequential:
    if scale == 3:
        return nn.Sequential(nn.Conv2d(feat, 9 * feat, 3, padding=1), nn.PixelShuffle(3))
    layers: list[nn.Module] = []
    for _ in range(int(math.log2(scale))):
        layers += [nn.Conv2d(feat, 4 * feat, 3, padding=1), nn.PixelShuffle(2)]
    return nn.Sequential(*layers)


class EDSR(nn.Module):
    """EDSR: plain residual blocks without batch norm, then pixel-shuffle upsampling.

    Args:
        n_resblocks: residual blocks (baseline 16, full 32).
        n_feats: feature channels (baseline 64, full 256).
        scale: upscale factor (2, 3, 4 or 8).
        res_scale: residual scaling (baseline 1.0, full 0.1, to keep the wide model
            stable in training).
    """

    def __init__(
        self, *, n_resblocks: int = 16, n_feats: int = 64, scale: int = 4, res_scale: float = 1.0
    ) -> None:
        super().__init__()
        self.sub_mean = _MeanShift(-1.0)
        self.add_mean = _MeanShift(1.0)
        self.head = nn.Sequential(nn.Conv2d(3, n_feats, 3, padding=1))
        blocks: list[nn.Module] = [_ResBlock(n_feats, res_scale) for _ in range(n_resblocks)]
        blocks.append(nn.Conv2d(n_feats, n_feats, 3, padding=1))
        self.body = nn.Sequential(*blocks)
        self.tail = nn.Sequential(_upsampler(n_feats, scale), nn.Conv2d(n_feats, 3, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) float32 RGB in [0, 1] -> (N, 3, H*scale, W*scale), not clamped."""
        x = self.head(self.sub_mean(x * RGB_RANGE))
        x = self.tail(self.body(x) + x)
        return self.add_mean(x) / RGB_RANGE
