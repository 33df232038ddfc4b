"""How close inference runs to this machine's convolution limit, side by side in one run.

1. Peak: GFLOP/s of one large 3x3 convolution (64 -> 64 channels, 256x256, a graph made
   here with onnx.helper) in onnxruntime at every thread count up to the cores, at two
   graph optimisation levels, and its INT8 QDQ form (QLinearConv): the most this CPU
   gives a conv in onnxruntime, float and int8.
2. Engine: GFLOP/s of ``OnnxEngine`` (batchsr's own session settings) on batches of the
   tile shape the pipeline cuts, for the default model in three forms timed side by
   side (calls interleaved, so a busy neighbour slows all alike): the shipped float
   ONNX, the same with its PReLUs as LeakyRelu (the rewrite the INT8 build makes,
   which lets the float path fuse them into its convs too: the fair float rival) and
   the shipped INT8 ONNX (``--quantize INT8``); then a static 1x3x128x128 RGB ESPCN
   (the seed's, exported from ../shared/anchors/espcn_ex.pt when present; else our
   ESPCN architecture with RGB channels and random weights, the same FLOPs per pixel
   as a seed-size network would not be: the row says which).
3. In the pipeline: ``run.py`` on a folder (the contest samples, or synthetic
   contest-size images), its infer stage's GFLOP/s from the run log: the FLOPs of every
   window it ran (padded slots included: the engine computes them) over the infer
   workers' busy seconds; the default model float and INT8.

FLOPs are counted from the float ONNX graph (shape inference): 2 x multiply-adds of
every Conv, nothing else (activations and depth-to-space are a few percent of a conv's
work). An INT8 model is credited with its float model's FLOPs (integer operations).

    python benchmarks/roofline.py [--images 8] [--seconds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

from contest_inputs import make_inputs  # noqa: E402

SEED_PT = REPO.parent / "shared" / "anchors" / "espcn_ex.pt"


def conv_flops(path: Path, shape: tuple[int, int, int, int]) -> int:
    """2 x multiply-adds of every Conv in the ONNX at ``path`` for one input of ``shape``."""
    import onnx
    from onnx import shape_inference

    model = onnx.load(str(path))
    weights = {t.name: list(t.dims) for t in model.graph.initializer}
    (inp,) = [i for i in model.graph.input if i.name not in weights]
    for dim, value in zip(inp.type.tensor_type.shape.dim, shape, strict=True):
        dim.ClearField("dim_param")
        dim.dim_value = value
    inferred = shape_inference.infer_shapes(model).graph
    shapes = {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in [*inferred.value_info, *inferred.output, *inferred.input]
    }
    total = 0
    for node in inferred.node:
        if node.op_type != "Conv":
            continue
        out = shapes[node.output[0]]
        cout, cin_per_group, kh, kw = weights[node.input[1]]
        total += 2 * out[0] * cout * out[2] * out[3] * cin_per_group * kh * kw
    return total


def _median_call_s(call: Callable[[], object], seconds: float) -> float:
    """Median wall time of ``call`` over about ``seconds`` (after two warm-up calls)."""
    call()
    call()
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 5:
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _median_calls_s(calls: dict[str, Callable[[], object]], seconds: float) -> dict[str, float]:
    """Median wall time of each call, the calls taken in turn for about ``seconds``
    (after two warm-up rounds): a neighbour's load then falls on all of them alike."""
    for _ in range(2):
        for call in calls.values():
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    deadline = time.perf_counter() + seconds * len(calls)
    while time.perf_counter() < deadline or min(map(len, times.values())) < 5:
        for name, call in calls.items():
            t0 = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def _conv_graph(path: Path, channels: int = 64, size: int = 256) -> tuple[int, int, int, int]:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = rng.standard_normal((channels, channels, 3, 3)).astype(np.float32) * 0.05
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
        "conv3x3",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels, size, size])],
        [numpy_helper.from_array(weight, "w")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return (1, channels, size, size)


def peak(tmp: Path, seconds: float) -> list[tuple[str, float]]:
    """GFLOP/s of the big conv per (threads, optimisation level)."""
    import onnxruntime as ort

    path = tmp / "conv3x3.onnx"
    shape = _conv_graph(path)
    flops = conv_flops(path, shape)
    x = np.random.default_rng(1).random(shape, dtype=np.float32)
    rows = []
    levels = {
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all (NCHWc)": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    int8 = tmp / "conv3x3_int8.onnx"
    _quantize_conv(path, int8, x)
    graphs = {name: (path, level) for name, level in levels.items()}
    graphs["INT8 (QLinearConv)"] = (int8, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    for threads in range(1, (os.cpu_count() or 1) + 1):
        for name, (graph, level) in graphs.items():
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.graph_optimization_level = level
            session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
            call_s = _median_call_s(lambda s=session: s.run(None, {"x": x}), seconds)
            rows.append((f"{threads} thread(s), {name}", flops / call_s / 1e9))
    return rows


def _quantize_conv(path: Path, out: Path, x: np.ndarray) -> None:
    """The big conv's INT8 QDQ form, as compile's onnx-int8 target quantizes (per-channel
    int8 weights, uint8 activations), calibrated on the timing input itself."""
    from onnxruntime.quantization import QuantFormat, QuantType, quant_pre_process, quantize_static

    class OneBatch:
        def __init__(self) -> None:
            self.left = [{"x": x}]

        def get_next(self) -> dict[str, np.ndarray] | None:
            return self.left.pop() if self.left else None

    prepared = out.with_name("conv3x3_prepared.onnx")
    quant_pre_process(str(path), str(prepared), skip_symbolic_shape=True)
    quantize_static(
        str(prepared),
        str(out),
        OneBatch(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )


def seed_like_onnx(tmp: Path) -> tuple[Path, str]:
    """A static 1x3x128x128 RGB ESPCN and what it is."""
    import torch

    path = tmp / "seed_espcn.onnx"
    x = torch.rand(1, 3, 128, 128)
    if SEED_PT.is_file():
        module = torch.jit.load(str(SEED_PT))
        what = "the seed's espcn_ex.pt"
    else:
        from batchsr.models import get_arch

        module = get_arch("espcn").create(in_channels=3, out_channels=3, upscale=4).module
        what = "our ESPCN, RGB, random weights (../shared absent)"
    # The seed's file is TorchScript, which only the TorchScript-based exporter reads
    # (deprecated, and it says so at length).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, (x,), str(path), dynamo=False, input_names=["input"], output_names=["output"]
        )
    return path, what


def engine_rows(
    models: dict[str, Path], shape: tuple[int, int, int, int], seconds: float
) -> dict[str, float]:
    """Seconds per call of OnnxEngine (the pipeline's session settings) on one batch
    shape, for each model, timed side by side on the same batch."""
    from batchsr.engines.onnx import OnnxEngine

    batch = np.random.default_rng(2).random(shape, dtype=np.float32)
    engines = {name: OnnxEngine(path, scale=4) for name, path in models.items()}
    calls = {name: (lambda e=e: e.run(batch)) for name, e in engines.items()}
    times = _median_calls_s(calls, seconds)
    for engine in engines.values():
        engine.close()
    return times


def pipeline_row(
    model: str,
    folder: Path,
    out: Path,
    *,
    flops_of: Path | None = None,
    extra: tuple[str, ...] = (),
) -> tuple[float, float, int]:
    """The infer stage's GFLOP/s in a real run: (GFLOP/s, infer busy s, windows run).
    ``flops_of``: the float ONNX whose FLOPs count (default: the model that ran)."""
    subprocess.run(
        [sys.executable, str(REPO / "run.py"), "--model", model, "--input", str(folder),
         "--output", str(out), "--quiet", "--no-score", *extra],
        check=True,
    )  # fmt: skip
    records = [json.loads(line) for line in (out / "run.jsonl").read_text().splitlines()]
    start = next(r for r in records if r.get("event") == "run_started")
    geo = start["geometry"]
    channels = start["engine"]["input_shapes"][0][1]
    model_path = Path(start["model"]["path"])
    infer = [r for r in records if r.get("event") == "item_done" and r.get("stage") == "infer"]
    windows = sum(int(r["tiles"]) + int(r.get("padded", 0)) for r in infer)
    busy = sum(float(r["busy_s"]) for r in infer)
    per_window = conv_flops(flops_of or model_path, (1, channels, geo["tile_h"], geo["tile_w"]))
    return per_window * windows / busy / 1e9, busy, windows


def _engine_line(
    label: str,
    shape: tuple[int, int, int, int],
    call_s: float,
    flops: int,
    best: float,
    baseline_s: float | None = None,
) -> None:
    tag = "x".join(map(str, shape))
    g = flops / call_s / 1e9
    ms_tile = 1000 * call_s / shape[0]
    speed = "" if baseline_s is None else f" {baseline_s / call_s:5.2f}x"
    print(f"  {label:<48} {tag:<12} {ms_tile:6.2f} ms/tile {g:7.1f} GFLOP/s {g / best:6.0%}{speed}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=8, help="images for the pipeline rows")
    p.add_argument("--seconds", type=float, default=2.0, help="timing per engine figure")
    args = p.parse_args()
    from batchsr.resolve import resolve_model
    from compile.onnx_int8 import prelu_as_leaky_relu

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        peaks = peak(tmp, args.seconds)
        best = max(g for name, g in peaks if "INT8" not in name)
        best8 = max(g for name, g in peaks if "INT8" in name)
        print(f"peak: one 3x3 conv 64->64 at 256x256 in onnxruntime ({os.cpu_count()} cores)")
        for name, gflops in peaks:
            print(f"  {name:<34} {gflops:7.1f} GFLOP/s")
        default = resolve_model("espcn", backend="onnx").path
        int8 = resolve_model("espcn", backend="onnx", quantize="INT8").path
        leaky = tmp / "espcn_leaky.onnx"
        prelu_as_leaky_relu(default, leaky)
        seed, what = seed_like_onnx(tmp)
        print(
            f"\nengine (OnnxEngine as the pipeline opens it): ms per tile, GFLOP/s, share of "
            f"the peak (float {best:.1f}, INT8 {best8:.1f}), speed against the shipped F32"
        )
        forms = {
            "default espcn (Y), F32 as shipped": default,
            "default espcn (Y), F32, PReLU as LeakyRelu": leaky,
            "default espcn (Y), INT8 (--quantize INT8)": int8,
        }
        for shape in [(4, 1, 128, 128), (1, 1, 128, 128)]:
            times = engine_rows(forms, shape, args.seconds)
            flops = conv_flops(default, shape)
            shipped = times["default espcn (Y), F32 as shipped"]
            for label, call_s in times.items():
                top = best8 if "INT8" in label else best
                _engine_line(label, shape, call_s, flops, top, shipped)
        shape = (1, 3, 128, 128)
        (call_s,) = engine_rows({"seed": seed}, shape, args.seconds).values()
        _engine_line(f"static RGB ESPCN: {what}", shape, call_s, conv_flops(seed, shape), best)
        folder = tmp / "in"
        source = make_inputs(folder, args.images)
        print(f"\nin the pipeline ({args.images} {source}, default settings, NIQE off)")
        runs = (
            ("default espcn", "espcn", ()),
            ("default espcn, INT8 (--quantize INT8)", "espcn", ("--quantize", "INT8")),
            ("static RGB ESPCN", str(seed), ()),
        )
        for i, (label, model, extra) in enumerate(runs):
            # INT8 runs are credited with the float model's FLOPs.
            flops_of = default if extra else None
            g, busy, windows = pipeline_row(
                model, folder, tmp / f"out-{i}", flops_of=flops_of, extra=extra
            )
            top = best8 if extra else best
            print(
                f"  {label:<48} {windows:5d} windows {busy:6.2f} s busy {g:7.1f} GFLOP/s "
                f"{g / top:6.0%}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
