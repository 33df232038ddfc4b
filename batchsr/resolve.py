"""Resolve ``--model`` to the one artifact that will run.

``--model`` takes a model name (a folder under ``models/`` with a manifest), a model
folder path, or a single file (``.onnx``; ``.pt``/``.ts`` TorchScript, which torch runs).
For a folder the backend picks the artifact (``onnx`` -> ONNX, ``torch`` ->
TorchScript or safetensors, ``sail`` and ``cmodel`` -> bmodel): the first the manifest
lists, or the first that computes in ``model.quantize`` when that is set (``INT8``: the
INT8 ONNX that ``python -m compile ... --target onnx-int8`` adds, or an INT8 bmodel); for
a file, the file decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from batchsr.errors import ModelError, setting
from batchsr.manifest import (
    MANIFEST_NAME,
    Artifact,
    ArtifactFormat,
    Manifest,
    file_sha256,
    load_manifest,
)
from batchsr.paths import data_folder

__all__ = ["MODELS_DIR", "ResolvedModel", "available_models", "resolve_model"]

MODELS_DIR = data_folder("models")

_BACKEND_FORMATS: dict[str, tuple[ArtifactFormat, ...]] = {
    "onnx": ("onnx",),
    "torch": ("torchscript", "safetensors"),
    "sail": ("bmodel",),
    "cmodel": ("bmodel",),
}
_SUFFIX_FORMATS: dict[str, ArtifactFormat] = {
    ".onnx": "onnx",
    ".ts": "torchscript",
    ".torchscript": "torchscript",
    ".bmodel": "bmodel",
    ".safetensors": "safetensors",
    # torch.save files: a state dict, or (for .pt) possibly TorchScript; told apart below
    ".pt": "safetensors",
    ".pth": "safetensors",
    ".ckpt": "safetensors",
}


@dataclass(frozen=True, slots=True, init=False)
class ResolvedModel:
    """The artifact chosen for a run and what is known about its model.

    What the model is (scale, margin, channels, size multiple) is read from its
    manifest when there is one, the one record of those facts; a model without one (a
    bare file, a checkpoint) carries what is known of it instead, None where nothing is
    (the engine then reports scale, and tiling uses its own margin).

    Attributes:
        name: model name, used for the default output folder.
        path: the artifact file that will run.
        format: how it runs.
        manifest: the model folder's manifest, if there is one.
        artifact: the manifest's entry for ``path``, if there is one.

    Args:
        scale, margin, in_channels, size_multiple: what is known of a model without a
            manifest; beside a manifest they may only repeat it.

    Raises:
        ModelError: a fact given beside a manifest contradicts it.
    """

    name: str
    path: Path
    format: ArtifactFormat
    manifest: Manifest | None
    artifact: Artifact | None
    _scale: int | None
    _margin: int | None
    _in_channels: int | None
    _size_multiple: int | None

    def __init__(
        self,
        name: str,
        path: Path,
        format: ArtifactFormat,
        scale: int | None = None,
        margin: int | None = None,
        in_channels: int | None = None,
        manifest: Manifest | None = None,
        artifact: Artifact | None = None,
        *,
        size_multiple: int | None = None,
    ) -> None:
        given = {
            "scale": scale,
            "margin": margin,
            "in_channels": in_channels,
            "size_multiple": size_multiple,
        }
        if manifest is not None:
            wrong = {k: v for k, v in given.items() if v not in (None, getattr(manifest, k))}
            if wrong:
                raise ModelError(f"{path}: {wrong} contradicts its manifest")
            if artifact is None:
                # Built by hand from a manifest (tools, tests): its entry for this file.
                artifact = next((a for a in manifest.artifacts if a.path == path.name), None)
        for attr, value in (
            ("name", name),
            ("path", path),
            ("format", format),
            ("manifest", manifest),
            ("artifact", artifact),
            *((f"_{k}", v) for k, v in given.items()),
        ):
            object.__setattr__(self, attr, value)

    @property
    def scale(self) -> int | None:
        """The upscale factor, if known before an engine is opened."""
        return self.manifest.scale if self.manifest is not None else self._scale

    @property
    def margin(self) -> int | None:
        """The receptive-field radius in input pixels, if known."""
        return self.manifest.margin if self.manifest is not None else self._margin

    @property
    def in_channels(self) -> int | None:
        """Input channels (3 RGB, 1 Y-only), if known."""
        return self.manifest.in_channels if self.manifest is not None else self._in_channels

    @property
    def size_multiple(self) -> int:
        """What input heights and widths must be multiples of (1: anything)."""
        if self.manifest is not None:
            return self.manifest.size_multiple
        return self._size_multiple or 1

    @property
    def size_bytes(self) -> int:
        """Size of the artifact that runs: the report's ``model_size``."""
        return self.path.stat().st_size

    def log_record(self) -> dict[str, str | int]:
        """What a run's start record says of the model."""
        record: dict[str, str | int] = {
            "name": self.name,
            "path": str(self.path),
            "format": self.format,
            "size_bytes": self.size_bytes,
        }
        if self.artifact is not None:
            record["quantize"] = self.artifact.quantize
        return record


def available_models(models_dir: Path = MODELS_DIR) -> list[str]:
    """Names of the model folders under ``models_dir``."""
    if not models_dir.is_dir():
        return []
    return sorted(p.parent.name for p in models_dir.glob(f"*/{MANIFEST_NAME}"))


