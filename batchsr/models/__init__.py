"""The model zoo: architectures, their facts, detection from state dicts, safe loading.

>>> from batchsr.models import load_checkpoint
>>> model = load_checkpoint(Path("models/espcn/espcn.safetensors"))
>>> model.info.scale, model.info.margin
(4, 4)
"""

from __future__ import annotations

from batchsr.models.arch import Arch, SRModel, StateDict
from batchsr.models.canonicalize import canonicalize
from batchsr.models.info import Hyper, ModelInfo
from batchsr.models.registry import (
    REGISTRY,
    detect_arch,
    get_arch,
    load_checkpoint,
    load_state_dict,
    load_torchscript,
    read_state_dict,
)

__all__ = [
    "REGISTRY",
    "Arch",
    "Hyper",
    "ModelInfo",
    "SRModel",
    "StateDict",
    "canonicalize",
    "detect_arch",
    "get_arch",
    "load_checkpoint",
    "load_state_dict",
    "load_torchscript",
    "read_state_dict",
]
