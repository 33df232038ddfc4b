"""A differentiable NIQE for training: the contest's definition with smooth steps.

``batchsr.metrics.niqe`` reproduces the contest's scorer bit for bit, but three of its
steps have no gradient: rounding Y to integers, picking the AGGD shape on a grid by
nearest value, and splitting the coefficients by sign. Here the same quantities are
computed in torch with those steps made smooth, so that a network can be trained to
lower NIQE while an L1 term keeps it faithful:

* Y is not rounded (a rounding changes a score by ~1e-3, far below what training moves);
* the shape is the inverse of the monotonic ratio r(alpha) by linear interpolation
  between grid points instead of the nearest grid point (the two differ by < 0.001);
* means over the negative and positive coefficients are masked sums: the masks carry
  no gradient, the sums do.

The score of a batch is the distance of its blocks' mean and covariance to the pristine
model, as NIQE scores one image from its blocks; the batch's patches stand for an
image's blocks. ``niqe_of_batch`` on whole images agrees with the exact score to a few
hundredths (tests/test_niqe_loss.py), which is what a training signal needs.
"""

from __future__ import annotations

import math
from functools import cache
from importlib import resources
from typing import Final

import numpy as np
import torch
import torch.nn.functional as F

from batchsr.color import MATLAB_Y

__all__ = ["niqe_features", "niqe_of_batch", "niqe_per_image"]

BLOCK: Final = 96


# BasicSR ``imresize(scale=0.5, antialiasing=True)``: 8 taps of k / 256, stride 2,
# output i reading image rows 2i - 3 .. 2i + 4 with symmetric padding.
_HALF_TAPS: Final = tuple(k / 256.0 for k in (-3, -9, 29, 111, 111, 29, -9, -3))

# Neighbour offsets of the four pairwise products (np.roll shifts within a block).
_SHIFTS: Final = ((0, 1), (1, 0), (1, 1), (1, -1))

# Keeps square roots and ratios finite on flat blocks; far below any real variance.
_EPS: Final = 1e-8


class _Constants:
    """Pristine model, Gaussian window and the AGGD shape table, as float64 tensors."""

    def __init__(self) -> None:
        from batchsr import metrics

        with resources.files(metrics).joinpath("niqe_pris_params.npz").open("rb") as f:
            params = np.load(f)
            self.mu_pris = torch.from_numpy(params["mu_pris_param"][0].astype(np.float64))
            self.cov_pris = torch.from_numpy(params["cov_pris_param"].astype(np.float64))
            window = params["gaussian_window"].astype(np.float32)
        self.window = torch.from_numpy(window).view(1, 1, 7, 7)
        gam = np.arange(0.2, 10.001, 0.001)
        lg1 = np.array([math.lgamma(1.0 / a) for a in gam])
        lg2 = np.array([math.lgamma(2.0 / a) for a in gam])
        lg3 = np.array([math.lgamma(3.0 / a) for a in gam])
        self.gam = torch.from_numpy(gam.astype(np.float32))
        # r(alpha) = G(2/a)^2 / (G(1/a) G(3/a)), strictly increasing in alpha.
        self.r_gam = torch.from_numpy(np.exp(2 * lg2 - lg1 - lg3).astype(np.float32))
        self.half = torch.tensor(_HALF_TAPS, dtype=torch.float32)


@cache
def _constants() -> _Constants:
    return _Constants()


def _round(x: torch.Tensor) -> torch.Tensor:
    """Rounded in the forward pass, identity in the backward pass (straight-through)."""
    return x + (torch.round(x) - x).detach()


