"""The model zoo: architectures, their facts, detection from state dicts, safe loading.

Example::

    model = load_checkpoint(Path("models/espcn/espcn.safetensors"))
    model.info.scale, model.info.margin  # (4, 4)
    deployed = with_filter(model, "SHARPEN")  # what models/espcn/espcn.onnx computes

Architectures (registry order): RRDBNet (Real-ESRGAN), NinaSR, EDSR (torchSR), CARN-M,
CARN (torchSR), ESPCN-Res (ours), ESPCN (ESPCN-PyTorch), FSRCNN (FSRCNN-pytorch), SRVGGNetCompact
(Real-ESRGAN). spandrel detects many more layouts but needs torchvision, which has no
CPU build here, and lacks most of these; this zoo is written for batchsr.
"""

from __future__ import annotations

from batchsr.models.arch import Arch, SRModel, StateDict
from batchsr.models.canonicalize import canonicalize
from batchsr.models.info import Hyper, ModelInfo
from batchsr.models.postprocess import EmbeddedFilter, with_filter
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
    "EmbeddedFilter",
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
    "with_filter",
]
