"""Read run logs and say where a run spent its time and which stage held it back.

A run log (``run.jsonl``) holds a ``run_started`` record, one ``item_done`` record per
stage per item (written by :class:`batchsr.pipeline.stage.Meter`) and a ``run_finished``
record. From the item records alone this module computes, per stage: items, workers,
busy time, utilisation (busy time / (workers x span)), service time statistics, time
starved waiting for input, time blocked sending (backpressure), buffer occupancy as
the consumer saw it, and throughput over time. It then names the bottleneck stage and
words one suggestion from those figures.

Logs are read tolerantly: a truncated last line (a killed run) and a missing
``run_finished`` are expected, and a file that holds several runs (the CLI appends)
is split at each ``run_started``. The library never prints; every figure is a frozen
record whose floats are finite or None, so ``dataclasses.asdict`` is valid JSON.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from batchsr.errors import AnalysisError, setting
from batchsr.vocab import INPUT_EDGE, MULTI_WORKER_STAGES, STAGES

__all__ = [
    "DeviceFigures",
    "NodeFigures",
    "QueueFigures",
    "RunAnalysis",
    "RunLog",
    "StageFigures",
    "Stats",
    "WorkerFigures",
    "analyze_logs",
    "analyze_run",
    "batch_images",
    "find_bottleneck",
    "queue_advice",
    "read_runs",
    "stats",
    "suggest",
]


#: Bins of the throughput-over-time series.
THROUGHPUT_BINS = 20

# Below this utilisation no stage is called saturated: on short runs fill and drain
# dominate and the busiest stage is only the least idle one.
_SATURATED = 0.5
# Cores busy on average, as a share of the usable cores, from which the CPU counts as
# full: the rest is scheduling slack, not room for another worker.
_CPU_FULL = 0.85
# A producer blocked this share of its time on a stream whose consumer also starved
# this share has jitter a larger buffer would absorb.
_BLOCKED_JITTER = 0.2
_STARVED_JITTER = 0.1


class Stats(NamedTuple):
    """Summary of a sample; None where the sample is empty."""

    #: number of values (shadows tuple.count on purpose: the JSON field is "count")
    count: int  # type: ignore[assignment]
    #: arithmetic mean
    mean: float | None
    #: median
    p50: float | None
    #: 95th percentile (linear interpolation)
    p95: float | None
    #: largest value
    max: float | None


def stats(values: Sequence[float]) -> Stats:
    """Count, mean, median, 95th percentile and maximum of ``values``."""
    if not values:
        return Stats(0, None, None, None, None)
    ordered = sorted(values)
    return Stats(
        count=len(ordered),
        mean=_finite(math.fsum(ordered) / len(ordered)),
        p50=_finite(_percentile(ordered, 50)),
        p95=_finite(_percentile(ordered, 95)),
        max=_finite(ordered[-1]),
    )


def _percentile(ordered: Sequence[float], q: float) -> float:
    """numpy's default ("linear") percentile of an already sorted sample."""
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _finite(value: float | None) -> float | None:
    """JSON has no inf or NaN: such a figure is reported as None."""
    if value is None or not math.isfinite(value):
        return None
    return value


def _share(part: float, whole: float) -> float | None:
    return _finite(part / whole) if whole > 0 else None


