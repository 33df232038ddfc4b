"""The project's exception hierarchy: everything roots in :class:`BatchSRError`.

Kept in its own module, free of imports from the rest of the package, so that any
module can raise these without import loops.
"""

from __future__ import annotations

__all__ = [
    "AnalysisError",
    "BatchSRError",
    "CheckpointError",
    "ClusterError",
    "CompileError",
    "ConfigError",
    "DecodeError",
    "EngineError",
    "EngineUnavailableError",
    "InputError",
    "ModelError",
    "NIQEError",
    "ReportError",
    "ShapeMismatchError",
    "ToolNotFoundError",
    "UnsupportedModelError",
]


class BatchSRError(Exception):
    """Root of every error batchsr raises on purpose."""


class ConfigError(BatchSRError, ValueError):
    """A config file, preset or command-line override is malformed or out of range."""


class InputError(BatchSRError, ValueError):
    """The input folder or file list cannot be used (missing, not a folder, empty)."""


class DecodeError(BatchSRError):
    """One input file cannot be decoded into an RGB image."""


class ModelError(BatchSRError):
    """A model name, folder or checkpoint cannot be resolved or loaded."""


class UnsupportedModelError(ModelError):
    """A checkpoint's keys match no architecture the registry knows."""


class CheckpointError(ModelError):
    """A checkpoint file is unreadable, unsafe to load, or inconsistent with its architecture."""


class EngineError(BatchSRError):
    """An inference backend failed to start or to run a batch."""


class EngineUnavailableError(EngineError):
    """The backend's runtime package (onnxruntime, torch, sophon.sail) is not installed."""


class ShapeMismatchError(EngineError):
    """A batch or an engine output does not have the shape the engine declares."""


class ClusterError(BatchSRError):
    """A cluster cannot be reached or used (Ray missing, no node with the resources a
    pipeline needs, every pipeline lost)."""


class NIQEError(BatchSRError):
    """NIQE is undefined for this image (too small, or too flat for the pristine model)."""


class CompileError(BatchSRError):
    """Exporting or compiling a model failed."""


class ToolNotFoundError(CompileError):
    """An external compiler tool (tpu-mlir) or its environment cannot be found or used."""


class ReportError(BatchSRError):
    """The report cannot be written or read back."""


class AnalysisError(BatchSRError):
    """A run log cannot be read or holds no stage records to analyse."""
