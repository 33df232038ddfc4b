"""The compiled kernels for tests: skipped where no C compiler could build them."""

from __future__ import annotations

import os
import shutil
import sysconfig

import pytest

from batchsr import native


def compiled_kernels() -> native.NativeKernels:
    """batchsr's C kernels; a skip on a machine without a C compiler (the numpy paths
    are what runs there) or under BATCHSR_NATIVE=0 (a run of the suite on them), a
    failure where a compiler exists but the library is missing."""
    found = native.kernels()
    if found is not None:
        return found
    if os.environ.get(native.ENV_SWITCH) == "0":  # the numpy paths asked for by name
        pytest.skip(f"NIQE and the colour merge on their numpy paths: {native.status()}")
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None and shutil.which("cc") is None:
        pytest.skip(f"no C compiler ({cc}) to build batchsr's C kernels: {native.status()}")
    raise AssertionError(f"a C compiler is here but {native.status()}")
