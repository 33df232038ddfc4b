"""The memory budget (``--max-memory``): images in flight bounded by their pixels."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from batchsr.config import Config, load_config
from batchsr.errors import ConfigError
from batchsr.images import list_inputs
from batchsr.logging import configure_logging
from batchsr.pipeline.budget import MIB, Budget, image_cost, resident_bytes
from batchsr.pipeline.run import run_pipeline
from batchsr.resolve import ResolvedModel
from tests.helpers.images import photo_folder, photo_like, write_png
from tests.helpers.paths import REPO


@pytest.mark.asyncio
async def test_budget_admits_what_fits_and_waits_for_the_rest() -> None:
    budget = Budget(100)
    await budget.acquire(0, 60)
    assert budget.fits(40) and not budget.fits(41)
    admitted: list[int] = []

    async def take(image_id: int, cost: int) -> None:
        await budget.acquire(image_id, cost)
        admitted.append(image_id)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(take, 1, 70)
            await anyio.wait_all_tasks_blocked()
            assert admitted == []  # 60 + 70 > 100: it waits
            budget.release(99)  # an image that held nothing (failed before tiling)
            await anyio.wait_all_tasks_blocked()
            assert admitted == []
            budget.release(0)
    assert admitted == [1]
    stats = budget.stats()
    assert stats.waits == 1 and stats.peak_bytes == 70 and stats.peak_images == 1


@pytest.mark.asyncio
async def test_an_image_larger_than_the_budget_runs_alone() -> None:
    budget = Budget(10)
    await budget.acquire(0, 500)  # nothing held: admitted, however large
    assert not budget.fits(1)
    budget.release(0)
    assert budget.fits(10) and budget.stats().oversized == 1


async def _logged_run(
    folder: Path, out: Path, log: Path, config: Config, model: ResolvedModel
) -> int:
    """Run the pipeline with its JSON log in ``log``; the images it finished."""
    sink = configure_logging(log)
    try:
        with anyio.fail_after(120):
            result = await run_pipeline(
                list_inputs(folder), config=config, model=model, out_dir=out
            )
    finally:
        sink.close()
    return result.summary.ok


def _in_flight_peak(log: Path, cost: dict[int, int]) -> tuple[int, int]:
    """(most estimated bytes, most images) between tiling start and report row, from
    the log: what the budget bounds, read back from what the stages did."""
    starts, ends = {}, {}
    for line in log.read_text().splitlines():
        r = json.loads(line)
        if r.get("event") != "item_done":
            continue
        if r["stage"] == "tile":  # admitted by the budget (or tiling began, without one)
            starts[r["image_id"]] = r.get("t_admitted", r["t_start"])
        elif r["stage"] == "report":
            ends[r["image_id"]] = r["t_end"]
    events = sorted(
        [(t, 1, i) for i, t in starts.items()] + [(t, 0, i) for i, t in ends.items()]
    )  # at equal times a release (0) comes before an admission (1)
    held: set[int] = set()
    peak_bytes = peak_images = 0
    for _, kind, i in events:
        (held.add if kind else held.discard)(i)
        peak_bytes = max(peak_bytes, sum(cost[k] for k in held))
        peak_images = max(peak_images, len(held))
    return peak_bytes, peak_images


@pytest.mark.asyncio
async def test_the_pipeline_keeps_large_images_within_the_budget(
    tmp_path: Path, espcn_onnx: Path
) -> None:
    """Mixed sizes under a budget of about two large images: the images between tiling
    and their row never weigh more than the budget (estimated, as read back from the
    log), while the default config holds more at once; outputs are the same."""
    folder = tmp_path / "in"
    folder.mkdir()
    sizes = [(160, 200), (40, 40), (160, 200), (160, 200), (40, 40), (160, 200), (160, 200)]
    for i, (h, w) in enumerate(sizes):
        write_png(folder / f"im_{i}.png", photo_like(h, w, seed=i))
    bpp = 32.0
    cost = {i: image_cost(h, w, scale=4, bytes_per_pixel=bpp) for i, (h, w) in enumerate(sizes)}
    big = cost[0]
    model = ResolvedModel(name="tiny", path=espcn_onnx, format="onnx", margin=4)
    peaks = {}
    for name, max_mib in (("default", 0), ("budget", -1)):
        if max_mib < 0:  # what this process holds now, plus room for 2.5 large images
            max_mib = (resident_bytes() + int(2.5 * big)) // MIB + 1
        config = load_config(
            None,
            # Buffers only, so that the default holds more than the budget allows.
            {"tiling.tile": 64, "output.score": False, "memory.max_mib": max_mib}
            | {"tiling.in_flight": 0},
        )
        log = tmp_path / f"{name}.jsonl"
        assert await _logged_run(folder, tmp_path / name, log, config, model) == len(sizes)
        peaks[name] = _in_flight_peak(log, cost)
        if name == "budget":
            finished = next(
                json.loads(x) for x in log.read_text().splitlines() if "run_finished" in x
            )
            capacity = finished["memory"]["capacity_bytes"]
            assert finished["memory"]["waits"] >= 1
    assert peaks["budget"][0] <= capacity < peaks["default"][0]
    assert peaks["budget"][1] < peaks["default"][1]
    for i in range(len(sizes)):
        a, b = (tmp_path / n / f"im_{i}.png" for n in ("default", "budget"))
        assert a.read_bytes() == b.read_bytes()


def test_a_budget_below_what_the_process_holds_is_refused(tmp_path: Path, espcn_onnx: Path) -> None:
    folder = photo_folder(tmp_path / "in", 1, 32, 32, name="a")
    config = load_config(None, {"memory.max_mib": 1, "output.score": False})
    model = ResolvedModel(name="tiny", path=espcn_onnx, format="onnx", margin=4)
    with pytest.raises(ConfigError, match="before the first image"):
        anyio.run(
            lambda: run_pipeline(
                list_inputs(folder), config=config, model=model, out_dir=tmp_path / "o"
            )
        )
    assert not (tmp_path / "o").exists()


def _peak_rss_mib(args: list[str]) -> float:
    """Peak RSS of ``run.py ARGS`` in a fresh grandchild (RUSAGE_CHILDREN is a max
    over all children so far, so each measurement gets its own intermediate)."""
    probe = (
        "import resource, subprocess, sys; "
        "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, sys.executable, str(REPO / "run.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return int(done.stdout.strip()) / 1024


@pytest.mark.slow
def test_max_memory_holds_a_run_of_large_photos_that_the_default_exceeds(
    tmp_path: Path,
) -> None:
    """Four 1200x960 photos (output 4800x3840, 53 MiB each as RGB): with only the
    buffers to bound them (--in-flight 0) two coincide (measured 519-624 MiB); --max-memory
    490 takes them one at a time and keeps the whole process under 490 MiB (measured
    457-464). (With 800x640 photos the C kernels' smaller transients kept even the
    unbounded run near 312-339 MiB, too close to any limit to show the difference.)"""
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(4):
        write_png(folder / f"big_{i}.png", photo_like(960, 1200, seed=i))
    common = ["--input", str(folder), "--quiet"]
    default = _peak_rss_mib([*common, "--output", str(tmp_path / "d"), "--in-flight", "0"])
    limited = _peak_rss_mib([*common, "--output", str(tmp_path / "m"), "--max-memory", "490"])
    assert limited < 490 < default, (limited, default)
    log: list[dict[str, Any]] = [
        json.loads(x) for x in (tmp_path / "m" / "run.jsonl").read_text().splitlines()
    ]
    (finished,) = [r for r in log if r["event"] == "run_finished"]
    assert finished["summary"]["ok"] == 4 and finished["memory"]["peak_images"] == 1


@pytest.mark.asyncio
async def test_in_flight_window_bounds_images_between_tiling_and_stitching(
    tmp_path: Path, espcn_onnx: Path
) -> None:
    """--in-flight 1: each image is admitted to tiling only once the one before is
    stitched (read back from the log), and the outputs are those of a run without it."""
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(6):
        write_png(folder / f"im_{i}.png", photo_like(40 + 16 * (i % 3), 72, seed=i))
    model = ResolvedModel(name="tiny", path=espcn_onnx, format="onnx", margin=4)
    for name, window in (("free", 0), ("one", 1)):
        config = load_config(
            None, {"tiling.tile": 32, "output.score": False, "tiling.in_flight": window}
        )
        log = tmp_path / f"{name}.jsonl"
        assert await _logged_run(folder, tmp_path / name, log, config, model) == 6
    records = [json.loads(x) for x in (tmp_path / "one.jsonl").read_text().splitlines()]
    admitted = {
        r["image_id"]: r["t_admitted"]
        for r in records
        if r.get("event") == "item_done" and r["stage"] == "tile"
    }
    stitched = {  # the stitch item that completed the image began before its release
        i: r["t_start"]
        for r in records
        if r.get("event") == "item_done" and r["stage"] == "stitch"
        for i in r["completed"]
    }
    order = sorted(admitted, key=admitted.__getitem__)
    for before, after in itertools.pairwise(order):
        assert admitted[after] >= stitched[before], (before, after)
    for i in range(6):
        a, b = (tmp_path / n / f"im_{i}.png" for n in ("free", "one"))
        assert a.read_bytes() == b.read_bytes()


@pytest.mark.asyncio
async def test_by_default_one_image_per_infer_worker_is_in_flight_and_runs_whole(
    tmp_path: Path, espcn_onnx: Path
) -> None:
    """Defaults: an image within ``tiling.whole_pixels`` goes to the engine in one call,
    and no more images than infer workers are between tiling and their stitched image
    (read back from the log); the outputs are those of 32-pixel tiles with buffers only."""
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(6):
        write_png(folder / f"im_{i}.png", photo_like(40 + 16 * (i % 3), 72, seed=i))
    model = ResolvedModel(name="tiny", path=espcn_onnx, format="onnx", margin=4)
    runs = {
        "default": {"workers.infer": 2},
        "tiled": {"tiling.tile": 32, "tiling.whole_pixels": 0, "tiling.in_flight": 0},
    }
    for name, overrides in runs.items():
        config = load_config(None, {"output.score": False, **overrides})
        log = tmp_path / f"{name}.jsonl"
        assert await _logged_run(folder, tmp_path / name, log, config, model) == 6
    records = [json.loads(x) for x in (tmp_path / "default.jsonl").read_text().splitlines()]
    infer = [r for r in records if r.get("event") == "item_done" and r["stage"] == "infer"]
    assert len(infer) == 6 and all(r["tiles"] == 1 for r in infer)
    done = [r for r in records if r.get("event") == "item_done"]
    admitted = sorted(r.get("t_admitted", r["t_start"]) for r in done if r["stage"] == "tile")
    # An image is released while the stitch item that completes it runs: by its start.
    released = [r["t_start"] for r in done if r["stage"] == "stitch" for _ in r["completed"]]
    for k, t in enumerate(admitted):
        assert sum(r <= t for r in released) >= k - 1, k  # two places in the window
    for i in range(6):
        a, b = (tmp_path / n / f"im_{i}.png" for n in runs)
        assert a.read_bytes() == b.read_bytes()