def _luma(rgb: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB in [0, 1] -> (N, 1, H, W) Y in [16, 235].

    The image is quantised to uint8 and Y rounded, as the saved output is scored: on
    smooth areas the quantisation steps are what the MSCN statistics see. A one-channel
    input is already Y (MATLAB's Y / 255, what Y-only models output) and is only rounded.
    """
    if rgb.shape[1] == 1:
        return _round(rgb.clamp(0.0, 1.0) * 255.0)
    rgb = _round(rgb.clamp(0.0, 1.0) * 255.0)
    w = torch.tensor(MATLAB_Y, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1) / 255.0
    return _round((rgb * w).sum(dim=1, keepdim=True) + 16.0)


def _mscn(y: torch.Tensor) -> torch.Tensor:
    """MSCN coefficients with the 7x7 Gaussian, edges replicated (SciPy 'nearest')."""
    window = _constants().window.to(y)
    pad = F.pad(torch.cat([y, y * y], dim=1), (3, 3, 3, 3), mode="replicate")
    n = y.shape[0]
    stats = F.conv2d(pad.reshape(2 * n, 1, *pad.shape[2:]), window).reshape(n, 2, *y.shape[2:])
    mu, mu_sq = stats[:, :1], stats[:, 1:]
    sigma = torch.sqrt((mu_sq - mu * mu).abs() + _EPS)
    return (y - mu) / (sigma + 1.0)


def _symmetric(n: int, lo: int, hi: int) -> torch.Tensor:
    """Indices lo .. hi - 1 into a length-n axis with symmetric (edge-repeating) padding."""
    idx = torch.arange(lo, hi)
    idx = torch.where(idx < 0, -idx - 1, idx)
    return torch.where(idx >= n, 2 * n - 1 - idx, idx)


def _half(y: torch.Tensor) -> torch.Tensor:
    """MATLAB ``imresize(y, 0.5)``, bicubic with antialiasing, on (N, 1, H, W)."""
    taps = _constants().half.to(y)
    h, w = y.shape[2:]
    rows = y[:, :, _symmetric(h, -3, h + 3)]
    rows = F.conv2d(rows, taps.view(1, 1, 8, 1), stride=(2, 1))
    cols = rows[:, :, :, _symmetric(w, -3, w + 3)]
    return F.conv2d(cols, taps.view(1, 1, 1, 8), stride=(1, 2))


def _blocks(x: torch.Tensor, bs: int) -> torch.Tensor:
    """(N, 1, H, W) -> (N * nh * nw, bs, bs), whole blocks from the top-left corner."""
    n, _, h, w = x.shape
    nh, nw = h // bs, w // bs
    x = x[:, 0, : nh * bs, : nw * bs].reshape(n, nh, bs, nw, bs)
    return x.permute(0, 1, 3, 2, 4).reshape(n * nh * nw, bs, bs)


def _aggd(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """AGGD fit of each row of (B, n): shape alpha and the scales beta_l, beta_r."""
    c = _constants()
    neg = (x < 0).to(x.dtype)
    pos = (x > 0).to(x.dtype)
    sq = x * x
    left = torch.sqrt((sq * neg).sum(1) / neg.sum(1).clamp_min(1.0) + _EPS)
    right = torch.sqrt((sq * pos).sum(1) / pos.sum(1).clamp_min(1.0) + _EPS)
    g = left / right
    rhat = x.abs().mean(1) ** 2 / (sq.mean(1) + _EPS)
    rnorm = rhat * (g**3 + 1) * (g + 1) / (g * g + 1) ** 2
    r_gam, gam = c.r_gam.to(x), c.gam.to(x)
    rn = rnorm.clamp(r_gam[0], r_gam[-1])
    i = torch.searchsorted(r_gam, rn.detach()).clamp(1, len(r_gam) - 1)
    r0, r1 = r_gam[i - 1], r_gam[i]
    alpha = gam[i - 1] + (gam[i] - gam[i - 1]) * (rn - r0) / (r1 - r0)
    k = torch.exp(0.5 * (torch.lgamma(1 / alpha) - torch.lgamma(3 / alpha)))
    return alpha, left * k, right * k


def _scale_features(mscn: torch.Tensor, bs: int) -> torch.Tensor:
    """(N, 1, H, W) MSCN -> (B, 18) features of every whole bs x bs block."""
    blocks = _blocks(mscn, bs)
    flat = blocks.reshape(blocks.shape[0], -1)
    alpha, bl, br = _aggd(flat)
    feats = [alpha, (bl + br) / 2]
    for shift in _SHIFTS:
        prod = (blocks * torch.roll(blocks, shifts=shift, dims=(1, 2))).reshape(flat.shape)
        alpha, bl, br = _aggd(prod)
        mean = (br - bl) * torch.exp(torch.lgamma(2 / alpha) - torch.lgamma(1 / alpha))
        feats += [alpha, mean, bl, br]
    return torch.stack(feats, dim=1)


def niqe_features(rgb: torch.Tensor) -> torch.Tensor:
    """NIQE block features of (N, 3, H, W) RGB in [0, 1] (or (N, 1, H, W) Y / 255).

    Returns (N * blocks, 36), float32.

    H and W should be multiples of 96 (the remainder is cropped, as NIQE crops).
    """
    y = _luma(rgb)
    nh, nw = y.shape[2] // BLOCK, y.shape[3] // BLOCK
    if nh == 0 or nw == 0:
        raise ValueError(f"patches of {tuple(y.shape[2:])} hold no {BLOCK}x{BLOCK} NIQE block")
    y = y[:, :, : nh * BLOCK, : nw * BLOCK]
    f1 = _scale_features(_mscn(y), BLOCK)
    y2 = _half(y / 255.0) * 255.0
    f2 = _scale_features(_mscn(y2), BLOCK // 2)
    return torch.cat([f1, f2], dim=1)


def niqe_of_batch(rgb: torch.Tensor) -> torch.Tensor:
    """NIQE of the blocks of a batch taken together, as one image's blocks are: a scalar.

    Args:
        rgb: (N, 3, H, W) RGB in [0, 1]; at least two 96x96 blocks in all.
    """
    c = _constants()
    feats = niqe_features(rgb).to(torch.float64)
    if feats.shape[0] < 2:
        raise ValueError("NIQE needs at least two 96x96 blocks in the batch")
    mu = feats.mean(0)
    cov = torch.cov(feats.T)
    d = (c.mu_pris - mu).unsqueeze(1)
    m = (c.cov_pris + cov) / 2
    q = (d.T @ torch.linalg.pinv(m, hermitian=True) @ d).squeeze()
    return torch.sqrt(q.clamp_min(_EPS)).to(rgb.dtype)


def niqe_per_image(rgb: torch.Tensor) -> torch.Tensor:
    """NIQE of each image of a batch from its own blocks, as the contest scores: (N,).

    Args:
        rgb: (N, 3, H, W) RGB in [0, 1] with at least two 96x96 blocks per image.
    """
    c = _constants()
    n = rgb.shape[0]
    feats = niqe_features(rgb).to(torch.float64).reshape(n, -1, 36)
    k = feats.shape[1]
    if k < 2:
        raise ValueError("NIQE needs at least two 96x96 blocks per image")
    mu = feats.mean(1)
    centred = feats - mu.unsqueeze(1)
    cov = centred.transpose(1, 2) @ centred / (k - 1)
    d = (c.mu_pris - mu).unsqueeze(2)
    m = (c.cov_pris + cov) / 2
    q = (d.transpose(1, 2) @ torch.linalg.pinv(m, hermitian=True) @ d).reshape(n)
    return torch.sqrt(q.clamp_min(_EPS)).to(rgb.dtype)
