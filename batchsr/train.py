"""Train a zoo model x4 on openly licensed photos shipped inside the scikit-image wheel.

``python -m batchsr.train --config configs/train-espcn.toml [--out models/espcn]``
trains (seeded, reproducible on the same thread count), then writes the model folder:
weights as safetensors, the ONNX export checked against torch, ``manifest.json``,
the training config and ``TRAINING.md`` with the data licences and the figures.

Pairs are made as the contest's inputs were: the low-resolution image is a PIL BICUBIC
x4 downscale of the high-resolution photo, rounded to uint8.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import time
import typing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import structlog
import torch
from numpy.typing import NDArray
from PIL import Image, ImageFilter

from batchsr.color import MATLAB_Y, upscale_image
from batchsr.config import build_section, coerce_table, read_toml
from batchsr.errors import ConfigError
from batchsr.filters import FILTER_NAMES, kernel_of
from batchsr.manifest import MANIFEST_NAME
from batchsr.metrics.niqe import BLOCK_SIZE as NIQE_BLOCK
from batchsr.models import SRModel, get_arch
from batchsr.models.info import Hyper

__all__ = [
    "TRAINING_LICENCES",
    "NiqePhase",
    "TrainConfig",
    "TrainResult",
    "ValidFigure",
    "build_model_folder",
    "load_train_config",
    "main",
    "psnr_y",
    "skimage_data_dir",
    "train",
    "upscale_rgb",
    "validate",
]

log = structlog.get_logger()

# Licence of every skimage/data image the config may name, from the docstrings in
# skimage/data/_fetchers.py (scikit-image 0.26). An image without an explicit open
# licence there (motorcycle_*.png: Middlebury, none stated; color.png: none stated)
# is deliberately absent, so a config cannot train on it.
TRAINING_LICENCES: dict[str, str] = {
    "astronaut.png": "public domain (NASA; 'No known copyright restrictions')",
    "chelsea.png": "CC0 (photographer Stefan van der Walt)",
    "coffee.png": "CC0 (photographer Rachel Michetti)",
    "hubble_deep_field.jpg": "public domain (NASA, 'may be freely used')",
    "retina.jpg": "CC0 1.0 (Wikimedia Commons, Häggström)",
    "ihc.png": "no known copyright restrictions (CMMI)",
    "rocket.jpg": "public domain (SpaceX)",
    "camera.png": "CC0 (photographer Lav Varshney)",
    "brick.png": "CC0 (CC0Textures Bricks25)",
    "grass.png": "CC0 (CC0Textures)",
    "gravel.png": "CC0 (CC0Textures Gravel04)",
    "text.png": "public domain (Wikimedia Commons, Corner.png)",
}


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
    where_set = {n: f"{s}." if s else "" for s, names in _FIELDS.items() for n in names}
    missing = [
        f"{where_set.get(f.name, 'model.')}{f.name}"
        for f in dataclasses.fields(TrainConfig)
        if f.default is dataclasses.MISSING and f.name not in values
    ]
    if missing:
        raise ConfigError(f"{path}: missing required key(s) {missing}")
    cfg = TrainConfig(**values, source=text)
    _validate(cfg, path)
    return cfg


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


def skimage_data_dir() -> Path:
    """The ``skimage/data`` folder of the installed scikit-image wheel.

    Raises:
        ConfigError: scikit-image is not installed.
    """
    import importlib.util

    spec = importlib.util.find_spec("skimage")
    if spec is None or spec.origin is None:
        raise ConfigError("training needs scikit-image's bundled photos: pip install scikit-image")
    return Path(spec.origin).parent / "data"


def _load_rgb(name: str) -> Image.Image:
    with Image.open(skimage_data_dir() / name) as im:
        return im.convert("RGB")


def _pair(
    hr: Image.Image, scale: int, *, blur: float = 0.0
) -> tuple[NDArray[np.uint8], NDArray[np.uint8]]:
    """HR cropped to a multiple of ``scale`` and its PIL BICUBIC downscale, HWC uint8.

    ``blur`` > 0 first blurs the HR image (PIL GaussianBlur, radius = sigma in HR
    pixels) for the LR only; the HR returned is never blurred.
    """
    w, h = (hr.width // scale) * scale, (hr.height // scale) * scale
    hr = hr.crop((0, 0, w, h))
    src = hr.filter(ImageFilter.GaussianBlur(blur)) if blur > 0.0 else hr
    lr = src.resize((w // scale, h // scale), Image.Resampling.BICUBIC)
    return np.asarray(hr), np.asarray(lr)


def _as_model_input(batch: torch.Tensor, channels: int) -> torch.Tensor:
    """RGB (N, 3, H, W) in [0, 1] as the model takes it: unchanged, or Y / 255 for
    one-channel (Y-only) models, as the pipeline's Y mode feeds them."""
    if channels == 3:
        return batch
    w = torch.tensor(MATLAB_Y, dtype=batch.dtype).view(1, 3, 1, 1) / 255.0
    return (batch * w).sum(dim=1, keepdim=True) + 16.0 / 255.0


