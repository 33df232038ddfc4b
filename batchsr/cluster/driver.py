"""The cluster run's driver: pipelines on the nodes, chunks handed out, one report.

Ray places and restarts the work; batchsr only says what each pipeline needs and
keeps the run's books. The driver:

1. lists the cluster's alive nodes and keeps those that offer what one pipeline asks
   for (``{"TPU": n}`` for a bmodel on the sail backend, one CPU otherwise, or the
   ``resources`` given), and starts ``workers_per_node`` pipeline actors on each
   (:class:`batchsr.cluster.worker.PipelineWorker`, each with its own engines);
2. hands out the jobs in chunks of ``chunk`` images, keeping ``in_flight`` chunks per
   pipeline, so a pipeline that finishes sooner is given more (dynamic balancing);
3. takes each finished chunk's rows into the report, the resume state and the run's
   log (the pipeline's records, tagged with node and pipeline).

Faults: Ray restarts an actor whose process died (``max_restarts``) and runs its
unfinished chunk calls again (``max_task_retries``); a pipeline that is gone for good
has its chunks handed to the others. A chunk's rows count only when the whole chunk
came back, and an image already reported is never taken twice, so the report holds
each image once; outputs are written atomically, so a rerun image replaces a whole
file with a whole file.
"""

from __future__ import annotations

import signal
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import structlog

from batchsr.cluster.connect import ClusterTarget, connect
from batchsr.cluster.worker import ChunkResult, PipelineWorker, WorkerInfo, WorkerSpec
from batchsr.config import Config
from batchsr.errors import BatchSRError, ClusterError
from batchsr.pipeline.report import (
    Progress,
    Row,
    RunSummary,
    build_report,
    is_error,
    lossy_output,
    summarize,
    write_report,
)
from batchsr.pipeline.stop import StopRequest
from batchsr.records import Failed, Job, Scored
from batchsr.resolve import ResolvedModel
from batchsr.resume import RunState

__all__ = [
    "ClusterOptions",
    "ClusterResult",
    "NodePlan",
    "pipeline_request",
    "plan_nodes",
    "run_cluster",
]

# Ray restarts a dead pipeline actor this many times and re-sends its unfinished
# chunks; past that its chunks go to the other pipelines.
_MAX_RESTARTS = 3
_CHECKPOINT_EVERY_S = 2.0
# A pipeline's start: process, imports, engine open (a bmodel load is seconds).
_START_TIMEOUT_S = 300.0
_WAIT_S = 0.25


@dataclass(frozen=True, slots=True)
class ClusterOptions:
    """How a run uses the cluster.

    Attributes:
        target: where the cluster is (:func:`batchsr.cluster.connect.parse_cluster`).
        workers_per_node: pipelines on each node that has the resources.
        chunk: images per hand-out: small enough to balance, large enough that
            the driver's round trip per chunk stays a small share of its work.
        in_flight: chunks a pipeline holds at once (its next one is queued while it
            works, so its stages never drain between chunks).
        resources: what each pipeline asks Ray for; empty takes the default (the
            node's TPUs split between its pipelines for bmodels, one CPU otherwise).
        local_cpus: CPUs of a Ray instance started for the run (None: all).
    """

    target: ClusterTarget
    workers_per_node: int = 1
    chunk: int = 4
    in_flight: int = 2
    resources: Mapping[str, float] = field(default_factory=dict)
    local_cpus: int | None = None


@dataclass(frozen=True, slots=True)
class NodePlan:
    """The pipelines one node runs, with what each of them asks for.

    Attributes:
        node_id: Ray's id of the node, which its pipelines' actors are pinned to.
        address: the node's IP address, for the log.
        pipelines: how many pipelines the node runs.
        request: what each of its pipelines asks Ray for.
        devices: with the node's TPUs split, each pipeline's device ids; else empty.
    """

    node_id: str
    address: str
    pipelines: int
    request: Mapping[str, float]
    devices: tuple[tuple[int, ...], ...] = ()

    @property
    def name(self) -> str:
        """The node as the log and the report name it: the start of its Ray id."""
        return self.node_id[:12]


