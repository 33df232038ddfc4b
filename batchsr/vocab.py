"""The closed sets of names the whole tool shares, spelled once.

Stage and edge names appear in the pipeline's wiring, the config's ``[workers]`` and
``[queues]`` tables, the log records, the analysis and the CLI's choices; tile modes,
borders, filters, backends and quantizations in the config, the CLI and ``compile``.
Each is a ``Literal`` here (so a type checker catches a misspelling) and a tuple of its
values (so a parser or a message can list them), and nothing else defines them.

This module imports nothing from batchsr: it is the bottom of the layer map
(docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final, Literal, get_args

__all__ = [
    "BACKENDS",
    "BORDER_MODES",
    "COLORS",
    "COMPILE_TARGETS",
    "CORE_MODES",
    "DEVICES",
    "EDGES",
    "FILTER_NAMES",
    "IMAGE_SUFFIXES",
    "INPUT_EDGE",
    "MULTI_WORKER_STAGES",
    "NCHW",
    "OUTPUT_EXTS",
    "QUANTIZE",
    "STAGES",
    "TILE_MODES",
    "ArtifactFormat",
    "Backend",
    "BorderMode",
    "Color",
    "CompileTarget",
    "Device",
    "Edge",
    "FilterName",
    "MultiWorkerStage",
    "OutputExt",
    "Quantize",
    "Stage",
    "TileMode",
]

#: One static NCHW shape (batch, channels, height, width).
NCHW = tuple[int, int, int, int]

#: Pipeline stages, in pipeline order.
Stage = Literal["decode", "tile", "infer", "stitch", "save", "score", "report"]
STAGES: Final[tuple[Stage, ...]] = get_args(Stage)

#: Stages whose worker count is a ``[workers]`` knob; tile, stitch and report are one
#: task each by design (they own the partial batch, the partial images, the rows).
MultiWorkerStage = Literal["decode", "infer", "save", "score"]
MULTI_WORKER_STAGES: Final[tuple[MultiWorkerStage, ...]] = get_args(MultiWorkerStage)

#: The streams between stages, named for what flows on them (``[queues]`` keys).
Edge = Literal["paths", "decoded", "tiles", "inferred", "stitched", "saved", "scored"]
EDGES: Final[tuple[Edge, ...]] = get_args(Edge)

#: The stream each stage receives from: stage i reads edge i. Keyed by ``str``, as
#: stage names read back from a log are.
INPUT_EDGE: Final[Mapping[str, Edge]] = MappingProxyType(dict(zip(STAGES, EDGES, strict=True)))

#: How tiles are cut and merged (docs/architecture.md, "Tiling").
TileMode = Literal["crop", "plain", "average", "blend"]
TILE_MODES: Final[tuple[TileMode, ...]] = get_args(TileMode)
#: Modes whose window cores partition the image, so each output pixel comes from one
#: tile; the others weight overlapping windows on a float canvas.
CORE_MODES: Final[frozenset[TileMode]] = frozenset({"crop", "plain"})

#: How an image is extended past its edges (``batchsr.border``).
BorderMode = Literal["replicate", "reflect", "zero"]
BORDER_MODES: Final[tuple[BorderMode, ...]] = get_args(BorderMode)

#: PIL's 3x3 kernel filters, the seed's postprocess (``batchsr.filters``).
FilterName = Literal["SHARPEN", "DETAIL", "EDGE_ENHANCE", "EDGE_ENHANCE_MORE"]
FILTER_NAMES: Final[tuple[FilterName, ...]] = get_args(FilterName)

#: Inference backends (``batchsr.engines``).
Backend = Literal["onnx", "torch", "sail", "cmodel"]
BACKENDS: Final[tuple[Backend, ...]] = get_args(Backend)
Device = Literal["cpu", "cuda"]
DEVICES: Final[tuple[Device, ...]] = get_args(Device)

#: Numeric formats an artifact computes in: tpu-mlir's for the BM1684X (``compile``),
#: and F32 or INT8 (static QDQ quantization) for an ONNX on onnxruntime.
Quantize = Literal["F32", "F16", "BF16", "INT8"]
QUANTIZE: Final[tuple[Quantize, ...]] = get_args(Quantize)

#: What ``compile`` builds: BM1684X bmodels with tpu-mlir (from the float ONNX), or an
#: INT8 QDQ ONNX for onnxruntime on the CPU.
CompileTarget = Literal["bm1684x", "onnx-int8"]
COMPILE_TARGETS: Final[tuple[CompileTarget, ...]] = get_args(CompileTarget)

#: What a model folder's manifest may list as artifacts.
ArtifactFormat = Literal["onnx", "bmodel", "torchscript", "safetensors"]

#: What a model's channels carry: RGB, or MATLAB's Y (luma) alone.
Color = Literal["RGB", "Y"]
COLORS: Final[tuple[Color, ...]] = get_args(Color)

#: Formats the save stage writes.
OutputExt = Literal["png", "jpg", "webp"]
OUTPUT_EXTS: Final[tuple[OutputExt, ...]] = get_args(OutputExt)

#: File suffixes read as images (by the pipeline's input listing and by calibration).
IMAGE_SUFFIXES: Final[frozenset[str]] = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)
