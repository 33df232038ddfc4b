"""One local run: open the engine, decide the tile geometry, run the stages
(``batchsr.pipeline.wiring``) and keep the books: the report, its checkpoints, the
resume state and the run's first and last log records.

A :class:`~batchsr.pipeline.stop.StopRequest` stops a run as an interrupt does: the
stages are cancelled, the report keeps every finished image and the log ends with
``run_interrupted``. The library never watches signals nor exits the process.
"""

from __future__ import annotations

import os
import signal
import time
import tracemalloc
from collections.abc import AsyncIterable, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import structlog
from threadpoolctl import threadpool_limits

from batchsr import native
from batchsr.color import merge_y
from batchsr.config import Config
from batchsr.engines import Engine
from batchsr.errors import ConfigError, EngineError, StoppedError
from batchsr.pipeline.budget import MIB, Budget, resident_bytes
from batchsr.pipeline.geometry import geometry_for
from batchsr.pipeline.infer import AbandonedCalls, InferPool, call_engine
from batchsr.pipeline.report import (
    Progress,
    Row,
    RowCollector,
    RunSummary,
    build_report,
    lossy_output,
    summarize,
    write_report,
)
from batchsr.pipeline.score import Scorer
from batchsr.pipeline.stop import StopRequest
from batchsr.pipeline.wiring import RunRequest, StageWiring, engine_opener, run_stages
from batchsr.records import Job, Scored
from batchsr.resolve import ResolvedModel
from batchsr.resume import RunState
from batchsr.tiling import TileGeometry, round_up
from batchsr.versions import versions

__all__ = ["RunResult", "default_scorer", "infer_placements", "run_pipeline"]


@dataclass(frozen=True, slots=True)
class RunResult:
    """What a finished run produced.

    Attributes:
        interrupted: the signal a stop was requested for, or None.
        engines_lost: every infer worker retired; the images after that are error rows.
        abandoned: the engine calls that ran past their timeout; those whose threads
            still run (:attr:`abandoned_calls`, counted when asked: a hung device call
            may never return, so the caller may exit without waiting for them).
    """

    summary: RunSummary
    rows: tuple[Row, ...]
    report_path: Path
    out_dir: Path
    geometry: TileGeometry
    interrupted: int | None = None
    engines_lost: bool = False
    abandoned: AbandonedCalls = field(default_factory=AbandonedCalls)

    @property
    def abandoned_calls(self) -> int:
        return self.abandoned.running()


def default_scorer() -> Scorer:
    """The contest's NIQE (imported on first use: scoring is optional)."""
    from batchsr.metrics import niqe

    return niqe


async def run_pipeline(
    jobs: Sequence[Job] | AsyncIterable[Job],
    *,
    config: Config,
    model: ResolvedModel,
    out_dir: Path,
    scorer: Scorer | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    stop: StopRequest | None = None,
    carried: Sequence[Scored] = (),
    state: RunState | None = None,
    engine_factory: Callable[[], Engine] | None = None,
    report: bool = True,
    on_row: Callable[[Row], None] | None = None,
    engine: Engine | None = None,
) -> RunResult:
    """Upscale, save, score and report every job.

    Args:
        jobs: the inputs, in report order; or a stream of them that ends when the
            iterable does (a cluster worker feeds its chunks in as they arrive).
        out_dir: where outputs and ``report.json`` go (created).
        scorer: NIQE function; None uses :func:`default_scorer` if scoring is on.
        on_progress, on_row: called from the event loop with the progress after each
            finished image, and with its row.
        stop: once requested (the CLI does on SIGINT/SIGTERM), in-flight work is
            cancelled, the report keeps every finished image, the log ends with a
            ``run_interrupted`` record and ``RunResult.interrupted`` names the signal.
        carried: rows finished by an earlier run (``--resume``), reported as they are.
        state: where each finished image is recorded for a later ``--resume``.
        engine_factory: opens one engine per infer worker; None opens ``model`` with
            :func:`batchsr.engines.open_engine` (tests and tools pass their own).
        report: write ``report.json`` (a cluster worker leaves that to the driver).
        engine: the first infer worker's engine, already open (a cluster worker opens
            it before it takes work, to refuse early); closed by the run.

    Raises:
        EngineError: the first engine cannot be opened (nothing has been written).
    """
    request = RunRequest(
        jobs=jobs,
        config=config,
        model=model,
        out_dir=out_dir,
        scorer=scorer,
        on_progress=on_progress,
        engine_factory=engine_factory,
    )
    run = _Run(request=request, carried=carried, state=state, report=report, on_row=on_row)
    return await run.run(engine, stop)