@dataclass(frozen=True, slots=True)
class ClusterResult:
    """What a finished cluster run produced (the CLI reads it as it reads a local
    :class:`batchsr.pipeline.run.RunResult`)."""

    summary: RunSummary
    rows: tuple[Row, ...]
    report_path: Path
    out_dir: Path
    nodes: Mapping[int, str]
    plans: tuple[NodePlan, ...]
    interrupted: int | None = None
    engines_lost: bool = False
    requeued: int = 0
    # Engine calls run in the pipelines' processes, which the driver ends: none of
    # them can keep this process from exiting (``RunResult.abandoned_calls``).
    abandoned_calls: int = 0


def pipeline_request(
    config: Config, model: ResolvedModel, resources: Mapping[str, float]
) -> dict[str, float]:
    """What one pipeline asks Ray for, before a node's TPUs are split."""
    if resources:
        return dict(resources)
    # A bmodel runs on sail unless the emulator is asked for (as open_engine decides).
    if model.format == "bmodel" and config.model.backend != "cmodel":
        return {"TPU": 1.0}
    return {"CPU": 1.0}


def plan_nodes(
    nodes: Sequence[Mapping[str, Any]],
    request: Mapping[str, float],
    *,
    workers_per_node: int,
    tpu_split: bool,
) -> tuple[NodePlan, ...]:
    """The pipelines each alive node can run (``nodes`` as ``ray.nodes()`` lists them).

    A node runs ``workers_per_node`` pipelines, or as many as its resources hold; a
    node short of any requested resource runs none. With ``tpu_split`` the node's TPUs
    are divided between its pipelines, each taking its own device ids (a node started
    with ``--resources '{"TPU": 4}'`` exposes ids 0-3).
    """
    plans = []
    for node in nodes:
        if not node.get("Alive", False):
            continue
        offered: Mapping[str, float] = node.get("Resources", {})
        fits = min(
            (int(offered.get(name, 0.0) // amount) for name, amount in request.items() if amount),
            default=workers_per_node,
        )
        count = min(workers_per_node, fits)
        if count < 1:
            continue
        node_request = dict(request)
        devices: tuple[tuple[int, ...], ...] = ()
        if tpu_split:
            per = int(offered.get("TPU", 0.0)) // count
            node_request["TPU"] = float(per)
            devices = tuple(tuple(range(k * per, (k + 1) * per)) for k in range(count))
        plans.append(
            NodePlan(
                node_id=str(node["NodeID"]),
                address=str(node.get("NodeManagerAddress", "")),
                pipelines=count,
                request=node_request,
                devices=devices,
            )
        )
    return tuple(plans)


@dataclass(slots=True)
class _Slot:
    """The driver's view of one pipeline actor."""

    actor: Any
    plan: NodePlan
    index: int
    in_flight: int = 0
    alive: bool = True
    info: WorkerInfo | None = None


class _Books:
    """The run's rows, report and resume state, as chunks come back."""

    def __init__(
        self,
        *,
        jobs: Sequence[Job],
        carried: Sequence[Scored],
        report_path: Path,
        model: ResolvedModel,
        config: Config,
        state: RunState | None,
        on_progress: Callable[[Progress], None] | None,
    ) -> None:
        self.rows: list[Row] = list(carried)
        self.nodes: dict[int, str] = {}
        self._carried = len(carried)
        self._by_id = {job.id: job for job in jobs}
        self._done: set[int] = {row.id for row in carried}
        self._total = len(carried) + len(jobs)
        self._errors = 0
        self._report_path = report_path
        self._model = model
        self._config = config
        self._state = state
        self._on_progress = on_progress
        self.t0 = time.perf_counter()
        self._last = self.t0

    def fail(self, jobs: Sequence[Job], err: BaseException) -> None:
        """Error rows for ``jobs``, which no pipeline is left to run."""
        reason = f"every pipeline was lost; the last: {_message(err)}"
        rows = tuple(
            Failed(
                id=j.id, name=j.name, stage="cluster", error_type=type(err).__name__,
                message=reason,
            )
            for j in jobs
        )  # fmt: skip
        self._take(rows, node=None)

    def take(self, result: ChunkResult) -> int:
        """Record a chunk's rows; the number skipped as already reported."""
        return self._take(result.rows, node=result.info.node)

    def _take(self, rows: Sequence[Row], *, node: str | None) -> int:
        skipped = 0
        for row in rows:
            if row.id in self._done:
                skipped += 1
                continue
            self._done.add(row.id)
            self.rows.append(row)
            if node is not None:
                self.nodes[row.id] = node
            if self._state is not None and isinstance(row, Scored):
                self._state.record(row, self._by_id[row.id])
            self._errors += is_error(row)
            if self._on_progress is not None:
                self._on_progress(
                    Progress(len(self.rows), self._total, self._errors, self.elapsed())
                )
        if time.perf_counter() - self._last >= _CHECKPOINT_EVERY_S:
            self.checkpoint()
        return skipped

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def checkpoint(self) -> RunSummary:
        self._last = time.perf_counter()
        summary = summarize(self.rows, wall_s=self.elapsed(), resumed=self._carried)
        out = self._config.output
        lossy = lossy_output(out.ext, out.quality)
        write_report(
            self._report_path,
            build_report(
                self.rows,
                summary,
                model_size=self._model.size_bytes,
                lossy_output=lossy,
                nodes=self.nodes,
            ),
        )
        return summary


def run_cluster(
    jobs: Sequence[Job],
    *,
    config: Config,
    model: ResolvedModel,
    out_dir: Path,
    options: ClusterOptions,
    forward: Callable[[Sequence[str]], None],
    carried: Sequence[Scored] = (),
    state: RunState | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    stop: StopRequest | None = None,
    log_level: str = "info",
) -> ClusterResult:
    """Run ``jobs`` across the cluster's nodes, as :func:`run_pipeline` runs them here.

    Args:
        out_dir: the shared output folder: every node writes its images there, so it
            must be one path that all of them reach (a shared filesystem).
        forward: writes the pipelines' JSON-lines records into the run's log.
        stop: once requested, no more work is handed out and the pipelines are stopped;
            the report keeps every finished image and ``ClusterResult.interrupted``
            names the signal. The driver only reads it (it may run in a worker thread
            while the caller's event loop requests the stop) and acts within a quarter
            second.

    Raises:
        ClusterError: Ray is missing, the cluster cannot be reached, or no node offers
            what a pipeline needs (nothing has been written).
    """
    log = structlog.get_logger()
    out_dir = out_dir.resolve()
    jobs = [replace(job, path=job.path.resolve()) for job in jobs]
    request = pipeline_request(config, model, options.resources)
    tpu_split = "TPU" in request and not options.resources
    ray = connect(
        options.target,
        num_cpus=options.local_cpus,
        resources=_local_resources(config, request) if options.target.local else None,
    )
    try:
        plans = plan_nodes(
            ray.nodes(),
            request,
            workers_per_node=options.workers_per_node,
            tpu_split=tpu_split,
        )
        if not plans:
            raise ClusterError(
                f"no node of the cluster offers what a pipeline needs ({_fmt(request)}); "
                f"the nodes offer: {_offers(ray.nodes())}"
            )
        out_dir.mkdir(parents=True, exist_ok=True)
        spec = WorkerSpec(config, model, out_dir, pipeline=0, log_level=log_level)
        slots = _start_pipelines(ray, plans, spec)
        log.info(
            "run_started",
            config=config.to_dict(),
            model=model.log_record(),
            images=len(jobs),
            out_dir=str(out_dir),
            cluster={
                "address": options.target.address or "local",
                "nodes": [
                    {
                        "node": p.name,
                        "address": p.address,
                        "pipelines": p.pipelines,
                        "request": dict(p.request),
                    }
                    for p in plans
                ],
                "pipelines": len(slots),
                "chunk": options.chunk,
                "in_flight": options.in_flight,
            },
        )
        starts = [s.actor.start.remote() for s in slots]
        # Every answer in, failures too, before a refusal shuts Ray down: an actor's
        # error still on its way to a driver that has gone is logged by Ray's core to
        # the console, between the CLI's lines.
        ray.wait(starts, num_returns=len(starts), timeout=_START_TIMEOUT_S)
        try:
            infos = ray.get(starts, timeout=1)
        except Exception as err:  # Ray wraps what the actor raised
            for slot in slots:
                ray.kill(slot.actor, no_restart=True)
            cause = getattr(err, "cause", None)
            if isinstance(cause, BatchSRError):
                raise type(cause)(str(cause)) from err
            raise ClusterError(f"a pipeline did not start: {_message(err)}") from err
        for slot, info in zip(slots, infos, strict=True):
            slot.info = info
            log.info(
                "pipeline_ready",
                pipeline=info.pipeline,
                node=info.node,
                host=info.host,
                pid=info.pid,
            )
        books = _Books(
            jobs=jobs,
            carried=carried,
            report_path=out_dir / "report.json",
            model=model,
            config=config,
            state=state,
            on_progress=on_progress,
        )
        cpu0 = time.process_time()
        requeued = _dispatch(ray, slots, jobs, options, books, forward, stop, log)
        signum = stop.signum if stop is not None else None
        # The driver's own load per image: what bounds how many hosts one driver feeds.
        driver = {
            "cpu_s": round(time.process_time() - cpu0, 4),
            "wall_s": round(books.elapsed(), 4),
            "chunks": -(-len(jobs) // options.chunk) + requeued,
        }
        if signum is None:
            for slot in slots:
                if slot.alive:
                    forward(_finish(ray, slot))
        summary = books.checkpoint()
        lost = not any(s.alive for s in slots)
        event = "run_finished" if signum is None else "run_interrupted"
        fields: dict[str, Any] = {
            "summary": summary.as_dict(),
            "requeued_chunks": requeued,
            "driver": driver,
        }
        if signum is not None:
            fields["signal"] = signal.Signals(signum).name
            fields["finished"] = len(books.rows)
        log.info(event, report=str(out_dir / "report.json"), **fields)
        return ClusterResult(
            summary=summary,
            rows=tuple(sorted(books.rows, key=lambda r: r.id)),
            report_path=out_dir / "report.json",
            out_dir=out_dir,
            nodes=dict(books.nodes),
            plans=plans,
            interrupted=signum,
            engines_lost=lost,
            requeued=requeued,
        )
    finally:
        ray.shutdown()


def _dispatch(
    ray: Any,
    slots: list[_Slot],
    jobs: Sequence[Job],
    options: ClusterOptions,
    books: _Books,
    forward: Callable[[Sequence[str]], None],
    stop: StopRequest | None,
    log: Any,
) -> int:
    """Hand out chunks until every job is reported; the number of chunks handed out
    again after their pipeline was lost."""
    pending = deque(tuple(jobs[i : i + options.chunk]) for i in range(0, len(jobs), options.chunk))
    in_flight: dict[Any, tuple[_Slot, tuple[Job, ...]]] = {}
    requeued = 0
    last_error: BaseException | None = None

    def fill() -> None:
        # Round-robin, one chunk at a time, so the first chunks reach every pipeline.
        while pending:
            ready = [s for s in slots if s.alive and s.in_flight < options.in_flight]
            if not ready:
                return
            for slot in ready:
                if not pending:
                    return
                chunk = pending.popleft()
                ref = slot.actor.run_chunk.remote(list(chunk))
                in_flight[ref] = (slot, chunk)
                slot.in_flight += 1

    fill()
    while in_flight:
        if stop is not None and stop.signum is not None:
            for slot in slots:
                ray.kill(slot.actor, no_restart=True)
            return requeued
        done, _ = ray.wait(list(in_flight), num_returns=1, timeout=_WAIT_S)
        for ref in done:
            slot, chunk = in_flight.pop(ref)
            slot.in_flight -= 1
            try:
                result: ChunkResult = ray.get(ref)
            except Exception as err:  # the pipeline is gone: its chunk goes elsewhere
                last_error = err
                if slot.alive:
                    slot.alive = False
                    log.warning(
                        "pipeline_lost",
                        pipeline=slot.index,
                        node=slot.plan.name,
                        error_type=type(err).__name__,
                        error=_message(err),
                    )
                    ray.kill(slot.actor, no_restart=True)
                pending.appendleft(chunk)
                requeued += 1
                log.warning("chunk_requeued", pipeline=slot.index, image_ids=[j.id for j in chunk])
                continue
            forward(result.records)
            skipped = books.take(result)
            log.info(
                "chunk_done",
                pipeline=slot.index,
                node=result.info.node,
                pid=result.info.pid,
                image_ids=[row.id for row in result.rows],
                duplicates=skipped,
            )
        if pending and not any(s.alive for s in slots):
            # As locally when every engine is lost: the rest become error rows, the
            # report is whole, and the CLI exits 1.
            log.error("pipelines_lost", images=sum(len(c) for c in pending))
            books.fail([j for c in pending for j in c], last_error or ClusterError("lost"))
            return requeued
        fill()
    return requeued


def _start_pipelines(ray: Any, plans: Sequence[NodePlan], spec: WorkerSpec) -> list[_Slot]:
    """One actor per pipeline of ``plans``, each running ``spec`` with its own index and,
    where its node's TPUs are split, its own devices."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    remote = ray.remote(PipelineWorker)
    slots: list[_Slot] = []
    for plan in plans:
        for k in range(plan.pipelines):
            index = len(slots)
            config = spec.config
            if plan.devices:
                devices = ",".join(str(d) for d in plan.devices[k])
                config = replace(config, model=replace(config.model, devices=devices))
            request = dict(plan.request)
            actor = remote.options(
                num_cpus=request.pop("CPU", 0.0),
                resources=request,
                # soft: a node that died takes its pipeline's restart elsewhere.
                scheduling_strategy=NodeAffinitySchedulingStrategy(plan.node_id, soft=True),
                max_restarts=_MAX_RESTARTS,
                max_task_retries=_MAX_RESTARTS,
            ).remote(replace(spec, config=config, pipeline=index), plan.name)
            slots.append(_Slot(actor=actor, plan=plan, index=index))
    return slots


def _finish(ray: Any, slot: _Slot) -> tuple[str, ...]:
    try:
        lines: tuple[str, ...] = ray.get(slot.actor.finish.remote(), timeout=60)
    except Exception:  # its records are a nicety; the rows are already in
        lines = ()
    ray.kill(slot.actor, no_restart=True)
    return lines


def _local_resources(config: Config, request: Mapping[str, float]) -> dict[str, float]:
    """A Ray instance started for the run offers this machine's TPUs (``--devices``)."""
    if "TPU" in request:
        return {"TPU": float(len(config.model.device_ids))}
    return {name: amount for name, amount in request.items() if name != "CPU"}


def _fmt(request: Mapping[str, float]) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in sorted(request.items())) or "nothing"


def _offers(nodes: Sequence[Mapping[str, Any]]) -> str:
    alive = [n for n in nodes if n.get("Alive")]
    if not alive:
        return "no alive node"
    return "; ".join(
        f"{str(n['NodeID'])[:12]}: "
        + _fmt({k: v for k, v in n.get("Resources", {}).items() if not k.startswith("node:")})
        for n in alive
    )


def _message(err: BaseException) -> str:
    """The error's own line: Ray's wrapped errors put the remote traceback first."""
    text = str(err).strip().splitlines()
    return text[-1] if text else type(err).__name__
