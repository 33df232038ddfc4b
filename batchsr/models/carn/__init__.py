"""CARN and CARN-M in torchSR's key layout (``entry.weight``, ``b1.b1.body.0.weight``,
``c1.body.0.weight``, ``upsample.up4.body.0.weight``, ``exit.weight``,
``sub_mean.shifter.weight``).

torchSR publishes one multi-scale checkpoint per model (``up2``, ``up3``, ``up4`` all
present), so the scale is the caller's choice: x4, the contest's, unless asked
otherwise. A single-scale layout (``upsample.up.body``) records its scale in shapes.
CARN-M is told apart by its shared block (``b1.b1`` but no ``b1.b2``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from batchsr.errors import CheckpointError
from batchsr.models.arch import Arch, StateDict, check_scale, conv_index_chain, has_all, shape_of
from batchsr.models.carn._net import CARN
from batchsr.models.info import Hyper, ModelInfo

__all__ = ["CARN", "CARN_ARCH", "CARN_M_ARCH"]

_KEYS = ("entry.weight", "b1.b1.body.0.weight", "c1.body.0.weight", "exit.weight")
DEFAULT_SCALE = 4


def _is_carn(sd: StateDict) -> bool:
    return has_all(sd, *_KEYS)


def _detect_carn(sd: StateDict) -> bool:
    return _is_carn(sd) and "b1.b2.body.0.weight" in sd


def _detect_carn_m(sd: StateDict) -> bool:
    return _is_carn(sd) and "b1.b2.body.0.weight" not in sd


def _read(sd: StateDict, scale: int | None) -> dict[str, Hyper]:
    num_feat = shape_of(sd, "entry.weight")[0]
    mobile = "b1.b2.body.0.weight" not in sd
    group = num_feat // shape_of(sd, "b1.b1.body.0.weight")[1]
    multi_scale = "upsample.up4.body.0.weight" in sd
    if multi_scale:
        chosen = DEFAULT_SCALE if scale is None else scale
        if chosen not in (2, 3, 4):
            raise CheckpointError(f"a multi-scale CARN runs x2, x3 or x4, not x{chosen}")
    else:
        convs = conv_index_chain(sd, "upsample.up.body.")
        if not convs:
            raise CheckpointError("CARN checkpoint has no upsample.up4 or upsample.up convs")
        first = shape_of(sd, f"upsample.up.body.{convs[0]}.weight")[0]
        derived = 3 if first == 9 * num_feat else 2 ** len(convs)
        chosen = check_scale(derived, scale, key="upsample.up.body")
    return {
        "scale": chosen,
        "multi_scale": multi_scale,
        "group": group,
        "mobile": mobile,
        "num_feat": num_feat,
    }


def _describe(hp: Mapping[str, Hyper]) -> ModelInfo:
    scale = int(hp.get("scale", DEFAULT_SCALE))
    mobile = bool(hp.get("mobile", False))
    full: dict[str, Hyper] = {
        "scale": scale,
        "multi_scale": bool(hp.get("multi_scale", True)),
        "group": int(hp.get("group", 4 if mobile else 1)),
        "mobile": mobile,
        "num_feat": int(hp.get("num_feat", 64)),
    }
    # entry (1) + 3 cascades x 3 units x two 3x3 convs (18) in low resolution; each
    # upsampler conv then adds 1 / (its resolution) and the exit conv 1 / scale.
    up_steps = [1] if scale == 3 else [2**i for i in range(int(math.log2(scale)))]
    radius = 19 + sum(1 / r for r in up_steps) + 1 / scale
    arch = "carn_m" if mobile else "carn"
    return ModelInfo(
        architecture=arch,
        scale=scale,
        in_channels=3,
        out_channels=3,
        margin=math.ceil(radius),
        hyperparameters=tuple(sorted(full.items())),
        tags=(
            f"x{scale}",
            f"{full['num_feat']}nf",
            *(("multi-scale",) if full["multi_scale"] else ()),
        ),
    )


CARN_ARCH = Arch(
    id="carn",
    name="CARN (torchSR layout)",
    detect=_detect_carn,
    read_hyperparameters=_read,
    describe=_describe,
    network=CARN,
    scale_from_shapes=False,
)

CARN_M_ARCH = Arch(
    id="carn_m",
    name="CARN-M (torchSR layout)",
    detect=_detect_carn_m,
    read_hyperparameters=_read,
    describe=lambda hp: _describe({"mobile": True, **hp}),
    network=CARN,
    scale_from_shapes=False,
)
