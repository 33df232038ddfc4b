"""The training loop: seeded initialisation, the L1 steps, then the configured phases.

``train`` runs them all; ``from_endpoints`` rebuilds a run's result for another blend
from the weights a run saved (``--save-endpoints``), without training again.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import structlog
import torch

from batchsr.errors import ConfigError
from batchsr.metrics.niqe import BLOCK_SIZE as NIQE_BLOCK
from batchsr.models import SRModel, get_arch
from batchsr.train.config import TrainConfig
from batchsr.train.data import PatchSampler, as_model_input, unsharp
from batchsr.train.phases import LatticePenalty, Windows, niqe_phase, polish_phase
from batchsr.train.validate import ValidFigure, validate

__all__ = [
    "TrainResult",
    "blend_weights",
    "from_endpoints",
    "save_endpoints",
    "save_weights",
    "train",
]

log = structlog.get_logger()


@dataclass(frozen=True, slots=True)
class TrainResult:
    """The trained model and the figures of its run.

    Attributes:
        model: the trained network (eval mode) with its facts.
        losses: mean training loss of each ``log_every`` window, in order.
        valid: PSNR-Y figures on the held-out images.
        wall_s: training wall time in seconds, both phases (validation excluded).
        niqe_losses: for the NIQE phase, mean (L1, NIQE) of each ``log_every`` window.
        niqe_wall_s: wall time of the NIQE phase (part of ``wall_s``).
        endpoints: the NIQE phase's two ends, (L1 weights, tuned weights), which the
            final weights blend (``niqe.blend``); empty without a NIQE phase. Kept so
            that other blends can be measured without training again.
        polish_losses: for the polish phase, mean (L1 to the blended copy, lattice RMS)
            of each window.
        trained_config_sha256: when the weights were blended from saved endpoints
            (:func:`from_endpoints`), the digest of the config that trained them.
    """

    model: SRModel
    losses: tuple[float, ...]
    valid: tuple[ValidFigure, ...]
    wall_s: float
    niqe_losses: Windows = ()
    niqe_wall_s: float = 0.0
    endpoints: tuple[dict[str, torch.Tensor], ...] = ()
    trained_config_sha256: str | None = None
    polish_losses: Windows = ()


def train(cfg: TrainConfig) -> TrainResult:
    """Train the configured network from a seeded initialisation.

    Returns:
        The trained model (eval mode, CPU) and the run's figures.
    """
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    model = get_arch(cfg.architecture).create(**dict(cfg.hyperparameters))
    net = model.module.train()
    scale = model.info.scale
    if cfg.niqe is not None and cfg.niqe.lr_patch * scale < 2 * NIQE_BLOCK:
        raise ConfigError(
            f"niqe.lr_patch {cfg.niqe.lr_patch} gives {cfg.niqe.lr_patch * scale} px outputs; "
            f"NIQE needs at least {2 * NIQE_BLOCK} (2x2 blocks of {NIQE_BLOCK}): raise it"
        )
    sampler = PatchSampler(cfg, scale, patch=cfg.lr_patch, seed=cfg.seed)
    lattice = None
    if cfg.lattice is not None:
        lattice = LatticePenalty(cfg.lattice, model, cfg.seed + 2, cfg.lattice.l1_weight)
    bound = log.bind(model=cfg.name, steps=cfg.steps)
    t0 = time.perf_counter()
    losses = _l1_phase(net, cfg, sampler, model, bound, lattice)
    niqe_losses, niqe_wall_s, endpoints = _niqe_and_blend(net, cfg, model, bound, lattice)
    polish_losses: Windows = ()
    if cfg.polish is not None:
        polish_losses = polish_phase(net, cfg, cfg.polish, model, bound)
    wall_s = time.perf_counter() - t0
    net.eval()
    return TrainResult(
        model=model,
        losses=losses,
        valid=_validated(model, cfg, bound),
        wall_s=wall_s,
        niqe_losses=niqe_losses,
        niqe_wall_s=niqe_wall_s,
        endpoints=endpoints,
        polish_losses=polish_losses,
    )


def _l1_phase(
    net: torch.nn.Module,
    cfg: TrainConfig,
    sampler: PatchSampler,
    model: SRModel,
    bound: structlog.typing.FilteringBoundLogger,
    lattice: LatticePenalty | None,
) -> tuple[float, ...]:
    """The L1 steps, with the lattice penalty if any; the loss's window means."""
    channels = model.info.in_channels
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=cfg.steps, eta_min=cfg.lr_final
    )
    losses: list[float] = []
    window = lattice_acc = 0.0
    t0 = time.perf_counter()
    for step in range(1, cfg.steps + 1):
        lr_batch, hr_batch = (as_model_input(t, channels) for t in sampler.batch(cfg.batch))
        if cfg.target_sharpen > 0.0:
            hr_batch = unsharp(hr_batch, amount=cfg.target_sharpen, sigma=cfg.target_sigma)
        loss = torch.nn.functional.l1_loss(net(lr_batch), hr_batch)
        if lattice is not None:
            penalty, rms = lattice(net)
            loss = loss + penalty
            lattice_acc += rms
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        window += loss.detach().item()
        if step % cfg.log_every == 0 or step == cfg.steps:
            n = step % cfg.log_every or cfg.log_every
            losses.append(window / n)
            bound.info(
                "train_progress",
                step=step,
                loss=round(window / n, 6),
                lattice_rms=round(lattice_acc / n, 4) if lattice else None,
                elapsed_s=round(time.perf_counter() - t0, 1),
            )
            window = lattice_acc = 0.0
    return tuple(losses)


