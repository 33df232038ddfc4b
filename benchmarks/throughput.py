"""batchsr's pipeline against the seed's sequential loop, side by side in one run.

The contest samples (../shared/contest) repeated to N images (default 24) are
upscaled, saved and scored twice: by ``seed_loop.py`` (one image at a time, official
NIQE) and by ``run.py`` with default settings. Prints wall time and images/s of both,
their ratio (goal >= 8 on a 2-core machine), the largest per-image NIQE difference on
identical pixels (our NIQE against the official one, on the pipeline's own outputs), and
the pipeline's overlap: wall time over the busiest stage's busy time per worker (goal
<= 1.15).

    python benchmarks/throughput.py [--images 24] [--model espcn] [--filter NAME]

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
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

from contest_inputs import CONTEST, SAMPLES  # noqa: E402
from official_niqe import load_official_niqe  # noqa: E402
from seed_loop import run_seed_loop  # noqa: E402

from batchsr.analysis import analyze_logs  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=24)
    p.add_argument("--model", default="espcn")
    p.add_argument("--filter")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more run.py flags")
    args = p.parse_args()
    sources = [CONTEST / s for s in SAMPLES]
    if not all(s.is_file() for s in sources):
        print(f"needs the contest samples in {CONTEST}", file=sys.stderr)
        return 2
    official = load_official_niqe()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "in"
        folder.mkdir()
        for i in range(args.images):
            (folder / f"{i:04d}.png").symlink_to(sources[i % len(sources)])
        paths = sorted(folder.iterdir())

        seed = run_seed_loop(
            paths,
            Path(tmp) / "seed",
            model=args.model,
            filter_name=args.filter,
            official_niqe=official,
        )

        out = Path(tmp) / "ours"
        cmd = [
            sys.executable,
            str(REPO / "run.py"),
            "--model",
            args.model,
            "--input",
            str(folder),
            "--output",
            str(out),
            "--quiet",
            *args.extra,
        ]
        if args.filter:
            cmd += ["--filter", args.filter]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=REPO)
        ours_wall = time.perf_counter() - t0
        report = json.loads((out / "report.json").read_text())["A"][0]
        analysis = analyze_logs([out / "run.jsonl"])[0]

        import cv2

        diffs = []
        for row in report["images"]:
            bgr = cv2.imread(str(out / f"{row['img_name']}.png"))
            ref = float(official(bgr, 0, input_order="HWC", convert_to="y"))
            diffs.append(abs(float(row["niqe"]) - ref))

    n = args.images
    seed_rate, ours_rate = n / seed.wall_s, n / ours_wall
    busiest = max(analysis.stages, key=lambda s: s.busy_s / max(s.workers, 1))
    overlap = analysis.span_s / (busiest.busy_s / max(busiest.workers, 1))
    print(f"machine: {os.cpu_count()} cores; {n} images (contest samples repeated)")
    print(
        f"seed loop : wall {seed.wall_s:7.2f} s  {seed_rate:6.3f} images/s  "
        f"niqe_avg {np.mean([r['niqe'] for r in seed.rows]):.4f}"
    )
    print(
        f"batchsr   : wall {ours_wall:7.2f} s  {ours_rate:6.3f} images/s  "
        f"niqe_avg {report['niqe_avg']}  (process wall, startup included)"
    )
    print(f"ratio     : {ours_rate / seed_rate:.2f}x  (goal >= 8)")
    print(f"NIQE      : largest |ours - official| on the pipeline's outputs {max(diffs):.2e}")
    print(
        f"overlap   : pipeline span {analysis.span_s:.2f} s / busiest stage "
        f"({busiest.stage}, {busiest.workers} worker(s)) busy per worker "
        f"{busiest.busy_s / max(busiest.workers, 1):.2f} s = {overlap:.2f}  (goal <= 1.15)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
