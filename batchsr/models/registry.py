"""The architectures the zoo knows, in detection order, and safe checkpoint loading.

Loading never unpickles arbitrary objects: ``.safetensors`` files load through
safetensors, everything else through ``torch.load(weights_only=True)``. TorchScript
archives (such as the seed's ``espcn_ex.pt``) run code on load, so they go through
:func:`load_torchscript` only, which the user has to ask for explicitly.
"""

from __future__ import annotations

import pickle
import re
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from batchsr.errors import CheckpointError, UnsupportedModelError
from batchsr.models.arch import Arch, SRModel, StateDict
from batchsr.models.canonicalize import canonicalize
from batchsr.models.carn import CARN_ARCH, CARN_M_ARCH
from batchsr.models.edsr import EDSR_ARCH
from batchsr.models.espcn import ESPCN_ARCH
from batchsr.models.espcn_res import ESPCN_RES_ARCH
from batchsr.models.fsrcnn import FSRCNN_ARCH
from batchsr.models.ninasr import NINASR_ARCH
from batchsr.models.rrdbnet import RRDBNET_ARCH
from batchsr.models.srvgg import SRVGG_ARCH

# Specific key layouts before generic ones: the first detect() that says yes wins.
# NinaSR and EDSR share head/body/tail names (NinaSR is told apart by its attention
# keys, EDSR by its mean-shift convs); SRVGGNetCompact's bare ``body.N.weight`` is the
# most generic pattern, so it goes last. ESPCN-Res has ESPCN's keys and more: before it.
REGISTRY: tuple[Arch, ...] = (
    RRDBNET_ARCH,
    NINASR_ARCH,
    EDSR_ARCH,
    CARN_M_ARCH,
    CARN_ARCH,
    ESPCN_RES_ARCH,
    ESPCN_ARCH,
    FSRCNN_ARCH,
    SRVGG_ARCH,
)

# "x4" as a separate token of a file name (fsrcnn_x4.pth, RealESRGAN_x2plus.pth).
_NAME_SCALE = re.compile(r"(?:^|[^a-z0-9])x([2348])(?![0-9])")


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


def load_state_dict(checkpoint: Mapping[str, Any], *, scale: int | None = None) -> SRModel:
    """Detect the architecture of a loaded checkpoint and build it with its weights.

    Args:
        checkpoint: a state dict, possibly wrapped (``params_ema``, ``state_dict``, ...)
            or prefixed (``module.``); see :func:`canonicalize`.
        scale: the upscale factor, needed where the layout does not record it
            (FSRCNN; multi-scale CARN, which defaults to x4); checked otherwise.

    Returns:
        The network in eval mode on the CPU, with its :class:`ModelInfo`.

    Raises:
        UnsupportedModelError: no architecture matches.
        CheckpointError: it matches one but its shapes or keys are inconsistent.
    """
    sd = canonicalize(checkpoint)
    return detect_arch(sd).load(sd, scale=scale)


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


def _scale_hint(path: Path) -> int | None:
    """The scale a file records beside its tensors: safetensors metadata, else its name."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            raw = (fh.metadata() or {}).get("scale")
        if raw is not None and raw.isdigit():
            return int(raw)
    match = _NAME_SCALE.search(path.stem.lower())
    return int(match.group(1)) if match else None


def load_checkpoint(path: Path, *, scale: int | None = None) -> SRModel:
    """Read a checkpoint file, detect its architecture and build the model.

    Args:
        path: ``.safetensors`` or a ``torch.save`` state dict (see :func:`read_state_dict`).
        scale: the upscale factor. Layouts that do not record it (FSRCNN, multi-scale
            CARN) otherwise take it from the safetensors metadata key ``scale`` or an
            ``x2``/``x3``/``x4`` token in the file name; others check it against
            their shapes.

    Raises:
        CheckpointError: unreadable, unsafe, or inconsistent with its architecture.
        UnsupportedModelError: its keys match no known architecture.
    """
    sd = read_state_dict(path)
    arch = detect_arch(sd)
    if scale is None and not arch.scale_from_shapes:
        scale = _scale_hint(path)
    try:
        return arch.load(sd, scale=scale)
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
