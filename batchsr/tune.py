"""Short trial runs over a small grid of buffer sizes and worker counts.

``tune`` runs the pipeline on a sample of the input once with the base config (the
baseline), reads the baseline's log to find the busiest stages that take a worker
count, and then tries every combination of:

- one buffer size for the streams between stages (``decoded``, ``tiles``,
  ``inferred``, ``stitched``, ``saved``; ``paths`` and ``scored`` hold only file
  names and rows, so they keep the base sizes), and
- the base worker count and one more for each of those stages.

Each trial writes its outputs into a temporary folder (removed afterwards) and its log
to ``out_dir/trial-NN.jsonl``, which ``python run.py analyze`` reads. An untimed
warm-up run of the base config comes first (its log: ``warm-up.jsonl``). Trials are ranked
by images per second over the stages' span (from the first receive to the last record:
engine start-up is left out, since a full run pays it once). Trial timings carry noise,
so every trial within ``tolerance`` of the fastest counts as a tie, and the tie goes to
the cheapest config: fewest workers, then the smallest buffers.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import shutil
import statistics
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import anyio

from batchsr.analysis import analyze_run, read_runs
from batchsr.config import Config
from batchsr.engines import Engine
from batchsr.errors import ConfigError, setting
from batchsr.pipeline.infer import AbandonedCalls
from batchsr.pipeline.run import run_pipeline
from batchsr.pipeline.score import Scorer
from batchsr.records import Job
from batchsr.resolve import ResolvedModel
from batchsr.vocab import MULTI_WORKER_STAGES, Edge

__all__ = [
    "TUNED_EDGES",
    "Trial",
    "TuneResult",
    "config_to_toml",
    "grid_configs",
    "pick_best",
    "sample_jobs",
    "tune",
    "write_toml",
]

#: The streams whose buffer size the grid varies.
TUNED_EDGES: tuple[Edge, ...] = ("decoded", "tiles", "inferred", "stitched", "saved")


class _Sink(Protocol):
    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Trial:
    """One configuration, run ``repeat`` times on the sample.

    Attributes:
        index: 1-based trial number (1 is the baseline).
        config: the configuration that ran.
        images_per_s: median over repeats of images / stage span; None if no image
            finished.
        wall_s: median wall time of the run (engine start-up included).
        bottleneck: the stage ``analyze`` named in the first repeat.
        log: the trial's JSON-lines log (one run per repeat).
        spread: (fastest - slowest) / median images/s over the repeats: how far
            the same config moves from run to run; None with one repeat.
    """

    index: int
    config: Config
    images_per_s: float | None
    wall_s: float
    bottleneck: str | None
    log: Path
    spread: float | None = None

    @property
    def queue_size(self) -> int:
        """The buffer size of the tuned streams (the largest, if they differ)."""
        return max(getattr(self.config.queues, e) for e in TUNED_EDGES)

    def workers(self) -> dict[str, int]:
        return {s: getattr(self.config.workers, s) for s in MULTI_WORKER_STAGES}

    def cost(self) -> tuple[int, int]:
        """What a config spends: worker tasks, then buffered items."""
        queues = dataclasses.astuple(self.config.queues)
        return sum(self.workers().values()), sum(queues)


@dataclass(frozen=True, slots=True)
class TuneResult:
    """Every trial, the baseline and the recommended one.

    Attributes:
        trials: in run order; ``trials[0]`` is the baseline.
        best: the recommendation.
        sample: names of the images the trials ran on.
        stages: the stages whose worker count was varied.
        queue_sizes: the buffer sizes tried.
        noise: median of the trials' ``spread``; differences between trials smaller
            than this are not evidence. None with one repeat.
        abandoned: every trial's timed-out engine calls; :attr:`abandoned_calls`
            counts those still running when asked (a call that returned later no
            longer counts).
    """

    trials: tuple[Trial, ...]
    best: Trial
    sample: tuple[str, ...]
    stages: tuple[str, ...]
    queue_sizes: tuple[int, ...]
    noise: float | None = None
    abandoned: tuple[AbandonedCalls, ...] = ()

    @property
    def abandoned_calls(self) -> int:
        return sum(calls.running() for calls in self.abandoned)

    @property
    def baseline(self) -> Trial:
        return self.trials[0]


def sample_jobs(jobs: Sequence[Job], n: int) -> list[Job]:
    """``n`` jobs spread evenly over ``jobs`` (all of them if there are fewer),
    renumbered from 0 so each trial's report is in sample order."""
    if n < 1:
        raise ConfigError(f"{setting('sample', n)}: tune needs at least one image")
    chosen = list(jobs) if len(jobs) <= n else [jobs[i * len(jobs) // n] for i in range(n)]
    return [dataclasses.replace(job, id=i) for i, job in enumerate(chosen)]


def grid_configs(
    base: Config, *, queue_sizes: Sequence[int], stages: Sequence[str]
) -> list[Config]:
    """Every combination of a buffer size for :data:`TUNED_EDGES` and, per stage in
    ``stages``, the base worker count or one more (within the config's limit of 64).

    Raises:
        ConfigError: a stage has no worker knob, or a size is below 1.
    """
    for stage in stages:
        if stage not in MULTI_WORKER_STAGES:
            raise ConfigError(
                f"{setting('vary', stage)}: cannot vary its workers; choose from "
                f"{list(MULTI_WORKER_STAGES)}"
            )
    if not queue_sizes or min(queue_sizes) < 1:
        sizes = ",".join(map(str, queue_sizes))
        raise ConfigError(f"{setting('queue_sizes', sizes)}: each must be at least 1")
    options = [
        sorted({getattr(base.workers, s), min(64, getattr(base.workers, s) + 1)}) for s in stages
    ]
    configs = []
    for size in sorted(set(queue_sizes)):
        for counts in itertools.product(*options):
            configs.append(
                dataclasses.replace(
                    base,
                    queues=dataclasses.replace(base.queues, **dict.fromkeys(TUNED_EDGES, size)),
                    workers=dataclasses.replace(
                        base.workers, **dict(zip(stages, counts, strict=True))
                    ),
                )
            )
    return configs


async def tune(
    jobs: Sequence[Job],
    *,
    base: Config,
    model: ResolvedModel,
    out_dir: Path,
    open_log: Callable[[Path], _Sink],
    scorer: Scorer | None = None,
    sample: int = 4,
    queue_sizes: Sequence[int] = (2, 4, 8),
    stages: Sequence[str] | None = None,
    vary: int = 2,
    repeat: int = 1,
    tolerance: float = 0.05,
    engine_factory: Callable[[], Engine] | None = None,
    on_trial: Callable[[Trial], None] | None = None,
) -> TuneResult:
    """Run the baseline and the grid; return every trial and the recommendation.

    Args:
        jobs: the whole input; ``sample`` of them are used.
        base: the configuration to start from (its other settings are kept).
        out_dir: where trial logs go (created).
        open_log: directs the structured log to a file, appending, for one run and
            returns something to close afterwards (the CLI passes
            ``configure_logging(path, append=True)``): the analysis reads it back, and
            a trial's repeats share one file.
        scorer: passed to every run (None: the default NIQE when scoring is on).
        stages: stages whose worker count to vary; None takes the ``vary`` busiest
            stages of the baseline that have a worker knob.
        repeat: runs per config; the median counts.
        tolerance: relative distance from the fastest trial that counts as a tie.
        on_trial: called after each trial, for progress output.

    Raises:
        ConfigError: a setting of the grid is invalid.
        EngineError: the engine cannot be opened.
    """
    if repeat < 1:
        raise ConfigError(f"{setting('repeat', repeat)}: must be at least 1")
    chosen = sample_jobs(jobs, sample)
    await anyio.Path(out_dir).mkdir(parents=True, exist_ok=True)

    abandoned: list[AbandonedCalls] = []  # per run

    async def run_once(config: Config, log: Path) -> None:
        """One run of ``config`` on the sample, its log appended to ``log``."""
        scratch = Path(await anyio.to_thread.run_sync(tempfile.mkdtemp, "", "batchsr-tune-"))
        sink = open_log(log)
        try:
            result = await run_pipeline(
                chosen,
                config=config,
                model=model,
                out_dir=scratch,
                scorer=scorer,
                engine_factory=engine_factory,
            )
            abandoned.append(result.abandoned)
        finally:
            sink.close()
            await anyio.to_thread.run_sync(shutil.rmtree, scratch, True)

    def log_of(index: int) -> Path:
        return out_dir / f"trial-{index:02d}.jsonl"

    # The first run in a process pays one-time costs (thread pools, imports, the
    # runtime's first-call setup) that would otherwise count against trial 1.
    warm_up = out_dir / "warm-up.jsonl"
    await anyio.Path(warm_up).unlink(missing_ok=True)
    await run_once(base, warm_up)
    configs = [base]
    for round_ in range(repeat):
        # Repeats go round the whole grid rather than config by config, so a burst
        # of load from elsewhere on the machine spreads over the configs.
        index = 0
        while index < len(configs):
            log = log_of(index + 1)
            if round_ == 0:
                await anyio.Path(log).unlink(missing_ok=True)
            await run_once(configs[index], log)
            if round_ == 0 and index == 0:
                if stages is None:
                    stages = await anyio.to_thread.run_sync(_busiest, log, vary)
                grid = grid_configs(base, queue_sizes=queue_sizes, stages=stages)
                configs += [c for c in grid if c != base]
            if round_ == repeat - 1 and on_trial is not None:
                on_trial(await anyio.to_thread.run_sync(_trial, index + 1, configs[index], log))
            index += 1
    trials = [
        await anyio.to_thread.run_sync(_trial, i + 1, config, log_of(i + 1))
        for i, config in enumerate(configs)
    ]
    assert stages is not None
    spreads = [t.spread for t in trials if t.spread is not None]
    return TuneResult(
        noise=statistics.median(spreads) if spreads else None,
        trials=tuple(trials),
        best=pick_best(trials, tolerance=tolerance),
        sample=tuple(job.name for job in chosen),
        stages=tuple(stages),
        queue_sizes=tuple(sorted(set(queue_sizes))),
        abandoned=tuple(abandoned),
    )


def _busiest(log: Path, vary: int) -> list[str]:
    """The ``vary`` stages with a worker knob that were busiest in the run in ``log``."""
    figures = analyze_run(read_runs(log)[0])
    ranked = sorted(
        (s for s in figures.stages if s.stage in MULTI_WORKER_STAGES),
        key=lambda s: s.utilisation or 0.0,
        reverse=True,
    )
    return [s.stage for s in ranked[:vary]]


def _trial(index: int, config: Config, log: Path) -> Trial:
    """A trial's figures from every run in its log."""
    analyses = [analyze_run(run) for run in read_runs(log)]
    rates = [a.images_per_s for a in analyses if a.images_per_s is not None]
    walls = [a.wall_s if a.wall_s is not None else a.span_s for a in analyses]
    median = statistics.median(rates) if rates else None
    return Trial(
        index=index,
        config=config,
        images_per_s=median,
        spread=(max(rates) - min(rates)) / median if len(rates) > 1 and median else None,
        wall_s=statistics.median(walls),
        bottleneck=analyses[0].bottleneck,
        log=log,
    )


def pick_best(trials: Sequence[Trial], *, tolerance: float = 0.05) -> Trial:
    """The cheapest trial within ``tolerance`` of the fastest (trial 1 if none ran)."""
    rated = [t for t in trials if t.images_per_s is not None]
    if not rated:
        return trials[0]
    fastest = max(t.images_per_s or 0.0 for t in rated)
    near = [t for t in rated if (t.images_per_s or 0.0) >= (1.0 - tolerance) * fastest]
    return min(near, key=lambda t: (*t.cost(), t.index))


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    # A JSON string is a valid TOML basic string for the paths and names we write.
    return json.dumps(str(value))


def config_to_toml(config: Config, *, comments: Sequence[str] = ()) -> str:
    """``config`` as TOML that :func:`batchsr.config.load_config` reads back equal.

    Unset values (None) are left out, since TOML has no null and a missing key takes
    the default; ``output.dir`` is left out so the file does not pin an output folder.
    """
    lines = [f"# {c}" if c else "#" for c in comments]
    for section in dataclasses.fields(config):
        table = getattr(config, section.name)
        lines += ["", f"[{section.name}]"]
        for f in dataclasses.fields(table):
            value = getattr(table, f.name)
            if value is None or (section.name, f.name) == ("output", "dir"):
                continue
            lines.append(f"{f.name} = {_toml_value(value)}")
    return "\n".join(lines).lstrip("\n") + "\n"


def write_toml(config: Config, path: Path, *, comments: Sequence[str] = ()) -> Path:
    """Write :func:`config_to_toml` to ``path`` (its folder is created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(config_to_toml(config, comments=comments), encoding="utf-8")
    return path
