"""Turn zoo models into deployable artifacts (ONNX here; bmodels via tpu-mlir).

``compile`` imports ``batchsr.models``, never the reverse.
"""

from __future__ import annotations

from compile.onnx import DEFAULT_OPSET, check_onnx, export_onnx

__all__ = ["DEFAULT_OPSET", "check_onnx", "export_onnx"]
