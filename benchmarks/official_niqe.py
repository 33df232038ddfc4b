"""Fetch BasicSR 1.4.2's sdist and load its NIQE, the contest's scorer, for comparison only.

The official code never enters this repository: it is downloaded on demand with
``pip download --no-deps basicsr==1.4.2`` into ``.cache/basicsr/`` (git-ignored) and
its module files are loaded straight from the unpacked sdist. Importing ``basicsr``
as a package would pull in torchvision and friends, so a handful of stub modules stand
in for the package ``__init__`` files and the registry; the four files that define NIQE
(``metrics/niqe.py``, ``metrics/metric_util.py``, ``utils/color_util.py``,
``utils/matlab_functions.py``) run unmodified.

Needs what those files import: numpy, scipy, opencv-python-headless and torch
(see ``requirements-bench.txt``). Used by ``benchmarks/niqe_bench.py`` and
``benchmarks/make_niqe_refs.py``; not part of the ``batchsr`` package.
"""

from __future__ import annotations

import hashlib
import importlib.util
import subprocess
import sys
import tarfile
import types
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "BASICSR_VERSION",
    "CACHE_DIR",
    "SDIST_NAME",
    "fetch_sdist",
    "load_official_niqe",
]

BASICSR_VERSION = "1.4.2"
SDIST_NAME = f"basicsr-{BASICSR_VERSION}.tar.gz"
REPO_ROOT = Path(__file__).resolve().parents[1]
CACHE_DIR = REPO_ROOT / ".cache" / "basicsr"


def fetch_sdist(cache: Path = CACHE_DIR) -> Path:
    """Download (once) and unpack BasicSR's sdist; return the unpacked ``basicsr/`` folder."""
    cache.mkdir(parents=True, exist_ok=True)
    sdist = cache / SDIST_NAME
    if not sdist.exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                # pip prepares the sdist's metadata, and basicsr's setup imports torch:
                # an isolated build env would try (and fail) to fetch torch again.
                "--no-build-isolation",
                f"basicsr=={BASICSR_VERSION}",
                "-d",
                str(cache),
            ],
            check=True,
        )
    root = cache / f"basicsr-{BASICSR_VERSION}"
    if not (root / "basicsr" / "metrics" / "niqe.py").exists():
        with tarfile.open(sdist) as tar:
            tar.extractall(cache, filter="data")
    return root / "basicsr"


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _load_file(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_official_niqe(cache: Path = CACHE_DIR) -> Callable[..., Any]:
    """Return BasicSR 1.4.2's ``calculate_niqe(img_bgr, crop_border, input_order, convert_to)``.

    The function is the unmodified one from the sdist; only the package plumbing around
    it is stubbed (see the module docstring).
    """
    pkg = fetch_sdist(cache)

    class _Registry:
        def register(self, obj: Any = None) -> Any:
            return obj if obj is not None else (lambda fn: fn)

    for name in ("basicsr", "basicsr.utils", "basicsr.metrics"):
        module = types.ModuleType(name)
        module.__path__ = []  # mark as package so submodule imports resolve via sys.modules
        sys.modules.setdefault(name, module)
    registry = types.ModuleType("basicsr.utils.registry")
    registry.METRIC_REGISTRY = _Registry()  # type: ignore[attr-defined]
    sys.modules["basicsr.utils.registry"] = registry

    color = _load_file("basicsr.utils.color_util", pkg / "utils" / "color_util.py")
    sys.modules["basicsr.utils"].bgr2ycbcr = color.bgr2ycbcr  # type: ignore[attr-defined]
    _load_file("basicsr.utils.matlab_functions", pkg / "utils" / "matlab_functions.py")
    _load_file("basicsr.metrics.metric_util", pkg / "metrics" / "metric_util.py")
    with warnings.catch_warnings():
        # `scipy.ndimage.filters` is a deprecated alias of `scipy.ndimage` in recent SciPy.
        warnings.simplefilter("ignore", DeprecationWarning)
        niqe_mod = _load_file("basicsr.metrics.niqe", pkg / "metrics" / "niqe.py")
    return niqe_mod.calculate_niqe  # type: ignore[no-any-return]
