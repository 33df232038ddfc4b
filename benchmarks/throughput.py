"""batchsr's pipeline against the seed's sequential loop, side by side in one run, for
two models: the default (a dynamic-shape Y ESPCN) and the seed's own RGB ESPCN at a
static 1x3x128x128 (its deployment shape).

The contest samples (../shared/contest: four images of four sizes) repeated to N images
(default 12) are upscaled, saved and scored by ``seed_loop.py`` (one image at a time,
official NIQE) and by ``run.py`` with default settings, model by model, each pair back
to back. Prints both wall times, images/s and their ratio per model (goals: 14x for the
default model, 12x for the static one, on a 2-core machine), the largest per-image NIQE
difference on identical pixels (our NIQE against the official one, on the pipeline's
own outputs), and the pipeline's overlap: wall time over the busiest stage's busy time
per worker (goal <= 1.10).

    python benchmarks/throughput.py [--images 12] [--only default|static] [--filter NAME]

Needs requirements-bench.txt (scipy, opencv-python-headless) beside requirements.txt.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

from contest_inputs import CONTEST, SAMPLES  # noqa: E402
from official_niqe import load_official_niqe  # noqa: E402
from seed_loop import run_seed_loop  # noqa: E402
from seed_model import seed_like_onnx  # noqa: E402

from batchsr.analysis import analyze_logs  # noqa: E402

GOALS = {"default": 14.0, "static": 12.0}


@dataclass(frozen=True, slots=True)
class Row:
    """One model's figures: the seed loop's and ours, side by side."""

    label: str
    goal: float
    seed_wall_s: float
    seed_niqe: float
    ours_wall_s: float
    ours_niqe: float
    runtime_avg: float
    niqe_diff: float
    overlap: float
    busiest: str


def _ours(model: str, folder: Path, out: Path, extra: list[str]) -> float:
    cmd = [sys.executable, str(REPO / "run.py"), "--model", model, "--input", str(folder)]
    t0 = time.perf_counter()
    subprocess.run([*cmd, "--output", str(out), "--quiet", *extra], check=True, cwd=REPO)
    return time.perf_counter() - t0


def measure(
    label: str,
    model: str,
    folder: Path,
    tmp: Path,
    official: Callable[..., Any],
    args: argparse.Namespace,
) -> Row:
    paths = sorted(folder.iterdir())
    seed = run_seed_loop(
        paths, tmp / f"seed-{label}", model=model, filter_name=args.filter, official_niqe=official
    )
    out = tmp / f"ours-{label}"
    extra = [*(["--filter", args.filter] if args.filter else []), *args.extra]
    ours_wall = _ours(model, folder, out, extra)
    report = json.loads((out / "report.json").read_text())["A"][0]
    analysis = analyze_logs([out / "run.jsonl"])[0]
    import cv2

    diffs = []
    for row in report["images"]:
        bgr = cv2.imread(str(out / f"{row['img_name']}.png"))
        ref = float(official(bgr, 0, input_order="HWC", convert_to="y"))
        diffs.append(abs(float(row["niqe"]) - ref))
    busiest = max(analysis.stages, key=lambda s: s.busy_s / max(s.workers, 1))
    per_worker = busiest.busy_s / max(busiest.workers, 1)
    return Row(
        label=label,
        goal=GOALS[label],
        seed_wall_s=seed.wall_s,
        seed_niqe=float(np.mean([r["niqe"] for r in seed.rows])),
        ours_wall_s=ours_wall,
        ours_niqe=float(report["niqe_avg"]),
        runtime_avg=float(report["runtime_avg"]),
        niqe_diff=max(diffs),
        overlap=analysis.span_s / per_worker,
        busiest=f"{busiest.stage}, {busiest.workers} worker(s)",
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=12)
    p.add_argument("--only", choices=sorted(GOALS), help="one row only")
    p.add_argument("--filter")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more run.py flags")
    args = p.parse_args()
    sources = [CONTEST / s for s in SAMPLES]
    if not all(s.is_file() for s in sources):
        print(f"needs the contest samples in {CONTEST}", file=sys.stderr)
        return 2
    official = load_official_niqe()
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        folder = tmp / "in"
        folder.mkdir()
        for i in range(args.images):
            (folder / f"{i:04d}.png").symlink_to(sources[i % len(sources)])
        seed_onnx, what = seed_like_onnx(tmp)
        models = {"default": "espcn", "static": str(seed_onnx)}
        for label, model in models.items():
            if args.only in (None, label):
                rows.append(measure(label, model, folder, tmp, official, args))
    n = args.images
    print(f"machine: {os.cpu_count()} cores; {n} images (4 contest samples, 4 sizes, repeated)")
    print("default: models/espcn (Y, dynamic shapes); static: 1x3x128x128 RGB ESPCN, " + what)
    print(
        f"{'model':<8} {'seed s':>8} {'img/s':>6} {'ours s':>7} {'img/s':>6} {'ratio':>7} "
        f"{'goal':>5} {'runtime_avg':>11} {'niqe seed/ours':>15} {'overlap':>8}  busiest"
    )
    for r in rows:
        print(
            f"{r.label:<8} {r.seed_wall_s:8.2f} {n / r.seed_wall_s:6.3f} {r.ours_wall_s:7.2f} "
            f"{n / r.ours_wall_s:6.3f} {r.seed_wall_s / r.ours_wall_s:6.2f}x {r.goal:4.0f}x "
            f"{r.runtime_avg:10.3f}s {r.seed_niqe:7.4f}/{r.ours_niqe:.4f} {r.overlap:8.2f}  "
            f"{r.busiest}"
        )
    print(
        "ours: process wall, startup included; NIQE: largest |ours - official| on the "
        f"pipeline's outputs {max(r.niqe_diff for r in rows):.2e}; overlap goal <= 1.10"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
