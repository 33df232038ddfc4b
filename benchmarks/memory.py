"""Peak memory against folder size and image size, what sets it, and a soak run.

    python benchmarks/memory.py [--counts 40 160 640] [--repeat 3] [--mixed]
        [--soak 600] [--model espcn] [-- RUN.PY FLAGS, e.g. --max-memory 400]

Each run is ``run.py`` in a fresh process, its RSS sampled every 20 ms from /proc and
its exact peak taken from the kernel (``wait4``'s ``ru_maxrss`` of that child alone).
The folder is the contest samples repeated (or synthetic contest-size images without
../shared); ``--mixed`` adds the larger photos of ``examples/`` (scikit-image's: up to
512x512 and 427x640) in turn with them, so that large and small images meet in flight.

Printed per count: the peak of each repeat, their spread ((max - min) / median) and the
median's ratio to the previous count's; and for the median run, what set its peak,
read from its log: the base (RSS when the first image began tiling: interpreter,
libraries, engine), the images between tiling and their report row at the moment of
the peak with their output megapixels, and the bytes per in-flight output pixel that
the peak implies (``memory.bytes_per_pixel`` is that figure, measured one image at a
time). ``--soak N``: one run of N contest-size images; the RSS after each image, and the
slope of a least-squares line through images 100..N (MiB per image).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from contest_inputs import make_inputs  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")
MIB = 1 << 20
EXAMPLES = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.png")


def make_mixed(folder: Path, count: int) -> str:
    """Contest-size images and the examples' larger photos, alternating."""
    kind = make_inputs(folder, count)
    for i in range(1, count, 2):
        link = folder / f"{i:04d}.png"
        link.unlink()
        link.symlink_to(REPO / "examples" / EXAMPLES[(i // 2) % len(EXAMPLES)])
    return f"{kind} + examples/ photos"


class Sampled:
    """A child process with its RSS sampled every ``period`` seconds."""

    def __init__(
        self, cmd: list[str], period: float = 0.02, env: dict[str, str] | None = None
    ) -> None:
        self.samples: list[tuple[float, float]] = []  # (wall time, MiB)
        self._proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, env=env)
        self._period = period
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        path = f"/proc/{self._proc.pid}/statm"
        while True:
            try:
                with open(path, encoding="ascii") as f:
                    pages = int(f.read().split()[1])
            except (OSError, ValueError, IndexError):
                return
            self.samples.append((time.time(), pages * PAGE / MIB))
            time.sleep(self._period)

    def wait(self) -> float:
        """The child's exact peak RSS in MiB (its own, from the kernel)."""
        _, status, usage = os.wait4(self._proc.pid, 0)
        self._proc.returncode = os.waitstatus_to_exitcode(status)
        self._thread.join()
        if self._proc.returncode != 0:
            raise SystemExit(f"run.py exited with {self._proc.returncode}")
        return usage.ru_maxrss / 1024


def image_spans(log: Path) -> dict[int, tuple[float, float]]:
    """Per image: (tiling start, report row) in wall-clock seconds, from the run log
    (stage times are perf_counter readings; each record's timestamp, taken as it is
    written, ties them to the wall clock)."""
    records = [json.loads(line) for line in log.read_text().splitlines()]
    timed = [r for r in records if r.get("event") == "item_done"]
    offset = float(
        np.median([datetime.fromisoformat(r["timestamp"]).timestamp() - r["t_end"] for r in timed])
    )
    # With a budget, an image is in flight from its admission (t_admitted), not from
    # when the tile stage took it up and began waiting for its share.
    start = {
        r["image_id"]: r.get("t_admitted", r["t_start"]) + offset
        for r in timed
        if r["stage"] == "tile"
    }
    end = {r["image_id"]: r["t_end"] + offset for r in timed if r["stage"] == "report"}
    return {i: (start[i], end.get(i, start[i])) for i in start}


def buffered_at(log: Path, t: float) -> str:
    """Items waiting on each edge at wall time ``t``: the ``queue_in`` its consumer saw
    at its last receive before then (a sample, as the analysis reads it)."""
    records = [json.loads(line) for line in log.read_text().splitlines()]
    timed = [r for r in records if r.get("event") == "item_done"]
    offset = float(
        np.median([datetime.fromisoformat(r["timestamp"]).timestamp() - r["t_end"] for r in timed])
    )
    edges = {"tile": "decoded", "infer": "tiles", "stitch": "inferred", "save": "stitched",
             "score": "saved", "report": "scored"}  # fmt: skip
    seen = []
    for stage, edge in edges.items():
        before = [r for r in timed if r["stage"] == stage and r["t_start"] + offset <= t]
        if before and isinstance(before[-1].get("queue_in"), int):
            seen.append(f"{edge} {before[-1]['queue_in']}")
    return ", ".join(seen)


def explain_peak(samples: list[tuple[float, float]], log: Path, sizes: dict[int, int]) -> str:
    spans = image_spans(log)
    first = min(s for s, _ in spans.values())
    before = [mib for t, mib in samples if t <= first]
    base = before[-1] if before else samples[0][1]
    t_peak, peak = max(samples, key=lambda s: s[1])
    live = [i for i, (s, e) in spans.items() if s <= t_peak <= e]
    mpx = sum(sizes.get(i, 0) for i in live) / 1e6
    per_px = (peak - base) * MIB / (mpx * 1e6) if mpx else float("nan")
    return (
        f"base {base:.0f} MiB; at the sampled peak ({peak:.0f} MiB) {len(live)} image(s) "
        f"between tiling and report, {mpx:.1f} output Mpx: {per_px:.0f} bytes per in-flight "
        f"output pixel; buffered then: {buffered_at(log, t_peak)}"
    )


def _finished(log: Path) -> dict[str, Any]:
    for line in log.read_text().splitlines():
        if '"run_finished"' in line:
            record: dict[str, Any] = json.loads(line)
            return record
    return {}


def output_pixels(folder: Path) -> dict[int, int]:
    from PIL import Image

    out = {}
    for i, path in enumerate(sorted(folder.iterdir())):
        with Image.open(path) as img:
            out[i] = img.size[0] * img.size[1] * 16
    return out


def run_once(folder: Path, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, str(REPO / "run.py"), "--model", args.model, "--input", str(folder),
           "--output", str(out), "--quiet", *args.extra]  # fmt: skip
    t = time.perf_counter()
    run = Sampled(cmd, env={**os.environ, "PYTHONTRACEMALLOC": "1"} if args.heap else None)
    peak = run.wait()
    wall = time.perf_counter() - t
    return {"peak": peak, "samples": run.samples, "log": out / "run.jsonl", "wall": wall}


def soak(args: argparse.Namespace, tmp: Path) -> None:
    folder = tmp / "soak"
    kind = make_inputs(folder, args.soak)
    result = run_once(folder, tmp / "soak_out", args)
    spans = image_spans(result["log"])
    times = np.array([t for t, _ in result["samples"]])
    rss = np.array([m for _, m in result["samples"]])
    ends = sorted(e for _, e in spans.values())
    after = np.array([rss[min(np.searchsorted(times, e), len(rss) - 1)] for e in ends])
    k = np.arange(1, len(after) + 1)
    tail = k >= 100
    slope = float(np.polyfit(k[tail], after[tail], 1)[0]) if tail.sum() > 2 else float("nan")
    marks = ", ".join(f"{n}: {after[n - 1]:.0f}" for n in (1, 10, 100, 200, 400, len(after)))
    print(f"soak: {len(after)} images ({kind}), peak {result['peak']:.1f} MiB")
    print(f"  RSS (MiB) after image {marks}")
    print(
        f"  slope over images 100..{len(after)}: {slope:+.4f} MiB/image "
        f"({'under' if abs(slope) < 0.05 else 'OVER'} the 0.05 goal)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="espcn")
    parser.add_argument("--counts", type=int, nargs="+", default=[40, 160, 640])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--mixed", action="store_true", help="add examples/ photos")
    parser.add_argument("--soak", type=int, default=0, help="images of a soak run (0: none)")
    parser.add_argument(
        "--heap",
        action="store_true",
        help="trace Python's heap too (PYTHONTRACEMALLOC: slower, so peaks shift)",
    )
    parser.add_argument("extra", nargs="*", help="more run.py flags (after --)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        previous = None
        for count in args.counts:
            folder = tmp / f"in{count}"
            kind = (make_mixed if args.mixed else make_inputs)(folder, count)
            sizes = output_pixels(folder)
            runs = [run_once(folder, tmp / f"out{count}_{r}", args) for r in range(args.repeat)]
            peaks = [r["peak"] for r in runs]
            median = float(np.median(peaks))
            spread = (max(peaks) - min(peaks)) / median
            ratio = "" if previous is None else f", {median / previous:.3f}x the previous count"
            walls = [r["wall"] for r in runs]
            print(
                f"{count:5d} images ({kind}): peak RSS "
                + " ".join(f"{p:6.1f}" for p in peaks)
                + f" MiB; spread {spread:.1%}{ratio}; "
                f"{count / float(np.median(walls)):.2f} images/s"
            )
            middle = runs[int(np.argsort(peaks)[len(peaks) // 2])]
            print(f"      {explain_peak(middle['samples'], middle['log'], sizes)}")
            heap = _finished(middle["log"]).get("heap")
            if heap:
                print(
                    f"      Python heap (numpy included) peaked at {heap['peak_mib']} MiB of "
                    f"{middle['peak']:.0f} MiB RSS; the rest is the interpreter, libraries "
                    "and onnxruntime's own arena"
                )
            previous = median
        if args.soak:
            soak(args, tmp)
    print(f"flags: {args.extra or 'none'}; machine: {os.cpu_count()} cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
