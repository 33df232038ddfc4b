"""The project's exception hierarchy: everything roots in :class:`BatchSRError`.

Kept in its own module, free of imports from the rest of the package, so that any
module can raise these without import loops.

Messages are the library's words, and the library has no command line: a message names
a setting by its config key in backticks (`` `tiling.tile` ``, or with the value it
suggests, `` `workers.infer = 2` ``) and a run parameter that is no config key by its
name (`` `input` ``, `` `resume` ``). A front end rewrites those references into its
own spelling with :func:`reword` (the CLI: ``--tile``, ``--workers infer=2``), so the
same error reads right in a TOML file's terms, a flag's terms, or an API's.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

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
    "StoppedError",
    "ToolNotFoundError",
    "UnsupportedModelError",
    "reword",
    "reworded",
    "setting",
]

# `key` or `key = value`; a key is a config key (section.name) or a parameter name.
_SETTING = re.compile(r"`([a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)?)(?: = ([^`]+))?`")


def setting(key: str, value: object = None) -> str:
    """How a message names ``key`` (and a value for it): `` `key` `` / `` `key = value` ``."""
    return f"`{key}`" if value is None else f"`{key} = {value}`"


def reword(message: str, spell: Callable[[str, str | None], str | None]) -> str:
    """``message`` with each setting reference replaced by ``spell(key, value)``;
    a reference ``spell`` does not know (it returns None) is left as written."""

    def one(match: re.Match[str]) -> str:
        spelled = spell(match.group(1), match.group(2))
        return match.group(0) if spelled is None else spelled

    return _SETTING.sub(one, message)


def reworded(message: str, flags: Mapping[str, str]) -> str:
    """``message`` with each setting reference that ``flags`` (key -> flag) names
    spelled as that flag, followed by the value if the reference gives one."""

    def spell(key: str, value: str | None) -> str | None:
        flag = flags.get(key)
        return flag if flag is None or value is None else f"{flag} {value}"

    return reword(message, spell)


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


class StoppedError(BatchSRError):
    """A run was asked to stop before its first image; nothing was written.

    Attributes:
        signum: the signal the stop was requested for.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped (signal {signum}) before any image ran; nothing was written")
        self.signum = signum


class ReportError(BatchSRError):
    """The report cannot be written or read back."""


class AnalysisError(BatchSRError):
    """A run log cannot be read or holds no stage records to analyse."""
