"""RRDBNet in Real-ESRGAN's key layout (``conv_first.weight``,
``body.N.rdb1.conv1.weight``, ``conv_body``, ``conv_up1``, ``conv_up2``, ``conv_hr``,
``conv_last``); ``params_ema`` wrappers are unwrapped by ``canonicalize``.

The scale follows from ``conv_first``'s input channels: ``in`` for x4, ``4 * in`` for
x2 (pixel-unshuffled input), ``16 * in`` for x1; ``in`` is taken equal to
``conv_last``'s output channels, as in every published model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from batchsr.errors import CheckpointError
from batchsr.models.arch import Arch, StateDict, check_scale, has_all, sequence_indices, shape_of
from batchsr.models.info import Hyper, ModelInfo
from batchsr.models.rrdbnet._net import RRDBNet

__all__ = ["RRDBNET_ARCH", "RRDBNet"]


def _detect(sd: StateDict) -> bool:
    return has_all(sd, "conv_first.weight", "body.0.rdb1.conv1.weight", "conv_up1.weight")


def _read(sd: StateDict, scale: int | None) -> dict[str, Hyper]:
    num_feat, first_in, _, _ = shape_of(sd, "conv_first.weight")
    num_out = shape_of(sd, "conv_last.weight")[0]
    derived = {1: 4, 4: 2, 16: 1}.get(first_in // num_out if first_in % num_out == 0 else 0)
    if derived is None:
        raise CheckpointError(
            f"conv_first.weight takes {first_in} channels, not 1, 4 or 16 times conv_last's "
            f"{num_out}; this RRDBNet variant is not supported"
        )
    return {
        "num_in_ch": num_out,
        "num_out_ch": num_out,
        "scale": check_scale(derived, scale, key="conv_first.weight"),
        "num_feat": num_feat,
        "num_block": len(sequence_indices(sd, "body.")),
        "num_grow_ch": shape_of(sd, "body.0.rdb1.conv1.weight")[0],
    }


def _describe(hp: Mapping[str, Hyper]) -> ModelInfo:
    full = {
        "num_in_ch": 3,
        "num_out_ch": 3,
        "scale": 4,
        "num_feat": 64,
        "num_block": 23,
        "num_grow_ch": 32,
    }
    full.update({k: int(v) for k, v in hp.items()})
    scale, blocks = full["scale"], full["num_block"]
    unshuffle = {4: 1, 2: 2, 1: 4}[scale]
    # In the body's resolution: conv_first (1) + 3 dense blocks x 5 convs per RRDB +
    # conv_body (1); then conv_up1 at 2x (1/2) and conv_up2, conv_hr, conv_last at 4x
    # (1/4 each). One body pixel spans `unshuffle` input pixels, and an unshuffled
    # input can straddle one more.
    body_radius = 1 + 15 * blocks + 1 + 1 / 2 + 3 / 4
    margin = math.ceil(body_radius * unshuffle) + (unshuffle - 1)
    return ModelInfo(
        architecture="rrdbnet",
        scale=scale,
        in_channels=full["num_in_ch"],
        out_channels=full["num_out_ch"],
        margin=margin,
        size_multiple=unshuffle,
        hyperparameters=tuple(sorted(full.items())),
        tags=(f"x{scale}", f"{full['num_feat']}nf", f"{blocks}nb"),
    )


RRDBNET_ARCH = Arch(
    id="rrdbnet",
    name="RRDBNet (Real-ESRGAN layout)",
    detect=_detect,
    read_hyperparameters=_read,
    describe=_describe,
    network=RRDBNet,
)
