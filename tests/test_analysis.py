"""Log analysis on real pipeline runs with one known slow stage, and on edge-case logs."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest
from PIL import Image

from batchsr.analysis import (
    RunLog,
    analyze_run,
    find_bottleneck,
    read_runs,
)
from batchsr.cli.render import format_analysis
from batchsr.config import load_config
from batchsr.engines import Engine
from batchsr.errors import AnalysisError
from batchsr.images import list_inputs
from batchsr.logging import configure_logging
from batchsr.pipeline.run import run_pipeline
from batchsr.resolve import ResolvedModel
from batchsr.timeline import lanes, plot_timeline
from batchsr.vocab import STAGES
from tests.helpers.cli import run_cli
from tests.helpers.delayed_engine import DelayedEngine
from tests.helpers.images import photo_like, write_png


def _folder(tmp_path: Path, n: int = 6) -> Path:
    folder = tmp_path / "in"
    folder.mkdir(parents=True)
    for i in range(n):
        write_png(folder / f"img_{i:02d}.png", photo_like(40, 48, seed=i))
    return folder


def _fake_niqe(rgb: np.ndarray) -> float:
    return float(rgb.mean()) / 10.0


async def _logged_run(
    tmp_path: Path,
    model: Path,
    *,
    log_name: str = "run.jsonl",
    scorer: Callable[[np.ndarray], float] = _fake_niqe,
    engine_factory: Callable[[], Engine] | None = None,
    **overrides: Any,
) -> Path:
    """Run the pipeline on six small images with the JSON log in a file; return it."""
    config = load_config(None, {"tiling.tile": 32, "tiling.batch": 4, **overrides})
    log = tmp_path / log_name
    sink = configure_logging(log)
    try:
        with anyio.fail_after(30):
            await run_pipeline(
                list_inputs(_folder(tmp_path / log_name.replace(".", "_"))),
                config=config,
                model=ResolvedModel(name=model.stem, path=model, format="onnx", margin=4),
                out_dir=tmp_path / f"out_{log_name}",
                scorer=scorer,
                engine_factory=engine_factory,
            )
    finally:
        sink.close()
    return log


def _records(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


@pytest.mark.asyncio
async def test_a_slow_engine_makes_analyze_name_infer(tmp_path: Path, espcn_onnx: Path) -> None:
    log = await _logged_run(
        tmp_path, espcn_onnx, engine_factory=lambda: DelayedEngine(espcn_onnx, delay_s=0.05)
    )
    (run,) = read_runs(log)
    analysis = analyze_run(run)
    assert analysis.bottleneck == "infer"
    infer = analysis.stage("infer")
    assert infer is not None and (infer.utilisation or 0) > 0.5
    assert "`workers.infer = 2`" in analysis.suggestion
    # the CLI spells the library's setting reference as the flag a user types
    assert "(--workers infer=2)" in format_analysis(analysis)
    assert analysis.suggestion.startswith(f"infer busy {infer.utilisation:.0%}")
    # every infer call took the engine's fixed delay at least
    assert infer.service_s.p50 is not None and infer.service_s.p50 >= 0.05


def _with_cpu(log: Path, out: Path, *, cores: int, busy: float) -> Path:
    """The same log with the end record's CPU figures replaced."""
    lines = []
    for record in _records(log):
        if record["event"] == "run_finished":
            wall = record["cpu"]["wall_s"]
            record["cpu"] = {"cores": cores, "cpu_s": busy * wall, "wall_s": wall}
        lines.append(json.dumps(record))
    out.write_text("\n".join(lines) + "\n")
    return out


@pytest.mark.asyncio
async def test_more_infer_workers_are_advised_only_while_cores_sit_idle(
    tmp_path: Path, espcn_onnx: Path
) -> None:
    log = await _logged_run(
        tmp_path, espcn_onnx, engine_factory=lambda: DelayedEngine(espcn_onnx, delay_s=0.05)
    )
    (end,) = [r for r in _records(log) if r["event"] == "run_finished"]
    assert end["cpu"]["cores"] >= 1 and end["cpu"]["cpu_s"] > 0 and end["cpu"]["wall_s"] > 0
    measured = analyze_run(read_runs(log)[0])
    assert measured.cores == end["cpu"]["cores"]
    assert measured.cpu_busy == pytest.approx(end["cpu"]["cpu_s"] / end["cpu"]["wall_s"])

    idle = analyze_run(read_runs(_with_cpu(log, tmp_path / "idle.jsonl", cores=8, busy=1.5))[0])
    assert idle.bottleneck == "infer"
    assert "(`workers.infer = 2`), since only 1.50 of 8 cores are busy on average" in (
        idle.suggestion
    )

    full = analyze_run(read_runs(_with_cpu(log, tmp_path / "full.jsonl", cores=2, busy=1.9))[0])
    assert full.bottleneck == "infer"
    assert "workers.infer" not in full.suggestion
    assert "the CPU is full (1.90 of 2 cores busy on average)" in full.suggestion
    assert full.suggestion.endswith("a GPU or TPU")


