"""Train a zoo model x4 on openly licensed photos shipped inside the scikit-image wheel.

``python -m batchsr.train --config configs/train-espcn.toml [--out models/espcn]``
trains (seeded, reproducible on the same thread count), then writes the model folder:
weights as safetensors, the ONNX export checked against torch, ``manifest.json``,
the training config and ``TRAINING.md`` with the data licences and the figures.

Pairs are made as the contest's inputs were: the low-resolution image is a PIL BICUBIC
x4 downscale of the high-resolution photo, rounded to uint8.
"""

# The modules, in the order they build on each other: licences (the photos a config
# may name), config (TrainConfig and its TOML loading), data (pairs and patches),
# validate (PSNR-Y figures), phases and loop (training), report (TRAINING.md), folder
# (the model folder, written through compile/), __main__ (the CLI).

from __future__ import annotations

from batchsr.train.config import (
    LatticeTerm,
    NiqePhase,
    PolishPhase,
    TrainConfig,
    load_train_config,
)
from batchsr.train.data import skimage_data_dir
from batchsr.train.folder import build_model_folder
from batchsr.train.licences import TRAINING_LICENCES
from batchsr.train.loop import TrainResult, blend_weights, from_endpoints, train
from batchsr.train.validate import ValidFigure, psnr_y, upscale_rgb, validate

__all__ = [
    "TRAINING_LICENCES",
    "LatticeTerm",
    "NiqePhase",
    "PolishPhase",
    "TrainConfig",
    "TrainResult",
    "ValidFigure",
    "blend_weights",
    "build_model_folder",
    "from_endpoints",
    "load_train_config",
    "psnr_y",
    "skimage_data_dir",
    "train",
    "upscale_rgb",
    "validate",
]
