"""Quality of model folders: contest NIQE, held-out PSNR-Y, size and speed, against bicubic.

    python benchmarks/quality.py [--model models/espcn ...] [--filter default|none|NAME ...]

* NIQE (the contest's, ``batchsr.metrics.niqe``) of the x4 output for the four
  low-resolution contest inputs in ``../shared/contest/``, averaged.
* PSNR-Y (MATLAB BT.601 Y, 4-pixel border cropped) on an x4 set made by PIL BICUBIC
  downscaling of openly licensed photos never used in training: scikit-learn's
  ``china.jpg``, ``flower.jpg`` (CC BY 2.0) and matplotlib's ``grace_hopper.jpg``
  (public domain). They are read from the installed packages, or from ``--holdout``
  (default ``.cache/holdout``), which this one-liner fills from local wheels:
  ``unzip -j scikit_learn-*.whl 'sklearn/datasets/images/*.jpg' -d .cache/holdout``
  (and ``'matplotlib/mpl-data/sample_data/grace_hopper.jpg'`` from matplotlib's wheel).

The model runs whole-image through onnxruntime from the folder's ONNX artifact, the
file ``--model NAME`` deploys (a margin-wide tile context gives the same pixels).
``default`` applies the postprocess the pipeline applies by default: the filter
embedded in the artifact (``manifest.postprocess``) and no CPU filter.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from batchsr.color import upscale_image  # noqa: E402
from batchsr.filters import FILTER_NAMES, apply_filter  # noqa: E402
from batchsr.manifest import load_manifest  # noqa: E402
from batchsr.train import psnr_y  # noqa: E402

SHARED = ROOT.parent / "shared"
CONTEST_INPUTS = ("sample_0001.png", "sample_0002.png", "seed_0001.png", "seed_0005.png")
HOLDOUT = {
    "china.jpg": ("sklearn", "datasets/images/china.jpg"),
    "flower.jpg": ("sklearn", "datasets/images/flower.jpg"),
    "grace_hopper.jpg": ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
}
SCALE = 4


def holdout_paths(folder: Path) -> dict[str, Path]:
    """The held-out photos: from the installed package if any, else from ``folder``."""
    found = {}
    for name, (package, rel) in HOLDOUT.items():
        spec = importlib.util.find_spec(package)
        candidates = [folder / name]
        if spec is not None and spec.origin is not None:
            candidates.insert(0, Path(spec.origin).parent / rel)
        path = next((p for p in candidates if p.is_file()), None)
        if path is not None:
            found[name] = path
    return found


def read_rgb(path: Path) -> NDArray[np.uint8]:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def bicubic_up(lr: NDArray[np.uint8]) -> NDArray[np.uint8]:
    h, w = lr.shape[:2]
    return np.asarray(Image.fromarray(lr).resize((w * SCALE, h * SCALE), Image.Resampling.BICUBIC))


class OnnxUpscaler:
    """Runs a model folder's ONNX artifact on a whole image."""

    def __init__(self, folder: Path) -> None:
        import onnxruntime as ort

        self._folder = folder
        self.manifest = load_manifest(folder)
        art = self.manifest.artifact("onnx")
        if art is None:
            raise SystemExit(f"{folder} has no ONNX artifact")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 2
        self._session = ort.InferenceSession(
            str(folder / art.path), opts, providers=["CPUExecutionProvider"]
        )

    def parameters(self) -> int:
        """Weights in the ONNX graph (its initializers' elements)."""
        import onnx

        art = self.manifest.artifact("onnx")
        assert art is not None
        graph = onnx.load(str(self._folder / art.path)).graph
        return sum(int(np.prod(t.dims)) for t in graph.initializer)

    def tile_ms(self, runs: int = 30) -> float:
        """Median wall time of one 1xCx128x128 call (after 3 warm-up calls), in ms."""
        c = self.manifest.in_channels
        x = np.random.default_rng(0).random((1, c, 128, 128), dtype=np.float32)
        times = []
        for i in range(runs + 3):
            t0 = time.perf_counter()
            self._session.run(["output"], {"input": x})
            if i >= 3:
                times.append((time.perf_counter() - t0) * 1000.0)
        return float(np.median(times))

    def __call__(self, lr: NDArray[np.uint8]) -> NDArray[np.uint8]:
        def run(x: NDArray[np.float32]) -> NDArray[np.float32]:
            return self._session.run(["output"], {"input": x})[0]

        return upscale_image(run, lr, channels=self.manifest.in_channels)


