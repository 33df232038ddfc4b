"""CARN and CARN-M (Ahn et al., 2018, "Fast, Accurate, and Lightweight Super-Resolution
with Cascading Residual Network"), written for batchsr.

The module layout (``sub_mean.shifter``, ``entry``, ``b1..b3`` cascading blocks with
``b1..b3``/``c1..c3`` inside, ``c1..c3``, ``upsample.up2/up3/up4.body``, ``exit``,
``add_mean.shifter``) matches torchSR's ``torchsr/models/carn.py`` (Coloquinte, MIT,
itself from nmhkahn/CARN-pytorch), so torchSR's carn.pt and carn_m.pt load by key; no
code is taken from either.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CARN", "DIV2K_RGB_MEAN"]

# Mean RGB of DIV2K in [0, 1]: CARN and EDSR subtract it on input and add it on output.
DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)


class _MeanShift(nn.Module):
    """A frozen 1x1 conv that adds ``sign * DIV2K_RGB_MEAN`` (kept as a conv for the layout)."""

    def __init__(self, sign: float) -> None:
        super().__init__()
        self.shifter = nn.Conv2d(3, 3, 1)
        assert self.shifter.bias is not None
        with torch.no_grad():
            self.shifter.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
            self.shifter.bias.copy_(sign * torch.tensor(DIV2K_RGB_MEAN))
        self.shifter.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shifter(x)


class _Fuse(nn.Module):
    """1x1 conv + ReLU that fuses the cascade's concatenated features (``cN.body.0``)."""

    def __init__(self, in_feat: int, out_feat: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(in_feat, out_feat, 1), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class _Residual(nn.Module):
    """CARN's residual block: relu(x + conv3x3(relu(conv3x3(x))))."""

    def __init__(self, feat: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(feat, feat, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(feat, feat, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + x)


class _EfficientResidual(nn.Module):
    """CARN-M's block: two grouped 3x3 convs and a pointwise conv, with a skip."""

    def __init__(self, feat: int, group: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(feat, feat, 3, padding=1, groups=group),
            nn.ReLU(inplace=True),
            nn.Conv2d(feat, feat, 3, padding=1, groups=group),
            nn.ReLU(inplace=True),
            nn.Conv2d(feat, feat, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + x)


class _Cascade(nn.Module):
    """Three units whose outputs are concatenated with everything before and fused.

    ``units`` holds three blocks (CARN) or one block used three times (CARN-M, which
    shares it to save parameters: the public layout has only ``b1``).
    """

    def __init__(self, feat: int, units: list[nn.Module]) -> None:
        super().__init__()
        for i, unit in enumerate(units, start=1):
            self.add_module(f"b{i}", unit)
        self._n_units = len(units)
        self.c1 = _Fuse(2 * feat, feat)
        self.c2 = _Fuse(3 * feat, feat)
        self.c3 = _Fuse(4 * feat, feat)

    def _unit(self, i: int) -> nn.Module:
        return getattr(self, f"b{min(i, self._n_units)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cat, out = x, x
        for i, fuse in enumerate((self.c1, self.c2, self.c3), start=1):
            cat = torch.cat([cat, self._unit(i)(out)], dim=1)
            out = fuse(cat)
        return out


class _Upsample(nn.Module):
    """conv3x3 (x4 or x9 channels) + ReLU + pixel shuffle, repeated for x4 and x8."""

    def __init__(self, feat: int, scale: int, group: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        if scale == 3:
            layers += [nn.Conv2d(feat, 9 * feat, 3, padding=1, groups=group), nn.ReLU(True)]
            layers.append(nn.PixelShuffle(3))
        else:
            for _ in range(int(math.log2(scale))):
                layers += [nn.Conv2d(feat, 4 * feat, 3, padding=1, groups=group), nn.ReLU(True)]
                layers.append(nn.PixelShuffle(2))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class _UpsampleSet(nn.Module):
    """torchSR's multi-scale upsamplers (``up2``, ``up3``, ``up4``) or a single ``up``."""

    def __init__(self, feat: int, *, scale: int, multi_scale: bool, group: int) -> None:
        super().__init__()
        self._name = f"up{scale}" if multi_scale else "up"
        scales = (2, 3, 4) if multi_scale else (scale,)
        for s in scales:
            name = f"up{s}" if multi_scale else "up"
            self.add_module(name, _Upsample(feat, s, group))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self, self._name)(x)


class CARN(nn.Module):
    """CARN (``mobile=False``) or CARN-M (``mobile=True``: grouped, shared blocks).

    Args:
        scale: the upscale factor this instance runs (2, 3 or 4; 8 when single-scale).
        multi_scale: hold torchSR's three upsamplers (one checkpoint, three scales).
        group: conv groups of CARN-M's blocks and upsamplers (4 in the paper).
        mobile: build CARN-M.
        num_feat: feature channels (64 in the paper and torchSR).
    """

    def __init__(
        self,
        *,
        scale: int = 4,
        multi_scale: bool = True,
        group: int = 1,
        mobile: bool = False,
        num_feat: int = 64,
    ) -> None:
        super().__init__()
        f = num_feat
        self.sub_mean = _MeanShift(-1.0)
        self.add_mean = _MeanShift(1.0)
        self.entry = nn.Conv2d(3, f, 3, padding=1)

        def cascade() -> _Cascade:
            if mobile:
                return _Cascade(f, [_EfficientResidual(f, group)])
            return _Cascade(f, [_Residual(f) for _ in range(3)])

        self.b1, self.b2, self.b3 = cascade(), cascade(), cascade()
        self.c1 = _Fuse(2 * f, f)
        self.c2 = _Fuse(3 * f, f)
        self.c3 = _Fuse(4 * f, f)
        self.upsample = _UpsampleSet(f, scale=scale, multi_scale=multi_scale, group=group)
        self.exit = nn.Conv2d(f, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) float32 RGB in [0, 1] -> (N, 3, H*scale, W*scale), not clamped."""
        x = self.entry(self.sub_mean(x))
        cat, out = x, x
        for block, fuse in ((self.b1, self.c1), (self.b2, self.c2), (self.b3, self.c3)):
            cat = torch.cat([cat, block(out)], dim=1)
            out = fuse(cat)
        return self.add_mean(self.exit(self.upsample(out)))
