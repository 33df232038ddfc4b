"""The training penalty against the pixel-shuffle lattice measures the periodic part of
the error only, in grey levels, and has a gradient a network can follow."""

from __future__ import annotations

import torch

from batchsr.lattice_loss import LatticeProbe, lattice_rms


def test_probe_patches_are_smooth_and_their_targets_exact() -> None:
    probe = LatticeProbe(scale=4, patch=32, channels=1, noise=0.0, seed=0)
    lr, hr = probe.batch(8)
    assert lr.shape == (8, 1, 32, 32) and hr.shape == (8, 1, 128, 128)
    assert float(hr.min()) >= 16.0 and float(hr.max()) <= 235.0
    # each LR pixel is the value of the same smooth function at its centre: the mean of
    # the 4x4 HR pixels over it, up to the function's curvature
    cells = hr.reshape(8, 1, 32, 4, 32, 4).mean(dim=(3, 5))
    assert float((cells - lr).abs().max()) < 0.1


def test_rms_reads_a_lattice_in_grey_levels_and_not_noise() -> None:
    probe = LatticeProbe(scale=4, patch=32, channels=1, seed=1)
    _, hr = probe.batch(4)
    exact = hr / 255.0
    assert float(lattice_rms(exact, hr, scale=4, crop=4)) < 1e-3
    noisy = exact + torch.randn(exact.shape, generator=torch.Generator().manual_seed(0)) / 255.0
    assert float(lattice_rms(noisy, hr, scale=4, crop=4)) < 0.1  # 1 grey of noise averages out
    pattern = torch.tensor([[1.0, -1.0, 1.0, -1.0]] * 2 + [[-1.0, 1.0, -1.0, 1.0]] * 2)
    grain = exact + pattern.repeat(32, 32) * 0.5 / 255.0  # +-0.5 grey every 4 pixels
    assert abs(float(lattice_rms(grain, hr, scale=4, crop=4)) - 0.5) < 0.02


def test_penalty_has_a_gradient_toward_no_lattice() -> None:
    probe = LatticeProbe(scale=4, patch=24, channels=1, seed=2)
    _lr, hr = probe.batch(2)
    bias = torch.zeros(1, 1, 4, 4, requires_grad=True)
    with torch.no_grad():
        bias += torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    opt = torch.optim.Adam([bias], lr=0.05)
    first = None
    for _ in range(100):
        out = hr / 255.0 + bias.repeat(1, 1, 24, 24) / 255.0
        rms = lattice_rms(out, hr, scale=4, crop=2)
        first = float(rms.detach()) if first is None else first
        opt.zero_grad()
        rms.backward()
        opt.step()
    assert float(rms.detach()) < first / 10
