"""How an image is extended past its edges before a model sees it.

A network pads each convolution with zeros, so without context its outermost output
pixels come out as a bright/dark frame. Extending the image first, by the model's
receptive-field margin, and cropping that much off the output gives every border pixel
context drawn from the image itself, as Real-ESRGAN's ``pre_pad`` does.

``replicate`` repeats the edge pixel; ``reflect`` mirrors the image about it; ``zero``
pads black (the network's own behaviour, kept for comparison). ``replicate`` is the
default: on held-out photos it reproduces the true border best and its frame energy is
the closest to the interior's (benchmarks/quality.py, the ``border`` columns).
"""

from __future__ import annotations

from typing import Final, Literal

import numpy as np
from numpy.typing import NDArray

from batchsr.vocab import BorderMode

__all__ = ["DEFAULT_BORDER", "extend"]

DEFAULT_BORDER: Final[BorderMode] = "replicate"
_NP_PAD: Final[dict[BorderMode, Literal["edge", "reflect", "constant"]]] = {
    "replicate": "edge",
    "reflect": "reflect",
    "zero": "constant",
}


def extend(
    chw: NDArray[np.float32], pads: tuple[tuple[int, int], tuple[int, int]], mode: BorderMode
) -> NDArray[np.float32]:
    """``chw`` (CxHxW) extended by ``((top, bottom), (left, right))`` pixels; the same
    array when every pad is 0. ``reflect`` wider than the image reflects repeatedly."""
    if not any(p for pair in pads for p in pair):
        return chw
    return np.pad(chw, ((0, 0), *pads), mode=_NP_PAD[mode])