@pytest.mark.asyncio
async def test_a_slow_scorer_makes_analyze_name_score_and_save_blocked_on_it(
    tmp_path: Path, espcn_onnx: Path
) -> None:
    def slow_niqe(rgb: np.ndarray) -> float:
        time.sleep(0.06)
        return _fake_niqe(rgb)

    log = await _logged_run(
        tmp_path,
        espcn_onnx,
        scorer=slow_niqe,
        **{"workers.score": 1, "queues.saved": 1, "queues.stitched": 1},
    )
    analysis = analyze_run(read_runs(log)[0])
    assert analysis.bottleneck == "score"
    assert "`workers.score = 2`" in analysis.suggestion
    save = analysis.stage("save")
    assert save is not None and (save.blocked or 0) > 0.2
    assert f"save blocked {save.blocked:.0%} sending to it" in analysis.suggestion


@pytest.mark.asyncio
async def test_figures_agree_with_the_log_records(tmp_path: Path, espcn_onnx: Path) -> None:
    log = await _logged_run(tmp_path, espcn_onnx, **{"workers.infer": 2})
    records = _records(log)
    items = [r for r in records if r["event"] == "item_done"]
    analysis = analyze_run(read_runs(log)[0])
    origin = min(r["t_start"] - r["wait_in_s"] for r in items)
    span = max(r["t_end"] for r in items) - origin
    assert analysis.span_s == pytest.approx(span)
    assert [s.stage for s in analysis.stages] == list(STAGES)
    workers = {"decode": 1, "tile": 1, "infer": 2, "stitch": 1, "save": 1, "score": 2, "report": 1}
    for fig in analysis.stages:
        mine = [r for r in items if r["stage"] == fig.stage]
        busy = [r["busy_s"] for r in mine]
        assert fig.items == len(mine)
        assert fig.workers == workers[fig.stage]
        assert fig.busy_s == pytest.approx(sum(max(0.0, b) for b in busy))
        assert fig.starved_s == pytest.approx(sum(r["wait_in_s"] for r in mine))
        assert fig.utilisation == pytest.approx(fig.busy_s / (fig.workers * span))
        assert fig.service_s.count == len(mine)
        assert fig.service_s.p50 == pytest.approx(np.median(np.maximum(busy, 0.0)))
        assert fig.service_s.p95 == pytest.approx(np.percentile(np.maximum(busy, 0.0), 95))
        assert fig.queue.max == max(r["queue_in"] for r in mine)
        assert sum(fig.throughput) * analysis.bin_s == pytest.approx(len(mine))
        assert sum(w.items for w in fig.per_worker) == len(mine)
        # Host stages count their worker threads' CPU time, which cannot exceed
        # their busy time; the engine's threads are not a stage's.
        if fig.stage in ("infer", "report"):
            assert fig.cpu_s is None
        else:
            assert fig.cpu_s == pytest.approx(sum(r["cpu_s"] for r in mine))
            assert 0.0 < fig.cpu_s <= fig.busy_s + 1e-3
    finished = records[-1]
    assert finished["event"] == "run_finished"
    assert analysis.complete and analysis.ok == finished["summary"]["ok"] == 6
    assert analysis.wall_s == pytest.approx(finished["summary"]["wall_s"])
    assert analysis.runtime_avg_s == pytest.approx(finished["summary"]["runtime_avg_s"])
    assert analysis.padded_share == 0.0  # a dynamic batch axis never pads
    assert analysis.cpu_s == pytest.approx(finished["cpu"]["cpu_s"])
    (cpu_line,) = [x for x in format_analysis(analysis).splitlines() if "CPU s per" in x]
    score = next(f for f in analysis.stages if f.stage == "score")
    assert f"score {score.cpu_s / 6:.3f}" in cpu_line and "engine threads" in cpu_line
    json.dumps(dataclasses.asdict(analysis), allow_nan=False)


