"""Self-check of a bmodel: does the TPU (or its emulator) compute what the ONNX model does?

``python run.py selfcheck MODEL.bmodel --reference MODEL.onnx`` runs, for every stage
shape the bmodel holds, one batch of uniform noise and ``samples`` real tiles (cut
from the given images by the pipeline's decoder and tiler, :mod:`batchsr.sample_tiles`)
through the bmodel (sail on one TPU, or with ``--emulate`` tpu-mlir's BM1684X
emulator) and through the ONNX reference (onnxruntime, CPU), and compares the outputs,
both clipped to [0, 1] as saving clips them: the largest absolute difference and the
PSNR. Each shape passes when the PSNR on its real tiles reaches the threshold of the
bmodel's quantisation (:data:`MIN_PSNR_DB`); a wrong input range or channel order (the
usual INT8 calibration mistake, tpu-reference 1.6) falls far below every one of them.
Noise is reported and must be finite, but not judged by PSNR: it lies outside the
ranges INT8 was calibrated on (26.7 dB for our INT8 build against 47 dB on real tiles).

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

from batchsr.engines.base import Engine, Shape, shape_matches
from batchsr.errors import ConfigError, EngineError, setting
from batchsr.sample_tiles import batches_of

__all__ = [
    "MIN_PSNR_DB",
    "CaseResult",
    "SelfCheckResult",
    "check_model",
    "compare",
    "min_psnr_for",
    "run_selfcheck",
]

# Pass thresholds (dB against the F32 ONNX output) per quantisation: well under what a
# sound build reaches (docs/tpu.md: F16 over 60 dB, INT8 about 45 dB for the default
# model) and far over what a broken one gives (wrong range or channel order: 10-25 dB).
MIN_PSNR_DB: dict[str, float] = {"F32": 60.0, "F16": 45.0, "BF16": 38.0, "INT8": 32.0}
UNKNOWN_QUANTIZE_MIN_PSNR_DB = 35.0


def min_psnr_for(quantize: str | None) -> float:
    """The pass threshold for a bmodel of this quantisation (None: not known)."""
    return MIN_PSNR_DB.get((quantize or "").upper(), UNKNOWN_QUANTIZE_MIN_PSNR_DB)


@dataclass(frozen=True, slots=True)
class CaseResult:
    """One kind of input run through both engines at one stage shape.

    Attributes:
        kind: ``random`` (one batch of uniform noise in [0, 1]) or ``real`` (tiles of
            real images, in as many batches as they fill).
        shape: the NCHW stage shape.
        tiles: how many tiles were compared.
        max_abs_diff: largest absolute difference of the clipped outputs (None without
            a reference).
        psnr_db: PSNR of the bmodel's outputs against the reference's over all tiles,
            peak 1.0; ``inf`` when identical (None without a reference).
        finite: the bmodel's outputs hold no NaN or infinity.
        passed: finite, and for real tiles (with a reference) PSNR at least the
            threshold.
    """

    kind: str
    shape: tuple[int, int, int, int]
    tiles: int
    max_abs_diff: float | None
    psnr_db: float | None
    finite: bool
    passed: bool


@dataclass(frozen=True, slots=True)
class SelfCheckResult:
    """The verdict and its figures.

    Attributes:
        where: what ran the bmodel (``TPU 0``, ``BM1684X emulator``).
        input_shapes: the shapes the bmodel holds, as the engine reports them.
        quantize: the bmodel's quantisation, when its manifest says.
        latency_min_s, latency_median_s: wall time of one bmodel call, over ``calls``.
        min_psnr_db: the pass threshold used.
        passed: every case passed.
        reason: one line saying why it passed or failed.
    """

    bmodel: Path
    reference: Path | None
    where: str
    input_shapes: tuple[Shape, ...]
    scale: int
    quantize: str | None
    cases: tuple[CaseResult, ...]
    latency_min_s: float
    latency_median_s: float
    calls: int
    min_psnr_db: float
    passed: bool
    reason: str


def compare(got: NDArray[np.float32], want: NDArray[np.float32]) -> tuple[float, float]:
    """Max abs difference and PSNR (dB, peak 1.0) of two outputs clipped to [0, 1]."""
    a = np.clip(got.astype(np.float64), 0.0, 1.0)
    b = np.clip(want.astype(np.float64), 0.0, 1.0)
    mse = float(np.mean((a - b) ** 2))
    psnr = math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)
    return float(np.max(np.abs(a - b))), psnr


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
    where: str,
    images: Sequence[Path],
    reference: Engine | None = None,
    reference_path: Path | None = None,
    quantize: str | None = None,
    samples: int = 8,
    margin: int = 0,
    repeats: int = 5,
    min_psnr_db: float | None = None,
    seed: int = 0,
) -> SelfCheckResult:
    """Compare ``engine`` (a bmodel) with ``reference`` on every shape it holds.

    Args:
        engine: the bmodel's engine (sail or emulator; closed by the caller).
        where: what runs it, for the report.
        images: real images to cut ``samples`` tiles per shape from.
        reference: the ONNX engine to compare with; None checks only finiteness and
            latency.
        quantize: the bmodel's quantisation (picks the threshold), if known.
        margin: the model's context margin, as the pipeline's tiler uses it.
        repeats: extra timed calls per shape, for the latency figures.
        min_psnr_db: the pass threshold; None takes :func:`min_psnr_for` ``quantize``.

    Raises:
        EngineError: an engine failed, or the reference cannot take the tile shapes.
        ConfigError: the images give no tile.
    """
    threshold = min_psnr_for(quantize) if min_psnr_db is None else min_psnr_db
    rng = np.random.default_rng(seed)
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
        n, c, h, w = (int(d) for d in accepted)  # type: ignore[arg-type]
        shape = (n, c, h, w)
        random_batch = rng.random(shape, dtype=np.float32)
        real, found = batches_of(images, shape, pad=margin, scale=engine.scale, tiles=samples)
        for kind, batches in (("random", [random_batch]), ("real", real)):
            outs = [timed(b) for b in batches]
            finite = all(bool(np.isfinite(o).all()) for o in outs)
            diff = psnr = None
            if reference is not None:
                want = np.concatenate([_reference_run(reference, b) for b in batches])
                diff, psnr = compare(np.concatenate(outs), want)
            # Noise is outside what INT8 was calibrated on (tpu-mlir sets its ranges
            # from real tiles), so it is reported and must be finite; the PSNR verdict
            # comes from the real tiles, which are what a run feeds the bmodel.
            judged = kind == "real"
            ok = finite and (psnr is None or not judged or psnr >= threshold)
            tiles = n if kind == "random" else found
            cases.append(CaseResult(kind, shape, tiles, diff, psnr, finite, ok))
        for _ in range(repeats):
            timed(random_batch)
    bad = [c for c in cases if not c.finite]
    low = [c for c in cases if not c.passed and c.finite]
    if bad:
        passed, reason = False, f"{len(bad)} output(s) hold NaN or infinity"
    elif low:
        worst = min(low, key=lambda c: c.psnr_db or 0.0)
        passed = False
        reason = (
            f"PSNR {worst.psnr_db:.2f} dB < {threshold:g} dB on {worst.kind} "
            f"{list(worst.shape)}: the bmodel does not compute what the reference does"
        )
    elif reference is None:
        passed, reason = True, "outputs finite (no reference given: accuracy not checked)"
    else:
        passed, reason = True, f"PSNR >= {threshold:g} dB on every case, outputs finite"
    return SelfCheckResult(
        bmodel=bmodel,
        reference=reference_path,
        where=where,
        input_shapes=engine.input_shapes,
        scale=engine.scale,
        quantize=quantize,
        cases=tuple(cases),
        latency_min_s=min(latencies),
        latency_median_s=statistics.median(latencies),
        calls=len(latencies),
        min_psnr_db=threshold,
        passed=passed,
        reason=reason,
    )


def check_model(
    spec: str,
    *,
    emulate: bool,
    device: int = 0,
    reference: Path | None = None,
    images: Sequence[Path],
    samples: int = 8,
    repeats: int | None = None,
    min_psnr_db: float | None = None,
) -> SelfCheckResult:
    """:func:`run_selfcheck` on the bmodel ``spec`` names (a file, or a model folder whose
    manifest lists one), opened as a run would open it.

    Args:
        spec: as ``model.name`` for a run.
        emulate: run the bmodel on tpu-mlir's BM1684X emulator instead of TPU ``device``.
        reference: the ONNX to compare with; None takes the model folder's ONNX, if any.
        repeats: extra timed calls per shape; None: 5 on a TPU, 0 on the emulator
            (each call there takes seconds to minutes).

    Raises:
        ModelError: ``spec`` names no bmodel.
        EngineError: the engine cannot open or run.
    """
    from batchsr.config import load_config
    from batchsr.engines import open_engine
    from batchsr.engines.onnx import OnnxEngine
    from batchsr.resolve import resolve_model

    if samples < 1:
        raise ConfigError(f"{setting('samples', samples)}: use at least 1 real tile per shape")
    backend = "cmodel" if emulate else "sail"
    model = resolve_model(spec, backend=backend)
    if reference is None and model.manifest is not None:
        onnx = model.manifest.artifact("onnx")
        reference = model.path.parent / onnx.path if onnx else None
    config = load_config(None, {"model.devices": str(device), "model.backend": backend}).model
    engine = open_engine(model, config, device_id=device)
    try:
        return run_selfcheck(
            engine,
            bmodel=model.path,
            where="BM1684X emulator" if emulate else f"TPU {device}",
            images=images,
            reference=OnnxEngine(reference) if reference else None,
            reference_path=reference,
            quantize=model.artifact.quantize if model.artifact else None,
            samples=samples,
            margin=model.margin or 0,
            repeats=repeats if repeats is not None else (0 if emulate else 5),
            min_psnr_db=min_psnr_db,
        )
    finally:
        engine.close()
