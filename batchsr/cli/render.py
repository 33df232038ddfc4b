"""Every text the CLI shows: the run summary and progress bar, the analysis tables,
tune's trial lines, selfcheck's report. Functions here build strings from the
library's records; only the progress bar writes (to stderr, on a terminal).
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchsr import native
from batchsr.analysis import RunAnalysis
from batchsr.cli.flags import worded
from batchsr.config import Config, OutputConfig
from batchsr.metrics.folder import FolderScore
from batchsr.pipeline.report import Progress, RunSummary, lossy_output
from batchsr.selfcheck import SelfCheckResult
from batchsr.tune import Trial, TuneResult
from batchsr.vocab import EDGES, MULTI_WORKER_STAGES, STAGES

if TYPE_CHECKING:
    from batchsr.cluster.driver import ClusterResult

__all__ = [
    "ProgressBar",
    "cluster_line",
    "engines_lost_line",
    "format_analysis",
    "format_comparison",
    "format_summary",
    "format_trial",
    "interrupted_line",
    "queues_line",
    "ramp",
    "render_selfcheck",
    "score_lines",
    "subfolders_note",
    "trial_header",
    "tune_summary",
    "workers_line",
]


class ProgressBar:
    """One self-rewriting stderr line; shown only on a terminal."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, p: Progress) -> None:
        if not self.enabled:
            return
        width = 30
        filled = width * p.done // max(p.total, 1)
        rate = p.done / p.elapsed_s if p.elapsed_s > 0 else 0.0
        line = (
            f"\r[{'#' * filled}{'.' * (width - filled)}] {p.done}/{p.total} images "
            f"{rate:.2f} img/s  {p.errors} errors"
        )
        print(line, end="" if p.done < p.total else "\n", file=sys.stderr, flush=True)


_MAX_LISTED = 20


def format_summary(
    s: RunSummary,
    report: Path,
    log: Path,
    rows: Sequence[dict[str, Any]] = (),
    *,
    output: OutputConfig | None = None,
) -> str:
    """The run's summary: counts, one line per image that failed or has no NIQE (file
    name and reason), the figures, why any figure is n/a, and whether the outputs are
    lossy (``output``: the run's output settings; default the config's)."""
    output = output or OutputConfig()
    score = output.score

    def num(v: float | None, spec: str, why: str) -> str:
        return f"n/a ({why})" if v is None else format(v, spec)

    left_out = f", {s.unscored} without NIQE" if s.unscored else ""
    resumed = f" ({s.resumed} carried over by --resume)" if s.resumed else ""
    lines = [f"{s.images} images: {s.ok} upscaled{resumed}, {s.failed} failed{left_out}"]
    bad = [r for r in rows if r.get("error")]
    for r in bad[:_MAX_LISTED]:
        what = "failed" if r.get("runtime") is None else "no NIQE"
        lines.append(f"  {what}: {r['img_name']}: {worded(r['error'])}")
    if len(bad) > _MAX_LISTED:
        lines.append(f"  ... and {len(bad) - _MAX_LISTED} more in {report}")
    no_runtime = "no image was upscaled"
    if not score:
        no_niqe = "NIQE off: --no-score"
    elif s.ok == 0:
        no_niqe = no_runtime
    else:
        no_niqe = "no output could be scored"
    if s.niqe_avg is None:
        no_score = "no niqe_avg"
    elif s.runtime_avg_s is None:
        no_score = "no runtime_avg"
    else:
        no_score = f"niqe_avg {s.niqe_avg:.4f} >= 7, where sqrt(7 - niqe_avg) is undefined"
    lines += [
        f"wall {s.wall_s:.2f} s, {s.images_per_s:.2f} images/s",
        f"runtime_avg {num(s.runtime_avg_s, '.4f', no_runtime)} s per image (contest: tiling "
        f"to stitched, queueing included), service {num(s.service_avg_s, '.4f', no_runtime)} s "
        "(its own work)",
        f"niqe_avg {num(s.niqe_avg, '.4f', no_niqe)} over {s.scored} scored images",
        f"score: contest {num(s.score_contest, '.1f', no_score)} (per-image runtime), "
        f"amortized {num(s.score_amortized, '.1f', no_score)} (wall / images)",
        f"report {report}",
        f"log    {log}",
    ]
    if native.kernels() is None:
        lines.append(f"NIQE and the colour merge ran their {native.status()} (2-4x slower)")
    if (lossy := lossy_output(output.ext, output.quality)) is not None:
        lines.append(
            f"outputs {lossy['format'].upper()} at quality {lossy['quality']}: "
            "lossy, so NIQE scores the compressed pixels (the report says so)"
        )
    return "\n".join(lines)


