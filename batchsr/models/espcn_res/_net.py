"""ESPCN-Res: ESPCN's three convolutions learning a residual over a bicubic upscale.

Our variant, written for batchsr. The tanh ESPCN trained in our 30-minute CPU budget
stays near its initialisation and gains about 0.5 dB over bicubic; in the same budget
this variant (centred input, PReLU, bicubic skip) gains about 1 dB (see
``configs/`` and the README's model section). The skip is a fixed sub-pixel
convolution followed by the same pixel shuffle, so the graph holds only convolutions,
as TPU compilers like.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from batchsr.models.espcn._net import espcn_layers

__all__ = ["ESPCNRes", "bicubic_phase_kernel"]

# Keys's cubic with a = -0.5, the kernel of MATLAB's imresize and PIL's BICUBIC.
_A = -0.5
# Radius in LR pixels of the bicubic skip: 4 taps per phase fall within [-2, 2].
SKIP_RADIUS = 2


def _cubic(x: np.ndarray) -> np.ndarray:
    ax = np.abs(x)
    near = (_A + 2.0) * ax**3 - (_A + 3.0) * ax**2 + 1.0
    far = _A * ax**3 - 5.0 * _A * ax**2 + 8.0 * _A * ax - 4.0 * _A
    return np.where(ax <= 1.0, near, np.where(ax < 2.0, far, 0.0))


def bicubic_phase_kernel(scale: int) -> np.ndarray:
    """(scale * scale, 5, 5) float64: one 2-D kernel per output sub-pixel phase.

    Output pixel ``o`` of an upscale by ``scale`` sits at LR coordinate
    ``(o + 0.5) / scale - 0.5`` (pixel centres aligned, as PIL and MATLAB do); phase
    ``p = o mod scale`` weighs the LR pixels at offsets -2..2 from ``o // scale``.
    """
    taps = np.arange(-SKIP_RADIUS, SKIP_RADIUS + 1, dtype=np.float64)
    rows = []
    for p in range(scale):
        w = _cubic(taps - ((p + 0.5) / scale - 0.5))
        rows.append(w / w.sum())
    one_d = np.stack(rows)  # (scale, 5)
    return np.einsum("yi,xj->yxij", one_d, one_d).reshape(scale * scale, 5, 5)


class ESPCNRes(nn.Module):
    """``PixelShuffle(sub_pixel(features(x - 0.5)) + bicubic_phases(x))``.

    ``feature_maps``: Conv5x5(in, channels) PReLU Conv3x3(channels, channels // 2) PReLU;
    ``sub_pixel``: Conv3x3(channels // 2, channels_out * upscale**2) PixelShuffle(upscale).
    Input and output channels are equal (the skip upscales each channel). Receptive-field
    radius: 2 + 1 + 1 = 4 input pixels (the skip's is 2).
    """

    skip: torch.Tensor

    def __init__(self, *, in_channels: int, channels: int = 64, upscale: int) -> None:
        super().__init__()
        self.upscale = upscale
        self.in_channels = in_channels
        self.feature_maps, self.sub_pixel = espcn_layers(
            in_channels, in_channels, channels, upscale, nn.PReLU
        )
        kernel = torch.from_numpy(bicubic_phase_kernel(upscale)).to(torch.float32)
        # Fixed, derived from the scale: not a checkpoint entry.
        self.register_buffer(
            "skip", kernel.unsqueeze(1).repeat(in_channels, 1, 1, 1), persistent=False
        )
        # The residual starts near zero: the untrained network is about a bicubic upscaler.
        last = self.sub_pixel[0]
        assert isinstance(last, nn.Conv2d) and last.bias is not None
        nn.init.normal_(last.weight, mean=0.0, std=0.001)
        nn.init.zeros_(last.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.sub_pixel[0](self.feature_maps(x - 0.5))
        base = F.conv2d(x, self.skip, padding=SKIP_RADIUS, groups=self.in_channels)
        return F.pixel_shuffle(residual + base, self.upscale)
