"""How close inference runs to this machine's convolution limit, side by side in one run.

1. Peak: GFLOP/s of one large 3x3 convolution (64 -> 64 channels, 256x256, a graph made
   here with onnx.helper) in onnxruntime at every thread count up to the cores, at two
   graph optimisation levels, and its INT8 QDQ form (QLinearConv): the most this CPU
   gives a conv in onnxruntime, float and int8.
2. Settings tried: the default model in plain onnxruntime sessions, one setting changed
   at a time from what ``OnnxEngine`` opens (the graph as exported with PRelu, before
   ``batchsr.engines.onnx_graph.fusable``; graph optimisation without NCHWc; one thread;
   spinning threads), on a whole contest image and on a batch of four 128-pixel tiles.
3. Engine: GFLOP/s of ``OnnxEngine`` (batchsr's own session settings) on the shapes the
   pipeline sends, for the default model and a static 1x3x128x128 RGB
   ESPCN (the seed's, exported from ../shared/anchors/espcn_ex.pt when present; else
   our ESPCN architecture with RGB channels and random weights, the same FLOPs per
   pixel as a seed-size network would not be: the row says which).
4. In the pipeline: ``run.py`` on a folder (the contest samples, or synthetic
   contest-size images), its infer stage's GFLOP/s from the run log: the FLOPs of every
   batch it ran (padded slots included: the engine computes them) over the infer
   workers' busy seconds (the default model float and INT8). Those are wall seconds
   on cores shared with decode, stitch and save, so this row is the engine's share of a
   full machine, not its efficiency.

FLOPs are counted from the ONNX graph (shape inference): 2 x multiply-adds of every
Conv, nothing else (activations and depth-to-space are a few percent of a conv's work).
An INT8 model is credited with its float model's FLOPs (integer operations).

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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

from contest_inputs import make_inputs  # noqa: E402
from seed_model import seed_like_onnx  # noqa: E402


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


def engine_row(
    path: Path, shape: tuple[int, int, int, int], seconds: float, flops_of: Path | None = None
) -> float:
    """GFLOP/s of OnnxEngine (the pipeline's session settings) on one batch shape;
    ``flops_of``: the float ONNX whose FLOPs count (default: ``path``)."""
    from batchsr.engines.onnx import OnnxEngine

    engine = OnnxEngine(path, scale=4)
    batch = np.random.default_rng(2).random(shape, dtype=np.float32)
    call_s = _median_call_s(lambda: engine.run(batch), seconds)
    engine.close()
    return conv_flops(flops_of or path, shape) / call_s / 1e9


@dataclass(frozen=True, slots=True)
class Setting:
    """One way to open an onnxruntime session over the default model."""

    label: str
    prelu: bool = False  # the graph as torch exports nn.PReLU(), before onnx_graph.fusable
    level: str = "all"
    threads: int = 0
    spinning: bool = False


SETTINGS = (
    Setting("as exported (PRelu), level all", prelu=True),
    Setting("LeakyRelu, level extended (no NCHWc)", level="extended"),
    Setting("LeakyRelu, level all, 1 thread", threads=1),
    Setting("LeakyRelu, level all, spinning threads", spinning=True),
    Setting("LeakyRelu, level all (what OnnxEngine opens)"),
)


def setting_row(
    path: Path, setting: Setting, shape: tuple[int, int, int, int], seconds: float
) -> float:
    """GFLOP/s of a plain onnxruntime session opened with ``setting``."""
    import onnx
    import onnxruntime as ort

    from batchsr.engines.onnx_graph import as_prelu

    source = onnx.load(str(path))
    if setting.prelu:
        source = as_prelu(source)
    options = ort.SessionOptions()
    options.graph_optimization_level = {
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[setting.level]
    if setting.threads:
        options.intra_op_num_threads = setting.threads
    options.add_session_config_entry(
        "session.intra_op.allow_spinning", "1" if setting.spinning else "0"
    )
    session = ort.InferenceSession(
        source.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    x = np.random.default_rng(3).random(shape, dtype=np.float32)
    call_s = _median_call_s(lambda: session.run(None, {session.get_inputs()[0].name: x}), seconds)
    return conv_flops(path, shape) / call_s / 1e9


def pipeline_row(
    model: str, folder: Path, out: Path, extra: tuple[str, ...] = (), flops_of: Path | None = None
) -> tuple[float, float, int]:
    """The infer stage's GFLOP/s in a real run: (GFLOP/s, infer busy s, engine calls).

    FLOPs from each call's batch shape in the log (padded slots included: the engine
    computes them); a model of same-padded convolutions does FLOPs in proportion to
    the pixels it is given, so one probe's FLOPs per pixel count them all.
    """
    subprocess.run(
        [sys.executable, str(REPO / "run.py"), "--model", model, "--input", str(folder),
         "--output", str(out), "--quiet", "--no-score", *extra],
        check=True,
    )  # fmt: skip
    records = [json.loads(line) for line in (out / "run.jsonl").read_text().splitlines()]
    start = next(r for r in records if r.get("event") == "run_started")
    model_path = Path(start["model"]["path"])
    infer = [r for r in records if r.get("event") == "item_done" and r.get("stage") == "infer"]
    pixels = sum(n * h * w for n, _, h, w in (r["shape"] for r in infer))
    _, c, h, w = infer[0]["shape"]
    per_pixel = conv_flops(flops_of or model_path, (1, c, h, w)) / (h * w)
    busy = sum(float(r["busy_s"]) for r in infer)
    return per_pixel * pixels / busy / 1e9, busy, len(infer)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=8, help="images for the pipeline rows")
    p.add_argument("--seconds", type=float, default=2.0, help="timing per engine figure")
    args = p.parse_args()
    from batchsr.resolve import resolve_model

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
        seed, what = seed_like_onnx(tmp)
        whole, tiles = (1, 1, 416, 518), (4, 1, 128, 128)
        print(
            f"\nsettings tried, default model (whole 510x408 contest image with its margin "
            f"{'x'.join(map(str, whole))}; four 128-pixel tiles), share of the peak {best:.1f}"
        )
        for setting in SETTINGS:
            cells = []
            for shape in (whole, tiles):
                g = setting_row(default, setting, shape, args.seconds)
                cells.append(f"{g:7.1f} GFLOP/s {g / best:4.0%}")
            print(f"  {setting.label:<46} " + "   ".join(cells))
        print(
            f"\nengine (OnnxEngine as the pipeline opens it), share of the peak "
            f"(float {best:.1f}, INT8 {best8:.1f} GFLOP/s)"
        )
        for label, path, shapes in (
            ("default espcn (Y)", default, [whole, tiles]),
            ("default espcn (Y), INT8 (--quantize INT8)", int8, [whole, tiles]),
            (f"static RGB ESPCN: {what}", seed, [(1, 3, 128, 128)]),
        ):
            top = best8 if path == int8 else best
            for shape in shapes:
                g = engine_row(
                    path, shape, args.seconds, flops_of=default if path == int8 else None
                )
                tag = "x".join(map(str, shape))
                print(f"  {label:<48} {tag:<12} {g:7.1f} GFLOP/s {g / top:6.0%}")
        folder = tmp / "in"
        source = make_inputs(folder, args.images)
        print(f"\nin the pipeline ({args.images} {source}, default settings, NIQE off)")
        runs: tuple[tuple[str, str, tuple[str, ...]], ...] = (
            ("default espcn", "espcn", ()),
            ("default espcn, INT8 (--quantize INT8)", "espcn", ("--quantize", "INT8")),
            ("static RGB ESPCN", str(seed), ()),
        )
        for i, (label, model, extra) in enumerate(runs):
            # INT8 runs are credited with the float model's FLOPs.
            g, busy, calls = pipeline_row(
                model, folder, tmp / f"out-{i}", extra, flops_of=default if extra else None
            )
            top = best8 if extra else best
            print(
                f"  {label:<48} {calls:5d} calls   {busy:6.2f} s busy {g:7.1f} GFLOP/s "
                f"{g / top:6.0%}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