@dataclass(kw_only=True, eq=False)
class _Run:
    """One call of :func:`run_pipeline`: what it was asked, and its books: the rows
    as the report stage collects them, which the resume state and the caller's
    ``on_row`` see one by one and each checkpoint writes as the report so far."""

    request: RunRequest
    carried: Sequence[Scored]
    state: RunState | None
    report: bool
    on_row: Callable[[Row], None] | None
    collector: RowCollector = field(init=False)
    t0: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        self.collector = RowCollector(self.carried)
        self.report_path = self.request.out_dir / "report.json"
        # A stream of jobs (a cluster worker's) has no count, nor a table for the state.
        jobs = self.request.jobs
        self.images = len(jobs) if isinstance(jobs, Sequence) else None
        self._by_id = {job.id: job for job in jobs} if isinstance(jobs, Sequence) else {}

    async def run(self, engine: Engine | None, stop: StopRequest | None) -> RunResult:
        config, model = self.request.config, self.request.model
        placements = infer_placements(config, model)
        pool = InferPool(alive=len(placements))
        if engine is None:
            opener = self.request.engine_factory or engine_opener(model, config, placements[0])
            engine = await anyio.to_thread.run_sync(opener)
        geometry, warmup_s, budget = await _prepare(engine, config, model, pool)
        if stop is not None and stop.signum is not None:
            # Asked to stop while the engine opened: nothing has been written yet.
            engine.close()
            raise StoppedError(stop.signum)
        self.t0 = time.perf_counter()
        if self.request.scorer is None and config.output.score:
            self.request = replace(self.request, scorer=default_scorer())
        await anyio.Path(self.request.out_dir).mkdir(parents=True, exist_ok=True)
        self._log_start(engine, geometry, warmup_s, budget, placements)
        cpu_clock = _CpuClock()
        wiring = self._wiring(engine, geometry, pool, placements, budget)
        # numpy's OpenBLAS would spread NIQE's small banded products over every core:
        # no faster (measured 73 ms a contest image either way) but twice the CPU,
        # taken from the engine. Stages that want parallelism have workers for it.
        with threadpool_limits(limits=1, user_api="blas"):
            interrupted = await _run_until_stopped(wiring, stop)
        summary = self.checkpoint()
        self._log_end(summary, pool, interrupted, budget, cpu_clock)
        return RunResult(
            summary=summary,
            rows=tuple(sorted(self.collector.rows, key=lambda r: r.id)),
            report_path=self.report_path,
            out_dir=self.request.out_dir,
            geometry=geometry,
            interrupted=interrupted,
            engines_lost=pool.alive == 0,
            abandoned=pool.abandoned,
        )

    def record(self, row: Row) -> None:
        if self.state is not None and isinstance(row, Scored):
            self.state.record(row, self._by_id[row.id])
        if self.on_row is not None:
            self.on_row(row)

    def checkpoint(self) -> RunSummary:
        rows = self.collector.rows
        wall_s = time.perf_counter() - self.t0
        summary = summarize(rows, wall_s=wall_s, resumed=len(self.carried))
        if self.report:
            out = self.request.config.output
            write_report(
                self.report_path,
                build_report(
                    rows,
                    summary,
                    model_size=self.request.model.size_bytes,
                    lossy_output=lossy_output(out.ext, out.quality),
                ),
            )
        return summary

    def _wiring(
        self,
        engine: Engine,
        geometry: TileGeometry,
        pool: InferPool,
        placements: tuple[int | None, ...],
        budget: Budget | None,
    ) -> StageWiring:
        return StageWiring(
            request=self.request,
            books=self,
            engine=engine,
            geometry=geometry,
            pool=pool,
            placements=placements,
            budget=budget,
        )

    def _log_start(
        self,
        engine: Engine,
        geometry: TileGeometry,
        warmup_s: float | None,
        budget: Budget | None,
        placements: tuple[int | None, ...],
    ) -> None:
        structlog.get_logger().info(
            "run_started",
            config=self.request.config.to_dict(),
            versions=versions("batchsr", "numpy", "anyio", "onnxruntime", python=True),
            model=self.request.model.log_record(),
            engine={
                "input_shapes": [list(s) for s in engine.input_shapes],
                # What the onnx backend rewrote as it loaded the model (onnx_graph).
                "graph_rewrites": list(getattr(engine, "rewrites", ())),
                "scale": engine.scale,
                "warmup_s": warmup_s,
            },
            geometry=_geometry_record(geometry),
            images=self.images,
            out_dir=str(self.request.out_dir),
            infer_devices=list(placements),
            native=native.status(),
            memory=None if budget is None else _budget_record(self.request.config, budget),
        )

    def _log_end(
        self,
        summary: RunSummary,
        pool: InferPool,
        interrupted: int | None,
        budget: Budget | None,
        cpu_clock: _CpuClock,
    ) -> None:
        log = structlog.get_logger()
        if pool.alive == 0:
            log.error(
                "engines_lost",
                message="every infer worker failed; the images after that are error rows",
                failed=summary.failed,
            )
        if interrupted is not None:
            log.warning(
                "run_interrupted",
                signal=signal.Signals(interrupted).name,
                finished=len(self.collector),
                images=self.images,
                summary=summary.as_dict(),
                report=str(self.report_path),
                cpu=cpu_clock.read(),
            )
        else:
            log.info(
                "run_finished",
                summary=summary.as_dict(),
                report=str(self.report_path),
                cpu=cpu_clock.read(),
                memory=None if budget is None else budget.stats()._asdict(),
                heap=_heap(),
            )


