"""The stages of one run and the typed streams between them: the only place that
creates the streams and starts the stage tasks.

``paths -> decode (xN) -> tile -> infer (xK) -> stitch -> save (xN) -> score (xN) ->
report``. Every arrow is a memory object stream whose buffer size comes from
``[queues]``; a stage with several workers gives each a clone of its streams, and a
stream closes downstream once all clones are closed, so the end of input flows through
the pipeline by itself. Images in flight are bounded by the buffers, never by the
number of inputs.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from batchsr.config import Config, QueueConfig
from batchsr.engines import Engine, open_engine
from batchsr.pipeline.background import BackgroundThreads
from batchsr.pipeline.budget import Budget
from batchsr.pipeline.decode import run_decode
from batchsr.pipeline.infer import InferPool, run_infer
from batchsr.pipeline.report import Progress, Row, RowCollector, run_report
from batchsr.pipeline.save import run_save
from batchsr.pipeline.score import Scorer, run_score
from batchsr.pipeline.stitch import run_stitch
from batchsr.pipeline.tile import run_tile
from batchsr.records import Decoded, Failed, Job, Saved, SRBatch, Stitched, TileBatch
from batchsr.resolve import ResolvedModel
from batchsr.tiling import TileGeometry

__all__ = [
    "Pipe",
    "RunBooks",
    "RunRequest",
    "StageWiring",
    "Streams",
    "engine_opener",
    "run_stages",
]

A = TypeVar("A")
B = TypeVar("B")

# The emulator engine bounds its own calls and kills a hung worker (which a thread
# timeout could only abandon); the pipeline's limit then only backs it up, a little
# later, and keeps its calls abandonable when the run is stopped.
# Longer than the engine's own start allowance (120 s), so a slow start is not abandoned.
_CMODEL_BACKSTOP_S = 180.0


@dataclass(frozen=True, slots=True)
class Pipe(Generic[A]):
    """One edge: the two ends of its stream."""

    send: MemoryObjectSendStream[A]
    receive: MemoryObjectReceiveStream[A]


@dataclass(frozen=True, slots=True)
class Streams:
    """Every edge of the pipeline, typed by what flows on it; the fields are the
    ``[queues]`` keys (``batchsr.vocab.EDGES``), in pipeline order."""

    paths: Pipe[Job]
    decoded: Pipe[Decoded | Failed]
    tiles: Pipe[TileBatch | Failed]
    inferred: Pipe[SRBatch | Failed]
    stitched: Pipe[Stitched | Failed]
    saved: Pipe[Saved | Failed]
    scored: Pipe[Row]

    @classmethod
    def open(cls, queues: QueueConfig) -> Streams:
        """Fresh streams with the buffer sizes of ``queues``."""
        return cls(
            paths=Pipe(*anyio.create_memory_object_stream[Job](queues.paths)),
            decoded=Pipe(*anyio.create_memory_object_stream[Decoded | Failed](queues.decoded)),
            tiles=Pipe(*anyio.create_memory_object_stream[TileBatch | Failed](queues.tiles)),
            inferred=Pipe(*anyio.create_memory_object_stream[SRBatch | Failed](queues.inferred)),
            stitched=Pipe(*anyio.create_memory_object_stream[Stitched | Failed](queues.stitched)),
            saved=Pipe(*anyio.create_memory_object_stream[Saved | Failed](queues.saved)),
            scored=Pipe(*anyio.create_memory_object_stream[Row](queues.scored)),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class RunRequest:
    """What a caller of ``run_pipeline`` asked for that the stages read; the run keeps
    it as given but for a missing scorer, which it fills in when scoring is on.

    Attributes:
        jobs: the inputs, or a stream of them.
        scorer: the NIQE function; None when scoring is off.
        on_progress: called with the progress after each finished image.
        engine_factory: opens each further infer worker's engine; None opens ``model``.
    """

    jobs: Sequence[Job] | AsyncIterable[Job]
    config: Config
    model: ResolvedModel
    out_dir: Path
    scorer: Scorer | None = None
    on_progress: Callable[[Progress], None] | None = None
    engine_factory: Callable[[], Engine] | None = None


class RunBooks(Protocol):
    """The books the report stage keeps for the run (``run_pipeline``'s run object)."""

    @property
    def collector(self) -> RowCollector:
        """Where the report stage sends the rows."""

    @property
    def t0(self) -> float:
        """``perf_counter()`` at the start of the run (for progress)."""

    def checkpoint(self) -> object:
        """Persist the rows so far."""

    def record(self, row: Row) -> None:
        """Called with each row as the report stage collects it."""


@dataclass(frozen=True, slots=True)
class StageWiring:
    """Everything the stages of one run are given, decided by ``run_pipeline``.

    Attributes:
        request: what the run was asked for.
        books: where the report stage sends the rows.
        engine: the first infer worker's engine, already open (the run probed it).
        pool: what the infer workers share.
        placements: the device of each infer worker (``infer_placements``).
        budget: the memory budget, if ``memory.max_mib`` sets one.
    """

    request: RunRequest
    books: RunBooks
    engine: Engine
    geometry: TileGeometry
    pool: InferPool
    placements: tuple[int | None, ...]
    budget: Budget | None = None


def engine_opener(model: ResolvedModel, config: Config, device: int | None) -> Callable[[], Engine]:
    """Opens one engine of ``model`` on ``device`` (one per infer worker)."""
    return lambda: open_engine(model, config.model, device_id=device)


async def run_stages(wiring: StageWiring) -> None:
    """Run every stage until the last row is reported (or until cancelled)."""
    config, streams = wiring.request.config, Streams.open(wiring.request.config.queues)
    # The in-flight window: taken by the tile stage, given back by the stitch stage.
    in_flight = config.tiling.in_flight
    if in_flight is None:
        # A static batch is filled across images; with one image at a time each
        # image's last batch would go out padded.
        filled = wiring.geometry.static_batch and wiring.geometry.batch > 1
        in_flight = 0 if filled else len(wiring.placements)
    window = Budget(in_flight) if in_flight else None
    workers = config.workers
    background = BackgroundThreads(
        workers.decode + workers.save + workers.score, workers.background_nice
    )
    async with background, anyio.create_task_group() as tg:
        tg.start_soon(_feed, streams.paths.send, wiring.request.jobs, name="feed")
        _start_workers(
            tg,
            "decode",
            config.workers.decode,
            streams.paths,
            streams.decoded,
            lambda rx, tx, i: run_decode(
                rx, tx, max_pixels=config.output.max_pixels, worker=i, threads=background
            ),
        )
        tg.start_soon(_tile, wiring, streams, window, name="tile")
        _start_infer(tg, wiring, streams)
        tg.start_soon(_stitch, streams, window, name="stitch")
        _start_save(tg, wiring, streams, background)
        _start_workers(
            tg,
            "score",
            config.workers.score,
            streams.saved,
            streams.scored,
            lambda rx, tx, i: run_score(
                rx,
                tx,
                scorer=wiring.request.scorer,
                worker=i,
                threads=background,
            ),
        )
        tg.start_soon(_report, wiring, streams, name="report")


def _start_workers(
    tg: TaskGroup,
    stage: str,
    count: int,
    source: Pipe[A],
    sink: Pipe[B],
    work: Callable[
        [MemoryObjectReceiveStream[A], MemoryObjectSendStream[B], int], Coroutine[Any, Any, None]
    ],
) -> None:
    """``count`` workers of one stage, each with its own clones of the stage's streams.
    The originals are closed, so each stream ends when its last worker is done."""
    for i in range(count):
        tg.start_soon(work, source.receive.clone(), sink.send.clone(), i, name=f"{stage}-{i}")
    source.receive.close()
    sink.send.close()


def _start_infer(tg: TaskGroup, wiring: StageWiring, streams: Streams) -> None:
    config = wiring.request.config
    timeout_s = config.model.call_timeout_s
    if config.model.backend == "cmodel" and timeout_s is not None:
        timeout_s += _CMODEL_BACKSTOP_S

    async def work(
        rx: MemoryObjectReceiveStream[TileBatch | Failed],
        tx: MemoryObjectSendStream[SRBatch | Failed],
        i: int,
    ) -> None:
        device = wiring.placements[i]
        opener = wiring.request.engine_factory or engine_opener(
            wiring.request.model, config, device
        )
        await run_infer(
            rx,
            tx,
            engine=wiring.engine if i == 0 else opener,
            worker=i,
            device=device,
            reopen=opener,
            timeout_s=timeout_s,
            pool=wiring.pool,
        )

    _start_workers(tg, "infer", len(wiring.placements), streams.tiles, streams.inferred, work)


def _start_save(
    tg: TaskGroup, wiring: StageWiring, streams: Streams, background: BackgroundThreads
) -> None:
    out = wiring.request.config.output

    async def work(
        rx: MemoryObjectReceiveStream[Stitched | Failed],
        tx: MemoryObjectSendStream[Saved | Failed],
        i: int,
    ) -> None:
        await run_save(
            rx,
            tx,
            out_dir=wiring.request.out_dir,
            compress_level=out.compress_level,
            filter_name=out.filter,
            suffix=out.suffix,
            ext=out.ext,
            quality=out.quality,
            keep_grey=not out.rgb,
            worker=i,
            threads=background,
        )

    _start_workers(
        tg, "save", wiring.request.config.workers.save, streams.stitched, streams.saved, work
    )


async def _feed(
    send: MemoryObjectSendStream[Job], jobs: Sequence[Job] | AsyncIterable[Job]
) -> None:
    async with send:
        if isinstance(jobs, AsyncIterable):
            async for job in jobs:
                await send.send(job)
        else:
            for job in jobs:
                await send.send(job)


async def _tile(wiring: StageWiring, streams: Streams, window: Budget | None) -> None:
    await run_tile(
        streams.decoded.receive,
        streams.tiles.send,
        geometry=wiring.geometry,
        budget=wiring.budget,
        bytes_per_pixel=wiring.request.config.memory.bytes_per_pixel,
        window=window,
    )


async def _stitch(streams: Streams, window: Budget | None) -> None:
    await run_stitch(streams.inferred.receive, streams.stitched.send, window=window)


async def _report(wiring: StageWiring, streams: Streams) -> None:
    books, jobs = wiring.books, wiring.request.jobs
    await run_report(
        streams.scored.receive,
        books.collector,
        total=len(books.collector) + (len(jobs) if isinstance(jobs, Sequence) else 0),
        t0=books.t0,
        on_progress=wiring.request.on_progress,
        checkpoint=books.checkpoint,
        on_row=books.record,
        budget=wiring.budget,
    )
