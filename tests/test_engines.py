"""Engines: the protocol's shapes and scale, shape checks, and torch/onnx agreement."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from batchsr.config import ModelConfig, TilingConfig
from batchsr.engines import Engine, open_engine
from batchsr.engines.onnx import OnnxEngine
from batchsr.errors import ConfigError, ShapeMismatchError
from batchsr.pipeline.geometry import geometry_for
from batchsr.resolve import ResolvedModel


def test_onnx_engine_reports_dynamic_shape_and_probes_scale(espcn_onnx: Path) -> None:
    engine = OnnxEngine(espcn_onnx)
    assert isinstance(engine, Engine)
    assert engine.input_shapes == ((None, 3, None, None),) and engine.scale == 4
    out = engine.run(np.zeros((2, 3, 10, 12), np.float32))
    assert out.shape == (2, 3, 40, 48) and out.dtype == np.float32


def test_static_engine_rejects_other_shapes(espcn_onnx_static: Path) -> None:
    engine = OnnxEngine(espcn_onnx_static)
    assert engine.input_shapes == ((2, 3, 48, 48),) and engine.scale == 4
    with pytest.raises(ShapeMismatchError, match=r"fits none of the engine's input shapes"):
        engine.run(np.zeros((1, 3, 48, 48), np.float32))
    with pytest.raises(ShapeMismatchError):
        engine.run(np.zeros((2, 3, 48, 48), np.float64))  # type: ignore[arg-type]


def test_geometry_takes_static_dims_from_the_model(
    espcn_onnx_static: Path, espcn_onnx: Path
) -> None:
    static = ResolvedModel("s", espcn_onnx_static, "onnx", margin=4)
    g = geometry_for(OnnxEngine(espcn_onnx_static), TilingConfig(tile=128, batch=8), static)
    assert (g.tile_h, g.tile_w, g.batch, g.static_batch, g.pad) == (48, 48, 2, True, 4)
    with pytest.raises(ConfigError, match="dynamic height and width"):
        geometry_for(OnnxEngine(espcn_onnx_static), TilingConfig(tile=0), static)
    dynamic = ResolvedModel("d", espcn_onnx, "onnx", margin=None)
    g = geometry_for(OnnxEngine(espcn_onnx), TilingConfig(tile=0, batch=8), dynamic)
    # whole images are still extended by a margin (the default 8 when none is known)
    assert (g.tile_h, g.batch, g.pad) == (0, 1, 8)


def test_torchscript_engine_matches_onnx(tmp_path: Path, espcn_onnx: Path) -> None:
    """The same network through torch (TorchScript) and onnxruntime agrees to 1e-5."""
    import onnx
    import torch
    from onnx import numpy_helper

    # Rebuild the tiny ESPCN from the ONNX file's own weights, so both backends run
    # one set of parameters.
    weights = [numpy_helper.to_array(t) for t in onnx.load(str(espcn_onnx)).graph.initializer]
    convs = [
        torch.nn.Conv2d(w.shape[1], w.shape[0], w.shape[2], padding=w.shape[2] // 2)
        for w in weights
        if w.ndim == 4
    ]
    biases = [b for b in weights if b.ndim == 1]
    for conv, w, b in zip(convs, [w for w in weights if w.ndim == 4], biases, strict=True):
        conv.weight.data = torch.from_numpy(w.copy())
        conv.bias.data = torch.from_numpy(b.copy())
    net = torch.nn.Sequential(
        convs[0], torch.nn.Tanh(), convs[1], torch.nn.Tanh(), convs[2], torch.nn.PixelShuffle(4)
    ).eval()
    path = tmp_path / "espcn.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracing warnings are expected and harmless here
        torch.jit.trace(net, torch.rand(1, 3, 16, 16)).save(str(path))
    torch_engine = open_engine(
        ResolvedModel("t", path, "torchscript"), ModelConfig(backend="torch")
    )
    onnx_engine = open_engine(ResolvedModel("o", espcn_onnx, "onnx"), ModelConfig())
    assert torch_engine.scale == 4
    batch = np.random.default_rng(0).random((2, 3, 20, 24), dtype=np.float32)
    np.testing.assert_allclose(torch_engine.run(batch), onnx_engine.run(batch), atol=1e-5)


def test_onnx_cuda_without_a_cuda_provider_is_an_error(espcn_onnx: Path) -> None:
    """Asking for CUDA where onnxruntime has none fails, naming what it has; never a
    silent CPU run under a CUDA label."""
    import onnxruntime as ort

    from batchsr.engines.onnx import OnnxEngine
    from batchsr.errors import EngineUnavailableError

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has a CUDA provider")
    with pytest.raises(EngineUnavailableError, match=r"no CUDA provider.*CPUExecutionProvider"):
        OnnxEngine(espcn_onnx, device="cuda")
