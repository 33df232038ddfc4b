"""FSRCNN (Dong et al., 2016, "Accelerating the Super-Resolution Convolutional Neural
Network"), written for batchsr.

The module layout (``first_part``, ``mid_part``, ``last_part``) matches the public
FSRCNN-pytorch project (yjn870, MIT), so its checkpoints load by key; no code is taken
from it.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["FSRCNN"]


class FSRCNN(nn.Module):
    """Feature extraction, shrinking, mapping, expanding, then a transposed conv.

    ``first_part``: Conv5x5(C, d) PReLU; ``mid_part``: Conv1x1(d, s) PReLU, m x
    [Conv3x3(s, s) PReLU], Conv1x1(s, d) PReLU; ``last_part``: ConvTranspose9x9(d, C,
    stride=upscale), whose output is exactly ``upscale`` times the input.
    """

    def __init__(
        self, *, channels: int = 1, d: int = 56, s: int = 12, m: int = 4, upscale: int
    ) -> None:
        super().__init__()
        self.first_part = nn.Sequential(nn.Conv2d(channels, d, 5, padding=2), nn.PReLU(d))
        mid: list[nn.Module] = [nn.Conv2d(d, s, 1), nn.PReLU(s)]
        for _ in range(m):
            mid += [nn.Conv2d(s, s, 3, padding=1), nn.PReLU(s)]
        mid += [nn.Conv2d(s, d, 1), nn.PReLU(d)]
        self.mid_part = nn.Sequential(*mid)
        self.last_part = nn.ConvTranspose2d(
            d, channels, 9, stride=upscale, padding=4, output_padding=upscale - 1
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, channels, H, W) float32 in [0, 1] -> (N, channels, H*upscale, W*upscale)."""
        return self.last_part(self.mid_part(self.first_part(x)))
