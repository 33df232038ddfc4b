"""The facts of one super-resolution model, in one frozen record.

The tiler, the engines and ``compile/`` read these instead of working the scale or
the tile margin out again from command-line flags.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from batchsr.vocab import Color

__all__ = ["Hyper", "ModelInfo"]

# A hyperparameter value as read off a state dict's shapes.
Hyper = int | float | bool | str


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What a built network is and what it needs from its input.

    Attributes:
        architecture: zoo architecture id (``espcn``, ``fsrcnn``, ``carn``, ...).
        scale: output height and width over input height and width.
        in_channels: input channels (3 for RGB, 1 for Y-only models).
        out_channels: output channels.
        margin: receptive-field radius in input (low-resolution) pixels: a tile read
            with at least this much context on every side gives exactly the pixels
            whole-image inference gives (for networks with a global mean or an
            unbounded receptive field this is a practical bound, see ``tags``).
        size_multiple: input height and width must be multiples of this.
        input_range: the value range the network expects and returns.
        color: ``RGB`` or ``Y``: what the channels hold.
        hyperparameters: the keyword arguments that rebuild the network, sorted by
            name; read off a state dict's tensor shapes, never from a side file.
        tags: short descriptive labels (``64nf``, ``23nb``, ``x4``), for logs and listings.
    """

    architecture: str
    scale: int
    in_channels: int
    out_channels: int
    margin: int
    size_multiple: int = 1
    input_range: tuple[float, float] = (0.0, 1.0)
    color: Color = "RGB"
    hyperparameters: tuple[tuple[str, Hyper], ...] = field(default=())
    tags: tuple[str, ...] = field(default=())

    def kwargs(self) -> dict[str, Hyper]:
        """The hyperparameters as keyword arguments for the architecture's network."""
        return dict(self.hyperparameters)
