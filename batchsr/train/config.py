"""Training configs: the TOML file (configs/train-espcn.toml) into frozen dataclasses.

The file is read and its values type-checked by batchsr/config.py's helpers, as a run
config is; this module maps its tables onto the fields and checks the ranges.
"""

from __future__ import annotations

import dataclasses
import hashlib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchsr.config import build_section, coerce_table, read_toml
from batchsr.errors import ConfigError
from batchsr.models.info import Hyper
from batchsr.train.licences import TRAINING_LICENCES
from batchsr.vocab import FILTER_NAMES

__all__ = ["LatticeTerm", "NiqePhase", "PolishPhase", "TrainConfig", "load_train_config"]


@dataclass(frozen=True, slots=True)
class NiqePhase:
    """A second training phase: L1 plus a weighted differentiable NIQE of the outputs.

    L1 alone teaches the mean of the plausible detail, which is smooth, and NIQE scores
    smooth images badly; the NIQE term (``batchsr.niqe_loss.niqe_per_image``, each
    patch scored from its own 96x96 blocks as the contest scores an image) pushes the
    outputs toward the statistics of pristine photos while L1 holds them to the target.

    Attributes:
        weight: factor of the NIQE term against L1 on [0, 1] RGB.
        steps: optimiser steps of the phase (Adam restarted at ``lr``).
        lr: initial learning rate; cosine decay to ``lr_final``.
        lr_final: learning rate at the last step.
        lr_patch: LR patch side; ``lr_patch * scale`` must hold at least 2x2 NIQE blocks.
        batch: patches per step.
        consistency: weight of an L1 term between the output downscaled (bicubic,
            antialiased) and the LR input. Detail that downscales to the input is
            detail the bicubic-made LR cannot contradict, so it costs less PSNR.
        blend: the final weights are ``l1 + blend * (tuned - l1)``: network
            interpolation between the L1 weights and the NIQE-tuned ones (as ESRGAN
            does between its PSNR and GAN models) sets the fidelity/naturalness trade
            without another training run; 1 keeps the tuned weights.
    """

    weight: float
    steps: int
    lr: float = 2e-4
    lr_final: float = 1e-5
    lr_patch: int = 96
    batch: int = 4
    consistency: float = 0.0
    blend: float = 1.0


@dataclass(frozen=True, slots=True)
class PolishPhase:
    """A last phase after the blend: remove what lattice the blend brought back.

    Network interpolation is not linear in what a network does: two endpoints that are
    free of the pixel-shuffle lattice can blend into weights that show one (on near-black
    flats, here). This phase trains the blended network to match its own outputs (a
    frozen copy's) on real patches, which keeps its detail and NIQE, while the lattice
    penalty, with near-black flat patches in its probe, removes the periodic part.

    Attributes:
        steps: optimiser steps (Adam at ``lr``, constant).
        lattice_weight: loss per grey level of lattice RMS.
        dark: share of near-black flat patches in the probe (``LatticeProbe.dark``).
        batch: real patches per step; the probe takes 8.
    """

    steps: int
    lr: float = 1e-4
    lattice_weight: float = 0.3
    dark: float = 0.3
    batch: int = 16


