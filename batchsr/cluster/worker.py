"""One pipeline on one cluster node: the Ray actor that runs batchsr's own stages.

The driver creates these through Ray (``ray.remote(PipelineWorker)``); this module
itself never imports Ray, so it is importable and testable without it. An actor holds
one long-lived :func:`batchsr.pipeline.run.run_pipeline` whose input is an open
stream: each :meth:`PipelineWorker.run_chunk` call feeds its jobs in and waits for
their rows, so two chunks in flight keep the stages busy across chunk boundaries (no
fill-and-drain per chunk) and the engine opens and warms up once per actor.

The actor's records are JSON lines kept in memory, tagged with the node and the
pipeline and timed on the wall clock; each chunk result carries those logged since
the last one, and the driver writes them into the run's single log.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from batchsr.allocator import configure_malloc
from batchsr.config import Config
from batchsr.engines import Engine
from batchsr.errors import ClusterError, EngineError
from batchsr.logging import RecordBuffer, configure_buffered_logging
from batchsr.pipeline.report import Row
from batchsr.records import Job
from batchsr.resolve import ResolvedModel

__all__ = ["ChunkResult", "PipelineWorker", "WorkerInfo", "WorkerSpec"]

# The driver's run_started/run_finished are the run's; a pipeline's own mark only
# its part, and must not split the merged log into runs.
_RENAMES = {
    "run_started": "pipeline_started",
    "run_finished": "pipeline_finished",
    "run_interrupted": "pipeline_interrupted",
}


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What one pipeline runs: the run's config (devices already set for its node),
    the model, and the shared output folder (absolute: every node must reach it)."""

    config: Config
    model: ResolvedModel
    out_dir: Path
    pipeline: int
    log_level: str = "info"


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """Where a pipeline runs, for the log and the report's ``node`` field."""

    pipeline: int
    node: str
    host: str
    pid: int


@dataclass(frozen=True, slots=True)
class ChunkResult:
    """A finished chunk: one row per job, in the chunk's order, and the log lines the
    actor wrote since its previous result."""

    rows: tuple[Row, ...]
    records: tuple[str, ...]
    info: WorkerInfo


class PipelineWorker:
    """A batchsr pipeline serving chunks of jobs (an async Ray actor).

    Args:
        spec: the run's settings for this pipeline.
        node: the node's name for records and the report (the driver passes Ray's
            node id, shortened).
    """

    def __init__(self, spec: WorkerSpec, node: str) -> None:
        # A Ray worker process is not started by run.py: make its malloc settings here,
        # before the pipeline's threads exist.
        configure_malloc(mmap_threshold=spec.config.memory.mmap_threshold)
        self._spec = spec
        self.info = WorkerInfo(
            pipeline=spec.pipeline, node=node, host=socket.gethostname(), pid=os.getpid()
        )
        self._buffer = RecordBuffer()
        configure_buffered_logging(
            self._buffer,
            level=spec.log_level,
            fields={"node": node, "pipeline": spec.pipeline},
            clock_offset=time.time() - time.perf_counter(),
            renames=_RENAMES,
        )
        self._send: MemoryObjectSendStream[Job] | None = None
        self._waiting: dict[int, asyncio.Future[Row]] = {}
        self._serving: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None
        self._engine: Engine | None = None

    async def start(self) -> WorkerInfo:
        """Make ready: show that this node can write into the output folder and open
        the first engine (so a node that cannot run the model refuses before any
        image, as a local run does). Where the actor runs, for the driver's log.

        Raises:
            ClusterError: this node cannot write there (a folder that is not shared,
                or not writable from this host).
            EngineError: the engine cannot open on this node.
        """
        info = self.describe()
        if self._engine is None and self._send is None:
            from batchsr.engines import open_engine
            from batchsr.pipeline.run import infer_placements

            spec = self._spec
            device = infer_placements(spec.config, spec.model)[0]
            self._engine = await anyio.to_thread.run_sync(
                lambda: open_engine(spec.model, spec.config.model, device_id=device)
            )
        return info

    def describe(self) -> WorkerInfo:
        """Where this actor runs, once it has shown that it can write into the output
        folder.

        Raises:
            ClusterError: this node cannot write there.
        """
        probe = self._spec.out_dir / f".batchsr-probe-{self.info.host}-{self.info.pid}"
        try:
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as err:
            raise ClusterError(
                f"node {self.info.node} ({self.info.host}) cannot write the output folder "
                f"{self._spec.out_dir}: {err.strerror or err}; it must be storage every "
                "node reaches under that path"
            ) from err
        return self.info

    async def run_chunk(self, jobs: list[Job]) -> ChunkResult:
        """Run ``jobs`` through the pipeline; their rows once all are reported.

        Raises:
            BatchSRError: the pipeline could not start (an engine that cannot open on
                this node) or stopped; the chunk's jobs were not finished.
        """
        if self._failure is not None:
            raise self._stopped()
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in jobs]
        for job, future in zip(jobs, futures, strict=True):
            self._waiting[job.id] = future
        send = self._start()
        try:
            for job in jobs:
                try:
                    await send.send(job)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    raise self._stopped() from None
            rows = tuple([await future for future in futures])
        finally:
            for job in jobs:
                self._waiting.pop(job.id, None)
        return ChunkResult(rows=rows, records=tuple(self._buffer.drain()), info=self.info)

    async def finish(self) -> tuple[str, ...]:
        """End the pipeline's input, wait for it to drain and close its engines; the
        log lines not yet handed over (its ``pipeline_finished`` record among them)."""
        if self._send is not None and self._serving is not None:
            self._send.close()
            await asyncio.wait({self._serving})
        if self._engine is not None:  # started, but never given a chunk
            self._engine.close()
            self._engine = None
        return tuple(self._buffer.drain())

    def _stopped(self) -> BaseException:
        if self._failure is not None:
            return self._failure
        return EngineError(f"pipeline {self.info.pipeline} on node {self.info.node} stopped")

    def _start(self) -> MemoryObjectSendStream[Job]:
        if self._send is None:
            send, receive = anyio.create_memory_object_stream[Job](self._spec.config.queues.paths)
            self._send = send
            self._serving = asyncio.get_running_loop().create_task(self._serve(receive))
        return self._send

    async def _serve(self, receive: MemoryObjectReceiveStream[Job]) -> None:
        # Imported here: the pipeline pulls in numpy, the engines and the stages,
        # which a driver that only describes actors does not need.
        from batchsr.pipeline.run import run_pipeline

        async def jobs() -> AsyncIterator[Job]:
            async with receive:
                async for job in receive:
                    yield job

        spec = self._spec
        engine, self._engine = self._engine, None
        try:
            await run_pipeline(
                jobs(),
                config=spec.config,
                model=spec.model,
                out_dir=spec.out_dir,
                on_row=self._deliver,
                report=False,
                engine=engine,
            )
        except BaseException as err:  # every waiting chunk must hear of it
            self._failure = err
            # Later chunks fail at once instead of filling a buffer nobody reads.
            receive.close()
            if self._send is not None:
                self._send.close()
            for future in self._waiting.values():
                if not future.done():
                    future.set_exception(err)
            if not isinstance(err, Exception):
                raise

    def _deliver(self, row: Row) -> None:
        future = self._waiting.get(row.id)
        if future is not None and not future.done():
            future.set_result(row)