def subfolders_note(folder: Path, skipped: Sequence[Path]) -> str:
    """Why images below ``folder`` were not read."""
    shown = ", ".join(d.name for d in skipped[:5]) + (", ..." if len(skipped) > 5 else "")
    return (
        f"note: {len(skipped)} subfolder(s) of {folder} with images not read ({shown}); "
        "pass --recursive to include them"
    )


def interrupted_line(signum: int, s: RunSummary, total: int) -> str:
    """What an interrupted run kept."""
    return (
        f"\ninterrupted by {signal.Signals(signum).name}: "
        f"{s.images} of {total} images finished and reported"
    )


def engines_lost_line(s: RunSummary, report: Path) -> str:
    """Why a run that wrote its report still failed."""
    return (
        f"error: every engine failed ({s.failed} images could not be upscaled); the report "
        f"{report} holds the rows, the log the causes"
    )


def score_lines(names: Sequence[str], rows: Sequence[FolderScore], report: dict[str, Any]) -> str:
    """``run.py score``'s listing: one line per image, then the average."""
    width = max(len(n) for n in names)
    lines = [
        f"{name:<{width}}  {f'{row.niqe:.4f}' if row.niqe is not None else f'error: {row.error}'}"
        for name, row in zip(names, rows, strict=True)
    ]
    scored = sum(r.niqe is not None for r in rows)
    left_out = len(rows) - scored
    lines.append(
        f"niqe_avg {report['niqe_avg'] or 'n/a'} over {scored} images"
        + (f" ({left_out} left out: see the errors above)" if left_out else "")
    )
    return "\n".join(lines)


def cluster_line(result: ClusterResult) -> str:
    per_node = {p.name: 0 for p in result.plans}
    for node in result.nodes.values():
        per_node[node] = per_node.get(node, 0) + 1
    pipelines = sum(p.pipelines for p in result.plans)
    shares = ", ".join(f"{name} {count}" for name, count in per_node.items())
    line = (
        f"cluster: {len(result.plans)} node(s), {pipelines} pipeline(s); images per node: {shares}"
    )
    if result.requeued:
        line += f"; {result.requeued} chunk(s) run again after a pipeline was lost"
    return line


_SPARK_UTF8 = "▁▂▃▄▅▆▇█"


_SPARK_ASCII = "_.-:=+*#"


def _sparkline(values: Sequence[float], ramp: str) -> str:
    top = max(values, default=0.0)
    if top <= 0:
        return ramp[0] * len(values)
    return "".join(ramp[min(len(ramp) - 1, int(v / top * (len(ramp) - 1) + 0.5))] for v in values)


def ramp() -> str:
    encoding = (getattr(sys.stdout, "encoding", None) or "").lower().replace("-", "")
    return _SPARK_UTF8 if encoding.startswith("utf") else _SPARK_ASCII


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.0%}"


