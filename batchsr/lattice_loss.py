"""A training penalty against the pixel-shuffle lattice: periodic grain on smooth content.

A sub-pixel (pixel-shuffle) network computes each of the ``scale x scale`` output phases
with its own filters, so on a smooth ramp it can leave a small pattern that repeats
every ``scale`` pixels: invisible in texture, a visible grain in flat sky. NIQE tuning
makes it worse (the grain reads as "natural" detail to NIQE).

The penalty shows the network smooth LR patches (low-order polynomials with mild noise,
where the right output is the polynomial itself) and measures the periodic part of its
error: the error averaged per output phase over all LR cells. Noise and non-periodic
error average out; a lattice does not. The result is in grey levels (RMS over the
phases), so a weight reads as "loss per grey level of grain".
"""

from __future__ import annotations

import torch

__all__ = ["LatticeProbe", "lattice_rms"]


class LatticeProbe:
    """Seeded source of smooth LR patches and their exact HR values.

    Args:
        scale: the network's upscale factor.
        patch: LR patch side in pixels.
        channels: the network's input channels (1: Y in [0, 1] with its +16 offset,
            as the pipeline's Y mode feeds it; 3: grey RGB in [0, 1]).
        noise: the largest LR noise sigma in grey levels; each patch draws its own.
        seed: seeds the patch stream.
        dark: the share of patches that are near-black and nearly flat (Y 16 to 40,
            span under 4 grey levels): night skies and shadows, where a network's
            behaviour differs (its input is centred, so black is far from 0).
    """

    def __init__(
        self,
        *,
        scale: int,
        patch: int,
        channels: int,
        noise: float = 1.0,
        seed: int = 0,
        dark: float = 0.0,
    ) -> None:
        self.scale, self.patch, self.channels, self.noise = scale, patch, channels, noise
        self.dark = dark
        self._gen = torch.Generator().manual_seed(seed)

    def _uniform(self, n: int, lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, 1, 1, generator=self._gen)

    def batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` LR patches (N, C, p, p) and the exact HR values (N, 1, sp, sp), both in
        0..255 grey levels before the model's scaling (see :meth:`model_input`)."""
        p, s = self.patch, self.scale
        # Pixel centres in patch-normalised units [-1, 1]; HR centres sit at (j + 0.5) / s.
        lr_c = (torch.arange(p, dtype=torch.float32) + 0.5) / p * 2 - 1
        hr_c = (torch.arange(p * s, dtype=torch.float32) + 0.5) / (p * s) * 2 - 1
        coef = [self._uniform(n, -1.0, 1.0) for _ in range(5)]
        curve = 0.3  # curvature kept below the slope: smooth, not oscillating

        def poly(v: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
            y, x = v[None, :, None], u[None, None, :]
            return (
                coef[0] * x
                + coef[1] * y
                + curve * (coef[2] * x * x + coef[3] * y * y + coef[4] * x * y)
            )

        lo_f, hi_f = poly(lr_c, lr_c), poly(hr_c, hr_c)
        # Map each patch's range to a random span of grey levels inside Y's 16..235,
        # flat (span 0: black or white sky) to steep.
        lo = lo_f.amin(dim=(1, 2), keepdim=True)
        span_f = (lo_f.amax(dim=(1, 2), keepdim=True) - lo).clamp_min(1e-6)
        span = self._uniform(n, 0.0, 120.0) * (torch.rand(n, 1, 1, generator=self._gen) > 0.1)
        base = 16.0 + self._uniform(n, 0.0, 1.0) * (219.0 - span)
        if self.dark > 0.0:
            dark = torch.rand(n, 1, 1, generator=self._gen) < self.dark
            span = torch.where(dark, self._uniform(n, 0.0, 4.0), span)
            base = torch.where(dark, self._uniform(n, 16.0, 36.0), base)
        lr = base + (lo_f - lo) / span_f * span
        hr = base + (hi_f - lo) / span_f * span
        sigma = self._uniform(n, 0.0, self.noise)
        lr = lr + sigma * torch.randn(lr.shape, generator=self._gen)
        return lr[:, None], hr[:, None]

    def model_input(self, lr: torch.Tensor) -> torch.Tensor:
        """Grey levels to what the network takes: Y / 255, or grey RGB in [0, 1]."""
        x = lr / 255.0
        return x if self.channels == 1 else x.expand(-1, 3, -1, -1)


def lattice_rms(sr: torch.Tensor, hr: torch.Tensor, *, scale: int, crop: int) -> torch.Tensor:
    """RMS over the ``scale x scale`` phases of the phase-averaged error, grey levels.

    Args:
        sr: network output (N, C, H, W) in [0, 1] (channels averaged to grey).
        hr: exact values (N, 1, H, W) in grey levels.
        crop: LR pixels dropped at every side (the network's zero-padded rim).
    """
    err = sr.mean(dim=1, keepdim=True) * 255.0 - hr
    c = crop * scale
    err = err[..., c : err.shape[-2] - c, c : err.shape[-1] - c]
    n, _, h, w = err.shape
    phases = err.reshape(n, h // scale, scale, w // scale, scale).mean(dim=(1, 3))
    periodic = phases - phases.mean(dim=(1, 2), keepdim=True)
    return torch.sqrt((periodic**2).mean() + 1e-8)
