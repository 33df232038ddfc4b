"""ESPCN-Res, our ESPCN variant: ESPCN's keys plus the PReLU slopes
(``feature_maps.1.weight``, ``feature_maps.3.weight``), which tell it apart.

Same hyperparameters and shapes as ESPCN (see :mod:`batchsr.models.espcn`), so they are
read the same way; the bicubic skip is fixed by the scale and is not in the state dict.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from batchsr.models.arch import Arch, StateDict, has_all
from batchsr.models.espcn import ESPCN_ARCH
from batchsr.models.espcn_res._net import SKIP_RADIUS, ESPCNRes, bicubic_phase_kernel
from batchsr.models.info import Hyper, ModelInfo

__all__ = ["ESPCN_RES_ARCH", "SKIP_RADIUS", "ESPCNRes", "bicubic_phase_kernel"]


def _detect(sd: StateDict) -> bool:
    return ESPCN_ARCH.detect(sd) and has_all(sd, "feature_maps.1.weight", "feature_maps.3.weight")


def _read(sd: StateDict, scale: int | None) -> dict[str, Hyper]:
    hp = ESPCN_ARCH.read_hyperparameters(sd, scale)
    return {"in_channels": hp["in_channels"], "channels": hp["channels"], "upscale": hp["upscale"]}


def _describe(hp: Mapping[str, Hyper]) -> ModelInfo:
    in_ch = int(hp["in_channels"])
    base = ESPCN_ARCH.describe({**hp, "out_channels": in_ch})
    return dataclasses.replace(
        base,
        architecture="espcn_res",
        hyperparameters=tuple((k, v) for k, v in base.hyperparameters if k != "out_channels"),
        tags=(*base.tags, "residual"),
    )


ESPCN_RES_ARCH = Arch(
    id="espcn_res",
    name="ESPCN-Res (batchsr: PReLU, residual over bicubic)",
    detect=_detect,
    read_hyperparameters=_read,
    describe=_describe,
    network=ESPCNRes,
)
