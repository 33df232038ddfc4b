"""SRVGGNetCompact in Real-ESRGAN's key layout: ``body.0.weight`` (first conv),
``body.1.weight`` (PReLU, 1-D), ..., last ``body.N.weight`` with ``out * scale**2``
output channels.

Only the PReLU variant is detected: ReLU/LeakyReLU variants leave gaps in the
``body.N`` indices with no tensors to read, and every published compact model uses
PReLU. Output channels are assumed equal to input channels (true of the published
models), which fixes the scale from the last conv.
"""

from __future__ import annotations

from collections.abc import Mapping

from batchsr.errors import CheckpointError
from batchsr.models.arch import (
    Arch,
    StateDict,
    check_scale,
    conv_index_chain,
    scale_from_channels,
    shape_of,
)
from batchsr.models.info import Hyper, ModelInfo
from batchsr.models.srvgg._net import SRVGGNetCompact

__all__ = ["SRVGG_ARCH", "SRVGGNetCompact"]


def _detect(sd: StateDict) -> bool:
    first, act = sd.get("body.0.weight"), sd.get("body.1.weight")
    return first is not None and act is not None and first.dim() == 4 and act.dim() == 1


def _read(sd: StateDict, scale: int | None) -> dict[str, Hyper]:
    convs = conv_index_chain(sd, "body.")
    if convs != list(range(0, 2 * len(convs), 2)):
        raise CheckpointError(
            f"SRVGGNetCompact convs at body indices {convs[:6]}..., expected every other "
            "index (conv, PReLU, conv, ...); only the PReLU variant is supported"
        )
    num_feat, in_channels, _, _ = shape_of(sd, "body.0.weight")
    last = f"body.{convs[-1]}.weight"
    upscale = scale_from_channels(shape_of(sd, last)[0], in_channels, key=last)
    check_scale(upscale, scale, key=last)
    return {
        "in_channels": in_channels,
        "out_channels": in_channels,
        "num_feat": num_feat,
        "num_conv": len(convs) - 2,
        "upscale": upscale,
    }


def _describe(hp: Mapping[str, Hyper]) -> ModelInfo:
    full = {"in_channels": 3, "out_channels": 3, "num_feat": 64, "num_conv": 16, "upscale": 4}
    full.update({k: int(v) for k, v in hp.items()})
    return ModelInfo(
        architecture="srvgg",
        scale=full["upscale"],
        in_channels=full["in_channels"],
        out_channels=full["out_channels"],
        # num_conv + 2 convs of 3x3 in low resolution; the nearest base adds nothing.
        margin=full["num_conv"] + 2,
        hyperparameters=tuple(sorted(full.items())),
        tags=(f"x{full['upscale']}", f"{full['num_feat']}nf", f"{full['num_conv']}nc"),
    )


SRVGG_ARCH = Arch(
    id="srvgg",
    name="SRVGGNetCompact (Real-ESRGAN layout)",
    detect=_detect,
    read_hyperparameters=_read,
    describe=_describe,
    network=SRVGGNetCompact,
)
