"""Versions of the packages a record was made with, read from the installed
distributions' metadata (no package is imported to learn its version)."""

from __future__ import annotations

import contextlib
import functools
import platform
from collections.abc import Mapping
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
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
            continue
        # A variant build installs the import name under another distribution
        # (onnxruntime-gpu provides onnxruntime). Asked only then: mapping every
        # installed file to its distribution took 0.28 s of each run's start.
        for dist in _providers().get(name, ()):
            with contextlib.suppress(metadata.PackageNotFoundError):
                found[name] = metadata.version(dist)
                break
    return found


@functools.cache
def _providers() -> Mapping[str, list[str]]:
    return metadata.packages_distributions()
