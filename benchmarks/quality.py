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

* border: the mean border-band energy ratio of the contest outputs
  (``batchsr.metrics.artifacts.border_energy_ratio``: high-frequency energy of the
  outer 8 output pixels over the next 8; a frame reads well above 1).
* lattice: the period-4 grain (``lattice_ratio``: power at 1/4 and 1/2 cycles per
  pixel over the median of the neighbouring frequencies, on the model's output before
  8-bit rounding): the worst of three smooth noisy gradients, and the median over the
  flat regions of the bundled example photos and the contest inputs. No lattice
  reads below 2.
* texture: the same measure, median over their most textured regions
  (``textured_boxes``), where bicubic reads about 1: a grain the flat regions miss.

The model runs whole-image through onnxruntime from the folder's ONNX artifact, the
file ``--model NAME`` deploys, on the image extended by the model's margin as the
pipeline does (``--border``, default replicate; ``zero`` is the network's own
padding); a margin-wide tile context gives the same pixels. ``default`` applies the
postprocess the pipeline applies by default: the filter embedded in the artifact
(``manifest.postprocess``) and no CPU filter.
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

from batchsr.border import DEFAULT_BORDER, extend  # noqa: E402
from batchsr.color import rgb_to_ycbcr, upscale_image  # noqa: E402
from batchsr.filters import apply_filter  # noqa: E402
from batchsr.manifest import load_manifest  # noqa: E402
from batchsr.metrics.artifacts import (  # noqa: E402
    border_energy_ratio,
    flat_boxes,
    lattice_ratio,
    textured_boxes,
)
from batchsr.train import psnr_y  # noqa: E402
from batchsr.vocab import BORDER_MODES, FILTER_NAMES, BorderMode  # noqa: E402

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


def bicubic_luma(lr: NDArray[np.uint8]) -> NDArray[np.float64]:
    """PIL BICUBIC x4 of the input's MATLAB Y, in float grey levels (no rounding)."""
    y = (rgb_to_ycbcr(lr)[:, :, 0] * 255.0).astype(np.float32)
    size = (y.shape[1] * SCALE, y.shape[0] * SCALE)
    return np.asarray(Image.fromarray(y).resize(size, Image.BICUBIC)).astype(np.float64)


