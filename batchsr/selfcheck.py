"""Self-check of a bmodel on a TPU host: does the TPU compute what the ONNX model does?

``python run.py selfcheck MODEL.bmodel --reference MODEL.onnx`` runs random tiles and
tiles cut from real images through the bmodel (sail, on one TPU) and through the ONNX
reference (onnxruntime, CPU), and compares the outputs: the largest absolute difference
and the PSNR between the two (both clipped to [0, 1], as saving clips them). It also
times the sail calls. An F16 bmodel of a small SR net typically stays far above 40 dB
against its F32 reference; a wrong input range or channel order (the usual INT8
calibration mistake, tpu-reference.md 1.6) falls far below.

Library code: returns a :class:`SelfCheckResult`, prints nothing.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from batchsr.engines.base import Engine, Shape, shape_matches
from batchsr.errors import EngineError

__all__ = ["CaseResult", "SelfCheckResult", "compare", "run_selfcheck", "synthetic_image"]


@dataclass(frozen=True, slots=True)
class CaseResult:
    """One batch run through both engines.

    Attributes:
        kind: ``random`` (uniform noise in [0, 1]) or ``real`` (tiles of an image).
        shape: the NCHW input shape.
        max_abs_diff: largest absolute difference of the clipped outputs (None without
            a reference).
        psnr_db: PSNR of the bmodel's output against the reference's, peak 1.0;
            ``inf`` when identical (None without a reference).
        finite: the bmodel's output has no NaN or infinity.
    """

    kind: str
    shape: tuple[int, int, int, int]
    max_abs_diff: float | None
    psnr_db: float | None
    finite: bool


@dataclass(frozen=True, slots=True)
class SelfCheckResult:
    """The verdict and its figures.

    Attributes:
        input_shapes: the shapes the bmodel holds, as the engine reports them.
        latency_min_s, latency_median_s: wall time of one sail call, over ``calls``.
        passed: every output finite, and with a reference every PSNR >= ``min_psnr_db``.
        reason: one line saying why it passed or failed.
    """

    bmodel: Path
    reference: Path | None
    device_id: int
    input_shapes: tuple[Shape, ...]
    scale: int
    cases: tuple[CaseResult, ...]
    latency_min_s: float
    latency_median_s: float
    calls: int
    min_psnr_db: float
    passed: bool
    reason: str


def synthetic_image(height: int = 256, width: int = 256, *, seed: int = 0) -> NDArray[np.uint8]:
    """A smooth RGB pattern with texture (HxWx3 uint8), when no real image is given."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack(
        [128 + 100 * np.sin(xx / 17.0 + c) * np.cos(yy / 23.0 - c) for c in range(3)], axis=2
    )
    return np.clip(base + rng.normal(0, 12, (height, width, 3)), 0, 255).astype(np.uint8)


def compare(got: NDArray[np.float32], want: NDArray[np.float32]) -> tuple[float, float]:
    """Max abs difference and PSNR (dB, peak 1.0) of two outputs clipped to [0, 1]."""
    a = np.clip(got.astype(np.float64), 0.0, 1.0)
    b = np.clip(want.astype(np.float64), 0.0, 1.0)
    mse = float(np.mean((a - b) ** 2))
    psnr = math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)
    return float(np.max(np.abs(a - b))), psnr


def _tiles(rgb: NDArray[np.uint8], shape: tuple[int, int, int, int]) -> NDArray[np.float32]:
    """``n`` windows of ``h x w`` spread over the image (reflect-padded if smaller)."""
    n, _, h, w = shape
    pad_h, pad_w = max(0, h - rgb.shape[0]), max(0, w - rgb.shape[1])
    if pad_h or pad_w:
        rgb = np.pad(rgb, ((0, pad_h), (0, pad_w), (0, 0)), mode="reflect")
    ys = np.linspace(0, rgb.shape[0] - h, n).astype(int)
    xs = np.linspace(0, rgb.shape[1] - w, n).astype(int)[::-1]
    windows = [rgb[y : y + h, x : x + w] for y, x in zip(ys, xs, strict=True)]
    return np.ascontiguousarray(np.stack(windows).transpose(0, 3, 1, 2), np.float32) / 255.0


