"""How stable the summary's headline figures are across reruns of the same job.

    python benchmarks/stability.py [--runs 5] [--input examples/] [--model espcn] [--cold]
        [--probe] [-- RUN.PY FLAGS]

Runs ``run.py --model M --input DIR`` ``--runs`` times, each a fresh process writing to
its own folder, and prints per run the contest score, images/s, runtime_avg and the
per-image service time, then each figure's spread ((max - min) / median). ``--cold``
first deletes the checkout's ``__pycache__`` folders, so the first run pays what the
first run after an install pays (bytecode compilation; the engine's first-call costs
are what the warm-up keeps out of the timing). Run it on a quiet machine.

``--probe`` also starts, after each run, a fresh process that times the engine alone
(the model's onnx artifact on one contest-size window, or on its own shape if static,
the median of 20 calls after a warm-up; the run.py flags do not apply to it) and prints
that figure's spread too: the machine's own run-to-run noise, measured beside the runs,
below which the pipeline's figures cannot be expected to settle.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ("score_contest", "score_amortized", "images_per_s", "runtime_avg_s", "service_avg_s")

# The engine-alone probe, run in a fresh process: its median call in seconds.
_PROBE = """
import statistics, sys, time
import numpy as np
from batchsr.config import ModelConfig
from batchsr.engines import open_engine
from batchsr.resolve import resolve_model
engine = open_engine(resolve_model(sys.argv[1], backend="onnx"), ModelConfig())
n, c, h, w = engine.input_shapes[0]
shape = (n or 1, c or 3, h or 416, w or 520)
x = np.random.default_rng(0).random(shape, dtype=np.float32)
engine.run(x)
times = []
for _ in range(20):
    t = time.perf_counter()
    engine.run(x)
    times.append(time.perf_counter() - t)
print(statistics.median(times))
"""


def probe(model: str) -> float:
    """The engine's median call on a contest-size window, in a fresh process."""
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, model], check=True, cwd=ROOT, timeout=600,
        capture_output=True, text=True,
    )  # fmt: skip
    return float(out.stdout.split()[-1])


def one_run(model: str, folder: Path, out: Path, extra: list[str]) -> dict[str, float]:
    """One fresh process; its summary figures from the log's run_finished record."""
    subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "--model", model, "--input", str(folder),
         "--output", str(out), "--quiet", *extra],
        check=True, cwd=ROOT, timeout=600,
    )  # fmt: skip
    for line in (out / "run.jsonl").read_text().splitlines():
        event = json.loads(line)
        if event.get("event") == "run_finished":
            return {k: float(event["summary"][k] or 0.0) for k in FIGURES}
    raise SystemExit(f"{out / 'run.jsonl'} has no run_finished record")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--input", type=Path, default=ROOT / "examples")
    parser.add_argument("--model", default="espcn")
    parser.add_argument("--cold", action="store_true", help="drop __pycache__ before run 1")
    parser.add_argument("--probe", action="store_true", help="time the engine alone too")
    parser.add_argument("extra", nargs="*", help="more run.py flags (after --)")
    args = parser.parse_args(argv)
    if args.cold:
        for cache in [*ROOT.glob("batchsr/**/__pycache__"), *ROOT.glob("compile/__pycache__")]:
            shutil.rmtree(cache)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            rows.append(one_run(args.model, args.input, Path(tmp) / f"run{i}", args.extra))
            r = rows[-1]
            if args.probe:
                r["engine_alone_s"] = probe(args.model)
            print(
                f"run {i + 1}{' (cold)' if args.cold and i == 0 else ''}: "
                f"score {r['score_contest']:.1f} (amortized {r['score_amortized']:.1f}), "
                f"{r['images_per_s']:.2f} images/s, runtime_avg {r['runtime_avg_s']:.4f} s, "
                f"service {r['service_avg_s']:.4f} s"
                + (f", engine alone {r['engine_alone_s']:.4f} s" if args.probe else "")
            )
    for key in (*FIGURES, "engine_alone_s") if args.probe else FIGURES:
        values = np.array([r[key] for r in rows])
        spread = (values.max() - values.min()) / np.median(values)
        print(f"{key:16s} median {np.median(values):10.4f}  spread {spread:6.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