async def _prepare(
    engine: Engine, config: Config, model: ResolvedModel, pool: InferPool
) -> tuple[TileGeometry, float | None, Budget | None]:
    """``(geometry, warm-up seconds or None, memory budget)`` for the opened engine,
    which is closed if any of them cannot be had.

    Raises:
        ConfigError, EngineError: the settings do not fit the engine, it failed its
            warm-up call, or the process already holds more than ``memory.max_mib``.
    """
    try:
        geometry = geometry_for(engine, config.tiling, model)
        # The first call of a fresh engine pays one-off costs (onnxruntime's arena and
        # kernel selection) that would otherwise land in the first image's runtime and
        # swing the headline score between reruns. Made before the clock starts and
        # logged on its own. Not for the emulator by default: one call is minutes.
        warmup_s = None
        if config.model.warmup and config.model.backend != "cmodel":
            try:
                warmup_s = await call_engine(
                    warm_up,
                    engine,
                    geometry,
                    timeout_s=config.model.call_timeout_s,
                    abandoned=pool.abandoned,
                )
            except Exception as err:
                raise EngineError(f"the engine failed its warm-up call: {err}") from err
        return geometry, warmup_s, _budget(config)
    except Exception:
        engine.close()
        raise


async def _run_until_stopped(wiring: StageWiring, stop: StopRequest | None) -> int | None:
    """The stages, cancelled when ``stop`` is requested; the signal that cut them short,
    or None when they finished (a request after the last image changes nothing)."""
    finished = False
    async with anyio.create_task_group() as outer:
        if stop is not None:
            outer.start_soon(_cancel_on, stop, outer.cancel_scope)
        await run_stages(wiring)
        finished = True
        outer.cancel_scope.cancel()  # stops the watcher
    return None if finished or stop is None else stop.signum


async def _cancel_on(stop: StopRequest, scope: anyio.CancelScope) -> None:
    await stop.wait()
    scope.cancel()


def _geometry_record(geometry: TileGeometry) -> dict[str, Any]:
    return {
        "tile_h": geometry.tile_h,
        "tile_w": geometry.tile_w,
        "pad": geometry.pad,
        "batch": geometry.batch,
        "static_batch": geometry.static_batch,
        "mode": geometry.mode,
        "y_only": geometry.y_only,
        "tail_batches": list(geometry.tail_batches),
        # Images up to this many pixels ran whole (a model of free height and width).
        "whole_pixels": geometry.whole_pixels if geometry.dynamic_hw else 0,
    }


