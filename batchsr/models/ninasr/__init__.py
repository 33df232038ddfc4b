"""NinaSR in torchSR's key layout (``head.1.weight``, ``body.N.body.0.weight``,
``body.N.body.2.body.1.weight`` for the attention, ``tail.0.weight``).

Variants: b0 (10 blocks, 16 features), b1 (26, 32), b2 (84, 56); x2, x3, x4, x8.

Tiling: the local attention averages 31x31 windows on a fixed 16-pixel grid, so each
block reaches 30 pixels and the result depends on the tile's alignment to that grid.
The margin below bounds the receptive field, but a tiled result equals whole-image
inference only near tile cores far from image borders with 16-aligned tiles; the tag
``tiling-approximate`` says so.
"""

from __future__ import annotations

from collections.abc import Mapping

from batchsr.models.arch import (
    Arch,
    StateDict,
    check_scale,
    has_all,
    scale_from_channels,
    sequence_indices,
    shape_of,
)
from batchsr.models.info import Hyper, ModelInfo
from batchsr.models.ninasr._net import ATTENTION_STRIDE, NinaSR

__all__ = ["NINASR_ARCH", "VARIANTS", "NinaSR"]

VARIANTS: dict[str, tuple[int, int]] = {"b0": (10, 16), "b1": (26, 32), "b2": (84, 56)}


def _detect(sd: StateDict) -> bool:
    return has_all(sd, "head.1.weight", "body.0.body.2.body.1.weight", "tail.0.weight")


def _read(sd: StateDict, scale: int | None) -> dict[str, Hyper]:
    n_feats = shape_of(sd, "head.1.weight")[0]
    mid = shape_of(sd, "body.0.body.0.weight")[0]
    upscale = scale_from_channels(shape_of(sd, "tail.0.weight")[0], 3, key="tail.0.weight")
    return {
        "n_resblocks": len(sequence_indices(sd, "body.")),
        "n_feats": n_feats,
        "scale": check_scale(upscale, scale, key="tail.0.weight"),
        "expansion": mid / n_feats,
    }


def _describe(hp: Mapping[str, Hyper]) -> ModelInfo:
    blocks, feats, scale = int(hp["n_resblocks"]), int(hp["n_feats"]), int(hp["scale"])
    expansion = float(hp.get("expansion", 2.0))
    variant = next((k for k, v in VARIANTS.items() if v == (blocks, feats)), None)
    # head conv (1) + per block: conv (1) + attention window reach (2 * stride - 2)
    # + conv (1); tail conv (1).
    margin = 1 + blocks * (2 + 2 * ATTENTION_STRIDE - 2) + 1
    return ModelInfo(
        architecture="ninasr",
        scale=scale,
        in_channels=3,
        out_channels=3,
        margin=margin,
        hyperparameters=tuple(
            sorted(
                {
                    "n_resblocks": blocks,
                    "n_feats": feats,
                    "scale": scale,
                    "expansion": expansion,
                }.items()
            )
        ),
        tags=(f"x{scale}", variant or f"r{blocks}f{feats}", "tiling-approximate"),
    )


NINASR_ARCH = Arch(
    id="ninasr",
    name="NinaSR (torchSR layout)",
    detect=_detect,
    read_hyperparameters=_read,
    describe=_describe,
    network=NinaSR,
)
