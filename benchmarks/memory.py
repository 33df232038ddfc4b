"""Peak memory does not grow with the number of images.

Runs ``run.py`` in a fresh subprocess on 10 and on 200 contest-size images (the
contest samples repeated by symlink when ``../shared`` is present, otherwise
synthetic 510x340 photos-like images) and prints each run's peak RSS and their ratio.
Goal: the 200-image peak within 15% of the 10-image peak.

    python benchmarks/memory.py [--model espcn] [--no-score] [--counts 10 200]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from contest_inputs import make_inputs  # noqa: E402


def peak_rss_mib(cmd: list[str]) -> tuple[float, float]:
    """Run ``cmd`` in a child and return (its peak RSS in MiB, wall seconds)."""
    t0 = time.perf_counter()
    # A fresh grandchild per run: RUSAGE_CHILDREN's maxrss is the max over all children
    # so far, so each measurement runs under its own intermediate interpreter.
    probe = (
        "import resource, subprocess, sys; "
        "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, *cmd], check=True, capture_output=True, text=True, cwd=REPO
    )
    return int(out.stdout.strip()) / 1024, time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="espcn")
    parser.add_argument("--counts", type=int, nargs=2, default=(10, 200))
    parser.add_argument("--no-score", action="store_true")
    args = parser.parse_args()
    peaks = []
    with tempfile.TemporaryDirectory() as tmp:
        for count in args.counts:
            folder = Path(tmp) / f"in{count}"
            kind = make_inputs(folder, count)
            cmd = [
                sys.executable,
                str(REPO / "run.py"),
                "--model",
                args.model,
                "--input",
                str(folder),
                "--output",
                str(Path(tmp) / f"out{count}"),
                "--quiet",
            ]
            if args.no_score:
                cmd.append("--no-score")
            peak, wall = peak_rss_mib(cmd)
            peaks.append(peak)
            print(f"{count:5d} images ({kind}): peak RSS {peak:8.1f} MiB, wall {wall:6.1f} s")
    ratio = peaks[1] / peaks[0]
    print(
        f"peak ratio {args.counts[1]}/{args.counts[0]} images: {ratio:.3f} "
        f"({'within' if ratio <= 1.15 else 'OVER'} the 15% goal)"
    )
    print(f"machine: {os.cpu_count()} cores; default queue sizes (configs/default.toml)")
    return 0 if ratio <= 1.15 else 1


if __name__ == "__main__":
    sys.exit(main())