def _budget_record(config: Config, budget: Budget) -> dict[str, Any]:
    return {
        "max_mib": config.memory.max_mib,
        "images_mib": round(budget.capacity / MIB, 1),
        "bytes_per_pixel": config.memory.bytes_per_pixel,
    }


def infer_placements(config: Config, model: ResolvedModel) -> tuple[int | None, ...]:
    """The device of each infer worker: for a bmodel, ``engines_per_device`` workers on
    every TPU of ``devices`` (interleaved, so the first batches reach every TPU);
    otherwise ``workers.infer`` workers with no device."""
    if model.format == "bmodel":
        per = config.model.engines_per_device
        return tuple(d for _ in range(per) for d in config.model.device_ids)
    return (None,) * config.workers.infer


def _heap() -> dict[str, float] | None:
    """Python's heap (numpy's arrays included) when tracemalloc traces it
    (``PYTHONTRACEMALLOC=1``): its current size and peak over the run, in MiB."""
    if not tracemalloc.is_tracing():
        return None
    current, peak = tracemalloc.get_traced_memory()
    return {"current_mib": round(current / MIB, 1), "peak_mib": round(peak / MIB, 1)}


def _budget(config: Config) -> Budget | None:
    """The images' share of ``memory.max_mib``: what is left of it after what the
    process holds now (interpreter, libraries, the opened and warmed engine).

    Raises:
        ConfigError: the process already holds more than the limit.
    """
    if not config.memory.max_mib:
        return None
    base = resident_bytes()
    limit = config.memory.max_mib * MIB
    if base >= limit:
        raise ConfigError(
            f"`memory.max_mib` {config.memory.max_mib}: the process holds "
            f"{base / MIB:.0f} MiB before the first image (interpreter, libraries, engine); "
            "give more than that"
        )
    return Budget(limit - base)


def warmup_shape(geometry: TileGeometry) -> tuple[int, int, int, int]:
    """The batch shape the run's engine calls use (a small one for whole images)."""
    h = geometry.tile_h or round_up(2 * geometry.pad + 16, geometry.multiple)
    w = geometry.tile_w or round_up(2 * geometry.pad + 16, geometry.multiple)
    return (geometry.batch, geometry.channels, h, w)


def warm_up(engine: Engine, geometry: TileGeometry) -> float:
    """Run the contest-timed path once on zeros of the run's batch shape, and return
    the wall seconds it took.

    The first image otherwise pays one-off costs inside its runtime: onnxruntime's
    kernel choice and arena, BLAS starting up and the heap growing for the merge's
    planes in Y mode (measured: the first image's stitch took 3-4x the CPU of the
    others). Not at the largest whole image's window as well: measured on 12 contest
    images (5 alternating runs), that warm-up took 0.17-0.23 s instead of 0.05 s of
    every run's wall time and gave the first image's runtime no measurable gain
    (0.147-0.192 s against 0.162-0.205 s), while onnxruntime's arena kept its growth
    all run.
    """
    start = time.perf_counter()
    shape = warmup_shape(geometry)
    out = engine.run(np.zeros(shape, dtype=np.float32))
    if geometry.y_only:
        merge_y(out[0, 0], np.zeros((2, *shape[2:]), np.float32), geometry.scale)
    return time.perf_counter() - start


class _CpuClock:
    """The process's CPU time (every thread: stages, engine threads, zlib) against wall
    time, so an analysis can tell a full CPU from idle cores."""

    def __init__(self) -> None:
        self._cpu, self._wall = time.process_time(), time.perf_counter()

    def read(self) -> dict[str, float | int]:
        """``cores`` usable by this process, ``cpu_s`` and ``wall_s`` since creation."""
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            cores = os.cpu_count() or 1
        return {
            "cores": cores,
            "cpu_s": round(time.process_time() - self._cpu, 4),
            "wall_s": round(time.perf_counter() - self._wall, 4),
        }