def _secs(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def format_analysis(a: RunAnalysis, *, ramp: str = _SPARK_ASCII) -> str:
    """The human report of one analysed run: what ran, the stage table, where the
    resources went, the bottleneck and the advice."""
    lines = [*_analysis_head(a), "", *_stage_table(a, ramp), *_resources(a)]
    lines += ["", f"bottleneck: {a.bottleneck or 'n/a'}", f"suggestion: {worded(a.suggestion)}"]
    lines += [f"buffers: {worded(note)}" for note in a.advice]
    return "\n".join(lines)


def _analysis_head(a: RunAnalysis) -> list[str]:
    head = f"== {a.label}"
    if a.interrupted is not None:
        head += f"  (interrupted by {a.interrupted})"
    elif not a.complete:
        head += "  (no end record: the run was killed or is still going)"
    lines = [head]
    if a.bad_lines:
        lines.append(f"skipped {a.bad_lines} unreadable line(s) (a truncated last line?)")
    model = a.model or {}
    geo = a.geometry or {}
    if model or geo:
        lines.append(
            f"model {model.get('name', '?')} ({model.get('format', '?')}), tile "
            f"{geo.get('tile_h', '?')}x{geo.get('tile_w', '?')} pad {geo.get('pad', '?')} "
            f"batch {geo.get('batch', '?')}"
            + (f", images up to {whole} px whole" if (whole := geo.get("whole_pixels")) else "")
        )
    wall = "n/a" if a.wall_s is None else f"{a.wall_s:.2f} s"
    rate = "n/a" if a.images_per_s is None else f"{a.images_per_s:.2f}"
    lines.append(
        f"{a.images} images ({a.ok} ok, {a.failed} failed); wall {wall}, stage span "
        f"{a.span_s:.2f} s, {rate} images/s; runtime_avg {_secs(a.runtime_avg_s)} s"
    )
    return lines


def _stage_table(a: RunAnalysis, ramp: str) -> list[str]:
    header = (
        f"{'stage':<7} {'wkrs':>4} {'items':>5} {'busy s':>7} {'util':>5} {'starved':>7} "
        f"{'blocked':>7} {'svc mean':>8} {'p50':>7} {'p95':>7} {'queue in':>12}  "
        f"throughput ({a.bin_s:.2f} s bins)"
    )
    lines = [header]
    for s in a.stages:
        q = s.queue
        queue = (
            f"{q.edge} {q.max if q.max is not None else '-'}/{q.capacity or '?'}" if q.edge else "-"
        )
        peak = max(s.throughput, default=0.0)
        lines.append(
            f"{s.stage:<7} {s.workers:>4} {s.items:>5} {s.busy_s:>7.2f} "
            f"{_pct(s.utilisation):>5} {_pct(s.starved):>7} {_pct(s.blocked):>7} "
            f"{_secs(s.service_s.mean):>8} {_secs(s.service_s.p50):>7} "
            f"{_secs(s.service_s.p95):>7} {queue:>12}  "
            f"{_sparkline(s.throughput, ramp)} peak {peak:.1f}/s"
        )
    lines.append(
        "util/starved/blocked: shares of workers x span busy, waiting for input, blocked "
        "sending; queue in: most items seen buffered / buffer size"
    )
    return lines


def _resources(a: RunAnalysis) -> list[str]:
    lines = []
    if a.concurrency is not None:
        lines.append(f"busy workers on average (all stages): {a.concurrency:.2f}")
    if a.cores is not None and a.cpu_busy is not None:
        lines.append(
            f"CPU: {a.cpu_busy:.2f} of {a.cores} cores busy on average "
            f"({a.cpu_busy / a.cores:.0%}; process CPU time / wall, all threads)"
        )
    for d in a.devices:
        lines.append(
            f"device {d.device}: {d.workers} worker(s), {d.batches} batches, "
            f"util {_pct(d.utilisation)}, {d.padded} padded of {d.tiles + d.padded} slots"
        )
    if (cpu := _cpu_per_image(a)) is not None:
        lines.append(cpu)
    if a.padded_share is not None:
        lines.append(f"padded tile slots: {a.padded_share:.1%}")
    for n in a.nodes:
        per = "n/a" if n.per_pipeline is None else f"{n.per_pipeline:.2f}"
        lines.append(
            f"node {n.node}: {n.pipelines} pipeline(s), {n.images} images in "
            f"{n.span_s:.2f} s ({per} images/s per pipeline), infer busy "
            f"{_pct(n.infer_utilisation)}"
        )
    if a.slowest_node is not None:
        lines.append(f"slowest node: {a.slowest_node} (fewest images/s per pipeline)")
    return lines


def _cpu_per_image(a: RunAnalysis) -> str | None:
    """CPU seconds per finished image: each host stage's own (its worker threads), and
    what the rest of the process used (the engine's threads, the event loop, start-up
    after logging began)."""
    host = {s.stage: s.cpu_s / a.ok for s in a.stages if s.cpu_s is not None and a.ok}
    if not host:
        return None
    parts = ", ".join(f"{stage} {cpu_s:.3f}" for stage, cpu_s in host.items())
    total = sum(host.values())
    line = f"CPU s per image: {parts} (host stages {total:.3f})"
    if a.cpu_s is not None:
        line += f"; rest of the process (engine threads, event loop) {a.cpu_s / a.ok - total:.3f}"
    return line


def format_comparison(runs: Sequence[RunAnalysis]) -> str:
    """One line per run, stage utilisations side by side."""
    stages = [s for s in STAGES if any(r.stage(s) for r in runs)]
    width = max(len(r.label) for r in runs)
    lines = [
        f"{'run':<{width}} {'images/s':>8} {'span s':>7} {'bottleneck':>10}  "
        + " ".join(f"{s:>6}" for s in stages)
    ]
    for r in runs:
        utils = []
        for name in stages:
            fig = r.stage(name)
            utils.append(f"{_pct(fig.utilisation if fig else None):>6}")
        rate = "n/a" if r.images_per_s is None else f"{r.images_per_s:.2f}"
        lines.append(
            f"{r.label:<{width}} {rate:>8} {r.span_s:>7.2f} {r.bottleneck or 'n/a':>10}  "
            + " ".join(utils)
        )
    return "\n".join(["== comparison (stage utilisation)", *lines])


def workers_line(config: Config) -> str:
    return " ".join(f"{s}={getattr(config.workers, s)}" for s in MULTI_WORKER_STAGES)


def queues_line(config: Config) -> str:
    return " ".join(f"{e}={getattr(config.queues, e)}" for e in EDGES)


def trial_header(repeat: int) -> str:
    """The column heads of :func:`format_trial` lines."""
    return (
        f"{'trial':>5} {'queues':>6}  {'workers':<36} {'images/s':>8} {'wall s':>7} "
        f"{'bottleneck':>10}{' spread' if repeat > 1 else ''}"
    )


def tune_summary(result: TuneResult, *, no_score: bool) -> list[str]:
    """What tune found: what it varied, the base and the best config, the noise."""
    best, baseline = result.best, result.baseline
    gain = (
        f" ({best.images_per_s / baseline.images_per_s - 1:+.0%} over the base config)"
        if best.images_per_s and baseline.images_per_s
        else ""
    )
    lines = [
        f"{len(result.trials)} trials on {len(result.sample)} images "
        f"({', '.join(result.sample)}); varied workers of {', '.join(result.stages) or 'none'}, "
        f"buffer sizes {', '.join(map(str, result.queue_sizes))}",
        f"base:  trial {baseline.index}: {workers_line(baseline.config)}; "
        f"queues {queues_line(baseline.config)}",
        f"best:  trial {best.index}: {workers_line(best.config)}; "
        f"queues {queues_line(best.config)}{gain}",
    ]
    if result.noise is not None:
        lines.append(
            f"run-to-run spread of one config: median {result.noise:.0%} of its images/s; "
            "smaller differences between trials are noise"
        )
    if no_score:
        lines.append("trials ran without NIQE (--no-score); the file keeps the base's [output]")
    return lines


def format_trial(t: Trial) -> str:
    rate = "n/a" if t.images_per_s is None else f"{t.images_per_s:.2f}"
    spread = "" if t.spread is None else f" {t.spread:>6.0%}"
    return (
        f"{t.index:>5} {t.queue_size:>6}  {workers_line(t.config):<36} {rate:>8} "
        f"{t.wall_s:>7.2f} {t.bottleneck or 'n/a':>10}{spread}"
    )


def render_selfcheck(r: SelfCheckResult) -> str:
    """The self-check report: one line per case and stage shape, then the verdict."""
    q = r.quantize or "quantization unknown"
    lines = [
        f"bmodel    {r.bmodel} on {r.where}, scale x{r.scale}, {q}",
        f"shapes    {[list(s) for s in r.input_shapes]}",
        f"reference {r.reference or 'none (accuracy not checked)'}",
    ]
    for c in r.cases:
        shape = "x".join(map(str, c.shape))
        verdict = (
            ("pass" if c.passed else "FAIL")
            if c.kind == "real"
            else ("finite" if c.finite else "FAIL")
        )
        bound = f" (>= {r.min_psnr_db:g})" if c.kind == "real" else " (noise: not judged)"
        if c.psnr_db is None:
            lines.append(f"  {c.kind:6} {shape} ({c.tiles} tiles): finite={c.finite}: {verdict}")
        else:
            lines.append(
                f"  {c.kind:6} {shape} ({c.tiles} tiles): max abs diff {c.max_abs_diff:.6f}, "
                f"PSNR {c.psnr_db:.2f} dB{bound}, finite={c.finite}: {verdict}"
            )
    lines.append(
        f"latency   min {r.latency_min_s * 1e3:.2f} ms, median {r.latency_median_s * 1e3:.2f} ms "
        f"per call over {r.calls} calls"
    )
    lines.append(f"{'PASS' if r.passed else 'FAIL'}: {r.reason}")
    return "\n".join(lines)
