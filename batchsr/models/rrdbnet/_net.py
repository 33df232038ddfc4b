"""RRDBNet (Wang et al., ESRGAN 2018; Real-ESRGAN 2021), written for batchsr.

The module layout (``conv_first``, ``body.N.rdb{1,2,3}.conv{1..5}``, ``conv_body``,
``conv_up1``, ``conv_up2``, ``conv_hr``, ``conv_last``) matches BasicSR's
``basicsr/archs/rrdbnet_arch.py`` as Real-ESRGAN uses it (Apache-2.0 / BSD-3-Clause),
so RealESRGAN_x4plus.pth and RealESRGAN_x2plus.pth load by key; no code is taken
from either.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["RRDBNet"]


class _DenseBlock(nn.Module):
    """Five 3x3 convs, each seeing all earlier outputs; output scaled by 0.2 plus input."""

    def __init__(self, feat: int, grow: int) -> None:
        super().__init__()
        for i in range(5):
            out = feat if i == 4 else grow
            self.add_module(f"conv{i + 1}", nn.Conv2d(feat + i * grow, out, 3, padding=1))
        self.lrelu = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for i in range(1, 5):
            conv = cast(nn.Conv2d, getattr(self, f"conv{i}"))
            feats.append(self.lrelu(conv(torch.cat(feats, 1))))
        last = cast(nn.Conv2d, self.conv5)
        return last(torch.cat(feats, 1)) * 0.2 + x


class _RRDB(nn.Module):
    def __init__(self, feat: int, grow: int) -> None:
        super().__init__()
        self.rdb1 = _DenseBlock(feat, grow)
        self.rdb2 = _DenseBlock(feat, grow)
        self.rdb3 = _DenseBlock(feat, grow)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBNet(nn.Module):
    """Residual-in-residual dense blocks, then two nearest x2 upsampling convs.

    For x2 (and x1) Real-ESRGAN first pixel-unshuffles the input by 2 (4), so the
    body always runs at a quarter of the output resolution; input height and width
    must then be multiples of 2 (4).

    Args:
        num_in_ch: image channels in (3).
        num_out_ch: image channels out (3).
        scale: 4, 2 or 1.
        num_feat: feature channels (64).
        num_block: RRDB blocks (23 for RealESRGAN_x4plus).
        num_grow_ch: growth channels of the dense blocks (32).
    """

    def __init__(
        self,
        *,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        scale: int = 4,
        num_feat: int = 64,
        num_block: int = 23,
        num_grow_ch: int = 32,
    ) -> None:
        super().__init__()
        self.unshuffle = {4: 1, 2: 2, 1: 4}[scale]
        self.conv_first = nn.Conv2d(num_in_ch * self.unshuffle**2, num_feat, 3, padding=1)
        self.body = nn.Sequential(*[_RRDB(num_feat, num_grow_ch) for _ in range(num_block)])
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, padding=1)
        self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, padding=1)
        self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, padding=1)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, padding=1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, padding=1)
        self.lrelu = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in, H, W) float32 in [0, 1] -> (N, out, H*scale, W*scale), not clamped."""
        if self.unshuffle > 1:
            x = F.pixel_unshuffle(x, self.unshuffle)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        feat = self.lrelu(self.conv_up1(F.interpolate(feat, scale_factor=2.0, mode="nearest")))
        feat = self.lrelu(self.conv_up2(F.interpolate(feat, scale_factor=2.0, mode="nearest")))
        return self.conv_last(self.lrelu(self.conv_hr(feat)))