class OnnxUpscaler:
    """Runs a model folder's ONNX artifact on a whole image."""

    def __init__(self, folder: Path, border: BorderMode = DEFAULT_BORDER) -> None:
        from batchsr.engines.onnx import OnnxEngine

        self._folder = folder
        self._border = border
        self.manifest = load_manifest(folder)
        art = self.manifest.artifact("onnx")
        if art is None:
            raise SystemExit(f"{folder} has no ONNX artifact")
        self._engine = OnnxEngine(folder / art.path, threads=2, scale=self.manifest.scale)

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
            self._engine.run(x)
            if i >= 3:
                times.append((time.perf_counter() - t0) * 1000.0)
        return float(np.median(times))

    def _run(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        return self._engine.run(x)

    @property
    def _pad(self) -> int:
        return 0 if self._border == "zero" else self.manifest.margin

    def __call__(self, lr: NDArray[np.uint8]) -> NDArray[np.uint8]:
        return upscale_image(
            self._run,
            lr,
            channels=self.manifest.in_channels,
            border=self._pad,
            border_mode=self._border,
        )

    def luma(self, lr: NDArray[np.uint8]) -> NDArray[np.float64]:
        """The model's output luma before 8-bit rounding, grey levels: its Y for a
        Y-only model, BT.601 luma of its RGB otherwise."""
        b = self._pad
        pads = ((b, b), (b, b))
        if self.manifest.in_channels == 1:
            x = extend(np.ascontiguousarray(rgb_to_ycbcr(lr)[None, :, :, 0]), pads, self._border)
        else:
            x = extend((lr.astype(np.float32) / 255.0).transpose(2, 0, 1), pads, self._border)
        out = self._run(np.ascontiguousarray(x[None]))[0].astype(np.float64) * 255.0
        c = b * SCALE
        out = out[:, c : out.shape[1] - c, c : out.shape[2] - c]
        return out[0] if out.shape[0] == 1 else np.tensordot([0.299, 0.587, 0.114], out, 1)


def smooth_gradients() -> list[NDArray[np.uint8]]:
    """Three 96x96 grey gradients with sigma-1 noise (seeded), as RGB: smooth content."""
    yy, xx = np.mgrid[0:96, 0:96].astype(np.float64)
    out = []
    for seed in range(3):
        g = 40 + 1.37 * xx + 0.91 * yy + np.random.default_rng(seed).normal(0, 1, xx.shape)
        grey = np.clip(np.rint(g), 0, 255).astype(np.uint8)
        out.append(np.stack([grey] * 3, axis=2))
    return out


def lattice_figures(
    luma: Any, photos: list[NDArray[np.uint8]]
) -> tuple[float, float | None, float | None]:
    """(worst lattice ratio over the smooth gradients, median over the photos' flat
    regions, median over their textured regions) of an upscaler's float luma."""
    grads = [lattice_ratio(luma(g)[32:-32, 32:-32]) for g in smooth_gradients()]
    flats, textures = [], []
    for lr in photos:
        sr = luma(lr)
        for boxes, ratios in (
            (flat_boxes(lr, 16, max_std=2.0, limit=4), flats),
            (textured_boxes(lr, 16, limit=4), textures),
        ):
            for y, x in boxes:
                ratios.append(lattice_ratio(sr[4 * y : 4 * y + 64, 4 * x : 4 * x + 64]))
    flat = float(np.median(flats)) if flats else None
    return max(grads), flat, (float(np.median(textures)) if textures else None)


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
    parser.add_argument(
        "--border",
        choices=BORDER_MODES,
        default=DEFAULT_BORDER,
        help="how the image is extended past its edges (default: the pipeline's)",
    )
    parser.add_argument("--anchor", action="store_true", help="also score the seed's espcn_ex")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)

    from batchsr.metrics.niqe import niqe

    upscalers: dict[str, Any] = {"bicubic": bicubic_up}
    costs: dict[str, tuple[int, float]] = {}
    variants: list[tuple[str, str, str | None]] = [("bicubic", "bicubic", None)]
    for folder in args.model:
        model = OnnxUpscaler(folder, args.border)
        name = model.manifest.name
        if name in upscalers:  # two folders of one model name (a retrained copy)
            name = f"{name} ({folder})"
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
    photo_paths = sorted((ROOT / "examples").glob("*.png")) + contest
    photos = [read_rgb(p) for p in photo_paths]
    results: dict[str, dict[str, object]] = {}
    t0 = time.perf_counter()
    for label, up_name, cpu_filter in variants:
        up = upscalers[up_name]

        def post(img: NDArray[np.uint8], flt: str | None = cpu_filter) -> NDArray[np.uint8]:
            return img if flt is None else apply_filter(img, flt)

        outputs = {p.name: post(up(read_rgb(p))) for p in contest}
        niqes = {name: niqe(img) for name, img in outputs.items()}
        borders = [border_energy_ratio(img) for img in outputs.values()]
        luma = bicubic_luma if up_name == "bicubic" else getattr(up, "luma", None)
        lattice = lattice_figures(luma, photos) if luma is not None and cpu_filter is None else None
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
            "border": float(np.mean(borders)) if borders else None,
            "lattice_gradient": None if lattice is None else lattice[0],
            "lattice_flat": None if lattice is None else lattice[1],
            "lattice_texture": None if lattice is None else lattice[2],
            "parameters": costs.get(up_name, (None, None))[0],
            "ms_per_tile_128": costs.get(up_name, (None, None))[1],
        }
    print(f"contest inputs: {len(contest)}; held-out photos: {sorted(held)}; border {args.border}")
    cols = ("NIQE avg", "PSNR-Y avg", "border", "lattice", "flat", "texture", "params", "ms/tile")
    print(f"{'variant':44s} " + " ".join(f"{c:>10s}" for c in cols))
    for label, r in results.items():
        cells = [
            (r["niqe_avg"], ".4f"),
            (r["psnr_y_avg"], ".3f"),
            (r["border"], ".2f"),
            (r["lattice_gradient"], ".2f"),
            (r["lattice_flat"], ".2f"),
            (r["lattice_texture"], ".2f"),
            (r["parameters"], "d"),
            (r["ms_per_tile_128"], ".2f"),
        ]
        print(
            f"{label:44s} "
            + " ".join(f"{'-' if v is None else format(v, f):>10s}" for v, f in cells)
        )
    print("ms/tile: median onnxruntime CPU time (2 threads) of one 1xCx128x128 call")
    print(f"({time.perf_counter() - t0:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
