"""FSRCNN in the FSRCNN-pytorch (yjn870) key layout: ``first_part.0.weight``,
``mid_part.N.weight``, ``last_part.weight`` (a ConvTranspose2d).

The transposed conv's stride is the scale and is not stored in any tensor, so the
loader needs the scale from the caller, the safetensors metadata or the file name
(the public files are named ``fsrcnn_x2.pth``, ``fsrcnn_x3.pth``, ``fsrcnn_x4.pth``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from batchsr.errors import CheckpointError
from batchsr.models.arch import Arch, StateDict, conv_index_chain, has_all, shape_of
from batchsr.models.fsrcnn._net import FSRCNN
from batchsr.models.info import Hyper, ModelInfo

__all__ = ["FSRCNN", "FSRCNN_ARCH"]


def _detect(sd: StateDict) -> bool:
    return has_all(sd, "first_part.0.weight", "mid_part.0.weight", "last_part.weight")


def _read(sd: StateDict, scale: int | None) -> dict[str, Hyper]:
    if scale is None:
        raise CheckpointError(
            "an FSRCNN checkpoint does not record its scale (the transposed conv's "
            "stride); pass the scale explicitly or name the file with x2/x3/x4"
        )
    d, channels, _, _ = shape_of(sd, "first_part.0.weight")
    s = shape_of(sd, "mid_part.0.weight")[0]
    convs = conv_index_chain(sd, "mid_part.")
    return {"channels": channels, "d": d, "s": s, "m": len(convs) - 2, "upscale": scale}


def _describe(hp: Mapping[str, Hyper]) -> ModelInfo:
    channels, d, s, m = (
        int(hp.get(k, v)) for k, v in (("channels", 1), ("d", 56), ("s", 12), ("m", 4))
    )
    upscale = int(hp["upscale"])
    # 5x5 first conv (2) + m 3x3 convs (m) + the 9x9 transposed conv, whose radius of
    # 4 output pixels reaches ceil(4 / upscale) input pixels.
    margin = 2 + m + math.ceil(4 / upscale)
    return ModelInfo(
        architecture="fsrcnn",
        scale=upscale,
        in_channels=channels,
        out_channels=channels,
        margin=margin,
        color="Y" if channels == 1 else "RGB",
        hyperparameters=tuple(
            sorted({"channels": channels, "d": d, "s": s, "m": m, "upscale": upscale}.items())
        ),
        tags=(f"x{upscale}", f"d{d}", f"s{s}", f"m{m}"),
    )


FSRCNN_ARCH = Arch(
    id="fsrcnn",
    name="FSRCNN (FSRCNN-pytorch layout)",
    detect=_detect,
    read_hyperparameters=_read,
    describe=_describe,
    network=FSRCNN,
    scale_from_shapes=False,
)
