"""Report stage: the contest's ``report.json`` and the run's summary figures.

The contest format (CCF BDCI 2023 official demo) is
``{"A": [{"model_size", "time_all", "runtime_avg", "niqe_avg", "images": [...]}]}``
with runtime and NIQE as strings of 4 decimals. Rows are in input order whatever
order images finished in. A failed image keeps its row, with ``null`` in place of the
missing numbers and an ``error`` field saying why.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anyio.streams.memory import MemoryObjectReceiveStream

from batchsr.errors import ReportError
from batchsr.files import atomic_write
from batchsr.pipeline.budget import Budget
from batchsr.pipeline.stage import Meter
from batchsr.records import Failed, Scored

__all__ = [
    "Progress",
    "RowCollector",
    "RunSummary",
    "build_report",
    "contest_score",
    "is_error",
    "lossy_output",
    "run_report",
    "summarize",
    "write_report",
]

Row = Scored | Failed


@dataclass(frozen=True, slots=True)
class Progress:
    """A snapshot for progress displays."""

    done: int
    total: int
    errors: int
    elapsed_s: float


@dataclass(frozen=True, slots=True)
class RunSummary:
    """The run's figures. None where a figure is undefined (no image scored, ...).

    Attributes:
        images: images in the run; ``ok`` produced an SR image, ``failed`` did not.
        resumed: of the ``ok`` images, those carried over from an earlier run
            (``--resume``); throughput and the amortized score count only the others.
        scored: images with a NIQE; ``unscored`` have an output but no NIQE.
        wall_s: the run's wall time, first decode to last report row.
        runtime_avg_s: mean contest runtime (tiling start to stitched image). In a
            pipeline this includes queueing behind other images' tiles.
        service_avg_s: mean per-image service time: the work done for each image
            between those points (its tiling, its share of the engine calls, its
            stitching), without the queueing; None if no row recorded one.
        images_per_s: ``ok / wall_s``.
        score_contest: the contest's score, sqrt(7 - niqe_avg) / runtime_avg * 200.
        score_amortized: the same with wall / ok in place of runtime_avg: what a
            pipeline that overlaps images delivers.
    """

    images: int
    resumed: int
    ok: int
    failed: int
    scored: int
    unscored: int
    wall_s: float
    runtime_avg_s: float | None
    niqe_avg: float | None
    service_avg_s: float | None
    images_per_s: float
    score_contest: float | None
    score_amortized: float | None

    def as_dict(self) -> dict[str, Any]:
        """The figures by name (the log's ``summary`` field)."""
        return {name: getattr(self, name) for name in self.__slots__}


def lossy_output(ext: str, quality: int) -> dict[str, Any] | None:
    """The report's ``lossy_output`` entry for outputs written as ``ext``: None for PNG."""
    return None if ext == "png" else {"format": ext, "quality": quality}


def is_error(row: Row) -> bool:
    """A row the report marks with an error: no SR image, or no NIQE for it."""
    return isinstance(row, Failed) or (isinstance(row, Scored) and row.niqe_error is not None)


def contest_score(niqe_avg: float | None, runtime_avg_s: float | None) -> float | None:
    """sqrt(7 - niqe_avg) / runtime_avg * 200, or None where undefined."""
    if niqe_avg is None or runtime_avg_s is None or runtime_avg_s <= 0 or niqe_avg >= 7:
        return None
    return math.sqrt(7.0 - niqe_avg) / runtime_avg_s * 200.0


def summarize(rows: Sequence[Row], *, wall_s: float, resumed: int = 0) -> RunSummary:
    ok = [r for r in rows if isinstance(r, Scored)]
    scored = [r.niqe for r in ok if r.niqe is not None]
    runtime_avg = sum(r.runtime_s for r in ok) / len(ok) if ok else None
    services = [r.service_s for r in ok if r.service_s is not None]
    service_avg = sum(services) / len(services) if services else None
    niqe_avg = sum(scored) / len(scored) if scored else None
    fresh = len(ok) - resumed
    amortized = wall_s / fresh if fresh > 0 else None
    return RunSummary(
        images=len(rows),
        resumed=resumed,
        ok=len(ok),
        failed=len(rows) - len(ok),
        scored=len(scored),
        unscored=len(ok) - len(scored),
        wall_s=wall_s,
        runtime_avg_s=runtime_avg,
        niqe_avg=niqe_avg,
        service_avg_s=service_avg,
        images_per_s=fresh / wall_s if wall_s > 0 else 0.0,
        score_contest=contest_score(niqe_avg, runtime_avg),
        score_amortized=contest_score(niqe_avg, amortized),
    )


def _fmt(value: float | None) -> str | None:
    return None if value is None else f"{value:.4f}"


def _row(row: Row) -> dict[str, Any]:
    if isinstance(row, Failed):
        return {
            "img_name": row.name,
            "runtime": None,
            "niqe": None,
            "error": f"{row.stage}: {row.error_type}: {row.message}",
        }
    out: dict[str, Any] = {
        "img_name": row.name,
        "runtime": _fmt(row.runtime_s),
        "niqe": _fmt(row.niqe),
    }
    if row.niqe_error is not None:
        out["error"] = f"score: NIQEError: {row.niqe_error}"
    return out


def build_report(
    rows: Sequence[Row],
    summary: RunSummary,
    *,
    model_size: int,
    ranklist: str = "A",
    lossy_output: dict[str, Any] | None = None,
    nodes: Mapping[int, str] | None = None,
) -> dict[str, Any]:
    """The contest report for ``rows`` (any order; written in input order).

    ``lossy_output`` (``{"format": "jpg", "quality": 90}``) is recorded as
    ``lossy_output`` beside the contest's keys when the outputs were not PNG: their NIQE
    is that of the compressed pixels, which the contest's PNG outputs would not have.
    ``nodes`` (image id -> node name, a cluster run) adds a ``node`` field to each row
    that has one.
    """
    entry: dict[str, Any] = {
        "model_size": model_size,
        "time_all": summary.wall_s,
        "runtime_avg": _fmt(summary.runtime_avg_s),
        "niqe_avg": _fmt(summary.niqe_avg),
    }
    if lossy_output is not None:
        entry["lossy_output"] = lossy_output
    images = []
    for r in sorted(rows, key=lambda r: r.id):
        row = _row(r)
        if nodes is not None and r.id in nodes:
            row["node"] = nodes[r.id]
        images.append(row)
    entry["images"] = images
    return {ranklist: [entry]}


def write_report(path: Path, report: dict[str, Any]) -> None:
    """Write ``report`` as JSON atomically (temp file, then rename)."""
    text = json.dumps(report, indent=4) + "\n"
    try:
        atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    except OSError as err:
        raise ReportError(f"cannot write the report {path}: {err}") from err


class RowCollector:
    """A run's finished rows, in the order they arrived: the report stage adds each one
    as it comes, and the run reads them for its checkpoints and its result (so an
    interrupted run still has every row that arrived).

    Args:
        carried: rows finished by an earlier run (``resume``), reported as they are.
    """

    def __init__(self, carried: Sequence[Row] = ()) -> None:
        self._rows: list[Row] = list(carried)

    def add(self, row: Row) -> None:
        self._rows.append(row)

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def rows(self) -> tuple[Row, ...]:
        """The rows so far."""
        return tuple(self._rows)


async def run_report(
    receive: MemoryObjectReceiveStream[Row],
    collector: RowCollector,
    *,
    total: int,
    t0: float,
    on_progress: Callable[[Progress], None] | None = None,
    checkpoint: Callable[[], object] | None = None,
    checkpoint_every_s: float = 2.0,
    on_row: Callable[[Row], None] | None = None,
    budget: Budget | None = None,
) -> None:
    """Send every finished row to ``collector`` until the upstream closes.

    Args:
        checkpoint: called at most every ``checkpoint_every_s`` seconds to persist the
            rows so far (a partial report survives even a hard kill).
        on_row: called with each row as it arrives (the resume state records it).
        budget: given back each finished image's share.
    """
    meter: Meter[Row] = Meter("report")
    errors = 0
    last_checkpoint = time.perf_counter()
    async with receive:
        while (row := await meter.receive(receive)) is not None:
            collector.add(row)
            if budget is not None:
                budget.release(row.id)
            if on_row is not None:
                on_row(row)
            errors += is_error(row)
            meter.done(image_id=row.id, failed=isinstance(row, Failed))
            if on_progress is not None:
                on_progress(Progress(len(collector), total, errors, time.perf_counter() - t0))
            if (
                checkpoint is not None
                and time.perf_counter() - last_checkpoint >= checkpoint_every_s
            ):
                checkpoint()
                last_checkpoint = time.perf_counter()