@dataclass(frozen=True, slots=True)
class LatticeTerm:
    """A penalty against the pixel-shuffle lattice, added in every phase.

    Each step also runs the network on ``batch`` smooth LR patches
    (``batchsr.lattice_loss.LatticeProbe``) and adds ``weight`` x the RMS, in grey
    levels, of the periodic part of its error there (``lattice_rms``).

    Attributes:
        weight: loss per grey level of lattice RMS.
        l1_weight: the same in the L1 phase (None: ``weight``). The L1 phase alone
            leaves little lattice, and a strong penalty there costs fidelity.
        batch: smooth patches per step.
        lr_patch: their LR side in pixels.
        noise: the largest LR noise sigma of a patch, grey levels.
    """

    weight: float
    batch: int = 8
    lr_patch: int = 32
    noise: float = 1.0
    l1_weight: float | None = None


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """A training run, as read from a TOML config (see configs/train-espcn.toml).

    Attributes:
        name: model name; the default output folder is ``models/<name>``.
        seed: seeds torch and the patch sampler.
        threads: torch CPU threads (results are reproducible for a fixed count).
        architecture: zoo architecture id.
        hyperparameters: keyword arguments of the architecture's network.
        train: skimage/data file names to train on.
        valid: skimage/data file names held out for the validation figures.
        rescales: factors each training image is also used downscaled by.
        lr_patch: low-resolution patch side in pixels.
        batch: patches per step.
        lr_blurs: Gaussian sigmas (HR pixels) of a blur applied before the bicubic
            downscale; every training image gets one LR version per sigma (0 = none).
            A blurrier LR teaches the network to restore more detail than bicubic
            downscaling alone removes.
        target_sharpen: unsharp-mask amount applied to the HR targets (0 = none): the
            network learns to output ``hr + amount * (hr - gaussian(hr, sigma))``,
            trading some PSNR for the crispness NIQE rewards.
        target_sigma: the Gaussian's sigma in HR pixels.
        loss: ``l1`` (mean absolute error on RGB in [0, 1]).
        steps: optimiser steps.
        lr: Adam's initial learning rate.
        lr_final: learning rate at the last step (cosine decay).
        log_every: steps between progress events.
        opset: ONNX opset of the export.
        example_shape: NCHW example input of the dynamic ONNX export.
        check_shapes: NCHW inputs the export is checked against torch on.
        postprocess: a ``batchsr.filters`` name embedded into the ONNX export as a fixed
            conv (the model's default postprocess), or None.
        niqe: the NIQE fine-tuning phase run after the L1 steps, or None.
        lattice: the lattice penalty added in both phases, or None.
        polish: the phase after the blend that removes a lattice the blend made, or None.
        source: the config file's text, recorded beside the weights.
    """

    name: str
    seed: int
    threads: int
    architecture: str
    hyperparameters: tuple[tuple[str, Hyper], ...]
    train: tuple[str, ...]
    valid: tuple[str, ...]
    rescales: tuple[float, ...] = (1.0,)
    lr_patch: int = 24
    batch: int = 16
    lr_blurs: tuple[float, ...] = (0.0,)
    target_sharpen: float = 0.0
    target_sigma: float = 1.0
    loss: str = "l1"
    steps: int = 3000
    lr: float = 1e-3
    lr_final: float = 1e-5
    log_every: int = 250
    opset: int = 18
    example_shape: tuple[int, int, int, int] = (1, 3, 64, 80)
    check_shapes: tuple[tuple[int, int, int, int], ...] = ((1, 3, 64, 80),)
    postprocess: str | None = None
    niqe: NiqePhase | None = None
    lattice: LatticeTerm | None = None
    polish: PolishPhase | None = None
    source: str = field(default="", repr=False)

    @property
    def sha256(self) -> str:
        """Digest of the config text, to tie the weights to the config that made them."""
        return hashlib.sha256(self.source.encode()).hexdigest()


# Where the file sets each TrainConfig field: at the top level ("") or in a table.
_FIELDS: dict[str, tuple[str, ...]] = {
    "": ("name", "seed", "threads"),
    "data": (
        "train",
        "valid",
        "rescales",
        "lr_patch",
        "batch",
        "lr_blurs",
        "target_sharpen",
        "target_sigma",
    ),
    "optim": ("loss", "steps", "lr", "lr_final", "log_every"),
    "export": ("opset", "example_shape", "check_shapes", "postprocess"),
}
# Tables that are a phase's dataclass as they stand.
_PHASES: dict[str, type] = {"niqe": NiqePhase, "lattice": LatticeTerm, "polish": PolishPhase}
# Values of the fields that TrainConfig gives no default but a file may leave out.
_FILE_DEFAULTS: dict[str, Any] = {"threads": 2, "valid": ()}


def load_train_config(path: Path) -> TrainConfig:
    """Read a training config.

    Raises:
        ConfigError: the file is missing, not TOML, has an unknown key, names an image
            without a recorded open licence, or a value is out of range.
    """
    text, raw = read_toml(path)
    tables = {"model", *_PHASES, *(section for section in _FIELDS if section)}
    unknown = set(raw) - tables - set(_FIELDS[""])
    if unknown:
        raise ConfigError(
            f"{path}: unknown key(s) {sorted(unknown)} at the top level; known: "
            f"{sorted(tables | set(_FIELDS['']))}"
        )
    hints = typing.get_type_hints(TrainConfig)
    values: dict[str, Any] = dict(_FILE_DEFAULTS)
    for section, names in _FIELDS.items():
        table = raw.get(section, {}) if section else {k: raw[k] for k in names if k in raw}
        where = f"{path} [{section}]" if section else str(path)
        values |= coerce_table(table, {n: hints[n] for n in names}, where=where)
    for section, cls in _PHASES.items():
        if section in raw:
            values[section] = build_section(cls, raw[section], where=f"{path} [{section}]")
    values |= _model_fields(raw.get("model", {}), where=f"{path} [model]")
    required = [f.name for f in dataclasses.fields(TrainConfig) if f.default is dataclasses.MISSING]
    missing = [_file_key(name) for name in required if name not in values]
    if missing:
        raise ConfigError(f"{path}: missing required key(s) {missing}")
    cfg = TrainConfig(**values, source=text)
    _validate(cfg, path)
    return cfg


