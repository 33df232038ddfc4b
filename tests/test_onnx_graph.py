"""The load-time graph rewrites: the same values, and the kernels onnxruntime fuses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from batchsr.engines.onnx import OnnxEngine
from batchsr.engines.onnx_graph import as_prelu, fusable
from tests.helpers.paths import REPO

MODELS = REPO / "models"
DEFAULT_ONNX = MODELS / "espcn" / "espcn.onnx"


def _conv_prelu(slope: np.ndarray, *, input_rank: int = 4) -> onnx.ModelProto:
    """x -> Conv(1->4, 3x3) -> PRelu(slope) -> y; with ``input_rank`` 2 the PRelu reads
    a 2-D graph input instead."""
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((4, 1, 3, 3)).astype(np.float32)
    inits = [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(slope, "slope")]
    if input_rank == 4:
        nodes = [
            helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("PRelu", ["c", "slope"], ["y"], name="act"),
        ]
        x_shape: list[int | None] = [1, 1, 8, 8]
    else:
        nodes = [helper.make_node("PRelu", ["x", "slope"], ["y"], name="act")]
        x_shape = [3, 5]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model: onnx.ModelProto | Path, x: np.ndarray, *, optimized: Path | None = None):
    options = ort.SessionOptions()
    if optimized is not None:
        options.optimized_model_filepath = str(optimized)
    source = str(model) if isinstance(model, Path) else model.SerializeToString()
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x})
    return out


def test_a_single_slope_prelu_becomes_the_equal_leaky_relu() -> None:
    model = _conv_prelu(np.array([[[[-0.25]]]], dtype=np.float32))
    rewritten = fusable(model)
    assert [n.op_type for n in rewritten.model.graph.node] == ["Conv", "LeakyRelu"]
    assert rewritten.changes == ("PRelu act -> LeakyRelu(alpha=-0.25)",)
    # The slope is gone with its reader; the conv's weight stays.
    assert [t.name for t in rewritten.model.graph.initializer] == ["w"]
    x = np.random.default_rng(1).standard_normal((1, 1, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(_run(rewritten.model, x), _run(model, x))


def test_per_channel_and_rank_raising_slopes_are_kept() -> None:
    per_channel = _conv_prelu(np.full((4, 1, 1), 0.1, dtype=np.float32))
    assert fusable(per_channel).changes == ()
    assert fusable(per_channel).model is per_channel
    # A 4-D scalar slope on a 2-D input broadcasts the output to 4-D: not a LeakyRelu.
    raising = _conv_prelu(np.array([[[[0.1]]]], dtype=np.float32), input_rank=2)
    assert fusable(raising).changes == ()
    flat = _conv_prelu(np.array([0.1], dtype=np.float32), input_rank=2)
    assert len(fusable(flat).changes) == 1


def test_an_onnx_with_prelus_runs_the_same_and_fused(tmp_path: Path) -> None:
    prelu = tmp_path / "prelu.onnx"
    onnx.save(as_prelu(onnx.load(str(DEFAULT_ONNX))), str(prelu))
    engine = OnnxEngine(prelu, scale=4)
    assert len(engine.rewrites) == 2 and all("LeakyRelu" in r for r in engine.rewrites)
    x = np.random.default_rng(2).random((2, 1, 24, 40), dtype=np.float32) * 1.4 - 0.2
    np.testing.assert_array_equal(engine.run(x), _run(prelu, x))
    engine.close()
    # Why it is done: unfused, each PRelu leaves the blocked (NCHWc) layout and comes back.
    plain, fused = tmp_path / "plain.onnx", tmp_path / "fused.onnx"
    _run(prelu, x, optimized=plain)
    _run(fusable(onnx.load(str(prelu))).model, x, optimized=fused)

    def reorders(path: Path) -> int:
        return sum(n.op_type.startswith("Reorder") for n in onnx.load(str(path)).graph.node)

    assert reorders(fused) < reorders(plain)
    assert "PRelu" not in {n.op_type for n in onnx.load(str(fused)).graph.node}


@pytest.mark.parametrize("folder", sorted(p.parent.name for p in MODELS.glob("*/*.onnx")))
def test_bundled_models_leave_the_engine_nothing_to_rewrite(folder: str) -> None:
    """compile writes its exports fused already, so loading them never pays for
    ``import onnx``; the engine's rewrite is for ONNX files made elsewhere."""
    for path in (MODELS / folder).glob("*.onnx"):
        assert fusable(onnx.load(str(path))).changes == ()
        assert OnnxEngine(path, scale=4).rewrites == ()


@pytest.mark.slow  # the first torch.export of a session: about 3 s
def test_compile_exports_a_prelu_network_as_leaky_relu(tmp_path: Path) -> None:
    from batchsr.models import registry
    from compile.onnx import export_onnx

    model = registry.get_arch("espcn_res").create(in_channels=1, out_channels=1, upscale=4)
    assert any(isinstance(m, torch.nn.PReLU) for m in model.module.modules())
    path = export_onnx(model.module, tmp_path / "m.onnx", shape=(2, 1, 20, 28), dynamic=True)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "LeakyRelu" in ops and "PRelu" not in ops


def test_a_slope_the_caller_may_feed_is_not_a_constant() -> None:
    """Older exports list every weight as a graph input too: such a slope is a default
    the caller may override, so it stays a PRelu and the model still loads."""
    model = _conv_prelu(np.array([[[[-0.25]]]], dtype=np.float32))
    model.graph.input.append(
        helper.make_tensor_value_info("slope", TensorProto.FLOAT, [1, 1, 1, 1])
    )
    assert fusable(model).changes == ()
    x = np.random.default_rng(1).standard_normal((1, 1, 8, 8)).astype(np.float32)
    assert _run(fusable(model).model, x).shape == (1, 4, 8, 8)
