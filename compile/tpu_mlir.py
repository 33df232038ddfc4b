"""Run a :class:`~compile.plan.CompilePlan` with tpu-mlir, or write it as a script.

tpu-mlir needs CPython 3.10 (reference 1.1), so its tools always run as external
commands, from the environment :func:`batchsr.tpumlir.find_tpu_mlir` found
(``.venv-tpu``, ``--tpu-mlir DIR``, ``$BATCHSR_TPU_MLIR`` or PATH), else written into
``build_bmodel.sh`` to run where tpu-mlir is.

What deploy reports is kept: the cost model's cycle count for one call of each stage
(``compiler_profile_0.txt``: tpu-mlir's own estimate of device time, the emulator
gives none) and the similarity figures of its two checks (TPU-level MLIR against
the top-level MLIR, then the bmodel run on the BM1684X emulator against the TPU MLIR).
"""

from __future__ import annotations

import re
import shlex
import subprocess
from collections import deque
from pathlib import Path

import structlog

from batchsr.errors import CompileError, ToolNotFoundError
from batchsr.manifest import StageFacts
from batchsr.tpumlir import TpuMlir
from compile.plan import DEPLOY_PROFILE, WORK_DIR, CompilePlan

__all__ = [
    "SCRIPT_NAME",
    "parse_deploy_output",
    "parse_profile",
    "run_plan",
    "stage_facts",
    "write_script",
]

SCRIPT_NAME = "build_bmodel.sh"
_CYCLES = re.compile(r"total_cycle:(\d+)")
_RUNTIME = re.compile(r"runtime:\s*([0-9.eE+-]+)\s*ms")
# npz_tool's verdict per tensor, then (unless EQUAL) its similarity figures.
_VERDICT = re.compile(r"^\[.+?\]\s+([A-Z_]+)\s+\[(?:PASSED|FAILED)\]")
_COSINE = re.compile(r"cosine_similarity\s*=\s*([0-9.eE+-]+)")
_SQNR = re.compile(r"sqnr_similarity\s*=\s*([0-9.eE+-]+|inf)")

log = structlog.get_logger(__name__)


def parse_profile(text: str) -> tuple[int | None, float | None]:
    """``(cycles, ms)`` of one call from deploy's ``compiler_profile_0.txt``."""
    cycles = _CYCLES.findall(text)
    ms = _RUNTIME.findall(text)
    return (int(cycles[-1]) if cycles else None, float(ms[-1]) if ms else None)


Check = tuple[str, float | None, float | None]


def parse_deploy_output(lines: list[str]) -> list[Check]:
    """``(verdict, cosine, sqnr_db)`` of each tensor deploy's comparisons judged, in order.

    The verdict is npz_tool's: EQUAL, CLOSE (allclose) or SIMILAR pass; it prints the
    cosine and SQNR only for SIMILAR and the failing verdicts, so those are None else.
    """
    found: list[Check] = []
    for line in lines:
        text = line.strip()
        if m := _VERDICT.match(text):
            found.append((m.group(1), None, None))
        elif (m := _COSINE.search(text)) and found:
            found[-1] = (found[-1][0], float(m.group(1)), found[-1][2])
        elif (m := _SQNR.search(text)) and found:
            found[-1] = (found[-1][0], found[-1][1], float(m.group(1)))
    return found


