"""One place for checkpoint quirks: wrapper dicts and ``module.`` prefixes.

Public checkpoints wrap their weights differently: BasicSR/Real-ESRGAN save
``{"params_ema": sd}`` or ``{"params": sd}``, training scripts save
``{"state_dict": sd, "optimizer": ...}`` or ``{"model": sd}``, and models trained under
``nn.DataParallel`` prefix every key with ``module.``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from batchsr.errors import CheckpointError

__all__ = ["canonicalize"]

# Tried in this order: EMA weights are the ones Real-ESRGAN publishes as its model.
_WRAPPERS = ("params_ema", "params", "state_dict", "model", "net", "netG", "generator")
_PREFIXES = ("module.", "netG.", "model.")


def canonicalize(checkpoint: Any) -> dict[str, torch.Tensor]:
    """Unwrap a loaded checkpoint down to a flat state dict with canonical key names.

    Args:
        checkpoint: what ``torch.load(weights_only=True)`` or safetensors returned.

    Returns:
        A new dict of tensor name to tensor; wrapper dicts removed and a prefix that
        every key shares (``module.``, ``netG.``, ``model.``) stripped.

    Raises:
        CheckpointError: it is not a mapping, or holds no tensors once unwrapped.
    """
    obj = checkpoint
    while isinstance(obj, Mapping):
        inner = next((obj[k] for k in _WRAPPERS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"checkpoint is a {type(obj).__name__}, not a state dict; save the model's "
            "state_dict() (or a dict holding it under 'params_ema', 'params' or 'state_dict')"
        )
    # Optimizer states, epoch counters and the like can sit beside the weights.
    sd = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not sd:
        raise CheckpointError(
            f"checkpoint holds no tensors (top-level keys: {sorted(map(str, obj))[:8]})"
        )
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if all(k.startswith(prefix) for k in sd):
                sd = {k[len(prefix) :]: v for k, v in sd.items()}
                changed = True
    return sd
