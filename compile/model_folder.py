"""Writing a model folder: its checked ONNX export and the manifest that lists its files.

``python -m compile`` (compile.build) and ``python -m batchsr.train`` both write model
folders through this module; what differs between them (which example the export
traces, how closely it must match torch, which other files the folder deploys, an
existing manifest to add to) comes in as parameters. ``compile`` never imports
``batchsr.train``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from batchsr.manifest import Artifact, Manifest, Shape, file_artifact, manifest_for, write_manifest
from batchsr.models import SRModel
from batchsr.models.info import ModelInfo
from batchsr.versions import versions
from batchsr.vocab import NCHW
from compile.onnx import DEFAULT_OPSET, check_onnx, export_onnx

__all__ = [
    "ONNX_ATOL",
    "PENDING_NOTES",
    "FolderOnnx",
    "python_tools",
    "write_model_folder",
    "write_onnx",
]

# The largest |onnxruntime - torch| a network's export may show.
ONNX_ATOL = 1e-4
# Manifest notes that start so describe a build still to do, not the folder's provenance;
# a later build replaces them.
PENDING_NOTES = "bmodel pending"


@dataclass(frozen=True, slots=True)
class FolderOnnx:
    """A model folder's ONNX file, checked against the network it was exported from.

    Attributes:
        path: the ``.onnx`` file.
        info: the facts of that network (with any embedded postprocess).
        max_abs_diff: the largest |onnxruntime - torch| over the check shapes.
    """

    path: Path
    info: ModelInfo
    max_abs_diff: float

    @property
    def shapes(self) -> tuple[Shape, ...]:
        """The input shapes it takes: any batch, height and width."""
        return ((None, self.info.in_channels, None, None),)

    def artifact(self) -> Artifact:
        """Its manifest entry, with size and sha256."""
        return file_artifact(self.path, "onnx", self.shapes)


def python_tools() -> dict[str, str]:
    """Versions of the Python-side tools that export and check the ONNX."""
    return versions("torch", "onnx", "onnxruntime")


def write_onnx(
    model: SRModel,
    path: Path,
    *,
    check_shapes: Sequence[NCHW],
    example: NCHW | None = None,
    opset: int = DEFAULT_OPSET,
    atol: float = ONNX_ATOL,
    reuse: bool = False,
) -> FolderOnnx:
    """Export ``model`` to ``path`` with dynamic N/H/W and check it against torch.

    Args:
        model: the network, as the folder deploys it.
        path: the ``.onnx`` file to write.
        check_shapes: NCHW inputs the file must match torch on within ``atol``.
        example: the NCHW input the export traces; None takes one the model accepts
            with N, H and W all unequal (see ``compile.onnx.export_onnx``).
        opset: ONNX opset of the export.
        atol: the largest absolute difference allowed.
        reuse: check the file already at ``path`` instead of exporting.

    Raises:
        CompileError: the export fails or differs from torch.
    """
    info = model.info
    if not reuse:
        if example is None:
            m = info.size_multiple
            example = (2, info.in_channels, 16 * m + 2 * info.margin, 24 * m + 2 * info.margin)
        export_onnx(model.module, path, shape=example, dynamic=True, opset=opset)
    diff = check_onnx(model.module, path, shapes=list(check_shapes), atol=atol)
    return FolderOnnx(path=path, info=info, max_abs_diff=diff)


def write_model_folder(
    out: Path,
    name: str,
    onnx: FolderOnnx,
    *,
    more: Sequence[Artifact] = (),
    postprocess: str | None = None,
    tools: Mapping[str, str] | None = None,
    notes: str = "",
    previous: Manifest | None = None,
) -> Manifest:
    """Write ``out/manifest.json`` for a folder whose files are written already.

    Args:
        out: the model folder.
        name: the model's name.
        onnx: its ONNX export; the manifest's facts (margin, colour...) are its network's.
        more: the folder's other artifacts, listed after the ONNX.
        postprocess: the filter embedded in the export, if any.
        tools: tool versions beyond :func:`python_tools`'s.
        notes: the manifest's free text.
        previous: the manifest already in ``out`` when adding to it: its artifacts stay
            (those of the same file name are replaced), its tools stay unless given
            again, and its notes (provenance) stay unless empty or ``PENDING_NOTES``.

    Returns:
        The manifest written.
    """
    artifacts = [onnx.artifact(), *more]
    versions = {**python_tools(), **(tools or {})}
    if previous is not None:
        built = {a.path: a for a in artifacts}
        kept = [built.pop(a.path, a) for a in previous.artifacts]
        artifacts = [*kept, *built.values()]
        versions = {**dict(previous.tools), **versions}
        if previous.notes and not previous.notes.startswith(PENDING_NOTES):
            notes = previous.notes
    manifest = manifest_for(
        name, onnx.info, tuple(artifacts), postprocess=postprocess, tools=versions, notes=notes
    )
    write_manifest(out, manifest)
    return manifest