def _niqe_and_blend(
    net: torch.nn.Module,
    cfg: TrainConfig,
    model: SRModel,
    bound: structlog.typing.FilteringBoundLogger,
    lattice: LatticePenalty | None,
) -> tuple[Windows, float, tuple[dict[str, torch.Tensor], ...]]:
    """The NIQE phase, then the blend of its endpoints into ``net``: the phase's window
    means, its wall time and the endpoints (none of them without a NIQE phase)."""
    if cfg.niqe is None:
        return (), 0.0, ()
    t1 = time.perf_counter()
    start = {k: v.detach().clone() for k, v in net.state_dict().items()}
    if lattice is not None and cfg.lattice is not None:
        lattice.weight = cfg.lattice.weight
    info = model.info
    losses = niqe_phase(
        net, cfg, cfg.niqe, info.scale, bound, channels=info.in_channels, lattice=lattice
    )
    tuned = {k: v.detach().clone() for k, v in net.state_dict().items()}
    blend = cfg.niqe.blend
    if blend < 1.0:
        net.load_state_dict(blend_weights(start, tuned, blend))
    return losses, time.perf_counter() - t1, (start, tuned)


def _validated(
    model: SRModel, cfg: TrainConfig, bound: structlog.typing.FilteringBoundLogger
) -> tuple[ValidFigure, ...]:
    """The validation figures, each logged."""
    figures = validate(model, cfg.valid)
    for fig in figures:
        bound.info(
            "validated",
            image=fig.image,
            psnr_y=round(fig.psnr_y_model, 3),
            psnr_y_bicubic=round(fig.psnr_y_bicubic, 3),
        )
    return figures


def blend_weights(
    l1: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor], blend: float
) -> dict[str, torch.Tensor]:
    """Network interpolation: ``l1 + blend * (tuned - l1)``, tensor by tensor."""
    return {k: l1[k] + blend * (tuned[k] - l1[k]) for k in l1}


def from_endpoints(cfg: TrainConfig, folder: Path) -> TrainResult:
    """The result of a training run of ``cfg`` rebuilt from its saved endpoints: the L1
    and NIQE-tuned weights blended by ``cfg.niqe.blend``, then validated. Training is
    seeded, so this is the run's result for that blend, without training again.

    Raises:
        ConfigError: the folder lacks the endpoints or the run's figures, or ``cfg``
            has no NIQE phase.
    """
    from safetensors.torch import load_file

    if cfg.niqe is None:
        raise ConfigError(
            "blending saved endpoints (`from_endpoints`) needs a config with a [niqe] phase"
        )
    try:
        l1 = load_file(str(folder / "l1.safetensors"))
        tuned = load_file(str(folder / "tuned.safetensors"))
        run = json.loads((folder / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"{folder}: no saved endpoints ({err}); train with `save_endpoints` first"
        ) from err
    model = get_arch(cfg.architecture).create(**dict(cfg.hyperparameters))
    blend = cfg.niqe.blend
    model.module.load_state_dict(blend_weights(l1, tuned, blend))
    torch.set_num_threads(cfg.threads)
    polish_losses: Windows = ()
    if cfg.polish is not None:
        bound = log.bind(model=cfg.name)
        polish_losses = polish_phase(model.module, cfg, cfg.polish, model, bound)
    model.module.eval()
    return TrainResult(
        polish_losses=polish_losses,
        model=model,
        losses=tuple(run["losses"]),
        valid=validate(model, cfg.valid),
        wall_s=float(run["wall_s"]),
        niqe_losses=tuple((float(a), float(b)) for a, b in run["niqe_losses"]),
        niqe_wall_s=float(run["niqe_wall_s"]),
        trained_config_sha256=str(run["config_sha256"]),
    )


def save_endpoints(result: TrainResult, cfg: TrainConfig, folder: Path) -> None:
    """Write what :func:`from_endpoints` reads: the NIQE phase's L1 and tuned weights
    (``l1.safetensors``, ``tuned.safetensors``) and the run's figures (``run.json``)."""
    folder.mkdir(parents=True, exist_ok=True)
    for label, state in zip(("l1", "tuned"), result.endpoints, strict=True):
        save_weights(state, folder / f"{label}.safetensors", result.model, cfg)
    figures = {
        "config_sha256": cfg.sha256,
        "losses": result.losses,
        "niqe_losses": result.niqe_losses,
        "wall_s": result.wall_s,
        "niqe_wall_s": result.niqe_wall_s,
    }
    (folder / "run.json").write_text(json.dumps(figures, indent=1) + "\n")


def save_weights(
    state: dict[str, torch.Tensor], path: Path, model: SRModel, cfg: TrainConfig
) -> Path:
    """Write ``state`` as safetensors, tagged with the architecture and the config's digest."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous() for k, v in state.items()}
    meta = {"architecture": model.info.architecture, "config_sha256": cfg.sha256}
    save_file(tensors, str(path), metadata=meta)
    return path
