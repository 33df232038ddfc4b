"""Find the tpu-mlir environment that builds bmodels and runs the BM1684X emulator.

tpu-mlir needs CPython 3.10 (shared tpu-reference 0, 1.1), so it lives beside
batchsr's 3.11 venv and is only ever run as external processes. Where it is, in order:

1. an explicit folder (``python -m compile --tpu-mlir DIR``): a virtual environment
   with ``tpu_mlir`` installed, such as one made by ``make tpu-env`` elsewhere;
2. the environment variable :data:`ENV_VAR` naming such a folder;
3. the repository's own ``.venv-tpu`` (``make tpu-env``);
4. the tools on ``PATH`` (the ``sophgo/tpuc_dev`` image after ``envsetup.sh``, or an
   activated environment).

A folder is probed once by running ``batchsr/py310/glibc_fix.py --probe`` with its
interpreter: that hides the bundled glibc if a reinstall brought it back, and reports
the interpreter, the package folder and the tpu_mlir version.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from batchsr.errors import ToolNotFoundError

__all__ = [
    "ENV_VAR",
    "GLIBC_FIX",
    "REPO_VENV",
    "TOOLS",
    "TpuMlir",
    "find_tpu_mlir",
    "from_folder",
    "from_path",
]

ENV_VAR = "BATCHSR_TPU_MLIR"
REPO_VENV = Path(__file__).resolve().parents[1] / ".venv-tpu"
GLIBC_FIX = Path(__file__).resolve().parent / "py310" / "glibc_fix.py"
# The wheel installs every Python tool both with and without ``.py``; the docker image
# and the tarball only the ``.py`` form; ``model_tool`` has no ``.py`` form (ref. 1.1).
TOOLS = ("model_transform.py", "run_calibration.py", "model_deploy.py", "model_tool")
_PROBE_TIMEOUT_S = 120


@dataclass(frozen=True, slots=True)
class TpuMlir:
    """One usable tpu-mlir installation.

    Attributes:
        tools: tool name (as in :data:`TOOLS`) -> executable path.
        version: the ``tpu_mlir`` package version, ``"unknown"`` for a tarball install.
        python: its Python 3.10 interpreter (runs the emulator worker), if known.
        root: the tpu_mlir package folder (``TPUC_ROOT``: ``lib/``, ``python/``), if known.
        bin_dir: the environment's ``bin/``, put first on ``PATH`` for the tools (their
            helpers call ``python3`` and ``npz_tool.py`` through ``PATH``); None for
            tools found on ``PATH`` already.
        source: how it was found, for messages and the manifest.
    """

    tools: Mapping[str, str]
    version: str
    python: Path | None
    root: Path | None
    bin_dir: Path | None
    source: str
    _env: Mapping[str, str] = field(default_factory=dict, repr=False)

    def env(self) -> dict[str, str]:
        """The environment to run the tools (and the emulator worker) in."""
        env = dict(os.environ)
        if self.bin_dir is not None:
            env["PATH"] = os.pathsep.join([str(self.bin_dir), env.get("PATH", "")])
        env.update(self._env)
        return env

    def emulator_env(self) -> dict[str, str]:
        """The environment of an emulator worker: ``LD_LIBRARY_PATH`` must name
        tpu_mlir's libraries before the process starts (tpu-reference 0).

        Raises:
            ToolNotFoundError: the package folder is unknown (tools on PATH only).
        """
        if self.root is None:
            raise ToolNotFoundError(
                f"the tpu-mlir found ({self.source}) does not say where its package is, so "
                f"its emulator cannot be started; run `make tpu-env` or point ${ENV_VAR} at one"
            )
        env = self.env()
        libs = [self.root / "lib", self.root / "lib" / "capi", self.root / "lib" / "third_party"]
        old = env.get("LD_LIBRARY_PATH")
        env["LD_LIBRARY_PATH"] = os.pathsep.join([*map(str, libs), *([old] if old else [])])
        env["TPUC_ROOT"] = str(self.root)
        return env


def find_tpu_mlir(explicit: Path | None = None) -> TpuMlir | None:
    """The first tpu-mlir of: ``explicit``, ``$BATCHSR_TPU_MLIR``, ``.venv-tpu``, PATH.

    Returns:
        None when there is none at all (compile then writes ``build_bmodel.sh``).

    Raises:
        ToolNotFoundError: ``explicit`` or the environment variable names a folder
            that is not a working tpu-mlir environment.
    """
    if explicit is not None:
        return from_folder(explicit, source=f"tpu-mlir folder {explicit}")
    named = os.environ.get(ENV_VAR)
    if named:
        return from_folder(Path(named), source=f"${ENV_VAR}={named}")
    if (REPO_VENV / "bin" / "python").exists():
        return from_folder(REPO_VENV, source=str(REPO_VENV))
    return from_path()


def from_folder(folder: Path, *, source: str) -> TpuMlir:
    """Probe the virtual environment (or prefix) ``folder``.

    Raises:
        ToolNotFoundError: no Python in ``folder/bin``, tpu_mlir not importable there,
            or a tool missing.
    """
    bin_dir = folder / "bin"
    python = next(
        (bin_dir / n for n in ("python3.10", "python3", "python") if (bin_dir / n).exists()), None
    )
    if python is None:
        raise ToolNotFoundError(
            f"{source}: {bin_dir} holds no python; give the folder of a Python 3.10 "
            "environment with tpu_mlir installed (`make tpu-env` builds .venv-tpu)"
        )
    facts = _probe(python, source=source)
    tools: dict[str, str] = {}
    for tool in TOOLS:
        exe = next(
            (bin_dir / n for n in (tool, tool.removesuffix(".py")) if (bin_dir / n).exists()),
            None,
        )
        if exe is None:
            raise ToolNotFoundError(f"{source}: {tool} is not in {bin_dir}; reinstall tpu_mlir")
        tools[tool] = str(exe)
    root = facts.get("root")
    return TpuMlir(
        tools=tools,
        version=str(facts.get("version", "unknown")),
        python=python,
        root=Path(str(root)) if root else None,
        bin_dir=bin_dir,
        source=source,
    )


def from_path() -> TpuMlir | None:
    """The tools on ``PATH``, or None if any is missing."""
    tools: dict[str, str] = {}
    for tool in TOOLS:
        exe = shutil.which(tool) or shutil.which(tool.removesuffix(".py"))
        if exe is None:
            return None
        tools[tool] = exe
    python = _interpreter_of(Path(tools["model_transform.py"]))
    facts: dict[str, object] = {}
    if python is not None:
        try:
            facts = _probe(python, source="PATH")
        except ToolNotFoundError:
            facts = {}
    root = facts.get("root")
    return TpuMlir(
        tools=tools,
        version=str(facts.get("version", "unknown")),
        python=python if facts else None,
        root=Path(str(root)) if root else None,
        bin_dir=None,
        source="PATH",
    )


def _interpreter_of(script: Path) -> Path | None:
    """The interpreter named by a script's ``#!`` line (tools have no --version)."""
    try:
        first = script.read_bytes()[:256].split(b"\n", 1)[0].decode("utf-8", "replace")
    except OSError:
        return None
    if not first.startswith("#!") or "python" not in first:
        return None
    argv = shlex.split(first[2:])
    if Path(argv[0]).name == "env" and len(argv) > 1:
        found = shutil.which(argv[1])
        return Path(found) if found else None
    return Path(argv[0])


def _probe(python: Path, *, source: str) -> dict[str, object]:
    try:
        done = subprocess.run(
            [str(python), str(GLIBC_FIX), "--probe"],
            capture_output=True,
            text=True,
            timeout=_PROBE_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as err:
        raise ToolNotFoundError(f"{source}: cannot run {python}: {err}") from err
    try:
        facts: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError) as err:
        raise ToolNotFoundError(
            f"{source}: {python} did not answer the probe (exit {done.returncode}): "
            f"{done.stderr.strip()[-300:]}"
        ) from err
    version = facts.get("python_version")
    if not isinstance(version, list) or version[:2] != [3, 10]:
        raise ToolNotFoundError(f"{source}: {python} is Python {version}; tpu-mlir needs 3.10")
    if facts.get("root") is None:
        raise ToolNotFoundError(
            f"{source}: tpu_mlir is not installed for {python}; "
            "`make tpu-env` builds .venv-tpu with it"
        )
    return facts