def _run_step(argv: list[str], tool: str, work: Path, tpu: TpuMlir) -> list[str]:
    """Run one tool, streaming its output into the log; return the output lines."""
    lines: list[str] = []
    tail: deque[str] = deque(maxlen=20)
    try:
        proc = subprocess.Popen(
            argv,
            cwd=work,
            env=tpu.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
    except OSError as err:
        raise CompileError(f"cannot start {tool}: {err}") from err
    assert proc.stdout is not None
    with proc:
        for raw in proc.stdout:
            line = raw.rstrip("\n")
            lines.append(line)
            tail.append(line)
            log.info("tpu_mlir.output", tool=tool, line=line)
    # The wheel's wrappers turn every failure into exit code 1, so the output
    # tail is the diagnosis, not the code (reference 1.1).
    if proc.returncode != 0:
        last = next((t for t in reversed(tail) if t.strip()), "no output")
        raise CompileError(
            f"{tool} failed (exit {proc.returncode}) in {work}: {last.strip()}\n"
            "last output:\n" + "\n".join(tail)
        )
    return lines


def run_plan(plan: CompilePlan, folder: Path, tpu: TpuMlir) -> tuple[Path, tuple[StageFacts, ...]]:
    """Run every step in ``folder/tpu-mlir``, streaming tool output into the log.

    Args:
        plan: the steps; their inputs (ONNX, npz files) must already exist.
        folder: the model folder.
        tpu: the tpu-mlir environment to run the tools in.

    Returns:
        The final bmodel's path, and per shape what deploy measured.

    Raises:
        ToolNotFoundError: a tool of the plan is not in ``tpu.tools``.
        CompileError: a tool fails or does not write the files it should.
    """
    work = folder / WORK_DIR
    work.mkdir(parents=True, exist_ok=True)
    checks: list[list[Check]] = []
    for step in plan.steps:
        exe = tpu.tools.get(step.tool)
        if exe is None:
            raise ToolNotFoundError(f"{step.tool} is not in the tpu-mlir found ({tpu.source})")
        log.info("tpu_mlir.start", tool=step.tool, argv=shlex.join(step.argv))
        if step.profile is not None:
            # A reused work folder holds the last build's figures under this name.
            (work / step.profile).unlink(missing_ok=True)
            (work / DEPLOY_PROFILE).unlink(missing_ok=True)
        lines = _run_step([exe, *step.argv[1:]], step.tool, work, tpu)
        missing = [o for o in step.outputs if not (work / o).is_file()]
        if missing:
            raise CompileError(f"{step.tool} succeeded but did not write {missing} in {work}")
        if step.profile is not None:
            if (work / DEPLOY_PROFILE).is_file():
                (work / DEPLOY_PROFILE).replace(work / step.profile)
            checks.append(parse_deploy_output(lines))
        log.info("tpu_mlir.done", tool=step.tool)
    return (work / plan.bmodel).resolve(), stage_facts(plan, work, checks)


def stage_facts(
    plan: CompilePlan,
    work: Path,
    checks: list[list[Check]] | None = None,
) -> tuple[StageFacts, ...]:
    """Per shape: the cost model's figures (from the moved profiles) and deploy's checks.

    ``checks`` are the parsed comparisons of each deploy, when its output was seen
    (not for a bmodel built by ``build_bmodel.sh``).
    """
    facts = []
    for i, (shape, profile) in enumerate(zip(plan.shapes, plan.profiles, strict=True)):
        path = work / profile
        cycles, ms = (
            parse_profile(path.read_text(errors="replace")) if path.is_file() else (None, None)
        )
        pairs = checks[i] if checks and i < len(checks) else []
        # Deploy compares the TPU MLIR with the top MLIR first (quantisation), then
        # the bmodel on the emulator with the TPU MLIR.
        none: Check = ("", None, None)
        quant = pairs[0] if pairs else none
        final = pairs[-1] if len(pairs) > 1 else none
        facts.append(
            StageFacts(
                shape=shape,
                cycles=cycles,
                estimated_ms=ms,
                quant_check=quant[0] or None,
                quant_cosine=quant[1],
                quant_sqnr_db=quant[2],
                emulator_check=final[0] or None,
                emulator_cosine=final[1],
                emulator_sqnr_db=final[2],
            )
        )
    return tuple(facts)


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
        "# venv with requirements-tpu-mlir.txt: `make tpu-env`), from any directory.",
        "set -euo pipefail",
        'cd "$(dirname "$0")/' + WORK_DIR + '"',
        "",
    ]
    for step in plan.steps:
        lines.append(shlex.join(step.argv))
        if step.profile is not None:
            lines.append(shlex.join(["mv", "-f", DEPLOY_PROFILE, step.profile]))
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
