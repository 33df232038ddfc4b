"""Engine factories. Backends are imported lazily, so ``--backend onnx`` never imports
torch and a machine without ``sophon`` can still run everything else."""

from __future__ import annotations

from batchsr.config import ModelConfig
from batchsr.engines.base import Engine, Shape
from batchsr.errors import ModelError
from batchsr.resolve import ResolvedModel

__all__ = ["Engine", "Shape", "open_engine"]


def open_engine(model: ResolvedModel, cfg: ModelConfig, *, device_id: int | None = None) -> Engine:
    """Create a new engine instance for ``model`` (one per infer worker).

    Args:
        device_id: the TPU for a bmodel; None takes the first of ``cfg.devices``.

    Raises:
        EngineUnavailableError: the backend's runtime is not installed.
        EngineError: the runtime could not load the artifact.
    """
    if model.format == "onnx":
        from batchsr.engines.onnx import OnnxEngine

        return OnnxEngine(model.path, device=cfg.device, threads=cfg.threads, scale=model.scale)
    if model.format == "torchscript":
        from batchsr.engines.torch import TorchEngine

        return TorchEngine.from_torchscript(
            model.path, scale=model.scale, device=cfg.device, threads=cfg.threads
        )
    if model.format == "safetensors":
        from batchsr.engines.torch import TorchEngine
        from batchsr.models import load_checkpoint

        net = load_checkpoint(model.path)
        return TorchEngine(
            net.module,
            in_channels=net.info.in_channels,
            scale=net.info.scale,
            device=cfg.device,
            threads=cfg.threads,
        )
    if model.format == "bmodel" and cfg.backend == "cmodel":
        from batchsr.engines.cmodel import CmodelEngine

        return CmodelEngine(
            model.path,
            shapes=model.artifact.shapes if model.artifact else None,
            scale=model.scale,
            timeout_s=cfg.call_timeout_s,
        )
    if model.format == "bmodel":
        from batchsr.engines.sail import SailEngine

        artifact = model.artifact
        return SailEngine(
            model.path,
            device_id=cfg.device_ids[0] if device_id is None else device_id,
            shapes=artifact.shapes if artifact else None,  # the one resolve_model picked
            scale=model.scale,
        )
    raise ModelError(f"{model.path}: the {model.format!r} format has no engine on this machine yet")