def _reference_run(reference: Engine, batch: NDArray[np.float32]) -> NDArray[np.float32]:
    if any(shape_matches(batch.shape, s) for s in reference.input_shapes):
        return reference.run(batch)
    one = (1, *batch.shape[1:])
    if any(shape_matches(one, s) for s in reference.input_shapes):
        return np.concatenate([reference.run(batch[i : i + 1].copy()) for i in range(len(batch))])
    raise EngineError(
        f"the reference takes {[list(s) for s in reference.input_shapes]}, which fits neither "
        f"{list(batch.shape)} nor {list(one)}; export it with a dynamic batch or this tile size"
    )


def run_selfcheck(
    engine: Engine,
    *,
    bmodel: Path,
    device_id: int,
    reference: Engine | None = None,
    reference_path: Path | None = None,
    images: Sequence[Path] = (),
    repeats: int = 5,
    min_psnr_db: float = 35.0,
    seed: int = 0,
) -> SelfCheckResult:
    """Compare ``engine`` (a bmodel on a TPU) with ``reference`` on every shape it holds.

    Args:
        engine: the sail engine under test (closed by the caller).
        reference: the ONNX engine to compare with; None checks only finiteness and
            latency.
        images: real images to cut tiles from; none uses :func:`synthetic_image`.
        repeats: extra timed calls per shape, for the latency figures.
        min_psnr_db: the pass threshold.

    Raises:
        EngineError: an engine failed, or the reference cannot take the tile shapes.
    """
    rng = np.random.default_rng(seed)
    pictures = [np.asarray(Image.open(p).convert("RGB")) for p in images] or [synthetic_image()]
    cases: list[CaseResult] = []
    latencies: list[float] = []

    def timed(batch: NDArray[np.float32]) -> NDArray[np.float32]:
        t = time.perf_counter()
        out = engine.run(batch)
        latencies.append(time.perf_counter() - t)
        return out

    for accepted in engine.input_shapes:
        if any(d is None for d in accepted):
            raise EngineError(f"{bmodel}: shape {list(accepted)} is not static")
        shape = tuple(int(d) for d in accepted)  # type: ignore[arg-type]
        random_batch = rng.random(shape, dtype=np.float32)
        batches = [("random", random_batch)] + [("real", _tiles(p, shape)) for p in pictures]  # type: ignore[arg-type]
        for kind, batch in batches:
            out = timed(batch)
            diff = psnr = None
            if reference is not None:
                diff, psnr = compare(out, _reference_run(reference, batch))
            cases.append(CaseResult(kind, shape, diff, psnr, bool(np.isfinite(out).all())))  # type: ignore[arg-type]
        for _ in range(repeats):
            timed(random_batch)
    bad = [c for c in cases if not c.finite]
    low = [c for c in cases if c.psnr_db is not None and c.psnr_db < min_psnr_db]
    if bad:
        passed, reason = False, f"{len(bad)} output(s) hold NaN or infinity"
    elif low:
        worst = min(low, key=lambda c: c.psnr_db or 0.0)
        passed = False
        reason = (
            f"PSNR {worst.psnr_db:.2f} dB < {min_psnr_db:g} dB on {worst.kind} "
            f"{list(worst.shape)}: the bmodel does not compute what the reference does"
        )
    elif reference is None:
        passed, reason = True, "outputs finite (no reference given: accuracy not checked)"
    else:
        passed, reason = True, f"PSNR >= {min_psnr_db:g} dB on every case, outputs finite"
    return SelfCheckResult(
        bmodel=bmodel,
        reference=reference_path,
        device_id=device_id,
        input_shapes=engine.input_shapes,
        scale=engine.scale,
        cases=tuple(cases),
        latency_min_s=min(latencies),
        latency_median_s=statistics.median(latencies),
        calls=len(latencies),
        min_psnr_db=min_psnr_db,
        passed=passed,
        reason=reason,
    )