@dataclass(frozen=True, slots=True)
class RunLog:
    """The records of one run, as read from a log.

    Attributes:
        label: names the run in output (file name, plus ``#N`` when a file holds
            several runs).
        started: the ``run_started`` record, or None when the log lacks it.
        finished: the ``run_finished`` record, or None for an interrupted run.
        interrupted: the ``run_interrupted`` record of a run stopped by a signal.
        pipeline: a cluster run's first ``pipeline_started`` record: the tile
            geometry and engine its pipelines chose (the driver's start record cannot
            know them).
        items: every ``item_done`` and ``batch_flushed`` record with numeric times.
        failures: ``image_failed`` records.
        bad_lines: lines that were not JSON objects (a truncated last line).
    """

    label: str
    started: Mapping[str, Any] | None
    finished: Mapping[str, Any] | None
    items: tuple[Mapping[str, Any], ...]
    failures: tuple[Mapping[str, Any], ...] = ()
    bad_lines: int = 0
    interrupted: Mapping[str, Any] | None = None
    pipeline: Mapping[str, Any] | None = None

    @property
    def origin(self) -> float:
        """The run's time zero on the perf_counter clock: when the first stage began
        waiting for its first item (every stage task starts together)."""
        return min(r["t_start"] - r.get("wait_in_s", 0.0) for r in self.items)

    @property
    def end(self) -> float:
        return max(r["t_end"] for r in self.items)

    @property
    def pipelines(self) -> int:
        """Pipelines whose records the log holds: 1, or a cluster run's count."""
        return max(1, len({r["pipeline"] for r in self.items if "pipeline" in r}))

    def workers(self, stage: str) -> int:
        """Configured workers of ``stage`` (in every pipeline of a cluster run), or the
        number seen in the log."""
        configured = _config(self).get("workers", {})
        if stage in MULTI_WORKER_STAGES and isinstance(configured.get(stage), int):
            return int(configured[stage]) * self.pipelines
        if stage not in MULTI_WORKER_STAGES and stage in STAGES:
            return self.pipelines
        return max(1, len({r.get("worker", 0) for r in self.items if r["stage"] == stage}))

    def stage_items(self, stage: str) -> list[Mapping[str, Any]]:
        """The stage's ``item_done`` records, in start order."""
        return sorted(
            (r for r in self.items if r["stage"] == stage and r["event"] == "item_done"),
            key=lambda r: r["t_start"],
        )

    def stages(self) -> list[str]:
        """Stages present in the log, in pipeline order (unknown names last)."""
        seen = {r["stage"] for r in self.items}
        return [s for s in STAGES if s in seen] + sorted(seen - set(STAGES))


def _config(run: RunLog) -> Mapping[str, Any]:
    if run.started is None:
        return {}
    config = run.started.get("config")
    return config if isinstance(config, Mapping) else {}


def read_runs(path: Path) -> list[RunLog]:
    """Read a JSON-lines run log into one :class:`RunLog` per run it holds.

    Lines that are not JSON objects are counted, not fatal: the last line of a killed
    run is often cut short. Records before the first ``run_started`` form a run of
    their own (a log whose head was lost).

    Raises:
        AnalysisError: the file cannot be read, or holds no stage records.
    """
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as err:
        raise AnalysisError(f"cannot read the log {path}: {err.strerror or err}") from err
    groups: list[dict[str, Any]] = []

    def new_group(started: Mapping[str, Any] | None) -> dict[str, Any]:
        group: dict[str, Any] = {
            "started": started,
            "finished": None,
            "interrupted": None,
            "pipeline": None,
            "items": [],
            "failures": [],
            "bad": 0,
        }
        groups.append(group)
        return group

    current: dict[str, Any] | None = None
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            (current or new_group(None))["bad"] += 1
            continue
        event = record.get("event")
        if event == "run_started":
            current = new_group(record)
        elif current is None:
            current = new_group(None)
        if event == "run_finished":
            current["finished"] = record
        elif event == "run_interrupted":
            current["interrupted"] = record
        elif event == "pipeline_started" and current["pipeline"] is None:
            current["pipeline"] = record
        elif event == "image_failed":
            current["failures"].append(record)
        elif event in ("item_done", "batch_flushed") and _is_timed(record):
            current["items"].append(record)
    for g in groups:
        g["items"] = _merge_pipelines(g["items"])
    runs = [g for g in groups if g["items"]]
    if not runs:
        raise AnalysisError(
            f"{path} holds no stage records (item_done); is it a batchsr run log "
            "(OUTPUT/run.jsonl), and did the run get past opening the engine?"
        )
    return [
        RunLog(
            label=path.name if len(runs) == 1 else f"{path.name}#{i + 1}",
            started=g["started"],
            finished=g["finished"],
            items=tuple(g["items"]),
            failures=tuple(g["failures"]),
            bad_lines=g["bad"],
            interrupted=g["interrupted"],
            pipeline=g["pipeline"],
        )
        for i, g in enumerate(runs)
    ]


