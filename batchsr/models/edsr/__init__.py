"""EDSR in torchSR's key layout (``sub_mean.weight``, ``head.0.weight``,
``body.N.body.0.weight``, ``tail.0.0.weight``, ``tail.1.weight``, ``add_mean.weight``).

Variants: baseline (16 blocks, 64 features, residual scale 1.0) and full (32 blocks,
256 features, residual scale 0.1); x2, x3, x4. The residual scale is not stored in any
tensor: it is 0.1 for models of 256 or more features (as EDSR's paper and torchSR's
``edsr_r32f256``), else 1.0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from batchsr.models.arch import (
    Arch,
    StateDict,
    check_scale,
    conv_index_chain,
    has_all,
    sequence_indices,
    shape_of,
)
from batchsr.models.edsr._net import EDSR
from batchsr.models.info import Hyper, ModelInfo

__all__ = ["EDSR", "EDSR_ARCH", "default_res_scale"]


def default_res_scale(n_feats: int) -> float:
    """The residual scale torchSR's EDSR variants use for ``n_feats`` features."""
    return 0.1 if n_feats >= 256 else 1.0


def _detect(sd: StateDict) -> bool:
    return has_all(
        sd, "sub_mean.weight", "head.0.weight", "body.0.body.0.weight", "tail.0.0.weight"
    )


def _read(sd: StateDict, scale: int | None) -> dict[str, Hyper]:
    n_feats = shape_of(sd, "head.0.weight")[0]
    ups = conv_index_chain(sd, "tail.0.")
    first = shape_of(sd, f"tail.0.{ups[0]}.weight")[0]
    derived = 3 if first == 9 * n_feats else 2 ** len(ups)
    # body holds the residual blocks plus one final conv (body.n_resblocks.weight).
    n_resblocks = len(sequence_indices(sd, "body.")) - 1
    return {
        "n_resblocks": n_resblocks,
        "n_feats": n_feats,
        "scale": check_scale(derived, scale, key="tail.0"),
        "res_scale": default_res_scale(n_feats),
    }


def _describe(hp: Mapping[str, Hyper]) -> ModelInfo:
    blocks, feats = int(hp.get("n_resblocks", 16)), int(hp.get("n_feats", 64))
    scale = int(hp.get("scale", 4))
    res_scale = float(hp.get("res_scale", default_res_scale(feats)))
    # head (1) + two 3x3 convs per block + the body's last conv, in low resolution;
    # each upsampler conv adds 1 / its resolution and the tail conv 1 / scale.
    ups = [1] if scale == 3 else [2**i for i in range(int(math.log2(scale)))]
    radius = 1 + 2 * blocks + 1 + sum(1 / r for r in ups) + 1 / scale
    variant = {(16, 64): "baseline", (32, 256): "full"}.get((blocks, feats), f"r{blocks}f{feats}")
    return ModelInfo(
        architecture="edsr",
        scale=scale,
        in_channels=3,
        out_channels=3,
        margin=math.ceil(radius),
        hyperparameters=tuple(
            sorted(
                {
                    "n_resblocks": blocks,
                    "n_feats": feats,
                    "scale": scale,
                    "res_scale": res_scale,
                }.items()
            )
        ),
        tags=(f"x{scale}", variant),
    )


EDSR_ARCH = Arch(
    id="edsr",
    name="EDSR (torchSR layout)",
    detect=_detect,
    read_hyperparameters=_read,
    describe=_describe,
    network=EDSR,
)
