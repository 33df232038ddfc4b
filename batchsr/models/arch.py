"""How the zoo describes an architecture: detect it, read its hyperparameters, build it.

Each architecture package (``batchsr/models/<arch>/``) declares one :class:`Arch`. The
registry tries them in order on a canonical state dict (see ``canonicalize.py``);
the first whose ``detect`` says yes reads every hyperparameter off tensor shapes and
builds the network, so a checkpoint needs no side config.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from batchsr.errors import CheckpointError
from batchsr.models.info import Hyper, ModelInfo

__all__ = [
    "Arch",
    "SRModel",
    "StateDict",
    "has_all",
    "scale_from_channels",
    "sequence_indices",
    "shape_of",
]

StateDict = Mapping[str, torch.Tensor]


@dataclass(frozen=True, slots=True)
class SRModel:
    """A built network in eval mode together with its facts.

    Attributes:
        module: the network; takes float32 NCHW in ``info.input_range`` with
            ``info.in_channels`` channels and returns ``info.scale`` times larger
            float32 NCHW with ``info.out_channels`` channels (not clamped).
        info: what the network is.
    """

    module: nn.Module
    info: ModelInfo


@dataclass(frozen=True, slots=True)
class Arch:
    """One architecture the registry knows.

    Attributes:
        id: short id as manifests and ``--model`` listings name it (``espcn``).
        name: human-readable name with the public layout it matches.
        detect: says whether a canonical state dict is in this architecture's key
            layout. It may give false positives (the registry's order settles them:
            specific layouts come before generic ones) but never false negatives.
        read_hyperparameters: reads the network's constructor arguments off the state
            dict's shapes; raises ``CheckpointError`` when they are inconsistent.
        describe: the facts (:class:`ModelInfo`) of a network built with these
            hyperparameters.
        network: the network class; keyword-only constructor.
    """

    id: str
    name: str
    detect: Callable[[StateDict], bool]
    read_hyperparameters: Callable[[StateDict], dict[str, Hyper]]
    describe: Callable[[Mapping[str, Hyper]], ModelInfo]
    network: Callable[..., nn.Module]

    def create(self, **hyperparameters: Any) -> SRModel:
        """Build a freshly initialised network (eval mode) with these hyperparameters."""
        info = self.describe(hyperparameters)
        module = self.network(**info.kwargs())
        return SRModel(module=module.eval(), info=info)

    def load(self, state_dict: StateDict) -> SRModel:
        """Build the network a canonical state dict describes and load its weights.

        Raises:
            CheckpointError: the shapes are inconsistent, or keys are missing or extra.
        """
        model = self.create(**self.read_hyperparameters(state_dict))
        try:
            model.module.load_state_dict(dict(state_dict), strict=True)
        except RuntimeError as err:
            raise CheckpointError(
                f"state dict looks like {self.name} {dict(model.info.hyperparameters)} "
                f"but does not load into it: {err}"
            ) from err
        return model


def has_all(state_dict: StateDict, *keys: str) -> bool:
    """True if every key is in the state dict."""
    return all(k in state_dict for k in keys)


def shape_of(state_dict: StateDict, key: str) -> tuple[int, ...]:
    """The shape of ``state_dict[key]``.

    Raises:
        CheckpointError: the key is missing.
    """
    try:
        return tuple(state_dict[key].shape)
    except KeyError as err:
        raise CheckpointError(
            f"state dict has no {key!r}; it is not a complete checkpoint of this layout"
        ) from err


def sequence_indices(state_dict: StateDict, prefix: str) -> list[int]:
    """Sorted distinct integers N of keys that start with ``prefix + "N."``.

    For example ``sequence_indices(sd, "body.")`` of an EDSR state dict lists its
    residual blocks.
    """
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    found = {int(m.group(1)) for k in state_dict if (m := pattern.match(k))}
    return sorted(found)


def scale_from_channels(channels: int, out_channels: int, *, key: str) -> int:
    """The pixel-shuffle factor r of a conv producing ``out_channels * r * r`` channels.

    Raises:
        CheckpointError: ``channels`` is not ``out_channels`` times a perfect square.
    """
    ratio, rest = divmod(channels, out_channels)
    r = math.isqrt(ratio)
    if rest or r < 1 or r * r != ratio:
        raise CheckpointError(
            f"{key} has {channels} output channels, which is not {out_channels} times a "
            "square upscale factor; the checkpoint does not match this layout"
        )
    return r
