"""Run a :class:`~compile.plan.CompilePlan` with tpu-mlir, or write it as a script.

tpu-mlir needs CPython 3.10 (reference 1.1), so its tools always run as external
commands: from PATH when they are there (the ``sophgo/tpuc_dev`` image, or a 3.10
venv with ``tpu_mlir``), else written into ``build_bmodel.sh`` to run there.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from collections import deque
from pathlib import Path

import structlog

from batchsr.errors import CompileError, ToolNotFoundError
from compile.plan import WORK_DIR, CompilePlan

__all__ = ["SCRIPT_NAME", "find_tools", "run_plan", "tpu_mlir_version", "write_script"]

SCRIPT_NAME = "build_bmodel.sh"
_TOOLS = ("model_transform", "run_calibration", "model_deploy")

log = structlog.get_logger(__name__)


def find_tools() -> dict[str, str] | None:
    """Map each planned tool name to the executable on PATH, or None if any is missing.

    The wheel installs every tool both with and without ``.py``; the docker image and
    the tarball only the ``.py`` form; ``model_tool`` has no ``.py`` form (ref. 1.1).
    """
    found: dict[str, str] = {}
    for tool in _TOOLS:
        exe = shutil.which(f"{tool}.py") or shutil.which(tool)
        if exe is None:
            return None
        found[f"{tool}.py"] = exe
    exe = shutil.which("model_tool")
    if exe is None:
        return None
    found["model_tool"] = exe
    return found


def tpu_mlir_version(tools: dict[str, str]) -> str:
    """The ``tpu_mlir`` package version seen by the interpreter that runs the tools.

    Read from the ``#!`` line of ``model_transform``; the tools have no ``--version``
    flag we could rely on. Returns ``"unknown"`` when it cannot be read (a tarball
    install has no package metadata).
    """
    try:
        first = Path(tools["model_transform.py"]).read_bytes()[:256].split(b"\n", 1)[0]
    except OSError:
        return "unknown"
    line = first.decode("utf-8", "replace")
    if not line.startswith("#!") or "python" not in line:
        return "unknown"
    interp = shlex.split(line[2:])
    code = "import importlib.metadata as m; print(m.version('tpu_mlir'))"
    try:
        done = subprocess.run(
            [*interp, "-c", code], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    version = done.stdout.strip()
    return version if done.returncode == 0 and version else "unknown"


def run_plan(plan: CompilePlan, folder: Path, tools: dict[str, str]) -> Path:
    """Run every step in ``folder/tpu-mlir``, streaming tool output into the log.

    Args:
        plan: the steps; their inputs (ONNX, npz files) must already exist.
        folder: the model folder.
        tools: from :func:`find_tools`.

    Returns:
        The final bmodel's path.

    Raises:
        ToolNotFoundError: a tool of the plan is not in ``tools``.
        CompileError: a tool fails or does not write the files it should.
    """
    work = folder / WORK_DIR
    work.mkdir(parents=True, exist_ok=True)
    for step in plan.steps:
        exe = tools.get(step.tool)
        if exe is None:
            raise ToolNotFoundError(f"{step.tool} is not on PATH")
        argv = [exe, *step.argv[1:]]
        log.info("tpu_mlir.start", tool=step.tool, argv=shlex.join(step.argv))
        tail: deque[str] = deque(maxlen=20)
        try:
            proc = subprocess.Popen(
                argv,
                cwd=work,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
            )
        except OSError as err:
            raise CompileError(f"cannot start {step.tool}: {err}") from err
        assert proc.stdout is not None
        with proc:
            for raw in proc.stdout:
                line = raw.rstrip("\n")
                tail.append(line)
                log.info("tpu_mlir.output", tool=step.tool, line=line)
        # The wheel's wrappers turn every failure into exit code 1, so the output
        # tail is the diagnosis, not the code (reference 1.1).
        if proc.returncode != 0:
            raise CompileError(
                f"{step.tool} failed (exit {proc.returncode}) in {work}; last output:\n"
                + "\n".join(tail)
            )
        missing = [o for o in step.outputs if not (work / o).is_file()]
        if missing:
            raise CompileError(f"{step.tool} succeeded but did not write {missing} in {work}")
        log.info("tpu_mlir.done", tool=step.tool)
    return (work / plan.bmodel).resolve()


def write_script(plan: CompilePlan, folder: Path, *, rerun: str) -> Path:
    """Write ``folder/build_bmodel.sh``: the plan's commands for a tpu-mlir machine.

    Args:
        plan: the steps.
        folder: the model folder (the script ``cd``s into its ``tpu-mlir/``).
        rerun: the ``python -m compile`` command that registers the bmodel afterwards.

    Returns:
        The script's path (executable).
    """
    lines = [
        "#!/usr/bin/env bash",
        "# Generated by `python -m compile`: builds the BM1684X bmodel with tpu-mlir.",
        "# Run it where tpu-mlir's tools are on PATH (sophgo/tpuc_dev, or a Python 3.10",
        "# venv with requirements-tpu-mlir.txt), from any directory.",
        "set -euo pipefail",
        'cd "$(dirname "$0")/' + WORK_DIR + '"',
        "",
    ]
    lines += [shlex.join(step.argv) for step in plan.steps]
    lines += [
        "",
        f"echo 'built {plan.bmodel}; now run on the batchsr side:'",
        f"echo {shlex.quote(rerun)}",
        "",
    ]
    path = folder / SCRIPT_NAME
    path.write_text("\n".join(lines), encoding="utf-8")
    path.chmod(0o755)
    return path