def resolve_model(
    spec: str, *, backend: str, quantize: str | None = None, models_dir: Path = MODELS_DIR
) -> ResolvedModel:
    """Turn ``--model`` into the artifact to run.

    Args:
        spec: a model name, a model folder, or a file.
        backend: what runs it; it picks the artifact format.
        quantize: pick the artifact that computes in this (``model.quantize``); None
            takes the first listed. A file listed in its folder's manifest must compute
            in it; a bare file runs as it is.

    Raises:
        ModelError: no such model, or the folder has no artifact for ``backend`` (and
            ``quantize``).
    """
    path = Path(spec)
    if path.is_file():
        fmt = _SUFFIX_FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise ModelError(
                f"{path}: unknown model file type {path.suffix!r}; pass an .onnx file, a "
                "checkpoint (.safetensors, .pth, .pt), a TorchScript archive, a .bmodel, "
                "or a model folder name"
            )
        if fmt == "safetensors":
            return _resolve_checkpoint(path)
        listed = _listed_in_folder(path)
        if listed is not None:
            held = listed.artifact.quantize if listed.artifact is not None else None
            if quantize is not None and held != quantize:
                raise ModelError(
                    f"{path} computes in {held}, not {setting('model.quantize', quantize)}: "
                    f"name its folder to pick the {quantize} artifact, or unset `model.quantize`"
                )
            return listed
        if quantize is not None:
            # Silently running the file's own precision would label float figures INT8.
            raise ModelError(
                f"{path} is a bare file: `model.quantize` ({quantize}) picks among the "
                "artifacts a model folder's manifest lists; name the folder, or unset it"
            )
        return ResolvedModel(name=path.stem, path=path, format=fmt)
    folder = path if path.is_dir() else models_dir / spec
    if not (folder / MANIFEST_NAME).is_file():
        known = ", ".join(available_models(models_dir)) or "none"
        raise ModelError(
            f"unknown model {spec!r}: not a file, and no {MANIFEST_NAME} in {folder}. "
            f"Models here: {known}"
        )
    manifest = load_manifest(folder)
    formats = _BACKEND_FORMATS.get(backend, ())
    candidates = [a for fmt in formats for a in manifest.artifacts if a.format == fmt]
    if not candidates:
        have = sorted({a.format for a in manifest.artifacts})
        raise ModelError(
            f"model {manifest.name!r} has no artifact for backend {backend!r} "
            f"(it has {have}); build one with `python -m compile` or pick another backend"
        )
    artifact = next((a for a in candidates if quantize in (None, a.quantize)), None)
    if artifact is None:
        raise ModelError(_no_quantize(folder, manifest, backend, quantize, candidates))
    return _from_manifest(folder, manifest, artifact)


def _no_quantize(
    folder: Path, manifest: Manifest, backend: str, quantize: str | None, found: list[Artifact]
) -> str:
    """Why no artifact of the folder computes in ``quantize``, and how to build one."""
    have = ", ".join(sorted({a.quantize for a in found}))
    if backend == "onnx" and quantize == "INT8":
        c = manifest.in_channels
        build = (
            f"build it with `python -m compile {folder} --target onnx-int8 --shape "
            f"4x{c}x128x128 --calibration PHOTOS/ --out {folder}`"
        )
    else:
        build = "build one with `python -m compile`"
    return (
        f"model {manifest.name!r} has no {backend} artifact in {quantize} "
        f"({setting('model.quantize', quantize)}; its {backend} artifacts compute in {have}): "
        f"{build}, or unset `model.quantize`"
    )


def _from_manifest(folder: Path, manifest: Manifest, artifact: Artifact) -> ResolvedModel:
    artifact_path = folder / artifact.path
    if not artifact_path.is_file():
        raise ModelError(f"{artifact_path} is listed in {folder / MANIFEST_NAME} but missing")
    # A swapped or rebuilt bmodel would run with the manifest's stage shapes and
    # margin; its digest says whether it is the file the manifest describes.
    if artifact.format == "bmodel" and file_sha256(artifact_path) != artifact.sha256:
        raise ModelError(
            f"{artifact_path} is not the bmodel {folder / MANIFEST_NAME} lists (sha256 "
            "differs): the bmodel and the manifest disagree; rebuild them together with "
            "`python -m compile`, or register the new bmodel (`python -m compile --register`)"
        )
    return ResolvedModel(
        name=manifest.name,
        path=artifact_path,
        format=artifact.format,
        manifest=manifest,
        artifact=artifact,
    )


def _listed_in_folder(path: Path) -> ResolvedModel | None:
    """A file given by path that its folder's manifest lists (e.g. one of several
    bmodels of ``models/espcn``) keeps the manifest's facts (margin, stage shapes)."""
    if not (path.parent / MANIFEST_NAME).is_file():
        return None
    try:
        manifest = load_manifest(path.parent)
    except ModelError:
        return None
    artifact = next((a for a in manifest.artifacts if a.path == path.name), None)
    return None if artifact is None else _from_manifest(path.parent, manifest, artifact)


def _resolve_checkpoint(path: Path) -> ResolvedModel:
    """A weights file: detect its architecture now, so a bad checkpoint fails before
    anything is written, and the tiler gets the model's margin."""
    from batchsr.models.registry import detect_arch, is_torchscript, read_state_dict

    if is_torchscript(path):
        # The user named this file explicitly, which is the consent TorchScript needs.
        return ResolvedModel(name=path.stem, path=path, format="torchscript")
    state_dict = read_state_dict(path)
    info = detect_arch(state_dict).load(state_dict).info
    return ResolvedModel(
        name=path.stem,
        path=path,
        format="safetensors",
        scale=info.scale,
        margin=info.margin,
        in_channels=info.in_channels,
        size_multiple=info.size_multiple,
    )
