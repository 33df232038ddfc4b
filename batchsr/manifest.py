"""Model folders: a ``manifest.json`` beside the artifacts built from one model.

``run.py --model NAME`` resolves ``models/NAME/manifest.json`` (in the repo, or under
``--models-dir``); ``compile`` writes it. The manifest is the single record of what a
model is (scale, channels, input range, tiling margin) and which files were built from
it, so nothing downstream works these facts out again from command-line flags.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchsr.errors import ModelError
from batchsr.vocab import ArtifactFormat, Color

if TYPE_CHECKING:
    from batchsr.models.info import ModelInfo

__all__ = [
    "MANIFEST_NAME",
    "Artifact",
    "Manifest",
    "StageFacts",
    "file_artifact",
    "file_sha256",
    "load_manifest",
    "manifest_for",
    "write_manifest",
]

MANIFEST_NAME = "manifest.json"
# One NCHW shape; None marks a dynamic axis.
Shape = tuple[int | None, int | None, int | None, int | None]


@dataclass(frozen=True, slots=True)
class StageFacts:
    """What tpu-mlir reported when it built one stage (tile shape) of a bmodel.

    Attributes:
        shape: the stage's static NCHW input shape.
        cycles, estimated_ms: tpu-mlir's cost-model estimate of one call on the
            BM1684X (deploy's ``compiler_profile_0.txt``); the emulator gives no timing.
        quant_check, quant_cosine, quant_sqnr_db: deploy's check of the TPU-level
            (quantised) MLIR against the float top-level MLIR on the test input:
            npz_tool's verdict (EQUAL, CLOSE and SIMILAR pass) and, for SIMILAR, its
            cosine similarity and SQNR (it prints none for EQUAL or CLOSE).
        emulator_check, emulator_cosine, emulator_sqnr_db: the same for deploy's check
            of the bmodel, run on the BM1684X emulator, against the TPU-level MLIR.
    """

    shape: tuple[int, int, int, int]
    cycles: int | None = None
    estimated_ms: float | None = None
    quant_check: str | None = None
    quant_cosine: float | None = None
    quant_sqnr_db: float | None = None
    emulator_check: str | None = None
    emulator_cosine: float | None = None
    emulator_sqnr_db: float | None = None


@dataclass(frozen=True, slots=True)
class Artifact:
    """One deployable file of a model folder.

    Attributes:
        path: file name relative to the model folder.
        format: what runs it: ``onnx`` (onnxruntime), ``bmodel`` (sophon.sail),
            ``torchscript`` or ``safetensors`` (torch).
        shapes: the NCHW input shapes it holds; ``None`` marks a dynamic axis.
        size_bytes: file size, reported as the contest's ``model_size``.
        sha256: hex digest of the file, to detect a stale or swapped artifact.
        quantize: numeric format it computes in (``F32``, ``F16``, ``BF16``, ``INT8``).
        stages: for a bmodel, what tpu-mlir reported per stage.
        command: for a bmodel or an INT8 ONNX, the command that built it.
        quant_psnr_db: for an INT8 ONNX, the PSNR of its output against the float
            ONNX's on the calibration tiles, as measured when it was built.
    """

    path: str
    format: ArtifactFormat
    shapes: tuple[Shape, ...]
    size_bytes: int
    sha256: str
    quantize: str = "F32"
    stages: tuple[StageFacts, ...] = ()
    command: str = ""
    quant_psnr_db: float | None = None


@dataclass(frozen=True, slots=True)
class Manifest:
    """What a model folder holds and what its model is.

    Attributes:
        name: model name, as ``--model`` takes it.
        architecture: zoo architecture id (``espcn``, ``fsrcnn``, ...).
        scale: upscale factor of every artifact.
        in_channels: input channels (3 for RGB, 1 for Y-only models).
        out_channels: output channels.
        input_range: value range the model expects and returns, ``(0.0, 1.0)``.
        color: ``RGB`` or ``Y``: what the channels hold.
        margin: receptive-field radius in input pixels; a tile margin at least this
            wide makes tiled inference equal whole-image inference.
        size_multiple: input height and width must be multiples of this.
        postprocess: name of a sharpening filter embedded in the artifacts, if any.
        artifacts: the built files.
        tools: versions of the tools that built them (torch, onnx, tpu-mlir, ...).
        notes: free text: provenance, training run, licence.
    """

    name: str
    architecture: str
    scale: int
    in_channels: int
    out_channels: int
    artifacts: tuple[Artifact, ...]
    input_range: tuple[float, float] = (0.0, 1.0)
    color: Color = "RGB"
    margin: int = 0
    size_multiple: int = 1
    postprocess: str | None = None
    tools: tuple[tuple[str, str], ...] = field(default=())
    notes: str = ""

    def artifact(self, fmt: ArtifactFormat) -> Artifact | None:
        """Return the first artifact of format ``fmt``, or None."""
        return next((a for a in self.artifacts if a.format == fmt), None)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["tools"] = dict(self.tools)
        data["input_range"] = list(self.input_range)
        data["artifacts"] = [_artifact_json(a) for a in self.artifacts]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any], *, source: Path) -> Manifest:
        try:
            artifacts = tuple(
                Artifact(
                    path=a["path"],
                    format=a["format"],
                    shapes=tuple(_shape(s) for s in a["shapes"]),
                    size_bytes=int(a["size_bytes"]),
                    sha256=a["sha256"],
                    quantize=a.get("quantize", "F32"),
                    stages=tuple(_stage(s) for s in a.get("stages", ())),
                    command=a.get("command", ""),
                    quant_psnr_db=a.get("quant_psnr_db"),
                )
                for a in data["artifacts"]
            )
            lo, hi = data.get("input_range", (0.0, 1.0))
            return cls(
                name=data["name"],
                architecture=data["architecture"],
                scale=int(data["scale"]),
                in_channels=int(data["in_channels"]),
                out_channels=int(data["out_channels"]),
                artifacts=artifacts,
                input_range=(float(lo), float(hi)),
                color=data.get("color", "RGB"),
                margin=int(data.get("margin", 0)),
                size_multiple=int(data.get("size_multiple", 1)),
                postprocess=data.get("postprocess"),
                tools=tuple(sorted(data.get("tools", {}).items())),
                notes=data.get("notes", ""),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ModelError(
                f"{source}: malformed model manifest ({type(err).__name__}: {err}); "
                "rebuild it with `python -m compile`"
            ) from err


def _artifact_json(a: Artifact) -> dict[str, Any]:
    data = {**asdict(a), "shapes": [list(s) for s in a.shapes]}
    # Only built artifacts carry build facts; keep other artifacts' entries as they were.
    if not a.stages:
        data.pop("stages")
    else:
        data["stages"] = [{**asdict(s), "shape": list(s.shape)} for s in a.stages]
    if not a.command:
        data.pop("command")
    if a.quant_psnr_db is None:
        data.pop("quant_psnr_db")
    return data


def _stage(raw: dict[str, Any]) -> StageFacts:
    n, c, h, w = (int(v) for v in raw["shape"])
    return StageFacts(
        shape=(n, c, h, w),
        **{k: raw.get(k) for k in StageFacts.__dataclass_fields__ if k != "shape"},
    )


def _shape(raw: list[int | None]) -> Shape:
    if len(raw) != 4:
        raise ValueError(f"shape {raw} is not NCHW")
    n, c, h, w = (None if v is None else int(v) for v in raw)
    return (n, c, h, w)


# What a manifest records of its network's ModelInfo, under the same names; the
# hyperparameters and tags stay with the zoo code that rebuilds the network.
_RECORDED_FACTS = (
    "architecture",
    "scale",
    "in_channels",
    "out_channels",
    "input_range",
    "color",
    "margin",
    "size_multiple",
)


def manifest_for(
    name: str,
    info: ModelInfo,
    artifacts: tuple[Artifact, ...],
    *,
    postprocess: str | None = None,
    tools: dict[str, str] | None = None,
    notes: str = "",
) -> Manifest:
    """The one place a :class:`Manifest` is built from a model's :class:`ModelInfo`.

    Args:
        name: the model (folder) name.
        info: the facts of the network the artifacts were built from (with any
            embedded postprocess already applied, so its margin is the final one).
        artifacts: the built files.
        postprocess: name of an embedded sharpening filter, if any.
        tools: tool name -> version.
        notes: free text.
    """
    return Manifest(
        name=name,
        artifacts=artifacts,
        postprocess=postprocess,
        tools=tuple(sorted((tools or {}).items())),
        notes=notes,
        **{key: getattr(info, key) for key in _RECORDED_FACTS},
    )


def file_artifact(
    path: Path,
    fmt: ArtifactFormat,
    shapes: tuple[Shape, ...],
    *,
    quantize: str = "F32",
    stages: tuple[StageFacts, ...] = (),
    command: str = "",
    quant_psnr_db: float | None = None,
) -> Artifact:
    """An :class:`Artifact` for a file of the model folder, with its size and sha256."""
    return Artifact(
        path=path.name,
        format=fmt,
        shapes=shapes,
        size_bytes=path.stat().st_size,
        sha256=file_sha256(path),
        quantize=quantize,
        stages=stages,
        command=command,
        quant_psnr_db=quant_psnr_db,
    )


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_manifest(folder: Path) -> Manifest:
    """Read ``folder/manifest.json``.

    Raises:
        ModelError: the file is missing or malformed.
    """
    path = folder / MANIFEST_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ModelError(f"{folder} has no {MANIFEST_NAME}; is it a model folder?") from err
    except json.JSONDecodeError as err:
        raise ModelError(f"{path}: not valid JSON ({err})") from err
    return Manifest.from_json(data, source=path)


def write_manifest(folder: Path, manifest: Manifest) -> Path:
    """Write ``folder/manifest.json`` atomically and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / MANIFEST_NAME
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest.to_json(), indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path
