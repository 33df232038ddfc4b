"""ESPCN in the ESPCN-PyTorch key layout (``feature_maps.0.weight``, ``feature_maps.2.weight``,
``sub_pixel.0.weight``).

ESPCN-PyTorch's checkpoints are Y-only (1 channel in and out); our default is RGB
(3 in, 3 out). The layout cannot tell input from output channels apart, so detection
assumes ``out_channels == in_channels``, which holds for both.
"""

from __future__ import annotations

from collections.abc import Mapping

from batchsr.errors import CheckpointError
from batchsr.models.arch import Arch, StateDict, has_all, scale_from_channels, shape_of
from batchsr.models.espcn._net import ESPCN
from batchsr.models.info import Hyper, ModelInfo

__all__ = ["ESPCN", "ESPCN_ARCH", "MARGIN"]

# Receptive-field radius in LR pixels: 5x5, 3x3, 3x3 convolutions.
MARGIN = 4

_KEYS = ("feature_maps.0.weight", "feature_maps.2.weight", "sub_pixel.0.weight")


def _detect(sd: StateDict) -> bool:
    return has_all(sd, *_KEYS)


def _read(sd: StateDict) -> dict[str, Hyper]:
    channels, in_channels, _, _ = shape_of(sd, "feature_maps.0.weight")
    hidden = shape_of(sd, "feature_maps.2.weight")[0]
    if hidden != channels // 2:
        raise CheckpointError(
            f"feature_maps.2.weight has {hidden} output channels, expected channels // 2 = "
            f"{channels // 2} as in ESPCN-PyTorch; this ESPCN variant is not supported"
        )
    sub = shape_of(sd, "sub_pixel.0.weight")[0]
    upscale = scale_from_channels(sub, in_channels, key="sub_pixel.0.weight")
    return {
        "in_channels": in_channels,
        "out_channels": in_channels,
        "channels": channels,
        "upscale": upscale,
    }


def _describe(hp: Mapping[str, Hyper]) -> ModelInfo:
    in_ch, out_ch = int(hp["in_channels"]), int(hp["out_channels"])
    channels, upscale = int(hp.get("channels", 64)), int(hp["upscale"])
    return ModelInfo(
        architecture="espcn",
        scale=upscale,
        in_channels=in_ch,
        out_channels=out_ch,
        margin=MARGIN,
        color="Y" if in_ch == 1 else "RGB",
        hyperparameters=tuple(
            sorted(
                {
                    "in_channels": in_ch,
                    "out_channels": out_ch,
                    "channels": channels,
                    "upscale": upscale,
                }.items()
            )
        ),
        tags=(f"x{upscale}", f"{channels}nf"),
    )


ESPCN_ARCH = Arch(
    id="espcn",
    name="ESPCN (ESPCN-PyTorch layout)",
    detect=_detect,
    read_hyperparameters=_read,
    describe=_describe,
    network=ESPCN,
)