def _merge_pipelines(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A cluster run's records, numbered as one run's: each pipeline counts its stage
    workers and batches from 0, so ``worker`` becomes a run-wide lane per (pipeline,
    stage worker) and ``batch_id`` a run-wide batch; the pipeline and node stay."""
    if not any("pipeline" in r for r in items):
        return items
    lanes: dict[tuple[str, Any, Any], int] = {}
    batches: dict[tuple[Any, Any], int] = {}
    out = []
    for r in items:
        r = dict(r)
        key = (r["stage"], r.get("pipeline"), r.get("worker", 0))
        r["worker"] = lanes.setdefault(key, sum(k[0] == r["stage"] for k in lanes))
        if isinstance(r.get("batch_id"), int):
            r["batch_id"] = batches.setdefault((r.get("pipeline"), r["batch_id"]), len(batches))
        out.append(r)
    return out


def _is_timed(record: Mapping[str, Any]) -> bool:
    return (
        isinstance(record.get("stage"), str)
        and isinstance(record.get("t_start"), int | float)
        and isinstance(record.get("t_end"), int | float)
    )


@dataclass(frozen=True, slots=True)
class QueueFigures:
    """The buffer a stage receives from, as its workers saw it when asking for input.

    Attributes:
        edge: the ``[queues]`` key of the stream.
        capacity: its configured buffer size, None when the log has no config.
        mean, max: items buffered at the moments the stage called receive
            (``queue_in``): a sample, not a time average.
        full_share: share of those samples at capacity.
    """

    edge: str
    capacity: int | None
    mean: float | None
    max: int | None
    full_share: float | None


@dataclass(frozen=True, slots=True)
class WorkerFigures:
    """One worker of a stage."""

    worker: int
    items: int
    busy_s: float
    utilisation: float | None


@dataclass(frozen=True, slots=True)
class DeviceFigures:
    """Infer records grouped by the ``device`` field (TPU runs)."""

    device: str
    workers: int
    batches: int
    tiles: int
    padded: int
    busy_s: float
    utilisation: float | None


@dataclass(frozen=True, slots=True)
class NodeFigures:
    """One node of a cluster run (records carry ``node``).

    Attributes:
        pipelines: pipelines the node ran.
        images: images its pipelines reported (error rows included).
        span_s: its first to last record.
        images_per_s: ``images / span_s``; per_pipeline: the same per pipeline, the
            figure that compares nodes running different pipeline counts.
        infer_busy_s, infer_utilisation: its infer workers' busy time, and that as a
            share of their capacity over its span.
    """

    node: str
    pipelines: int
    images: int
    span_s: float
    images_per_s: float | None
    per_pipeline: float | None
    infer_busy_s: float
    infer_utilisation: float | None


@dataclass(frozen=True, slots=True)
class StageFigures:
    """Where one stage's worker time went.

    Shares are of ``workers x span``; busy + starved + blocked falls short of 1 by
    the time a worker spent outside any item (opening an engine, after its input
    ended).

    Attributes:
        stage: the stage name.
        workers: configured (or seen) worker tasks.
        items: records (images, or batches for infer and stitch).
        images: distinct images the stage handled.
        failed: items passed on as failures.
        busy_s: worker-seconds spent working (``busy_s`` summed).
        starved_s: worker-seconds waiting for input (``wait_in_s``).
        blocked_s: worker-seconds blocked sending downstream (``wait_out_s``).
        utilisation: busy share; starved and blocked: the other two shares.
        service_s: per-item busy time.
        cpu_s: CPU seconds of the work the stage ran in worker threads (``cpu_s``
            summed), None for a stage that logs none (infer: the engine's threads are
            not counted per stage) and for older logs.
        queue: the input buffer.
        throughput: items finished per second in each of ``RunAnalysis.bin_s`` bins.
        per_worker: the same per worker task.
    """

    stage: str
    workers: int
    items: int
    images: int
    failed: int
    busy_s: float
    starved_s: float
    blocked_s: float
    utilisation: float | None
    starved: float | None
    blocked: float | None
    service_s: Stats
    cpu_s: float | None
    queue: QueueFigures
    throughput: tuple[float, ...]
    per_worker: tuple[WorkerFigures, ...]


@dataclass(frozen=True, slots=True)
class RunAnalysis:
    """A run's figures, bottleneck and advice.

    Attributes:
        label: the run's name (from the log file).
        complete: the log has its ``run_finished`` record.
        interrupted: the signal that stopped the run (``run_interrupted``), if any.
        bad_lines: unparsable lines skipped.
        images: images in the run (from ``run_started``, else seen in the log).
        ok, failed: images finished and failed (the end record's summary, which
            counts images resumed from an earlier run; else the report stage's records).
        wall_s: the run's own wall time (end record), None when killed.
        span_s: first receive to last record: the denominator of every share.
        images_per_s: images this run finished (report records) / ``span_s``.
        runtime_avg_s: mean contest runtime (tiling start to stitched image).
        bin_s: width of the throughput bins.
        concurrency: busy worker-seconds of all stages / span: how many workers were
            busy on average (a worker waiting on an engine's threads counts as busy).
        cores, cpu_busy: the cores the process could use and how many it kept busy
            on average (process CPU time / wall time, every thread counted), from the
            end record; None for logs without them (killed runs, older logs).
        cpu_s: that process CPU time in seconds (every thread, the engine's included).
        stages: per-stage figures in pipeline order.
        devices: infer grouped by device (empty unless records carry ``device``).
        nodes: a cluster run's nodes (empty for a local run).
        slowest_node: the node with the lowest images/s per pipeline, None unless
            the run had two nodes or more.
        padded_share: padded slots / all batch slots over infer records.
        bottleneck: the stage that holds the run back, None if nothing ran.
        suggestion: one line grounded in the figures.
        advice: further notes (buffers that are too small or never used).
        config: the run's effective config, if logged.
        geometry: the tile geometry, if logged.
        model: the model record, if logged.
    """

    label: str
    complete: bool
    interrupted: str | None
    bad_lines: int
    images: int
    ok: int
    failed: int
    wall_s: float | None
    span_s: float
    images_per_s: float | None
    runtime_avg_s: float | None
    bin_s: float
    concurrency: float | None
    cores: int | None
    cpu_busy: float | None
    cpu_s: float | None
    stages: tuple[StageFigures, ...]
    devices: tuple[DeviceFigures, ...]
    nodes: tuple[NodeFigures, ...]
    slowest_node: str | None
    padded_share: float | None
    bottleneck: str | None
    suggestion: str
    advice: tuple[str, ...]
    config: Mapping[str, Any] | None = field(default=None)
    geometry: Mapping[str, Any] | None = field(default=None)
    model: Mapping[str, Any] | None = field(default=None)

    def stage(self, name: str) -> StageFigures | None:
        """The figures of stage ``name``, None if it logged nothing."""
        return next((s for s in self.stages if s.stage == name), None)


def _images_of(record: Mapping[str, Any], batch_images: Mapping[int, list[int]]) -> list[int]:
    """Image ids an item record touched (batch records via the infer records)."""
    if isinstance(record.get("image_id"), int):
        return [record["image_id"]]
    ids = record.get("image_ids")
    if isinstance(ids, list):
        return [i for i in ids if isinstance(i, int)]
    batch = record.get("batch_id")
    return list(batch_images.get(batch, [])) if isinstance(batch, int) else []


def batch_images(run: RunLog) -> dict[int, list[int]]:
    """batch_id -> the image ids its tiles came from (from infer records)."""
    return {
        r["batch_id"]: list(r.get("image_ids", []))
        for r in run.items
        if r["stage"] == "infer" and isinstance(r.get("batch_id"), int)
    }


def _stage_figures(
    run: RunLog,
    stage: str,
    *,
    origin: float,
    span: float,
    bin_s: float,
    by_batch: Mapping[int, list[int]],
) -> StageFigures:
    records = run.stage_items(stage)
    workers = run.workers(stage)
    capacity_s = workers * span
    busy = [max(0.0, float(r.get("busy_s", 0.0))) for r in records]
    # batch_flushed (tile's final partial batch) has a stale t_start: only its send
    # counts, as blocked time.
    flushed = [r for r in run.items if r["stage"] == stage and r["event"] == "batch_flushed"]
    starved_s = math.fsum(float(r.get("wait_in_s", 0.0)) for r in records)
    blocked_s = math.fsum(float(r.get("wait_out_s", 0.0)) for r in (*records, *flushed))
    busy_s = math.fsum(busy)
    edge = INPUT_EDGE.get(stage, "")
    cap = _config(run).get("queues", {}).get(edge)
    capacity = int(cap) if isinstance(cap, int) else None
    depths = [int(r["queue_in"]) for r in records if isinstance(r.get("queue_in"), int)]
    queue = QueueFigures(
        edge=edge,
        capacity=capacity,
        mean=_finite(sum(depths) / len(depths)) if depths else None,
        max=max(depths) if depths else None,
        full_share=(
            _share(sum(d >= capacity for d in depths), len(depths)) if depths and capacity else None
        ),
    )
    counts = [0] * THROUGHPUT_BINS
    for r in records:
        i = min(THROUGHPUT_BINS - 1, max(0, int((r["t_end"] - origin) / bin_s)))
        counts[i] += 1
    per_worker = []
    for w in sorted({int(r.get("worker", 0)) for r in records}):
        mine = [b for r, b in zip(records, busy, strict=True) if int(r.get("worker", 0)) == w]
        per_worker.append(
            WorkerFigures(
                worker=w,
                items=len(mine),
                busy_s=math.fsum(mine),
                utilisation=_share(math.fsum(mine), span),
            )
        )
    images = {i for r in records for i in _images_of(r, by_batch)}
    threaded = [float(r["cpu_s"]) for r in records if "cpu_s" in r]
    return StageFigures(
        stage=stage,
        workers=workers,
        items=len(records),
        images=len(images),
        failed=sum(bool(r.get("failed")) for r in records),
        busy_s=busy_s,
        starved_s=starved_s,
        blocked_s=blocked_s,
        utilisation=_share(busy_s, capacity_s),
        starved=_share(starved_s, capacity_s),
        blocked=_share(blocked_s, capacity_s),
        service_s=stats(busy),
        cpu_s=math.fsum(threaded) if threaded else None,
        queue=queue,
        throughput=tuple(c / bin_s for c in counts),
        per_worker=tuple(per_worker),
    )


def _device_figures(run: RunLog, span: float) -> tuple[DeviceFigures, ...]:
    infer = [r for r in run.stage_items("infer") if isinstance(r.get("device"), str)]
    out = []
    for device in sorted({r["device"] for r in infer}):
        mine = [r for r in infer if r["device"] == device]
        workers = len({r.get("worker", 0) for r in mine})
        busy_s = math.fsum(max(0.0, float(r.get("busy_s", 0.0))) for r in mine)
        out.append(
            DeviceFigures(
                device=device,
                workers=workers,
                batches=len(mine),
                tiles=sum(int(r.get("tiles", 0)) for r in mine),
                padded=sum(int(r.get("padded", 0)) for r in mine),
                busy_s=busy_s,
                utilisation=_share(busy_s, workers * span),
            )
        )
    return tuple(out)


def _node_figures(run: RunLog) -> tuple[NodeFigures, ...]:
    tagged = [r for r in run.items if isinstance(r.get("node"), str)]
    infer_per_pipeline = run.workers("infer") / run.pipelines
    out = []
    for node in sorted({r["node"] for r in tagged}):
        mine = [r for r in tagged if r["node"] == node]
        pipelines = len({r.get("pipeline") for r in mine})
        start = min(r["t_start"] - float(r.get("wait_in_s", 0.0)) for r in mine)
        span = max(max(r["t_end"] for r in mine) - start, 1e-9)
        images = sum(r["stage"] == "report" and r["event"] == "item_done" for r in mine)
        busy = math.fsum(
            max(0.0, float(r.get("busy_s", 0.0)))
            for r in mine
            if r["stage"] == "infer" and r["event"] == "item_done"
        )
        rate = _share(images, span)
        out.append(
            NodeFigures(
                node=node,
                pipelines=pipelines,
                images=images,
                span_s=span,
                images_per_s=rate,
                per_pipeline=None if rate is None else rate / pipelines,
                infer_busy_s=busy,
                infer_utilisation=_share(busy, infer_per_pipeline * pipelines * span),
            )
        )
    return tuple(out)


def _padded_share(run: RunLog) -> float | None:
    infer = [r for r in run.stage_items("infer") if isinstance(r.get("tiles"), int)]
    tiles = sum(int(r["tiles"]) for r in infer)
    padded = sum(int(r.get("padded", 0)) for r in infer)
    return _share(padded, tiles + padded)


def analyze_run(run: RunLog) -> RunAnalysis:
    """Compute the figures, bottleneck and suggestion of one run."""
    origin, end = run.origin, run.end
    span = max(end - origin, 1e-9)
    bin_s = span / THROUGHPUT_BINS
    by_batch = batch_images(run)
    stages = tuple(
        _stage_figures(run, s, origin=origin, span=span, bin_s=bin_s, by_batch=by_batch)
        for s in run.stages()
    )
    summary = (run.finished or run.interrupted or {}).get("summary") or {}
    report = next((s for s in stages if s.stage == "report"), None)
    ok = summary.get("ok")
    if not isinstance(ok, int):
        ok = report.items - report.failed if report else 0
    failed = summary.get("failed")
    if not isinstance(failed, int):
        failed = report.failed if report else len({r.get("image_id") for r in run.failures})
    images = (run.started or {}).get("images")
    if not isinstance(images, int):
        images = max((s.images for s in stages), default=0)
    runtimes = [
        float(t)
        for r in run.stage_items("stitch")
        for t in r.get("runtimes_s", [])
        if isinstance(t, int | float)
    ]
    wall = summary.get("wall_s")
    devices = _device_figures(run, span)
    nodes = _node_figures(run)
    rated = [n for n in nodes if n.per_pipeline is not None]
    slowest = min(rated, key=lambda n: n.per_pipeline or 0.0).node if len(rated) > 1 else None
    padded = _padded_share(run)
    cores, cpu_busy, cpu_s = _cpu_use(run)
    bottleneck = find_bottleneck(stages)
    suggestion = suggest(
        stages, bottleneck, run=run, padded_share=padded, span_s=span, cpu=(cores, cpu_busy)
    )
    return RunAnalysis(
        label=run.label,
        complete=run.finished is not None,
        interrupted=(
            str(run.interrupted.get("signal", "signal")) if run.interrupted is not None else None
        ),
        bad_lines=run.bad_lines,
        images=images,
        ok=ok,
        failed=failed,
        wall_s=_finite(float(wall)) if isinstance(wall, int | float) else None,
        span_s=span,
        images_per_s=_share(report.items - report.failed, span) if report else None,
        runtime_avg_s=stats(runtimes).mean,
        bin_s=bin_s,
        concurrency=_share(math.fsum(s.busy_s for s in stages), span),
        cores=cores,
        cpu_busy=cpu_busy,
        cpu_s=cpu_s,
        stages=stages,
        devices=devices,
        nodes=nodes,
        slowest_node=slowest,
        padded_share=padded,
        bottleneck=bottleneck,
        suggestion=suggestion,
        advice=tuple(queue_advice(stages)),
        config=_config(run) or None,
        geometry=(run.started or {}).get("geometry") or (run.pipeline or {}).get("geometry"),
        model=(run.started or {}).get("model"),
    )


def _cpu_use(run: RunLog) -> tuple[int | None, float | None, float | None]:
    """(usable cores, cores busy on average, process CPU seconds) from the end
    record's ``cpu`` figures."""
    cpu = (run.finished or run.interrupted or {}).get("cpu")
    if not isinstance(cpu, Mapping):
        return None, None, None
    cores, cpu_s, wall_s = cpu.get("cores"), cpu.get("cpu_s"), cpu.get("wall_s")
    seconds = _finite(float(cpu_s)) if isinstance(cpu_s, int | float) else None
    if not isinstance(cores, int) or cores < 1:
        return None, None, seconds
    if seconds is None or not (isinstance(wall_s, int | float) and wall_s > 0):
        return cores, None, seconds
    return cores, _finite(seconds / float(wall_s)), seconds


def find_bottleneck(stages: Sequence[StageFigures]) -> str | None:
    """The stage that holds the run back: the highest utilisation among stages that
    are not mostly blocked sending (a blocked stage waits on one downstream of it).

    The report stage only collects rows and is never named.
    """
    candidates = [
        s for s in stages if s.stage != "report" and s.utilisation is not None and s.items
    ]
    free = [s for s in candidates if (s.blocked or 0.0) <= (s.utilisation or 0.0)]
    pool = free or candidates
    if not pool:
        return None
    return max(pool, key=lambda s: s.utilisation or 0.0).stage


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def _neighbours(
    stages: Sequence[StageFigures], name: str
) -> tuple[StageFigures | None, StageFigures | None]:
    order = [s.stage for s in stages]
    i = order.index(name)
    up = stages[i - 1] if i > 0 else None
    down = stages[i + 1] if i + 1 < len(stages) else None
    return up, down


def suggest(
    stages: Sequence[StageFigures],
    bottleneck: str | None,
    *,
    run: RunLog | None = None,
    padded_share: float | None = None,
    span_s: float | None = None,
    cpu: tuple[int | None, float | None] = (None, None),
) -> str:
    """One line naming what to change, with the figures that justify it.

    ``cpu`` is (usable cores, cores busy on average): where it is known, more CPU
    workers are advised only while cores sit idle.
    """
    if bottleneck is None:
        return "no stage records: nothing to suggest"
    s = next(x for x in stages if x.stage == bottleneck)
    up, down = _neighbours(stages, bottleneck)
    w = s.workers
    evidence = [f"{s.stage} busy {_pct(s.utilisation)} of {w} worker{'s' * (w != 1)}"]
    if up is not None and (up.blocked or 0) >= 0.05:
        evidence.append(f"{up.stage} blocked {_pct(up.blocked)} sending to it")
    if down is not None and down.stage != "report" and (down.starved or 0) >= 0.05:
        evidence.append(f"{down.stage} starved {_pct(down.starved)}")
    facts = ", ".join(evidence)
    if (s.utilisation or 0.0) < _SATURATED:
        return (
            f"no stage is saturated ({facts}): the run is latency-bound or too short "
            "for a steady state; time a longer input before tuning"
        )
    config = _config(run) if run is not None else {}
    model = config.get("model", {})
    on_cpu = model.get("device") == "cpu" and model.get("backend") != "sail"
    # Decode, save, score (and CPU engines) share the cores with every other stage:
    # another worker only helps where cores sit idle.
    n_cores, cpu_busy = cpu
    if n_cores is not None and cpu_busy is not None:
        if cpu_busy >= _CPU_FULL * n_cores:
            full = f"the CPU is full ({cpu_busy:.2f} of {n_cores} cores busy on average)"
            if bottleneck == "infer" and on_cpu:
                return f"{facts} -> {full}: more workers only share it; a GPU or TPU"
            if bottleneck in ("decode", "save", "score"):
                return f"{facts} -> {full}: more {bottleneck} workers only share it"
        cores = f", since only {cpu_busy:.2f} of {n_cores} cores are busy on average"
    else:
        busy = math.fsum(x.busy_s for x in stages) / span_s if span_s else None
        cores = ""
        if busy:
            cores = f" if cores sit idle (stages kept {busy:.1f} workers busy on average)"
    if bottleneck == "infer":
        action = f"add engines ({setting('workers.infer', w + 1)}) or a device"
        if on_cpu and cores:
            action = f"add engines ({setting('workers.infer', w + 1)}){cores}; else a GPU or TPU"
        if padded_share is not None and padded_share >= 0.1:
            action += (
                f"; {padded_share:.0%} of tile slots are padding: pick a batch that "
                "divides the tiles"
            )
    elif bottleneck == "decode":
        action = f"more decode workers ({setting('workers.decode', w + 1)}){cores}"
    elif bottleneck == "save":
        level = config.get("output", {}).get("compress_level")
        action = f"more save workers ({setting('workers.save', w + 1)}){cores}"
        if isinstance(level, int) and level > 1:
            action += f" or a lower {setting('output.compress_level')} (now {level})"
    elif bottleneck == "score":
        action = f"more score workers ({setting('workers.score', w + 1)}){cores}"
    elif bottleneck == "tile":
        action = (
            "tile is one task by design: larger tiles (`tiling.tile`) mean fewer cuts per image"
        )
    elif bottleneck == "stitch":
        action = "stitch is one task by design: larger tiles (`tiling.tile`) mean fewer pastes"
    else:
        action = f"give {bottleneck} more capacity"
    return f"{facts} -> {action}"


def queue_advice(stages: Sequence[StageFigures]) -> list[str]:
    """Notes on buffer sizes: too small where both ends wait on each other, idle where
    a buffer never filled."""
    notes: list[str] = []
    for prev, cur in itertools.pairwise(stages):
        q = cur.queue
        blocked, starved = prev.blocked or 0.0, cur.starved or 0.0
        if blocked >= _BLOCKED_JITTER and starved >= _STARVED_JITTER:
            notes.append(
                f"{setting('queues.' + q.edge)} (now {q.capacity}): {prev.stage} blocked "
                f"{blocked:.0%} while {cur.stage} starved {starved:.0%}: a larger buffer "
                "absorbs the jitter"
            )
        elif blocked >= _BLOCKED_JITTER and (cur.utilisation or 0.0) >= _SATURATED:
            notes.append(
                f"{setting('queues.' + q.edge)} (now {q.capacity}): {prev.stage} blocked "
                f"{blocked:.0%} on a busy {cur.stage} ({_pct(cur.utilisation)}): a larger "
                f"buffer only adds memory; {cur.stage} needs capacity"
            )
        elif (
            q.capacity
            and q.capacity > 2
            and cur.items >= 2 * q.capacity  # enough samples to judge the buffer
            and q.max is not None
            and q.max <= q.capacity // 4
        ):
            notes.append(
                f"{setting('queues.' + q.edge)} (now {q.capacity}) never held more than {q.max}: "
                f"{max(2, q.max + 1)} would do and saves memory"
            )
    return notes


def analyze_logs(paths: Iterable[Path]) -> list[RunAnalysis]:
    """Every run in every log, analysed, in the order given.

    Raises:
        AnalysisError: a log cannot be read or holds no stage records.
    """
    return [analyze_run(run) for path in paths for run in read_runs(path)]
