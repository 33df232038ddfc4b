"""TRAINING.md: the training record written beside a trained model's weights.

It says how the weights were made (architecture, every phase's settings, the config's
digest), what they were trained on (each photo with its licence) and the run's
figures (loss windows, held-out PSNR-Y against PIL bicubic).
"""

from __future__ import annotations

import torch

from batchsr.train.config import LatticeTerm, NiqePhase, PolishPhase, TrainConfig
from batchsr.train.licences import TRAINING_LICENCES
from batchsr.train.loop import TrainResult

__all__ = ["training_md"]


def training_md(result: TrainResult, cfg: TrainConfig, max_diff: float) -> str:
    """The record of ``result``'s run of ``cfg``.

    Args:
        result: the trained model and its figures.
        cfg: the config it was trained (or blended) with.
        max_diff: the largest |onnxruntime - torch| of the bare network's export.
    """
    lines = [
        f"# {cfg.name}: training record",
        "",
        "Written by `python -m batchsr.train`; regenerate it with",
        f"`python -m batchsr.train --config configs/train-{cfg.name}.toml "
        f"--out models/{cfg.name}`.",
        "",
        *_settings_md(result, cfg, max_diff),
        "",
        *_data_md(result, cfg),
        "",
        *_figures_md(result, cfg),
        "",
    ]
    return "\n".join(lines)


def _settings_md(result: TrainResult, cfg: TrainConfig, max_diff: float) -> list[str]:
    info = result.model.info
    return [
        f"- architecture: {info.architecture} {dict(info.hyperparameters)}, x{info.scale}, "
        f"{info.color}, receptive-field margin {info.margin} LR pixels",
        f"- parameters: {sum(p.numel() for p in result.model.module.parameters())}",
        f"- seed {cfg.seed}, {cfg.threads} CPU threads, {cfg.steps} steps of batch {cfg.batch}, "
        f"LR patch {cfg.lr_patch} px, HR targets unsharp-masked by {cfg.target_sharpen:g} "
        f"(sigma {cfg.target_sigma:g} px), loss {cfg.loss}, Adam lr {cfg.lr:g} -> {cfg.lr_final:g} "
        "(cosine)",
        *_niqe_md(cfg.niqe, result),
        *_lattice_md(cfg.lattice),
        *_polish_md(cfg.polish, result),
        f"- training wall time: {result.wall_s:.0f} s (torch {torch.__version__})",
        f"- ONNX export (opset {cfg.opset}, dynamic N/H/W): max |onnxruntime - torch| = "
        f"{max_diff:.2e} on {list(cfg.check_shapes)}",
        f"- default postprocess embedded in the ONNX export: {cfg.postprocess or 'none'}",
        f"- config sha256: {cfg.sha256}",
        *_blended_md(result, cfg),
    ]


def _niqe_md(phase: NiqePhase | None, result: TrainResult) -> list[str]:
    if phase is None:
        return []
    return [
        f"- then {phase.steps} steps of L1 + {phase.weight:g} x differentiable NIQE "
        f"(batchsr.niqe_loss, each patch scored from its own blocks), batch {phase.batch}, "
        f"LR patch {phase.lr_patch} px, LR-consistency weight {phase.consistency:g}, "
        f"Adam lr {phase.lr:g} -> {phase.lr_final:g} (cosine): "
        f"{result.niqe_wall_s:.0f} s; final weights L1 + {phase.blend:g} x (tuned - L1)",
    ]


def _lattice_md(term: LatticeTerm | None) -> list[str]:
    if term is None:
        return []
    l1 = term.weight if term.l1_weight is None else term.l1_weight
    return [
        f"- in both phases, a lattice penalty (batchsr.lattice_loss): {term.weight:g} per grey "
        f"level of periodic-error RMS in the NIQE phase, {l1:g} in the L1 phase, on "
        f"{term.batch} smooth {term.lr_patch} px LR patches per step (LR noise up to "
        f"{term.noise:g} grey levels)",
    ]


def _polish_md(phase: PolishPhase | None, result: TrainResult) -> list[str]:
    if phase is None:
        return []
    return [
        f"- then {phase.steps} polish steps (batchsr.train.PolishPhase): L1 to the "
        f"blended network's own outputs + {phase.lattice_weight:g} x lattice RMS, "
        f"{phase.dark:.0%} of the probe patches near-black flats, Adam lr "
        f"{phase.lr:g}; (L1 to the copy, lattice RMS) per window: "
        + ", ".join(f"({a:.4f}, {b:.4f})" for a, b in result.polish_losses)
    ]


def _blended_md(result: TrainResult, cfg: TrainConfig) -> list[str]:
    trained = result.trained_config_sha256
    if not trained or trained == cfg.sha256:
        return []
    return [
        f"- weights blended by `--from-endpoints` from the endpoints a run of config "
        f"sha256 {trained} saved (the same model, data, optim, "
        "niqe (its blend aside) and lattice settings; training is seeded)"
    ]


def _data_md(result: TrainResult, cfg: TrainConfig) -> list[str]:
    return [
        "## Data",
        "",
        "Photos shipped inside the scikit-image wheel (`skimage/data`, scikit-image "
        "0.26); licences as stated in `skimage/data/_fetchers.py`. LR = PIL BICUBIC x"
        f"{result.model.info.scale} downscale rounded to uint8. Each training photo is also "
        f"used downscaled by {list(cfg.rescales)}, and each is paired with LR made after a "
        f"Gaussian blur of sigma {list(cfg.lr_blurs)} HR px. Gray photos are used as RGB.",
        "",
        "| image | role | licence |",
        "| --- | --- | --- |",
        *[f"| {n} | train | {TRAINING_LICENCES[n]} |" for n in cfg.train],
        *[f"| {n} | validation (held out) | {TRAINING_LICENCES[n]} |" for n in cfg.valid],
        "",
        "scikit-learn's and matplotlib's sample images are never trained on: they are "
        "kept for held-out evaluation (benchmarks/quality.py).",
    ]


def _figures_md(result: TrainResult, cfg: TrainConfig) -> list[str]:
    scale = result.model.info.scale
    niqe = [
        f"NIQE phase, mean (L1, per-patch NIQE) per {cfg.log_every}-step window: "
        + ", ".join(f"({a:.4f}, {b:.3f})" for a, b in result.niqe_losses),
        "",
    ]
    return [
        "## Figures",
        "",
        f"Mean L1 loss per {cfg.log_every}-step window: "
        + ", ".join(f"{v:.4f}" for v in result.losses),
        "",
        *(niqe if result.niqe_losses else []),
        f"PSNR-Y (MATLAB BT.601 Y, {scale}-pixel border cropped) on the held-out photos:",
        "",
        "| image | model (dB) | PIL bicubic (dB) |",
        "| --- | --- | --- |",
        *[f"| {f.image} | {f.psnr_y_model:.3f} | {f.psnr_y_bicubic:.3f} |" for f in result.valid],
    ]
