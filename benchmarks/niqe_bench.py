"""Time batchsr's NIQE against the official BasicSR 1.4.2 code, side by side, single-threaded.

Run from the repository root in an environment that has the official code's
dependencies (requirements-bench.txt: scipy, opencv-python-headless, torch==2.13.0,
numpy, pillow) plus what batchsr needs:

    python benchmarks/niqe_bench.py [--repeat 5] [--image PATH]

BasicSR's sdist is fetched into .cache/basicsr/ on first use (``pip download --no-deps
basicsr==1.4.2``) and its NIQE loaded from the unpacked files (see official_niqe.py).
Both sides run on one thread (OMP/MKL/OpenBLAS set to 1 before numpy loads, and
``torch.set_num_threads(1)``), alternating, on a 2040x1632 image: the contest's
sample_0001.png upscaled x4 (bicubic) when ../shared/contest exists, else a synthetic
texture upscaled the same way. It prints the median and best times of the official code,
ours (with its C kernels where built) and ours on the numpy path, the ratios, and the
largest difference between our scores and the official ones over that image and the
contest images.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import importlib  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks"), str(REPO / "tests" / "helpers")]

import numpy as np  # noqa: E402
import torch  # noqa: E402
from niqe_cases import CONTEST_DIR, make_case  # noqa: E402
from numpy.typing import NDArray  # noqa: E402
from official_niqe import BASICSR_VERSION, load_official_niqe  # noqa: E402
from PIL import Image  # noqa: E402

from batchsr import native  # noqa: E402
from batchsr.metrics import niqe  # noqa: E402

_niqe_module = importlib.import_module("batchsr.metrics.niqe")


def _bench_image(path: Path | None) -> tuple[str, NDArray[np.uint8]]:
    if path is not None:
        with Image.open(path) as im:
            return path.name, np.asarray(im.convert("RGB"))
    if (CONTEST_DIR / "sample_0001.png").exists():
        rgb = make_case({"kind": "contest_x4", "file": "sample_0001.png"})
        return "contest sample_0001.png x4 bicubic", rgb
    rgb = make_case({"kind": "texture_x4", "h": 408, "w": 510, "seed": 7})
    return "synthetic texture x4 bicubic (../shared/contest not found)", rgb


def _time(fn: Callable[[], float]) -> tuple[float, float]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per side")
    parser.add_argument("--image", type=Path, help="score this image instead")
    args = parser.parse_args()

    torch.set_num_threads(1)
    official_fn = load_official_niqe()

    def official(rgb: NDArray[np.uint8]) -> float:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bgr = np.ascontiguousarray(rgb[..., ::-1])
            return float(official_fn(bgr, 0, input_order="HWC", convert_to="y"))

    def numpy_path(rgb: NDArray[np.uint8]) -> float:
        # niqe.py without its C kernels (batchsr/native.py): what a machine with
        # no C compiler runs.
        saved = _niqe_module.kernels
        _niqe_module.kernels = lambda: None
        try:
            return niqe(rgb)
        finally:
            _niqe_module.kernels = saved

    label, rgb = _bench_image(args.image)
    print(f"image: {label}, {rgb.shape[1]}x{rgb.shape[0]}")
    print(f"official: BasicSR {BASICSR_VERSION} calculate_niqe; ours: batchsr.metrics.niqe")
    print(f"ours runs: {native.status()}; numpy: the same code without them")
    print(f"threads: 1 (torch {torch.__version__}, numpy {np.__version__})")
    sides: dict[str, Callable[[NDArray[np.uint8]], float]] = {
        "official": official, "ours": niqe, "numpy": numpy_path,
    }  # fmt: skip
    for fn in sides.values():
        fn(rgb)  # one-time tables (gamma grid, filters) outside the timing
    times: dict[str, list[float]] = {name: [] for name in sides}
    values: dict[str, float] = {}
    diffs: list[float] = []
    for _ in range(args.repeat):
        for name, fn in sides.items():
            dt, values[name] = _time(lambda fn=fn: fn(rgb))
            times[name].append(dt)
        diffs += [abs(values[name] - values["official"]) for name in ("ours", "numpy")]
    print(", ".join(f"{name} NIQE {v:.6f}" for name, v in values.items()))
    medians = {name: statistics.median(t) for name, t in times.items()}
    for name, t in times.items():
        print(f"{name + ':':9} median {medians[name] * 1e3:8.1f} ms, best {min(t) * 1e3:8.1f} ms")
    for name in ("ours", "numpy"):
        best = min(times["official"]) / min(times[name])
        ratio = medians["official"] / medians[name]
        print(f"speed-up, {name}: {ratio:.1f}x (medians), {best:.1f}x (best)")
    if args.image is None and CONTEST_DIR.is_dir():
        for path in sorted(CONTEST_DIR.glob("*.png")):
            with Image.open(path) as im:
                img = np.asarray(im.convert("RGB"))
            v_off = official(img)
            diffs += [abs(niqe(img) - v_off), abs(numpy_path(img) - v_off)]
        where = "both paths, this image and the contest images"
        print(f"largest |ours - official|: {max(diffs):.2e} ({where})")
    else:
        print(f"largest |ours - official|: {max(diffs):.2e} (both paths)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
