"""The fine-tuning phases after the L1 steps, and the lattice penalty they share.

The NIQE phase (``NiqePhase``) trades some fidelity for naturalness, the polish phase
(``PolishPhase``) removes a pixel-shuffle lattice the blend brought back, and the
lattice penalty (``LatticeTerm``) is added in every phase that has one.
"""

from __future__ import annotations

import time

import numpy as np
import structlog
import torch

from batchsr.models import SRModel
from batchsr.train.config import LatticeTerm, NiqePhase, PolishPhase, TrainConfig
from batchsr.train.data import PatchSampler, as_model_input

__all__ = ["LatticePenalty", "Windows", "niqe_phase", "polish_phase"]

# Per log window, the mean of two figures of a phase (which ones: the phase says).
Windows = tuple[tuple[float, float], ...]


class LatticePenalty:
    """``weight`` x the lattice RMS of the network on a fresh batch of smooth patches."""

    def __init__(
        self, term: LatticeTerm, model: SRModel, seed: int, weight: float | None = None
    ) -> None:
        from batchsr.lattice_loss import LatticeProbe

        info = model.info
        self._term, self._scale = term, info.scale
        self.weight = term.weight if weight is None else weight
        self._crop = min(info.margin, term.lr_patch // 4)
        self._probe = LatticeProbe(
            scale=info.scale,
            patch=term.lr_patch,
            channels=info.in_channels,
            noise=term.noise,
            seed=seed,
        )

    def __call__(self, net: torch.nn.Module) -> tuple[torch.Tensor, float]:
        """(weighted penalty, the lattice RMS in grey levels)."""
        from batchsr.lattice_loss import lattice_rms

        lr, hr = self._probe.batch(self._term.batch)
        rms = lattice_rms(net(self._probe.model_input(lr)), hr, scale=self._scale, crop=self._crop)
        return self.weight * rms, float(rms.detach().item())


def niqe_phase(
    net: torch.nn.Module,
    cfg: TrainConfig,
    phase: NiqePhase,
    scale: int,
    bound: structlog.typing.FilteringBoundLogger,
    *,
    channels: int = 3,
    lattice: LatticePenalty | None = None,
) -> Windows:
    """Fine-tune ``net`` in place on L1 + ``phase.weight`` x NIQE; the window means."""
    from batchsr.niqe_loss import niqe_per_image

    # Patches big enough to hold several NIQE blocks each, drawn from a stream of their
    # own so that the L1 phase's patches do not depend on whether this phase runs.
    sampler = PatchSampler(cfg, scale, patch=phase.lr_patch, seed=cfg.seed + 1)
    optimizer = torch.optim.Adam(net.parameters(), lr=phase.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=phase.steps, eta_min=phase.lr_final
    )
    windows: list[tuple[float, float]] = []
    acc = np.zeros(3)
    t0 = time.perf_counter()
    for step in range(1, phase.steps + 1):
        lr_batch, hr_batch = (as_model_input(t, channels) for t in sampler.batch(phase.batch))
        sr = net(lr_batch)
        l1 = torch.nn.functional.l1_loss(sr, hr_batch)
        if phase.consistency > 0.0:
            down = torch.nn.functional.interpolate(
                sr, scale_factor=1.0 / scale, mode="bicubic", antialias=True
            )
            l1 = l1 + phase.consistency * torch.nn.functional.l1_loss(down, lr_batch)
        score = niqe_per_image(sr).mean()
        loss = l1 + phase.weight * score
        rms = 0.0
        if lattice is not None:
            penalty, rms = lattice(net)
            loss = loss + penalty
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        acc += (l1.detach().item(), score.detach().item(), rms)
        if step % cfg.log_every == 0 or step == phase.steps:
            n = step % cfg.log_every or cfg.log_every
            windows.append((float(acc[0] / n), float(acc[1] / n)))
            bound.info(
                "train_niqe_progress",
                step=step,
                l1=round(windows[-1][0], 6),
                niqe=round(windows[-1][1], 4),
                lattice_rms=round(float(acc[2] / n), 4) if lattice else None,
                elapsed_s=round(time.perf_counter() - t0, 1),
            )
            acc[:] = 0.0
    return tuple(windows)


def polish_phase(
    net: torch.nn.Module,
    cfg: TrainConfig,
    phase: PolishPhase,
    model: SRModel,
    bound: structlog.typing.FilteringBoundLogger,
) -> Windows:
    """Fine-tune ``net`` in place: L1 to a frozen copy's outputs on real patches plus
    ``phase.lattice_weight`` x the lattice RMS on smooth ones; the window means of
    (L1 to the copy, lattice RMS)."""
    import copy

    from batchsr.lattice_loss import LatticeProbe, lattice_rms

    info = model.info
    teacher = copy.deepcopy(net).eval()
    sampler = PatchSampler(cfg, info.scale, patch=cfg.lr_patch, seed=cfg.seed + 5)
    probe = LatticeProbe(
        scale=info.scale, patch=32, channels=info.in_channels, seed=cfg.seed + 4, dark=phase.dark
    )
    net.train()
    optimizer = torch.optim.Adam(net.parameters(), lr=phase.lr)
    windows: list[tuple[float, float]] = []
    acc = np.zeros(2)
    for step in range(1, phase.steps + 1):
        lr_batch, _ = (as_model_input(t, info.in_channels) for t in sampler.batch(phase.batch))
        with torch.no_grad():
            target = teacher(lr_batch)
        keep = torch.nn.functional.l1_loss(net(lr_batch), target)
        lr_probe, hr_probe = probe.batch(8)
        rms = lattice_rms(
            net(probe.model_input(lr_probe)), hr_probe, scale=info.scale, crop=min(info.margin, 8)
        )
        loss = keep + phase.lattice_weight * rms
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        acc += (keep.detach().item(), rms.detach().item())
        every = min(cfg.log_every, phase.steps)
        if step % every == 0 or step == phase.steps:
            n = step % every or every
            windows.append((float(acc[0] / n), float(acc[1] / n)))
            bound.info("train_polish_progress", step=step, l1_to_copy=round(windows[-1][0], 6),
                       lattice_rms=round(windows[-1][1], 4))  # fmt: skip
            acc[:] = 0.0
    net.eval()
    return tuple(windows)
