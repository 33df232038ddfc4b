"""A regular (non-editable) install works away from the checkout: the `batchsr`
command runs the default model on an image, with the shipped models and configs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers.images import photo_like
from tests.helpers.paths import REPO

pytestmark = pytest.mark.slow


def _run(*cmd: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=240, check=False
    )


def test_pip_install_gives_a_working_batchsr_command(tmp_path: Path) -> None:
    # Built from a copy: setuptools writes build/ and egg-info into the source tree.
    source = tmp_path / "src"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", ".venv*", "results", ".cache", "tpu-mlir", "build", "*.egg-info", "__pycache__",
        "_native.*.so",  # the wheel builds its own
    ))  # fmt: skip
    built = _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                 "-q", "-w", tmp_path / "dist", source, cwd=tmp_path)  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("batchsr-*.whl")
    venv = tmp_path / "venv"
    made = _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    site = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    # The dependencies come from this test's environment (no network, no reinstall).
    (site / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    installed = _run(sys.executable, "-m", "pip", "--python", venv / "bin" / "python",
                     "install", "-q", "--no-deps", wheel, cwd=tmp_path)  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    command = venv / "bin" / "batchsr"
    away = tmp_path / "elsewhere"  # nowhere near the checkout
    (away / "in").mkdir(parents=True)
    Image.fromarray(photo_like(40, 56)).save(away / "in" / "a.png")
    helped = _run(command, "--help", cwd=away)
    assert helped.returncode == 0 and "selfcheck" in helped.stdout
    done = _run(command, "--model", "espcn", "--input", "in", "--output", "out", "-q", cwd=away)
    assert done.returncode == 0, done.stderr
    with Image.open(away / "out" / "a.png") as img:
        assert img.size == (4 * 56, 4 * 40) and np.asarray(img).std() > 0
    (row,) = json.loads((away / "out" / "report.json").read_text())["A"][0]["images"]
    assert float(row["niqe"]) > 0
    # the installed copy's models, not the checkout's
    assert str(REPO) not in _run(venv / "bin" / "python", "-c",
                                 "import batchsr.resolve as r; print(r.MODELS_DIR)",
                                 cwd=away).stdout  # fmt: skip
    # and the C kernels, compiled by the wheel build (where a C compiler is)
    status = "from batchsr import native; print(native.status())"
    kernels = _run(venv / "bin" / "python", "-c", status, cwd=away)
    if shutil.which("cc") or shutil.which("gcc"):
        assert kernels.stdout.startswith("compiled kernels"), kernels.stdout + kernels.stderr


def test_versions_finds_a_variant_distribution_only_when_the_plain_name_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """onnxruntime-gpu provides the import name onnxruntime: the variant is looked up
    (the costly file-to-distribution map) only for a name with no distribution."""
    from importlib import metadata

    from batchsr import versions as module

    installed = {"numpy": "2.4.6", "onnxruntime-gpu": "1.32.0"}
    looked_up: list[int] = []

    def version(dist: str) -> str:
        if dist not in installed:
            raise metadata.PackageNotFoundError(dist)
        return installed[dist]

    def providers() -> dict[str, list[str]]:
        looked_up.append(1)
        return {"onnxruntime": ["onnxruntime-gpu"], "numpy": ["numpy"]}

    monkeypatch.setattr(module.metadata, "version", version)
    monkeypatch.setattr(module.metadata, "packages_distributions", providers)
    module._providers.cache_clear()
    try:
        assert module.versions("numpy") == {"numpy": "2.4.6"} and not looked_up
        found = module.versions("numpy", "onnxruntime", "absent")
        assert found == {"numpy": "2.4.6", "onnxruntime": "1.32.0"} and len(looked_up) == 1
    finally:
        module._providers.cache_clear()