def anchor_upscaler(path: Path):  # type: ignore[no-untyped-def]
    """The seed's espcn_ex.pt (TorchScript, loaded explicitly), on a whole image."""
    import torch

    from batchsr.models import load_torchscript

    module = load_torchscript(path)

    def run(lr: NDArray[np.uint8]) -> NDArray[np.uint8]:
        x = torch.from_numpy(lr.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
        with torch.no_grad():
            y = module(x)[0].permute(1, 2, 0).clamp(0, 1).mul(255).round()
        return y.to(torch.uint8).numpy()

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        type=Path,
        nargs="+",
        default=sorted(p.parent for p in (ROOT / "models").glob("*/manifest.json")),
        help="model folders (default: every folder under models/ with a manifest)",
    )
    parser.add_argument(
        "--filter",
        nargs="+",
        default=["default"],
        help=f"CPU postprocess variants to score: default, none, {', '.join(FILTER_NAMES)}",
    )
    parser.add_argument("--holdout", type=Path, default=ROOT / ".cache" / "holdout")
    parser.add_argument("--anchor", action="store_true", help="also score the seed's espcn_ex")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)

    from batchsr.metrics.niqe import niqe

    upscalers: dict[str, Any] = {"bicubic": bicubic_up}
    costs: dict[str, tuple[int, float]] = {}
    variants: list[tuple[str, str, str | None]] = [("bicubic", "bicubic", None)]
    for folder in args.model:
        model = OnnxUpscaler(folder)
        name = model.manifest.name
        upscalers[name] = model
        costs[name] = (model.parameters(), model.tile_ms())
        for f in args.filter:
            cpu = None if f in ("default", "none") else f
            label = name + ("" if cpu is None else f" + {cpu}")
            if f == "default" and model.manifest.postprocess:
                label += f" (embedded {model.manifest.postprocess})"
            variants.append((label, name, cpu))
    anchor = SHARED / "anchors" / "espcn_ex.pt"
    if args.anchor and anchor.is_file():
        upscalers["seed espcn_ex"] = anchor_upscaler(anchor)
    if "seed espcn_ex" in upscalers:
        variants.append(("seed espcn_ex", "seed espcn_ex", None))
        variants.append(("seed espcn_ex + EDGE_ENHANCE", "seed espcn_ex", "EDGE_ENHANCE"))

    contest = [SHARED / "contest" / n for n in CONTEST_INPUTS if (SHARED / "contest" / n).is_file()]
    held = holdout_paths(args.holdout)
    results: dict[str, dict[str, object]] = {}
    t0 = time.perf_counter()
    for label, up_name, cpu_filter in variants:
        up = upscalers[up_name]

        def post(img: NDArray[np.uint8], flt: str | None = cpu_filter) -> NDArray[np.uint8]:
            return img if flt is None else apply_filter(img, flt)

        niqes = {p.name: niqe(post(up(read_rgb(p)))) for p in contest}
        psnrs = {}
        for name, path in held.items():
            hr = read_rgb(path)
            h, w = (hr.shape[0] // SCALE) * SCALE, (hr.shape[1] // SCALE) * SCALE
            hr = hr[:h, :w]
            lr = np.asarray(Image.fromarray(hr).resize((w // SCALE, h // SCALE), Image.BICUBIC))
            psnrs[name] = psnr_y(post(up(lr)), hr, border=SCALE)
        results[label] = {
            "niqe_avg": float(np.mean(list(niqes.values()))) if niqes else None,
            "psnr_y_avg": float(np.mean(list(psnrs.values()))) if psnrs else None,
            "niqe": niqes,
            "psnr_y": psnrs,
            "parameters": costs.get(up_name, (None, None))[0],
            "ms_per_tile_128": costs.get(up_name, (None, None))[1],
        }
    print(f"contest inputs: {len(contest)}; held-out photos: {sorted(held)}")
    print(f"{'variant':44s} {'NIQE avg':>9s} {'PSNR-Y avg':>11s} {'params':>8s} {'ms/tile':>8s}")
    for label, r in results.items():
        n, p, k, ms = r["niqe_avg"], r["psnr_y_avg"], r["parameters"], r["ms_per_tile_128"]
        n_s = "-" if n is None else f"{n:.4f}"
        p_s = "-" if p is None else f"{p:.3f}"
        k_s = "-" if k is None else f"{k}"
        ms_s = "-" if ms is None else f"{ms:.2f}"
        print(f"{label:44s} {n_s:>9s} {p_s:>11s} {k_s:>8s} {ms_s:>8s}")
    print("ms/tile: median onnxruntime CPU time (2 threads) of one 1xCx128x128 call")
    print(f"({time.perf_counter() - t0:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
