"""torch backend: a TorchScript archive or an ``nn.Module``, on the CPU or CUDA.

TorchScript runs code stored in the archive, so it is loaded only from a path the user
passed explicitly; zoo checkpoints go through :mod:`batchsr.models` (safetensors or
``torch.load(weights_only=True)``), never a full unpickle.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from batchsr.engines.base import EngineBase, Shape
from batchsr.errors import BatchSRError, EngineError, EngineUnavailableError

try:
    import torch
except ImportError as err:
    raise EngineUnavailableError(
        "torch is not installed; run `pip install torch==2.13.0` (the CPU build)"
    ) from err

__all__ = ["TorchEngine"]


class TorchEngine(EngineBase):
    """Runs a torch module under ``inference_mode``.

    Args:
        module: the network: float32 NCHW in [0, 1] to float32 NCHW, ``scale`` larger.
        in_channels: input channels the network takes.
        scale: its upscale factor.
        device: ``cpu`` or ``cuda``.
        threads: intra-op threads for CPU inference; 0 leaves torch's default.
    """

    def __init__(
        self,
        module: torch.nn.Module,
        *,
        in_channels: int,
        scale: int,
        device: str = "cpu",
        threads: int = 0,
    ) -> None:
        if device == "cuda" and not torch.cuda.is_available():
            raise EngineError("`model.device = cuda` was asked for but torch sees no CUDA device")
        if threads:
            torch.set_num_threads(threads)
        self._device = torch.device(device)
        self._module = module.to(self._device).eval()
        self._shapes: tuple[Shape, ...] = ((None, in_channels, None, None),)
        self._scale = scale

    @classmethod
    def from_torchscript(
        cls, path: Path, *, scale: int | None = None, device: str = "cpu", threads: int = 0
    ) -> TorchEngine:
        """Load a TorchScript archive the user named explicitly (it may run its own code)."""
        from batchsr.models import load_torchscript

        try:
            module = load_torchscript(path)
        except BatchSRError as err:
            raise EngineError(str(err)) from err
        in_channels = 3
        if scale is None:
            with torch.inference_mode():
                out = module(torch.zeros(1, in_channels, 16, 16))
            scale = int(out.shape[2] // 16)
        return cls(module, in_channels=in_channels, scale=scale, device=device, threads=threads)

    def _run(self, batch: NDArray[np.float32]) -> NDArray[np.float32]:
        # Pipeline batches are read-only; torch cannot wrap those without a copy.
        data = batch if batch.flags.writeable else batch.copy()
        try:
            with torch.inference_mode():
                out = self._module(torch.from_numpy(np.ascontiguousarray(data)).to(self._device))
        except Exception as err:
            raise EngineError(f"torch failed on a batch of {batch.shape}: {err}") from err
        return out.float().cpu().numpy()

    def close(self) -> None:
        del self._module
