"""Device utilisation of the sail infer workers, on the sophon.sail fake.

The fake (tests/helpers/fakes/sophon/sail.py) stands for the TPUs: no host compute, a fixed
device time per ``process`` call, one call at a time per device. The whole pipeline runs
(decode, tile, infer, stitch, save; NIQE off) on contest-sized images with the default
queue sizes, and for each device this prints how busy it was between its first and
last call. Run both process forms to see the GIL at work: the numpy form holds it for
the whole device call, so the other devices, and every other stage, wait.

    python benchmarks/device_sim.py [--images 50] [--device-time 0.04] [--form both]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import anyio
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests" / "helpers" / "fakes")]

import sophon.sail as sail  # noqa: E402  (the fake, found through tests/helpers/fakes)

import batchsr.engines.sail as sail_backend  # noqa: E402
from batchsr.config import Config, load_config  # noqa: E402
from batchsr.images import list_inputs  # noqa: E402
from batchsr.logging import configure_logging  # noqa: E402
from batchsr.manifest import Artifact, Manifest  # noqa: E402
from batchsr.pipeline.run import RunResult, run_pipeline  # noqa: E402
from batchsr.resolve import ResolvedModel  # noqa: E402

HOST_STAGES = ("decode", "tile", "stitch", "save")
# The contest's low-resolution inputs are 510 px wide (shared/contest samples).
CONTEST_SIZES = [(408, 510), (321, 510), (339, 510), (288, 510)]


def write_images(folder: Path, count: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(count):
        h, w = CONTEST_SIZES[i % len(CONTEST_SIZES)]
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        base = np.stack(
            [128 + 100 * np.sin(xx / 17 + c) * np.cos(yy / 23 - c) for c in range(3)], 2
        )
        rgb = np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(rgb).save(folder / f"img_{i:03d}.png", compress_level=1)


def bmodel(folder: Path, tile: int, batch: int) -> ResolvedModel:
    stages = [(batch, 3, tile, tile), (1, 3, tile, tile)]
    path = sail.write_bmodel(folder / "sim.bmodel", onnx=None, stages=stages)
    artifact = Artifact(path.name, "bmodel", tuple(stages), path.stat().st_size, "-", "F16")
    manifest = Manifest("sim", "espcn", 4, 3, 3, (artifact,), margin=8)
    return ResolvedModel("sim", path, "bmodel", scale=4, margin=8, manifest=manifest)


def utilisation() -> dict[int, tuple[float, int, float]]:
    """Per device: busy fraction between first and last call, calls, span (s)."""
    out = {}
    for device, calls in sorted(sail._fake.busy.items()):
        first = min(t0 for t0, _, _ in calls)
        last = max(t1 for _, t1, _ in calls)
        busy = sum(t1 - t0 for t0, t1, _ in calls)
        out[device] = (busy / (last - first), len(calls), last - first)
    return out


def stage_busy(log_path: Path) -> dict[str, float]:
    """Busy seconds per stage (summed over its workers) from the run's log."""
    busy: dict[str, float] = {}
    for line in log_path.read_text().splitlines():
        record = json.loads(line)
        if record.get("event") == "item_done" and record["stage"] in HOST_STAGES:
            busy[record["stage"]] = busy.get(record["stage"], 0.0) + record["busy_s"]
    return {stage: busy.get(stage, 0.0) for stage in HOST_STAGES}


def run_once(args: argparse.Namespace, form: str, inputs: Path, work: Path) -> None:
    sail._fake.reset()
    sail._fake.host_compute = False
    sail._fake.device_time_s = args.device_time
    model = bmodel(work, args.tile, args.batch)
    config: Config = load_config(
        None,
        {
            "model.backend": "sail",
            "model.devices": args.devices,
            "model.engines_per_device": args.engines_per_device,
            "output.score": False,
        },
    )
    # The process form is not a user setting: open_engine looks SailEngine up in its
    # module on every call, so a subclass fixing the form is swapped in for this run.
    original = sail_backend.SailEngine

    class FixedForm(original):  # type: ignore[misc, valid-type]
        def __init__(self, *a: object, **kw: object) -> None:
            super().__init__(*a, **{**kw, "form": form})

    sail_backend.SailEngine = FixedForm  # type: ignore[misc]
    log_path = work / f"run-{form}.jsonl"
    sink = configure_logging(log_path)
    try:
        t0 = time.perf_counter()
        cpu0 = time.process_time()
        result: RunResult = anyio.run(
            lambda: run_pipeline(
                list_inputs(inputs), config=config, model=model, out_dir=work / f"out-{form}"
            )
        )
        wall = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
    finally:
        sink.close()
        sail_backend.SailEngine = original  # type: ignore[misc]
    s = result.summary
    print(f"\n== process form: {form} ==")
    print(
        f"{s.ok}/{s.images} images in {wall:.2f} s ({s.images / wall:.2f} images/s); "
        f"tile {result.geometry.tile_h}, batch {result.geometry.batch} "
        f"(tail batches {list(result.geometry.tail_batches)})"
    )
    for device, (frac, calls, span) in utilisation().items():
        print(
            f"TPU {device}: busy {100 * frac:5.1f}% of {span:.2f} s between its first and "
            f"last call ({calls} calls)"
        )
    busy = stage_busy(log_path)
    print(
        "host stages busy (s): "
        + ", ".join(f"{stage} {secs:.2f}" for stage, secs in busy.items())
        + f"; this process used {cpu / wall:.2f} of {os.cpu_count()} cores "
        f"(load average {os.getloadavg()[0]:.1f})"
    )
    q, w = config.queues, config.workers
    print(f"queues: {', '.join(f'{k}={getattr(q, k)}' for k in q.__slots__)}")
    print(
        f"workers: decode={w.decode} save={w.save} infer={config.model.engines_per_device}"
        f"/device on TPUs {config.model.devices}"
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=50)
    p.add_argument("--device-time", type=float, default=0.04, help="seconds per call")
    p.add_argument("--devices", default="0,1")
    p.add_argument("--engines-per-device", type=int, default=2)
    p.add_argument("--tile", type=int, default=128)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--form", choices=["tensor", "numpy", "both"], default="both")
    p.add_argument("--keep-dir", type=Path, help="work in a folder here and keep its logs")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(tempfile.mkdtemp(dir=args.keep_dir)) if args.keep_dir else Path(scratch)
        inputs = tmp / "in"
        inputs.mkdir()
        write_images(inputs, args.images)
        print(
            f"{args.images} images of 510 px wide, device time {args.device_time * 1000:.0f} ms "
            f"per call, {len(args.devices.split(','))} TPUs x {args.engines_per_device} engines"
        )
        for form in ("tensor", "numpy") if args.form == "both" else (args.form,):
            run_once(args, form, inputs, tmp)
        if args.keep_dir:
            print(f"logs and outputs kept in {tmp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