def upscale_rgb(model: SRModel, lr: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """Whole-image upscale of HWC uint8 RGB as the pipeline does it: RGB models directly,
    Y-only models on MATLAB's Y with Cb/Cr upscaled bicubically."""

    def run(batch: NDArray[np.float32]) -> NDArray[np.float32]:
        with torch.no_grad():
            return model.module(torch.from_numpy(batch)).numpy()

    return upscale_image(run, lr, channels=model.info.in_channels)


def psnr_y(a: NDArray[np.uint8], b: NDArray[np.uint8], *, border: int) -> float:
    """PSNR on the Y channel of MATLAB's ``rgb2ycbcr`` (as BasicSR's ``test_y_channel``).

    Args:
        a, b: HWC RGB uint8 images of the same shape.
        border: pixels cropped from every side first (the scale, by convention).

    Returns:
        PSNR in dB (``inf`` for identical images).
    """

    def y(img: NDArray[np.uint8]) -> NDArray[np.float64]:
        return 16.0 + img.astype(np.float64) @ np.asarray(MATLAB_Y) / 255.0

    ya, yb = y(a), y(b)
    if border:
        ya, yb = ya[border:-border, border:-border], yb[border:-border, border:-border]
    mse = float(np.mean((ya - yb) ** 2))
    return math.inf if mse == 0.0 else 10.0 * math.log10(255.0**2 / mse)


@dataclass(frozen=True, slots=True)
class ValidFigure:
    """PSNR-Y of one held-out image: the model against PIL BICUBIC upscaling."""

    image: str
    psnr_y_model: float
    psnr_y_bicubic: float


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
    niqe_losses: tuple[tuple[float, float], ...] = ()
    niqe_wall_s: float = 0.0
    endpoints: tuple[dict[str, torch.Tensor], ...] = ()
    trained_config_sha256: str | None = None
    polish_losses: tuple[tuple[float, float], ...] = ()


class _PatchSampler:
    """Aligned random LR/HR patch pairs with flips and 90-degree rotations."""

    def __init__(self, cfg: TrainConfig, scale: int, *, patch: int, seed: int) -> None:
        self._scale = scale
        self._patch = patch
        self._rng = np.random.default_rng(seed)
        self._pairs: list[tuple[NDArray[np.uint8], NDArray[np.uint8]]] = []
        for name in cfg.train:
            photo = _load_rgb(name)
            for r in cfg.rescales:
                size = (round(photo.width * r), round(photo.height * r))
                src = photo if r == 1.0 else photo.resize(size, Image.Resampling.BICUBIC)
                for blur in cfg.lr_blurs:
                    hr, lr = _pair(src, scale, blur=blur)
                    if min(lr.shape[:2]) >= self._patch:
                        self._pairs.append((hr, lr))
        if not self._pairs:
            raise ConfigError(f"no training image is {patch} LR pixels on its shorter side")
        # Sample images in proportion to their area, so every LR pixel is equally likely.
        areas = np.array([lr.shape[0] * lr.shape[1] for _, lr in self._pairs], dtype=np.float64)
        self._weights = areas / areas.sum()

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One batch: LR (N, 3, p, p) and HR (N, 3, p*s, p*s), float32 in [0, 1]."""
        p, s = self._patch, self._scale
        lrs, hrs = [], []
        for idx in self._rng.choice(len(self._pairs), size=size, p=self._weights):
            hr, lr = self._pairs[idx]
            y = int(self._rng.integers(0, lr.shape[0] - p + 1))
            x = int(self._rng.integers(0, lr.shape[1] - p + 1))
            lp = lr[y : y + p, x : x + p]
            hp = hr[y * s : (y + p) * s, x * s : (x + p) * s]
            k = int(self._rng.integers(0, 4))
            flip = bool(self._rng.integers(0, 2))
            lp, hp = np.rot90(lp, k), np.rot90(hp, k)
            if flip:
                lp, hp = lp[:, ::-1], hp[:, ::-1]
            lrs.append(lp)
            hrs.append(hp)
        lr_t = torch.from_numpy(np.stack(lrs).astype(np.float32) / 255.0).permute(0, 3, 1, 2)
        hr_t = torch.from_numpy(np.stack(hrs).astype(np.float32) / 255.0).permute(0, 3, 1, 2)
        return lr_t.contiguous(), hr_t.contiguous()


def _unsharp(hr: torch.Tensor, *, amount: float, sigma: float) -> torch.Tensor:
    """``hr + amount * (hr - gaussian(hr))`` clamped to [0, 1]; (N, C, H, W) float32."""
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    g = torch.exp(-(t**2) / (2 * sigma**2))
    g = g / g.sum()
    c = hr.shape[1]
    padded = torch.nn.functional.pad(hr, (radius, radius, radius, radius), mode="reflect")
    blur = torch.nn.functional.conv2d(padded, g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    blur = torch.nn.functional.conv2d(blur, g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return (hr + amount * (hr - blur)).clamp(0.0, 1.0)


class _LatticePenalty:
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


def _polish_phase(
    net: torch.nn.Module,
    cfg: TrainConfig,
    phase: PolishPhase,
    model: SRModel,
    bound: structlog.typing.FilteringBoundLogger,
) -> tuple[tuple[float, float], ...]:
    """Fine-tune ``net`` in place: L1 to a frozen copy's outputs on real patches plus
    ``phase.lattice_weight`` x the lattice RMS on smooth ones; the window means of
    (L1 to the copy, lattice RMS)."""
    import copy

    from batchsr.lattice_loss import LatticeProbe, lattice_rms

    info = model.info
    teacher = copy.deepcopy(net).eval()
    sampler = _PatchSampler(cfg, info.scale, patch=cfg.lr_patch, seed=cfg.seed + 5)
    probe = LatticeProbe(
        scale=info.scale, patch=32, channels=info.in_channels, seed=cfg.seed + 4, dark=phase.dark
    )
    net.train()
    optimizer = torch.optim.Adam(net.parameters(), lr=phase.lr)
    windows: list[tuple[float, float]] = []
    acc = np.zeros(2)
    for step in range(1, phase.steps + 1):
        lr_batch, _ = (_as_model_input(t, info.in_channels) for t in sampler.batch(phase.batch))
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


def validate(model: SRModel, names: tuple[str, ...]) -> tuple[ValidFigure, ...]:
    """PSNR-Y (border = scale) of the model and of PIL BICUBIC on held-out images."""
    scale = model.info.scale
    figures = []
    for name in names:
        hr, lr = _pair(_load_rgb(name), scale)
        sr = upscale_rgb(model, lr)
        size = (hr.shape[1], hr.shape[0])
        bicubic = np.asarray(Image.fromarray(lr).resize(size, Image.Resampling.BICUBIC))
        figures.append(
            ValidFigure(
                image=name,
                psnr_y_model=psnr_y(sr, hr, border=scale),
                psnr_y_bicubic=psnr_y(bicubic, hr, border=scale),
            )
        )
    return tuple(figures)


def train(cfg: TrainConfig) -> TrainResult:
    """Train the configured network from a seeded initialisation.

    Returns:
        The trained model (eval mode, CPU) and the run's figures.
    """
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    model = get_arch(cfg.architecture).create(**dict(cfg.hyperparameters))
    net = model.module.train()
    scale, channels = model.info.scale, model.info.in_channels
    if cfg.niqe is not None and cfg.niqe.lr_patch * scale < 2 * NIQE_BLOCK:
        raise ConfigError(
            f"niqe.lr_patch {cfg.niqe.lr_patch} gives {cfg.niqe.lr_patch * scale} px outputs; "
            f"NIQE needs at least {2 * NIQE_BLOCK} (2x2 blocks of {NIQE_BLOCK}): raise it"
        )
    sampler = _PatchSampler(cfg, scale, patch=cfg.lr_patch, seed=cfg.seed)
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=cfg.steps, eta_min=cfg.lr_final
    )
    losses: list[float] = []
    window = 0.0
    lattice = None
    if cfg.lattice is not None:
        lattice = _LatticePenalty(cfg.lattice, model, cfg.seed + 2, cfg.lattice.l1_weight)
    lattice_acc = 0.0
    bound = log.bind(model=cfg.name, steps=cfg.steps)
    t0 = time.perf_counter()
    for step in range(1, cfg.steps + 1):
        lr_batch, hr_batch = (_as_model_input(t, channels) for t in sampler.batch(cfg.batch))
        if cfg.target_sharpen > 0.0:
            hr_batch = _unsharp(hr_batch, amount=cfg.target_sharpen, sigma=cfg.target_sigma)
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
    niqe_losses: tuple[tuple[float, float], ...] = ()
    niqe_wall_s = 0.0
    endpoints: tuple[dict[str, torch.Tensor], ...] = ()
    if cfg.niqe is not None:
        t1 = time.perf_counter()
        start = {k: v.detach().clone() for k, v in net.state_dict().items()}
        if lattice is not None and cfg.lattice is not None:
            lattice.weight = cfg.lattice.weight
        niqe_losses = _niqe_phase(
            net, cfg, cfg.niqe, scale, bound, channels=channels, lattice=lattice
        )
        tuned = {k: v.detach().clone() for k, v in net.state_dict().items()}
        blend = cfg.niqe.blend
        if blend < 1.0:
            net.load_state_dict(blend_weights(start, tuned, blend))
        endpoints = (start, tuned)
        niqe_wall_s = time.perf_counter() - t1
    polish_losses: tuple[tuple[float, float], ...] = ()
    if cfg.polish is not None:
        polish_losses = _polish_phase(net, cfg, cfg.polish, model, bound)
    wall_s = time.perf_counter() - t0
    net.eval()
    figures = validate(model, cfg.valid)
    for fig in figures:
        bound.info(
            "validated",
            image=fig.image,
            psnr_y=round(fig.psnr_y_model, 3),
            psnr_y_bicubic=round(fig.psnr_y_bicubic, 3),
        )
    return TrainResult(
        model=model,
        losses=tuple(losses),
        valid=figures,
        wall_s=wall_s,
        niqe_losses=niqe_losses,
        niqe_wall_s=niqe_wall_s,
        endpoints=endpoints,
        polish_losses=polish_losses,
    )


def _niqe_phase(
    net: torch.nn.Module,
    cfg: TrainConfig,
    phase: NiqePhase,
    scale: int,
    bound: structlog.typing.FilteringBoundLogger,
    *,
    channels: int = 3,
    lattice: _LatticePenalty | None = None,
) -> tuple[tuple[float, float], ...]:
    """Fine-tune ``net`` in place on L1 + ``phase.weight`` x NIQE; the window means."""
    from batchsr.niqe_loss import niqe_per_image

    # Patches big enough to hold several NIQE blocks each, drawn from a stream of their
    # own so that the L1 phase's patches do not depend on whether this phase runs.
    sampler = _PatchSampler(cfg, scale, patch=phase.lr_patch, seed=cfg.seed + 1)
    optimizer = torch.optim.Adam(net.parameters(), lr=phase.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=phase.steps, eta_min=phase.lr_final
    )
    windows: list[tuple[float, float]] = []
    acc = np.zeros(3)
    t0 = time.perf_counter()
    for step in range(1, phase.steps + 1):
        lr_batch, hr_batch = (_as_model_input(t, channels) for t in sampler.batch(phase.batch))
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
        raise ConfigError("--from-endpoints needs a config with a [niqe] phase to blend")
    try:
        l1 = load_file(str(folder / "l1.safetensors"))
        tuned = load_file(str(folder / "tuned.safetensors"))
        run = json.loads((folder / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"{folder}: no saved endpoints ({err}); train with --save-endpoints"
        ) from err
    model = get_arch(cfg.architecture).create(**dict(cfg.hyperparameters))
    blend = cfg.niqe.blend
    model.module.load_state_dict(blend_weights(l1, tuned, blend))
    torch.set_num_threads(cfg.threads)
    polish_losses: tuple[tuple[float, float], ...] = ()
    if cfg.polish is not None:
        bound = log.bind(model=cfg.name)
        polish_losses = _polish_phase(model.module, cfg, cfg.polish, model, bound)
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


def build_model_folder(result: TrainResult, cfg: TrainConfig, out: Path) -> Path:
    """Write a trained model's folder: weights, ONNX, manifest, config, TRAINING.md.

    Files: ``<name>.safetensors`` (the bare network), ``<name>.onnx`` (dynamic batch,
    height and width, checked against torch within 1e-4; with ``cfg.postprocess`` the
    filter is embedded in it), ``manifest.json``, ``train.toml`` (the config) and
    ``TRAINING.md`` (data, licences, figures). With an embedded postprocess the
    safetensors file is not listed as a manifest artifact, because running it alone
    would skip the filter; ``with_filter(load_checkpoint(...), manifest.postprocess)``
    rebuilds the deployed network from it.

    Returns:
        The manifest's path.

    Raises:
        CompileError: the ONNX export fails or differs from torch.
    """
    # The training CLI is an application entry point (like run.py), so it may drive
    # compile/; the zoo itself (batchsr.models) never imports compile.
    import onnxscript

    from batchsr.manifest import file_artifact
    from batchsr.models.postprocess import with_filter
    from compile.model_folder import write_model_folder, write_onnx

    out.mkdir(parents=True, exist_ok=True)
    weights = out / f"{cfg.name}.safetensors"
    save_weights(result.model.module.state_dict(), weights, result.model, cfg)
    onnx_path = out / f"{cfg.name}.onnx"
    shapes, example, opset = cfg.check_shapes, cfg.example_shape, cfg.opset
    bare = write_onnx(result.model, onnx_path, check_shapes=shapes, example=example, opset=opset)
    onnx = bare
    if cfg.postprocess is not None:
        # The deployed file embeds the filter. Its input rounding to 8-bit levels
        # flips where torch and onnxruntime straddle a half level, moving an output
        # by up to sum(|kernel|) / 255; the network itself was checked at 1e-4 above.
        deployed = with_filter(result.model, cfg.postprocess)
        bound = float(abs(kernel_of(cfg.postprocess).as_array()).sum()) / 255.0 + 1e-4
        onnx = write_onnx(
            deployed, onnx_path, check_shapes=shapes, example=example, opset=opset, atol=bound
        )
    # With an embedded filter the bare weights are no artifact: run alone, they skip it.
    more = [file_artifact(weights, "safetensors", onnx.shapes)] if cfg.postprocess is None else []
    (out / "train.toml").write_text(cfg.source, encoding="utf-8")
    (out / "TRAINING.md").write_text(_training_md(result, cfg, bare.max_abs_diff), encoding="utf-8")
    write_model_folder(
        out,
        cfg.name,
        onnx,
        more=more,
        postprocess=cfg.postprocess,
        tools={"onnxscript": onnxscript.__version__},
        notes=(
            f"Trained by batchsr.train (config train.toml, sha256 {cfg.sha256[:12]}) on "
            "openly licensed photos from scikit-image's skimage/data; see TRAINING.md."
        ),
    )
    return out / MANIFEST_NAME


def save_weights(
    state: dict[str, torch.Tensor], path: Path, model: SRModel, cfg: TrainConfig
) -> Path:
    """Write ``state`` as safetensors, tagged with the architecture and the config's digest."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous() for k, v in state.items()}
    meta = {"architecture": model.info.architecture, "config_sha256": cfg.sha256}
    save_file(tensors, str(path), metadata=meta)
    return path


def _training_md(result: TrainResult, cfg: TrainConfig, max_diff: float) -> str:
    info = result.model.info
    lines = [
        f"# {cfg.name}: training record",
        "",
        "Written by `python -m batchsr.train`; regenerate it with",
        f"`python -m batchsr.train --config configs/train-{cfg.name}.toml "
        f"--out models/{cfg.name}`.",
        "",
        f"- architecture: {info.architecture} {dict(info.hyperparameters)}, x{info.scale}, "
        f"{info.color}, receptive-field margin {info.margin} LR pixels",
        f"- parameters: {sum(p.numel() for p in result.model.module.parameters())}",
        f"- seed {cfg.seed}, {cfg.threads} CPU threads, {cfg.steps} steps of batch {cfg.batch}, "
        f"LR patch {cfg.lr_patch} px, HR targets unsharp-masked by {cfg.target_sharpen:g} "
        f"(sigma {cfg.target_sigma:g} px), loss {cfg.loss}, Adam lr {cfg.lr:g} -> {cfg.lr_final:g} "
        "(cosine)",
        *_niqe_md(cfg.niqe, result),
        *_lattice_md(cfg.lattice),
        *(
            [
                f"- then {cfg.polish.steps} polish steps (batchsr.train.PolishPhase): L1 to the "
                f"blended network's own outputs + {cfg.polish.lattice_weight:g} x lattice RMS, "
                f"{cfg.polish.dark:.0%} of the probe patches near-black flats, Adam lr "
                f"{cfg.polish.lr:g}; (L1 to the copy, lattice RMS) per window: "
                + ", ".join(f"({a:.4f}, {b:.4f})" for a, b in result.polish_losses)
            ]
            if cfg.polish is not None
            else []
        ),
        f"- training wall time: {result.wall_s:.0f} s (torch {torch.__version__})",
        f"- ONNX export (opset {cfg.opset}, dynamic N/H/W): max |onnxruntime - torch| = "
        f"{max_diff:.2e} on {list(cfg.check_shapes)}",
        f"- default postprocess embedded in the ONNX export: {cfg.postprocess or 'none'}",
        f"- config sha256: {cfg.sha256}",
        *(
            [
                f"- weights blended by `--from-endpoints` from the endpoints a run of config "
                f"sha256 {result.trained_config_sha256} saved (the same model, data, optim, "
                "niqe (its blend aside) and lattice settings; training is seeded)"
            ]
            if result.trained_config_sha256 and result.trained_config_sha256 != cfg.sha256
            else []
        ),
        "",
        "## Data",
        "",
        "Photos shipped inside the scikit-image wheel (`skimage/data`, scikit-image "
        "0.26); licences as stated in `skimage/data/_fetchers.py`. LR = PIL BICUBIC x"
        f"{info.scale} downscale rounded to uint8. Each training photo is also used "
        f"downscaled by {list(cfg.rescales)}, and each is paired with LR made after a "
        f"Gaussian blur of sigma {list(cfg.lr_blurs)} HR px. Gray photos are used as RGB.",
        "",
        "| image | role | licence |",
        "| --- | --- | --- |",
        *[f"| {n} | train | {TRAINING_LICENCES[n]} |" for n in cfg.train],
        *[f"| {n} | validation (held out) | {TRAINING_LICENCES[n]} |" for n in cfg.valid],
        "",
        "scikit-learn's and matplotlib's sample images are never trained on: they are "
        "kept for held-out evaluation (benchmarks/quality.py).",
        "",
        "## Figures",
        "",
        f"Mean L1 loss per {cfg.log_every}-step window: "
        + ", ".join(f"{v:.4f}" for v in result.losses),
        "",
        *(
            [
                f"NIQE phase, mean (L1, per-patch NIQE) per {cfg.log_every}-step window: "
                + ", ".join(f"({a:.4f}, {b:.3f})" for a, b in result.niqe_losses),
                "",
            ]
            if result.niqe_losses
            else []
        ),
        f"PSNR-Y (MATLAB BT.601 Y, {info.scale}-pixel border cropped) on the held-out photos:",
        "",
        "| image | model (dB) | PIL bicubic (dB) |",
        "| --- | --- | --- |",
        *[f"| {f.image} | {f.psnr_y_model:.3f} | {f.psnr_y_bicubic:.3f} |" for f in result.valid],
        "",
    ]
    return "\n".join(lines)


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


def main(argv: list[str] | None = None) -> int:
    """CLI: train, and write the model folder unless ``--no-export`` is given."""
    parser = argparse.ArgumentParser(prog="python -m batchsr.train", description=__doc__)
    parser.add_argument("--config", type=Path, required=True, help="training TOML")
    parser.add_argument("--out", type=Path, help="model folder (default: models/<name>)")
    parser.add_argument("--steps", type=int, help="override optim.steps (for quick trials)")
    parser.add_argument("--no-export", action="store_true", help="train and validate only")
    parser.add_argument(
        "--save-endpoints",
        type=Path,
        metavar="DIR",
        help="also write the NIQE phase's L1 and tuned weights (l1.safetensors, "
        "tuned.safetensors) and the run's figures (run.json) to DIR, to measure other "
        "blends without training again",
    )
    parser.add_argument(
        "--from-endpoints",
        type=Path,
        metavar="DIR",
        help="do not train: blend the endpoints a run of this config saved in DIR "
        "(--save-endpoints) by the config's niqe.blend, validate and write the folder",
    )
    args = parser.parse_args(argv)
    cfg = load_train_config(args.config)
    if args.steps is not None:
        cfg = replace(cfg, steps=args.steps)
    result = train(cfg) if args.from_endpoints is None else from_endpoints(cfg, args.from_endpoints)
    summary: dict[str, Any] = {
        "wall_s": round(result.wall_s, 1),
        "final_loss": round(result.losses[-1], 5),
        "valid": {
            f.image: [round(f.psnr_y_model, 3), round(f.psnr_y_bicubic, 3)] for f in result.valid
        },
    }
    if args.save_endpoints is not None and result.endpoints:
        args.save_endpoints.mkdir(parents=True, exist_ok=True)
        for label, state in zip(("l1", "tuned"), result.endpoints, strict=True):
            save_weights(state, args.save_endpoints / f"{label}.safetensors", result.model, cfg)
        figures = {
            "config_sha256": cfg.sha256,
            "losses": result.losses,
            "niqe_losses": result.niqe_losses,
            "wall_s": result.wall_s,
            "niqe_wall_s": result.niqe_wall_s,
        }
        (args.save_endpoints / "run.json").write_text(json.dumps(figures, indent=1) + "\n")
    if not args.no_export:
        out = args.out or Path("models", cfg.name)
        summary["manifest"] = str(build_model_folder(result, cfg, out))
    print(json.dumps(summary))  # noqa: T201 - the CLI's one result line
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
