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
texture upscaled the same way. It prints the median and best times, their ratio, and the
largest difference between the two scores over that image and the contest images.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
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

from batchsr.metrics import niqe  # noqa: E402


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

    label, rgb = _bench_image(args.image)
    print(f"image: {label}, {rgb.shape[1]}x{rgb.shape[0]}")
    print(f"official: BasicSR {BASICSR_VERSION} calculate_niqe; ours: batchsr.metrics.niqe")
    print(f"threads: 1 (torch {torch.__version__}, numpy {np.__version__})")
    niqe(rgb)  # one-time tables (gamma grid, filters) outside the timing
    official(rgb)
    t_official: list[float] = []
    t_ours: list[float] = []
    diffs: list[float] = []
    for _ in range(args.repeat):
        dt, v_off = _time(lambda: official(rgb))
        t_official.append(dt)
        dt, v_ours = _time(lambda: niqe(rgb))
        t_ours.append(dt)
        diffs.append(abs(v_ours - v_off))
    print(f"official NIQE {v_off:.6f}, ours {v_ours:.6f}")
    med_off, med_ours = statistics.median(t_official), statistics.median(t_ours)
    print(f"official: median {med_off * 1e3:8.1f} ms, best {min(t_official) * 1e3:8.1f} ms")
    print(f"ours:     median {med_ours * 1e3:8.1f} ms, best {min(t_ours) * 1e3:8.1f} ms")
    best = min(t_official) / min(t_ours)
    print(f"speed-up: {med_off / med_ours:.1f}x (medians), {best:.1f}x (best)")
    if args.image is None and CONTEST_DIR.is_dir():
        for path in sorted(CONTEST_DIR.glob("*.png")):
            with Image.open(path) as im:
                img = np.asarray(im.convert("RGB"))
            diffs.append(abs(niqe(img) - official(img)))
        print(f"largest |ours - official|: {max(diffs):.2e} (this image and the contest images)")
    else:
        print(f"largest |ours - official|: {max(diffs):.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