@pytest.mark.asyncio
async def test_an_interrupted_log_and_several_runs_are_read(
    tmp_path: Path, espcn_onnx: Path
) -> None:
    """A truncated last line and a missing run_finished are tolerated; runs appended to
    one file are split at each run_started."""
    log = await _logged_run(tmp_path, espcn_onnx)
    lines = log.read_text().splitlines()
    cut = tmp_path / "killed.jsonl"
    # drop run_finished and cut the last stage record in half, as a kill would
    cut.write_text("\n".join(lines[:-2]) + "\n" + lines[-2][: len(lines[-2]) // 2])
    (run,) = read_runs(cut)
    analysis = analyze_run(run)
    assert not analysis.complete and analysis.bad_lines == 1 and analysis.wall_s is None
    assert analysis.bottleneck is not None
    assert len(run.items) == len(read_runs(log)[0].items) - 1
    both = tmp_path / "both.jsonl"
    both.write_text(cut.read_text() + "\n" + log.read_text())
    first, second = read_runs(both)
    assert (first.label, second.label) == ("both.jsonl#1", "both.jsonl#2")
    assert first.finished is None and second.finished is not None
    finished = json.loads(lines[-1])
    stopped = tmp_path / "stopped.jsonl"
    stopped.write_text(
        "\n".join(
            [
                *lines[:-1],
                json.dumps(
                    {"event": "run_interrupted", "signal": "SIGINT", "summary": finished["summary"]}
                ),
            ]
        )
    )
    signalled = analyze_run(read_runs(stopped)[0])
    assert signalled.interrupted == "SIGINT" and not signalled.complete
    assert signalled.ok == finished["summary"]["ok"] and signalled.wall_s is not None


def test_a_log_without_stage_records_is_an_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"event": "run_started", "images": 3}\n{"truncat')
    with pytest.raises(AnalysisError, match="no stage records"):
        read_runs(empty)
    with pytest.raises(AnalysisError, match="cannot read"):
        read_runs(tmp_path / "missing.jsonl")


def _item(stage: str, t0: float, t1: float, **fields: Any) -> dict[str, Any]:
    return {
        "event": "item_done",
        "stage": stage,
        "worker": 0,
        "t_start": t0,
        "t_end": t1,
        "busy_s": t1 - t0 - fields.get("wait_out_s", 0.0),
        "wait_in_s": 0.0,
        "wait_out_s": 0.0,
        "queue_in": 0,
        **fields,
    }


def test_per_device_utilisation_and_padded_share_on_a_tpu_style_log() -> None:
    items = [
        _item("infer", 0.0, 1.0, worker=0, device="tpu:0", batch_id=0, tiles=4, padded=0),
        _item("infer", 1.0, 2.0, worker=0, device="tpu:0", batch_id=1, tiles=1, padded=3),
        _item("infer", 0.0, 0.5, worker=1, device="tpu:1", batch_id=2, tiles=4, padded=0),
    ]
    analysis = analyze_run(RunLog(label="tpu", started=None, finished=None, items=tuple(items)))
    d0, d1 = analysis.devices
    assert (d0.device, d0.batches, d0.utilisation) == ("tpu:0", 2, pytest.approx(1.0))
    assert (d1.device, d1.utilisation) == ("tpu:1", pytest.approx(0.25))
    assert analysis.padded_share == pytest.approx(3 / 12)


def test_a_stage_blocked_sending_is_not_the_bottleneck() -> None:
    """Busy time excludes blocked time; a stage that spends more time blocked than busy
    is held back by one downstream of it."""
    items = [
        _item("decode", 0.0, 1.0, image_id=0, wait_out_s=0.6),
        _item("save", 0.0, 0.55, image_id=0),
    ]
    run = RunLog(label="x", started=None, finished=None, items=tuple(items))
    stages = analyze_run(run).stages
    assert find_bottleneck(stages) == "save"


@pytest.mark.asyncio
async def test_the_timeline_plot_is_produced(tmp_path: Path, espcn_onnx: Path) -> None:
    log = await _logged_run(tmp_path, espcn_onnx, **{"workers.infer": 2})
    runs = read_runs(log)
    assert ("infer", 1) in lanes(runs[0]) and lanes(runs[0])[0] == ("decode", 0)
    out = plot_timeline([*runs, *runs], tmp_path / "plots" / "timeline.png")
    with Image.open(out) as img:
        assert img.format == "PNG" and img.width >= 800 and img.height >= 400


@pytest.mark.slow  # four run.py processes, one drawing with matplotlib: 3-4 s
@pytest.mark.asyncio
async def test_cli_analyze_prints_the_table_json_and_compares_runs(
    tmp_path: Path, espcn_onnx: Path
) -> None:
    slow = await _logged_run(
        tmp_path,
        espcn_onnx,
        log_name="slow.jsonl",
        engine_factory=lambda: DelayedEngine(espcn_onnx, delay_s=0.05),
    )
    fast = await _logged_run(tmp_path, espcn_onnx, log_name="fast.jsonl")
    text = run_cli("analyze", str(slow), cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    assert "bottleneck: infer" in text.stdout and "suggestion: infer busy" in text.stdout
    assert all(f"\n{stage} " in text.stdout for stage in STAGES)
    as_json = run_cli("analyze", str(slow), str(fast), "--json", cwd=tmp_path)
    assert as_json.returncode == 0, as_json.stderr
    figures = json.loads(as_json.stdout)
    assert [f["label"] for f in figures] == ["slow.jsonl", "fast.jsonl"]
    assert figures[0]["bottleneck"] == "infer"
    infer = next(s for s in figures[0]["stages"] if s["stage"] == "infer")
    assert set(infer) >= {"utilisation", "starved", "blocked", "service_s", "throughput"}
    plot = tmp_path / "cmp.png"
    both = run_cli("analyze", str(slow), str(fast), "--plot", str(plot), cwd=tmp_path)
    assert both.returncode == 0, both.stderr
    assert "== comparison" in both.stdout and plot.is_file()
    missing = run_cli("analyze", str(tmp_path / "nope.jsonl"), cwd=tmp_path)
    assert missing.returncode == 2 and missing.stderr.startswith("error: cannot read the log")


def _cluster_item(stage: str, pipeline: int, node: str, t: float, **fields: Any) -> dict[str, Any]:
    return {
        "event": "item_done",
        "stage": stage,
        "worker": 0,
        "pipeline": pipeline,
        "node": node,
        "t_start": t,
        "t_end": t + 0.5,
        "busy_s": 0.5,
        "wait_in_s": 0.0,
        "wait_out_s": 0.0,
        **fields,
    }


def test_a_cluster_log_reads_as_one_run_with_per_node_figures(tmp_path: Path) -> None:
    """Two pipelines that each number their workers and batches from 0: one run whose
    infer has two workers and two distinct batches; node B, half as fast per
    pipeline, is named the slowest."""
    records: list[dict[str, Any]] = [
        {"event": "run_started", "images": 3, "config": {"workers": {"infer": 1}}},
        {"event": "pipeline_started", "pipeline": 0, "node": "A"},
        {"event": "pipeline_started", "pipeline": 1, "node": "B"},
        _cluster_item("infer", 0, "A", 100.0, batch_id=0, image_ids=[0, 1]),
        _cluster_item("stitch", 0, "A", 100.5, batch_id=0),
        _cluster_item("report", 0, "A", 101.0, image_id=0),
        _cluster_item("report", 0, "A", 101.0, image_id=1),
        _cluster_item("infer", 1, "B", 100.0, batch_id=0, image_ids=[2]),
        _cluster_item("stitch", 1, "B", 100.5, batch_id=0),
        _cluster_item("report", 1, "B", 101.0, image_id=2),
        {"event": "run_finished", "summary": {"ok": 3, "failed": 0}},
    ]
    log = tmp_path / "run.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in records))
    (run,) = read_runs(log)
    assert run.pipelines == 2 and run.workers("infer") == 2 and run.workers("stitch") == 2
    a = analyze_run(run)
    infer, stitch = a.stage("infer"), a.stage("stitch")
    assert infer is not None and len(infer.per_worker) == 2
    # Each stitch record finds its own pipeline's batch: images 0, 1 and 2.
    assert stitch is not None and stitch.images == 3
    assert [(n.node, n.pipelines, n.images) for n in a.nodes] == [("A", 1, 2), ("B", 1, 1)]
    assert a.slowest_node == "B"
    assert a.nodes[0].infer_utilisation == pytest.approx(0.5 / 1.5)


@pytest.mark.asyncio
async def test_a_failed_call_in_a_worker_thread_still_counts_its_cpu() -> None:
    """NIQE raises after most of its work: that work is the stage's CPU all the same."""
    from structlog.testing import capture_logs

    from batchsr.pipeline.stage import Meter

    def spin_then_fail() -> None:
        t = time.thread_time()
        while time.thread_time() - t < 0.02:
            pass
        raise ValueError("undefined")

    meter: Meter[object] = Meter("score")
    with capture_logs() as logs:
        with pytest.raises(ValueError):
            await meter.in_thread(spin_then_fail)
        meter.done(image_id=0)
        meter.done(image_id=1)  # an item that ran nothing in a thread logs no cpu_s
    assert logs[0]["cpu_s"] >= 0.02 and "cpu_s" not in logs[1]
