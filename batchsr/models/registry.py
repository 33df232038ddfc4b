"""The architectures the zoo knows, in detection order, and safe checkpoint loading.

Loading never unpickles arbitrary objects: ``.safetensors`` files load through
safetensors, everything else through ``torch.load(weights_only=True)``. TorchScript
archives (such as the seed's ``espcn_ex.pt``) run code on load, so they go through
:func:`load_torchscript` only, which the user has to ask for explicitly.
"""

from __future__ import annotations

import pickle
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from batchsr.errors import CheckpointError, UnsupportedModelError
from batchsr.models.arch import Arch, SRModel, StateDict
from batchsr.models.canonicalize import canonicalize
from batchsr.models.espcn import ESPCN_ARCH

__all__ = [
    "REGISTRY",
    "detect_arch",
    "get_arch",
    "load_checkpoint",
    "load_state_dict",
    "load_torchscript",
    "read_state_dict",
]

# Specific key layouts before generic ones: the first detect() that says yes wins.
REGISTRY: tuple[Arch, ...] = (ESPCN_ARCH,)


def get_arch(arch_id: str) -> Arch:
    """The architecture with this id.

    Raises:
        UnsupportedModelError: no architecture has this id.
    """
    for arch in REGISTRY:
        if arch.id == arch_id:
            return arch
    known = ", ".join(a.id for a in REGISTRY)
    raise UnsupportedModelError(f"unknown architecture {arch_id!r}; known: {known}")


def detect_arch(state_dict: StateDict) -> Arch:
    """The first registered architecture whose key layout matches a canonical state dict.

    Raises:
        UnsupportedModelError: no architecture matches.
    """
    for arch in REGISTRY:
        if arch.detect(state_dict):
            return arch
    sample = sorted(state_dict)[:6]
    known = ", ".join(a.id for a in REGISTRY)
    raise UnsupportedModelError(
        f"state dict matches no known architecture (first keys: {sample}); known "
        f"architectures: {known}. Save the checkpoint in one of their public key layouts."
    )


def load_state_dict(checkpoint: Mapping[str, Any]) -> SRModel:
    """Detect the architecture of a loaded checkpoint and build it with its weights.

    Args:
        checkpoint: a state dict, possibly wrapped (``params_ema``, ``state_dict``, ...)
            or prefixed (``module.``); see :func:`canonicalize`.

    Returns:
        The network in eval mode on the CPU, with its :class:`ModelInfo`.

    Raises:
        UnsupportedModelError: no architecture matches.
        CheckpointError: it matches one but its shapes or keys are inconsistent.
    """
    sd = canonicalize(checkpoint)
    return detect_arch(sd).load(sd)


def _is_torchscript(path: Path) -> bool:
    # A TorchScript archive is a zip holding constants.pkl (or a code/ folder);
    # torch.load would hand it to torch.jit.load, which we only do on request.
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(
            n.endswith("/constants.pkl") or n == "constants.pkl" or "/code/" in n
            for n in zf.namelist()
        )


# Public name for callers that route files by kind (batchsr.resolve).
is_torchscript = _is_torchscript


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint file into a canonical state dict without unpickling objects.

    Args:
        path: a ``.safetensors`` file, or a ``torch.save`` file (``.pth``, ``.pt``,
            ``.ckpt``, ``.bin``) holding only tensors and plain containers.

    Raises:
        CheckpointError: the file is missing, unreadable, TorchScript, or would need
            to unpickle arbitrary objects.
    """
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return canonicalize(load_file(path, device="cpu"))
        except SafetensorError as err:
            raise CheckpointError(f"{path}: not a valid safetensors file ({err})") from err
    if _is_torchscript(path):
        raise CheckpointError(
            f"{path} is a TorchScript archive, which runs code when loaded; load it "
            "explicitly with load_torchscript() if you trust it"
        )
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path} holds objects other than tensors and plain containers, and batchsr "
            f"never unpickles those ({err}). Re-save it as a state dict or as safetensors."
        ) from err
    except (RuntimeError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({err})") from err
    return canonicalize(raw)


def load_checkpoint(path: Path) -> SRModel:
    """Read a checkpoint file, detect its architecture and build the model.

    Raises:
        CheckpointError: unreadable, unsafe, or inconsistent with its architecture.
        UnsupportedModelError: its keys match no known architecture.
    """
    sd = read_state_dict(path)
    try:
        return detect_arch(sd).load(sd)
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from err


def load_torchscript(path: Path) -> torch.jit.ScriptModule:
    """Load a TorchScript archive on the CPU, in eval mode.

    TorchScript runs code from the file, so only call this for files the user named
    explicitly as TorchScript.

    Raises:
        CheckpointError: the file is missing or not TorchScript.
    """
    if not path.is_file():
        raise CheckpointError(f"{path}: no such TorchScript file")
    try:
        with warnings.catch_warnings():
            # torch 2.13 deprecates TorchScript in favour of torch.export, but the
            # seed's models exist only as TorchScript; loading them is the point here.
            warnings.filterwarnings(
                "ignore", message=r".*torch\.jit\.load.*deprecated", category=DeprecationWarning
            )
            module = torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError) as err:
        raise CheckpointError(f"{path}: not a loadable TorchScript archive ({err})") from err
    return module.eval()
