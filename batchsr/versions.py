"""Versions of the packages a record was made with, read from the installed
distributions' metadata (no package is imported to learn its version)."""

from __future__ import annotations

import contextlib
import platform
from importlib import metadata

from batchsr import __version__

__all__ = ["versions"]


def versions(*packages: str, python: bool = False) -> dict[str, str]:
    """``{package: version}`` for each of ``packages`` that is installed (the others are
    left out: a record says what ran, not what might have); ``python`` adds the
    interpreter's."""
    found = {"python": platform.python_version()} if python else {}
    for name in packages:
        if name == "batchsr":  # a checkout runs uninstalled: no metadata of its own
            found[name] = __version__
            continue
        # A variant build installs the import name under another distribution
        # (onnxruntime-gpu provides onnxruntime).
        for dist in (name, *metadata.packages_distributions().get(name, ())):
            with contextlib.suppress(metadata.PackageNotFoundError):
                found[name] = metadata.version(dist)
                break
    return found
