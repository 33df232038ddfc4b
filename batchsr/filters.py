"""The seed's sharpening postprocess: PIL's 3x3 kernel filters, on the CPU or embedded.

The seed's best submission ran PIL's EDGE_ENHANCE on each stitched SR image. The same
kernels can instead be appended to the exported model as a fixed depthwise
convolution (``batchsr.models.postprocess.with_filter``), which costs a TPU almost
nothing. The two agree within 1 grey level away from the image border (PIL leaves
the outermost pixels unfiltered; the embedded conv pads them by replication).

This module needs only numpy and PIL, so the CPU path never imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageFilter

from batchsr.errors import ConfigError
from batchsr.vocab import FILTER_NAMES

__all__ = ["Kernel3x3", "apply_filter", "kernel_of"]


@dataclass(frozen=True, slots=True)
class Kernel3x3:
    """A PIL kernel filter as arithmetic on values in [0, 1].

    Attributes:
        weights: 3x3 float64 weights, already divided by PIL's ``scale``; row-major,
            rows top to bottom, as PIL lists them.
        offset: added after the weighted sum, in [0, 1] units (PIL's offset / 255).
    """

    weights: tuple[tuple[float, float, float], ...]
    offset: float

    def as_array(self) -> NDArray[np.float32]:
        """The weights as a float32 (3, 3) array."""
        return np.asarray(self.weights, dtype=np.float32)


def _pil_filter(name: str) -> ImageFilter.Kernel:
    if name not in FILTER_NAMES:
        raise ConfigError(f"unknown filter {name!r}; choose one of {', '.join(FILTER_NAMES)}")
    return getattr(ImageFilter, name)


def kernel_of(name: str) -> Kernel3x3:
    """The kernel of a PIL filter, read from PIL itself so the two paths cannot drift.

    Raises:
        ConfigError: ``name`` is not one of :data:`FILTER_NAMES`.
    """
    size, scale, offset, kernel = _pil_filter(name).filterargs
    if tuple(size) != (3, 3):
        raise ConfigError(f"filter {name} is {size}, not 3x3")
    w = [float(k) / float(scale) for k in kernel]
    rows = ((w[0], w[1], w[2]), (w[3], w[4], w[5]), (w[6], w[7], w[8]))
    return Kernel3x3(weights=rows, offset=float(offset) / 255.0)


def apply_filter(rgb: NDArray[np.uint8], name: str) -> NDArray[np.uint8]:
    """Run a PIL filter on an image, as the seed did after stitching.

    Args:
        rgb: HWC RGB uint8 image.
        name: one of :data:`FILTER_NAMES`.

    Returns:
        A new HWC RGB uint8 image of the same shape.

    Raises:
        ConfigError: unknown filter name.
    """
    flt = _pil_filter(name)
    return np.asarray(Image.fromarray(rgb, mode="RGB").filter(flt))
