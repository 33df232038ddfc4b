"""The compiled kernels for tests: skipped where no C compiler could build them."""

from __future__ import annotations

import shutil
import sysconfig

import pytest

from batchsr import native


def compiled_kernels() -> native.NativeKernels:
    """batchsr's C kernels; a skip on a machine without a C compiler (the numpy paths
    are what runs there), a failure where one exists but the library is missing."""
    found = native.kernels()
    if found is not None:
        return found
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None and shutil.which("cc") is None:
        pytest.skip(f"no C compiler ({cc}) to build batchsr's C kernels: {native.status()}")
    raise AssertionError(f"a C compiler is here but {native.status()}")