def _file_key(name: str) -> str:
    """The dotted key that sets TrainConfig field ``name`` in the file."""
    section = next((s for s, names in _FIELDS.items() if name in names), "model")
    return f"{section}.{name}" if section else name


def _model_fields(table: Any, *, where: str) -> dict[str, Any]:
    """``[model]``: the architecture, and its network's keyword arguments as given."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table of keys")
    hyper = dict(table)
    if "architecture" not in hyper:
        return {"hyperparameters": tuple(sorted(hyper.items()))}
    architecture = coerce_table(
        {"architecture": hyper.pop("architecture")}, {"architecture": str}, where=where
    )
    return {**architecture, "hyperparameters": tuple(sorted(hyper.items()))}


def _validate(cfg: TrainConfig, path: Path) -> None:
    unlicensed = [n for n in (*cfg.train, *cfg.valid) if n not in TRAINING_LICENCES]
    if unlicensed:
        raise ConfigError(
            f"{path}: {unlicensed} have no recorded open licence; use only images from "
            f"TRAINING_LICENCES: {sorted(TRAINING_LICENCES)}"
        )
    overlap = set(cfg.train) & set(cfg.valid)
    if overlap:
        raise ConfigError(f"{path}: {sorted(overlap)} are both in data.train and data.valid")
    if cfg.loss != "l1":
        raise ConfigError(f"{path}: optim.loss {cfg.loss!r} is not supported; use 'l1'")
    if cfg.steps < 1 or cfg.batch < 1 or cfg.lr_patch < 4 or cfg.threads < 1:
        raise ConfigError(f"{path}: steps, batch, threads must be >= 1 and lr_patch >= 4")
    if cfg.postprocess is not None and cfg.postprocess not in FILTER_NAMES:
        raise ConfigError(
            f"{path}: export.postprocess {cfg.postprocess!r} is not one of {FILTER_NAMES}"
        )
    if not cfg.lr_blurs or any(b < 0.0 for b in cfg.lr_blurs):
        raise ConfigError(f"{path}: data.lr_blurs must list sigmas >= 0, got {cfg.lr_blurs}")
    if cfg.target_sharpen < 0.0 or cfg.target_sigma <= 0.0:
        raise ConfigError(f"{path}: data.target_sharpen must be >= 0 and target_sigma > 0")
    if not all(0.0 < r <= 1.0 for r in cfg.rescales):
        raise ConfigError(f"{path}: data.rescales must lie in (0, 1], got {cfg.rescales}")
    phase = cfg.niqe
    if phase is not None and (phase.weight <= 0.0 or phase.steps < 1 or phase.batch < 1):
        raise ConfigError(f"{path}: niqe.weight must be > 0, niqe.steps and niqe.batch >= 1")
    if phase is not None and (phase.consistency < 0.0 or not 0.0 < phase.blend <= 1.0):
        raise ConfigError(f"{path}: niqe.consistency must be >= 0 and niqe.blend in (0, 1]")
    lat = cfg.lattice
    if lat is not None and (lat.weight <= 0.0 or lat.batch < 1 or lat.noise < 0.0):
        raise ConfigError(f"{path}: lattice.weight must be > 0, batch >= 1 and noise >= 0")
    pol = cfg.polish
    if pol is not None and (pol.steps < 1 or pol.batch < 1 or not 0.0 <= pol.dark <= 1.0):
        raise ConfigError(f"{path}: polish.steps and polish.batch must be >= 1, dark in [0, 1]")
    if lat is not None and lat.l1_weight is not None and lat.l1_weight < 0.0:
        raise ConfigError(f"{path}: lattice.l1_weight must be >= 0")
    if lat is not None and lat.lr_patch < 16:
        raise ConfigError(f"{path}: lattice.lr_patch must be >= 16 (a rim is cropped)")
