"""Resume: skip images already finished by an earlier run of the same configuration.

Every finished image appends one line to ``OUTPUT/runstate.jsonl``: its name, the
digest of its input file, the hash of the settings that decide its pixels (including
the model artifact's digest), its runtime and NIQE. The file is append-only and flushed
per line, so it survives an interrupted or killed run; a truncated last line is
ignored. ``--resume`` skips an image whose state line matches its current input and
settings and whose output PNG still exists; everything else runs again.

The file opens with one ``settings`` line: the pixel-deciding settings by name, so that
a folder holding another configuration's results is refused naming what differs
(replacing them takes ``--overwrite``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from batchsr.errors import ConfigError
from batchsr.files import output_path
from batchsr.records import Job, Scored
from batchsr.vocab import OUTPUT_EXTS

__all__ = ["STATE_NAME", "ResumePlan", "RunState", "plan_resume"]

STATE_NAME = "runstate.jsonl"


@dataclass(frozen=True, slots=True)
class ResumePlan:
    """What a run must do: the jobs to process and the rows carried over."""

    todo: tuple[Job, ...]
    done: tuple[Scored, ...]


def _digest(path: Path) -> str | None:
    try:
        with path.open("rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError:
        return None  # decode will report why; nothing to resume for it


def _load_state(path: Path) -> tuple[dict[str, dict[str, object]], dict[str, dict[str, Any]]]:
    """``(entries by image name, settings by pixel hash)`` of a state file."""
    entries: dict[str, dict[str, object]] = {}
    settings: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return entries, settings
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # the torn last line of a killed run
        if not isinstance(entry, dict):
            continue
        if isinstance(entry.get("name"), str):
            entries[entry["name"]] = entry
        elif isinstance(entry.get("settings"), dict):
            settings[str(entry.get("pixel_hash"))] = entry["settings"]
    return entries, settings


def _differences(ours: dict[str, Any] | None, theirs: list[dict[str, Any]]) -> str:
    """``tile 128 -> 64, mode crop -> blend``: what the folder's runs used, then ours."""
    if ours is None or not theirs:
        return "the earlier run's settings are not recorded"
    changes = []
    for key in sorted(set(ours).union(*theirs)):
        before = sorted({json.dumps(t.get(key)) for t in theirs})
        now = json.dumps(ours.get(key))
        if before != [now]:
            changes.append(f"{key} {'/'.join(before)} -> {now}")
    return ", ".join(changes) or "the earlier run's settings are not recorded"


def plan_resume(
    jobs: Sequence[Job],
    out_dir: Path,
    *,
    pixel_hash: str,
    resume: bool,
    overwrite: bool = False,
    settings: dict[str, Any] | None = None,
    suffix: str = "",
    ext: str = "png",
) -> ResumePlan:
    """Decide which jobs run, and attach each job's input digest.

    Args:
        resume: skip images an earlier run of this configuration finished.
        overwrite: replace whatever results ``out_dir`` holds (every job runs).
        settings: this run's pixel-deciding settings, to name what differs.
        suffix: appended to output names (``output.suffix``).
        ext: the outputs' format (``output.ext``).

    Raises:
        ConfigError: an output would overwrite an input; or, unless ``overwrite``,
            ``out_dir`` already holds outputs of another configuration (or of an
            unknown one), and mixing them would corrupt the report. The message
            names the settings that differ.
    """
    inputs = {job.path.resolve() for job in jobs}
    clash = next(
        (j for j in jobs if output_path(out_dir, j.name, suffix, ext).resolve() in inputs), None
    )
    if clash is not None:
        raise ConfigError(
            f"`output` {out_dir} would overwrite the input {clash.path}; "
            "write the results to another folder"
        )
    state, recorded = _load_state(out_dir / STATE_NAME)
    hashed = [dataclasses.replace(job, sha256=_digest(job.path)) for job in jobs]
    if overwrite:
        return ResumePlan(todo=tuple(hashed), done=())
    made = {str(e.get("pixel_hash")) for e in state.values()} | set(recorded)
    foreign = made - {pixel_hash}
    # PNGs with no record at all are not batchsr's (a run that stopped before its first
    # image still leaves its settings line); rglob: a recursive run's outputs nest.
    unknown = (
        not made
        and out_dir.is_dir()
        and any(p.suffix[1:] in OUTPUT_EXTS for p in out_dir.rglob("*"))
    )
    if foreign or unknown:
        diff = (
            "its files are not from batchsr"
            if unknown
            else _differences(settings, [recorded[h] for h in sorted(foreign) if h in recorded])
        )
        hint = "" if resume else "pass `resume` to continue a run of these settings there; "
        raise ConfigError(
            f"{out_dir} already holds results of another configuration ({diff}); {hint}"
            "pass `overwrite` to replace them, or choose another `output`"
        )
    if not resume:
        return ResumePlan(todo=tuple(hashed), done=())
    todo: list[Job] = []
    done: list[Scored] = []
    for job in hashed:
        entry = state.get(job.name)
        path = output_path(out_dir, job.name, suffix, ext)
        if (
            entry is not None
            and job.sha256 is not None
            and entry.get("input_sha256") == job.sha256
            and entry.get("pixel_hash") == pixel_hash
            and path.is_file()
        ):
            niqe = entry.get("niqe")
            error = entry.get("niqe_error")
            done.append(
                Scored(
                    id=job.id,
                    name=job.name,
                    path=path,
                    runtime_s=float(entry.get("runtime_s", 0.0)),  # type: ignore[arg-type]
                    niqe=None if niqe is None else float(niqe),  # type: ignore[arg-type]
                    niqe_error=None if error is None else str(error),
                    service_s=_float_or_none(entry.get("service_s")),
                )
            )
        else:
            todo.append(job)
    return ResumePlan(todo=tuple(todo), done=tuple(done))


def _float_or_none(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


class RunState:
    """The append-only record of finished images; one per run."""

    def __init__(
        self,
        out_dir: Path,
        *,
        pixel_hash: str,
        append: bool,
        settings: dict[str, Any] | None = None,
    ) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self._pixel_hash = pixel_hash
        path = out_dir / STATE_NAME
        torn = append and path.is_file() and not path.read_bytes().endswith(b"\n")
        self._file: IO[str] | None = path.open("a" if append else "w", encoding="utf-8")
        if torn:
            # A killed run left half a line: end it, so the next entry stays whole.
            self._file.write("\n")
        if settings is not None and not (append and pixel_hash in _load_state(path)[1]):
            self._file.write(json.dumps({"settings": settings, "pixel_hash": pixel_hash}) + "\n")
            self._file.flush()

    def record(self, row: Scored, job: Job) -> None:
        if self._file is None:
            return
        entry = {
            "name": row.name,
            "input_sha256": job.sha256,
            "pixel_hash": self._pixel_hash,
            "runtime_s": row.runtime_s,
            "service_s": row.service_s,
            "niqe": row.niqe,
            "niqe_error": row.niqe_error,
        }
        self._file.write(json.dumps(entry) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
