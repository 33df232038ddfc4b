"""What scaling out costs: one folder run locally and on Ray clusters, side by side.

    python benchmarks/cluster.py [--images 48,192] [--repeat 3] [--model espcn]
        [--chunk 4] [-- RUN.PY FLAGS]

For each image count, the same folder (the contest samples repeated, or synthetic
contest-size images without ../shared) is run by ``run.py`` as a fresh process:

- ``local``: no ``--cluster``;
- ``ray 1 node``: ``--cluster`` on a loopback Ray cluster of one worker node (and a
  head that runs no work): the same compute as local, so the difference is the
  cluster's own cost;
- ``ray 2 nodes``: two worker nodes of one CPU each, one pipeline each.

Printed per run: the run's wall time (the report's ``time_all``: first hand-out to last
row), images/s, the process's start-up beyond that (Ray connect, actors, engine
opening), and for cluster runs the overhead per image ((wall - local wall) / images,
hand-outs and transfers), the driver's CPU per image (what bounds how many hosts one
driver can feed) and the return latency of a chunk (its last row on the node to the
driver's ``chunk_done``, median). Both clusters stay up for the whole benchmark and the three setups
take turns, ``--repeat`` times each, so a slow spell of the machine falls on all of
them; the medians are printed. On this 2-core machine a cluster cannot be faster than
local: the figures to read are the overhead and whether it stays flat from 48 to 192
images.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from contest_inputs import make_inputs  # noqa: E402

from batchsr.cluster.connect import LOOPBACK, import_ray  # noqa: E402


@contextmanager
def loopback_cluster(nodes: int, cpus_per_node: int) -> Iterator[str]:
    """A Ray test cluster on 127.0.0.1: a head without CPUs and ``nodes`` workers."""
    import_ray(loopback=True)
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "include_dashboard": False, "node_ip_address": LOOPBACK},
    )
    try:
        for _ in range(nodes):
            cluster.add_node(num_cpus=cpus_per_node, node_ip_address=LOOPBACK)
        cluster.wait_for_nodes(timeout=120)
        yield str(cluster.address)
    finally:
        cluster.shutdown()


def one_run(folder: Path, out: Path, args: list[str]) -> dict[str, Any]:
    t = time.perf_counter()
    subprocess.run(
        [sys.executable, str(ROOT / "run.py"), "--input", str(folder), "--output", str(out),
         "--quiet", *args],
        check=True, cwd=ROOT, timeout=1800,
    )  # fmt: skip
    process_s = time.perf_counter() - t
    report = json.loads((out / "report.json").read_text())["A"][0]
    records = [json.loads(line) for line in (out / "run.jsonl").read_text().splitlines()]
    finished = next(r for r in records if r["event"] == "run_finished")
    return {
        "wall_s": float(report["time_all"]),
        "process_s": process_s,
        "driver_cpu_s": (finished.get("driver") or {}).get("cpu_s"),
        "return_ms": return_latency_ms(records),
        "nodes": len({r.get("node") for r in report["images"] if r.get("node")}),
    }


def return_latency_ms(records: list[dict[str, Any]]) -> float | None:
    """Median time from a chunk's last row on its node to the driver's ``chunk_done``:
    Ray's return path and the driver's wait, free of the compute's noise (both ends
    are wall-clock readings of this one machine)."""
    reported = {
        r["image_id"]: r["t_end"]
        for r in records
        if r.get("event") == "item_done" and r.get("stage") == "report" and "node" in r
    }
    gaps = []
    for r in records:
        if r.get("event") == "chunk_done" and r.get("image_ids"):
            done = datetime.fromisoformat(r["timestamp"]).timestamp()
            gaps.append(done - max(reported[i] for i in r["image_ids"]))
    return float(np.median(gaps)) * 1000 if gaps else None


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in runs[0]:
        values = [r[key] for r in runs if r[key] is not None]
        out[key] = float(np.median(values)) if values else None
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", default="48,192", help="image counts, comma-separated")
    parser.add_argument("--model", default="espcn")
    parser.add_argument("--chunk", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3, help="runs per setup; medians shown")
    parser.add_argument("extra", nargs="*", help="more run.py flags (after --)")
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.images.split(",")]
    base = ["--model", args.model, *args.extra]
    runs: dict[tuple[int, str], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as clusters:
        root = Path(tmp)
        folders = {}
        for n in counts:
            folders[n] = root / f"in{n}"
            source = make_inputs(folders[n], n)
        setups = {"local": base}
        for label, nodes, cpus in (("ray 1 node", 1, 2), ("ray 2 nodes", 2, 1)):
            address = clusters.enter_context(loopback_cluster(nodes, cpus))
            setups[label] = [*base, "--cluster", address, "--chunk", str(args.chunk)]
        for r in range(args.repeat):
            for n in counts:
                for label, flags in setups.items():
                    out = root / f"{label.replace(' ', '_')}_{n}_{r}"
                    runs.setdefault((n, label), []).append(one_run(folders[n], out, flags))
    results = {key: _median(values) for key, values in runs.items()}
    print(
        f"inputs: {source}; model {args.model}; chunk {args.chunk}; flags {args.extra}; "
        f"medians of {args.repeat} runs"
    )
    print(
        f"{'images':>6}  {'setup':<12} {'wall s':>7} {'img/s':>6} {'start-up s':>10} "
        f"{'nodes':>5} {'overhead ms/img':>15} {'driver cpu ms/img':>17} {'return ms':>9}"
    )
    for n in counts:
        local = results[(n, "local")]
        for label in ("local", "ray 1 node", "ray 2 nodes"):
            r = results[(n, label)]
            overhead = cpu = back = "-"
            if label != "local":
                overhead = f"{(r['wall_s'] - local['wall_s']) / n * 1000:.1f}"
                if r["driver_cpu_s"] is not None:
                    cpu = f"{r['driver_cpu_s'] / n * 1000:.2f}"
                if r["return_ms"] is not None:
                    back = f"{r['return_ms']:.1f}"
            print(
                f"{n:>6}  {label:<12} {r['wall_s']:>7.2f} {n / r['wall_s']:>6.2f} "
                f"{r['process_s'] - r['wall_s']:>10.2f} {int(r['nodes'] or 1):>5} {overhead:>15} "
                f"{cpu:>17} {back:>9}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
