"""Run configuration: TOML presets into frozen dataclasses, with CLI overrides.

``configs/default.toml`` holds every knob with its reason; ``--config FILE`` replaces it
and command-line flags override single fields (``--queue tiles=16`` is the key
``queues.tiles``). Unknown keys and wrong types raise :class:`ConfigError` naming the key,
so a typo never silently falls back to a default.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from batchsr.border import DEFAULT_BORDER
from batchsr.errors import ConfigError
from batchsr.paths import data_folder
from batchsr.vocab import (
    EDGES,
    MULTI_WORKER_STAGES,
    Backend,
    BorderMode,
    Device,
    FilterName,
    OutputExt,
    Quantize,
    TileMode,
)

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "Config",
    "MemoryConfig",
    "ModelConfig",
    "OutputConfig",
    "QueueConfig",
    "TilingConfig",
    "WorkerConfig",
    "build_section",
    "coerce_table",
    "load_config",
    "read_toml",
]

DEFAULT_CONFIG_PATH = data_folder("configs") / "default.toml"

# Engine call limits when the config sets none: the BM1684X emulator (cmodel) takes
# seconds to minutes per call on the CPU (tpu-reference 0), the others well under one.
DEFAULT_ENGINE_TIMEOUT_S = 60.0
CMODEL_ENGINE_TIMEOUT_S = 1800.0


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """Which model runs, and on what.

    Attributes:
        name: a model folder name under ``models/``, a model folder, or a file path.
        backend: ``onnx`` (onnxruntime), ``torch``, ``sail`` (SOPHGO TPU), or
            ``cmodel`` (a bmodel on tpu-mlir's BM1684X emulator: slow, for checking).
        device: ``cpu`` or ``cuda`` for onnx/torch.
        threads: intra-op threads per engine; 0 leaves the runtime's default.
        devices: TPU ids for ``sail``, comma-separated as ``bm-smi`` numbers them.
        engines_per_device: sail engines (infer workers) per TPU; several keep a TPU
            busy while the host fills the next batch (the seed's fastest setup used 4).
        engine_timeout_s: an engine call taking longer counts as failed and its
            engine is replaced; 0 waits forever; None (unset) takes the backend's
            default (:attr:`call_timeout_s`).
        warmup: make one engine call before the clock starts, so that the first image's
            runtime does not carry the engine's one-off costs (off for cmodel).
        quantize: run the model folder's artifact for the backend that computes in
            this (``INT8``: the INT8 ONNX of ``python -m compile ... --target
            onnx-int8``, or an INT8 bmodel); None runs the first the manifest lists
            (the float ONNX; the F16 bmodel of models/espcn). See batchsr.resolve.
    """

    name: str = "espcn"
    backend: Backend = "onnx"
    device: Device = "cpu"
    threads: int = 0
    devices: str = "0"
    engines_per_device: int = 1
    engine_timeout_s: float | None = None
    warmup: bool = True
    quantize: Quantize | None = None

    @property
    def call_timeout_s(self) -> float | None:
        """The engine call limit in force: None means wait forever."""
        if self.engine_timeout_s is not None:
            return self.engine_timeout_s or None
        return CMODEL_ENGINE_TIMEOUT_S if self.backend == "cmodel" else DEFAULT_ENGINE_TIMEOUT_S

    @property
    def device_ids(self) -> tuple[int, ...]:
        """``devices`` parsed (validated by :func:`load_config`)."""
        return tuple(int(d) for d in self.devices.split(","))


@dataclass(frozen=True, slots=True)
class TilingConfig:
    """How images are cut for the engine.

    Attributes:
        tile: tile height and width in input pixels; 0 runs each whole image at once
            (needs a model with dynamic height and width).
        tile_pad: context margin around each tile, cropped away when stitching; None
            takes the model's receptive-field margin, which makes tiled output equal
            whole-image output.
        batch: tiles per engine call for models with a dynamic batch axis (a static
            batch size in the model wins).
        mode: ``crop`` (margins cropped at stitching), ``plain`` (the seed's abutting
            tiles), ``average`` or ``blend`` (overlaps averaged, or weighted by ramps).
        border: how the image is extended past its edges by the margin, so border
            pixels have context: ``replicate`` (default), ``reflect``, or ``zero``
            (the network's own zero padding: a dark/bright frame); see batchsr.border.
        y_only: run the model on MATLAB's Y channel and upscale Cb/Cr bicubically
            (one-channel models such as ESPCN-PyTorch's; automatic for them).
        in_flight: images between the start of tiling and their stitched image at
            once; None (the default) allows one per infer worker (no limit for a
            model of static batch size above one, whose batches fill across images),
            0 leaves it to the buffer sizes. The contest's per-image runtime spans
            exactly that window, so a small one keeps each image from queueing behind
            others' tiles (the next image is admitted as one is stitched; save and
            score still overlap with the next images). Measured on 24 contest
            images, default model, 2 cores: runtime_avg 0.19 s with one per worker
            against 0.50-0.58 s with buffers only, at the same images/s.
        whole_pixels: with a model of free height and width, an image of at most
            this many pixels runs whole, as one window (with its margin), unless the
            mode is ``plain``: 128-pixel tiles compute 1.5 times the pixels of a whole
            510x408 contest image (overhang and margins). The default, 512x512, is
            four times the pixels of a batch of four 128-pixel tiles, and so needs
            four times the engine's activation memory (the default model: about 70 MB
            a 64-channel activation; RRDBNet's x4 layers: 16 times that); larger
            images are tiled. 0 always tiles.
    """

    tile: int = 128
    tile_pad: int | None = None
    batch: int = 4
    mode: TileMode = "crop"
    border: BorderMode = DEFAULT_BORDER
    y_only: bool = False
    in_flight: int | None = None
    whole_pixels: int = 512 * 512


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """Buffer size of each stream between stages, named for what flows on it.

    A larger buffer absorbs jitter between stages at the cost of memory: an SR image
    of 2040x1632 is 10 MB, an SR batch of four 512x512 tiles 12.6 MB.
    """

    paths: int = 16
    decoded: int = 4
    tiles: int = 4
    inferred: int = 4
    stitched: int = 4
    saved: int = 4
    scored: int = 16

    def validate(self) -> None:
        """Raise :class:`ConfigError` for the first buffer that could hold nothing."""
        _check_counts("queues", self, EDGES, 1, math.inf, "a buffer must hold at least 1 item")


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """Concurrent tasks per stage, one field per stage of ``MULTI_WORKER_STAGES``, and
    the priority of the stages off the timed path. Tile and stitch are single tasks by
    design: tile owns the partly filled batch and stitch owns the partly assembled images.

    Attributes:
        background_nice: the nice value (0-19) of the decode, save and score threads,
            so that their work takes only the cores the contest-timed path (tile,
            infer, stitch) leaves (see :mod:`batchsr.pipeline.background`); 0 runs them
            at normal priority.
    """

    decode: int = 1
    infer: int = 1
    save: int = 1
    score: int = 2
    background_nice: int = 10

    def validate(self) -> None:
        """Raise :class:`ConfigError` for the first stage whose worker count is not 1-64,
        or a nice value outside 0-19."""
        _check_counts("workers", self, MULTI_WORKER_STAGES, 1, 64, "must be between 1 and 64")
        _check_counts("workers", self, ("background_nice",), 0, 19, "use 0 (normal) to 19 (lowest)")


@dataclass(frozen=True, slots=True)
class OutputConfig:
    """Where results go and how they are written.

    Attributes:
        dir: output folder; None means ``results/<model>/``.
        compress_level: PNG compression 0-9 (see :mod:`batchsr.png`): 0 stores, 1
            filters and Huffman-codes (fast), 2-9 full zlib. PNG is lossless at every
            level, so this only trades file size for encode time.
        score: compute NIQE for each output.
        filter: a PIL sharpening filter applied to each SR image before saving
            (``SHARPEN``, ``DETAIL``, ``EDGE_ENHANCE``, ``EDGE_ENHANCE_MORE``), or None.
            The contest runtime excludes it, as the seed's figures did.
        max_pixels: inputs larger than this are refused before decoding
            (decompression-bomb guard).
        suffix: appended to each output's name (``a.png`` -> ``a_x4.png`` for ``_x4``).
        ext: output format: ``png`` (lossless, the contest's), ``jpg`` or ``webp``
            (lossy: NIQE is scored on the pixels written, read back from the file).
        quality: JPEG/WebP quality, 1-100 (ignored for PNG).
        rgb: write grey inputs' outputs as RGB too (by default they stay grey: one
            channel, luma of the SR image).
    """

    dir: Path | None = None
    compress_level: int = 1
    score: bool = True
    filter: FilterName | None = None
    max_pixels: int = 40_000_000
    suffix: str = ""
    ext: OutputExt = "png"
    quality: int = 95
    rgb: bool = False


@dataclass(frozen=True, slots=True)
class MemoryConfig:
    """A memory budget for the images in flight (see :mod:`batchsr.pipeline.budget`).

    Attributes:
        max_mib: the process's memory (RSS) to keep to, in MiB; 0 sets no budget and
            only the buffer sizes bound what is in flight. What the process holds
            before the first image (interpreter, libraries, engines) is measured at
            the start and the rest is the images' budget.
        bytes_per_pixel: an image's estimated peak footprint per output pixel (its
            tiles, the engine's float outputs, the SR image, encoder and NIQE
            transients), measured by ``benchmarks/memory.py``.
        mmap_threshold_kib: fix glibc's mmap threshold (KiB): blocks that large are
            returned to the system when freed, so the peak no longer depends on the
            run's history (1024: 1-2% between runs instead of 4-14%, for 10-15% of
            throughput); 0 keeps glibc's adaptive default (see batchsr.allocator).
    """

    max_mib: int = 0
    bytes_per_pixel: float = 32.0
    mmap_threshold_kib: int = 0

    @property
    def mmap_threshold(self) -> int | None:
        """``mmap_threshold_kib`` in bytes, None for glibc's default."""
        return self.mmap_threshold_kib * 1024 or None


@dataclass(frozen=True, slots=True)
class Config:
    """A whole run's configuration."""

    model: ModelConfig = field(default_factory=ModelConfig)
    tiling: TilingConfig = field(default_factory=TilingConfig)
    queues: QueueConfig = field(default_factory=QueueConfig)
    workers: WorkerConfig = field(default_factory=WorkerConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form, for the log's start record."""
        return json.loads(json.dumps(dataclasses.asdict(self), default=str))

    def pixel_hash(self, model_sha256: str = "") -> str:
        """Short hash of what decides output pixels (for resume checks).

        Args:
            model_sha256: digest of the artifact that runs, so new weights under an
                old name never pass for the old outputs.
        """
        keyed = self.pixel_settings(model_sha256)
        return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:16]

    def pixel_settings(self, model_sha256: str = "") -> dict[str, Any]:
        """The settings that decide output pixels, by name (what :meth:`pixel_hash`
        hashes; a resume that finds other ones names those that differ)."""
        return {
            "model": self.model.name,
            "model_sha256": model_sha256,
            "backend": self.model.backend,
            "tile": self.tiling.tile,
            "whole_pixels": self.tiling.whole_pixels,
            "tile_pad": self.tiling.tile_pad,
            "mode": self.tiling.mode,
            "border": self.tiling.border,
            "y_only": self.tiling.y_only,
            "filter": self.output.filter,
            "ext": self.output.ext,
            "quality": self.output.quality if self.output.ext != "png" else None,
            "rgb": self.output.rgb,
        }


_SECTIONS: dict[str, type] = {f.name: f.default_factory for f in dataclasses.fields(Config)}  # type: ignore[misc]


def load_config(path: Path | None = None, overrides: Mapping[str, Any] | None = None) -> Config:
    """Build a :class:`Config` from a TOML file plus dotted-key overrides.

    Args:
        path: TOML file; None reads ``configs/default.toml`` when it exists, else
            uses the built-in defaults.
        overrides: ``{"section.key": value}`` applied over the file, e.g.
            ``{"queues.tiles": 16, "workers.infer": 2}``.

    Raises:
        ConfigError: the file is missing or malformed, or a key or value is invalid.
    """
    raw: dict[str, Any] = {}
    source = path if path is not None else DEFAULT_CONFIG_PATH
    if path is not None or DEFAULT_CONFIG_PATH.exists():
        _text, raw = read_toml(source)
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        if not key:
            raise ConfigError(f"override {dotted!r} must be 'section.key'")
        table = raw.setdefault(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: [{section}] must be a table")
        table[key] = value
    unknown = set(raw) - set(_SECTIONS)
    if unknown:
        raise ConfigError(
            f"{source}: unknown section(s) {sorted(unknown)}; known: {sorted(_SECTIONS)}"
        )
    built = {
        name: build_section(cls, raw.get(name, {}), where=f"{source} [{name}]")
        for name, cls in _SECTIONS.items()
    }
    config = Config(**built)
    _validate(config)
    return config


def read_toml(path: Path) -> tuple[str, dict[str, Any]]:
    """A TOML file's text and its parsed table.

    Raises:
        ConfigError: the file is missing or not valid TOML.
    """
    try:
        text = path.read_text(encoding="utf-8")
        return text, tomllib.loads(text)
    except FileNotFoundError as err:
        raise ConfigError(f"config file {path} does not exist") from err
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path} is not valid TOML: {err}") from err


def build_section(cls: type, table: Any, *, where: str) -> Any:
    """The dataclass ``cls`` from a TOML table: keys are its fields, values checked
    against their types; a field without a default must be given.

    Raises:
        ConfigError: not a table, an unknown or missing key, or a value of the wrong type.
    """
    fields = dataclasses.fields(cls)
    hints = typing.get_type_hints(cls)
    values = coerce_table(table, {f.name: hints[f.name] for f in fields}, where=where)
    required = {
        f.name
        for f in fields
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    missing = required - set(values)
    if missing:
        raise ConfigError(f"{where}: missing required key(s) {sorted(missing)}")
    return cls(**values)


def coerce_table(table: Any, hints: Mapping[str, Any], *, where: str) -> dict[str, Any]:
    """A TOML table's values checked against ``hints`` (key -> type), by key.

    Raises:
        ConfigError: not a table, a key not in ``hints``, or a value of the wrong type.
    """
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table of keys")
    unknown = set(table) - set(hints)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(hints)}")
    return {key: _coerce(value, hints[key], where=f"{where} {key}") for key, value in table.items()}


def _coerce(value: Any, hint: Any, *, where: str) -> Any:
    """Check ``value`` against a field's type; TOML has no null, so "none" means None."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        is_none = value is None or (isinstance(value, str) and value.lower() == "none")
        if is_none and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, where=where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is tuple:
        return _coerce_tuple(value, args, where=where)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
    elif hint is int or hint is float:
        # A float field takes an int (TOML's 2 for 2.0), an int field no float; bool is
        # an int to Python but never a number here.
        numeric = int if hint is int else int | float
        if isinstance(value, numeric) and not isinstance(value, bool):
            return hint(value)
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                return hint(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    elif hint is Path and isinstance(value, str | Path):
        return Path(value)
    raise ConfigError(f"{where}: expected {getattr(hint, '__name__', hint)}, got {value!r}")


def _coerce_tuple(value: Any, args: tuple[Any, ...], *, where: str) -> tuple[Any, ...]:
    """A TOML array as ``tuple[X, ...]`` (any length) or ``tuple[A, B, ...]`` (fixed)."""
    if not isinstance(value, list | tuple):
        raise ConfigError(f"{where}: expected an array, got {value!r}")
    if len(args) == 2 and args[1] is Ellipsis:
        hints = [args[0]] * len(value)
    elif len(value) == len(args):
        hints = list(args)
    else:
        raise ConfigError(f"{where}: expected {len(args)} values, got {value!r}")
    return tuple(
        _coerce(v, h, where=f"{where}[{i}]")
        for i, (v, h) in enumerate(zip(value, hints, strict=True))
    )


def _check_counts(
    section: str, record: object, keys: Sequence[str], low: int, high: float, rule: str
) -> None:
    """Raise :class:`ConfigError` with ``rule`` for the first of ``keys`` whose count in
    ``record`` (a section) is outside ``low``-``high``."""
    for key in keys:
        count = getattr(record, key)
        if not low <= count <= high:
            raise ConfigError(f"{section}.{key} = {count}: {rule}")


def _validate(config: Config) -> None:
    config.queues.validate()
    config.workers.validate()
    tiling = config.tiling
    if tiling.tile < 0:
        raise ConfigError(f"tiling.tile = {tiling.tile}: use a positive size, or 0 for none")
    if tiling.tile_pad is not None and tiling.tile_pad < 0:
        raise ConfigError(f"tiling.tile_pad = {tiling.tile_pad}: must be >= 0")
    if tiling.tile and tiling.tile_pad is not None and tiling.tile <= 2 * tiling.tile_pad:
        raise ConfigError(
            f"tiling.tile = {tiling.tile} leaves no core inside a margin of "
            f"{tiling.tile_pad} on each side; use tile > 2 * tile_pad"
        )
    if tiling.batch < 1:
        raise ConfigError(f"tiling.batch = {tiling.batch}: must be >= 1")
    if tiling.whole_pixels < 0:
        raise ConfigError(
            f"tiling.whole_pixels = {tiling.whole_pixels}: use 0 (always tile) or a pixel count"
        )
    if not 1 <= config.output.quality <= 100:
        raise ConfigError(f"output.quality = {config.output.quality}: use 1-100")
    suffix = config.output.suffix
    if any(sep in suffix for sep in ("/", "\\", "\0")) or suffix in (".", ".."):
        raise ConfigError(f"output.suffix = {suffix!r}: a suffix cannot hold a path separator")
    if config.tiling.in_flight is not None and config.tiling.in_flight < 0:
        raise ConfigError(
            f"tiling.in_flight = {config.tiling.in_flight}: use 0 (buffers only) or images"
        )
    if config.memory.max_mib < 0:
        raise ConfigError(f"memory.max_mib = {config.memory.max_mib}: use 0 (no budget) or MiB")
    if config.memory.mmap_threshold_kib < 0:
        raise ConfigError(
            f"memory.mmap_threshold_kib = {config.memory.mmap_threshold_kib}: use 0 "
            "(glibc's default) or KiB, e.g. 1024"
        )
    if config.memory.bytes_per_pixel <= 0:
        raise ConfigError(
            f"memory.bytes_per_pixel = {config.memory.bytes_per_pixel}: must be above 0"
        )
    if not 0 <= config.output.compress_level <= 9:
        raise ConfigError(f"output.compress_level = {config.output.compress_level}: use 0-9")
    if config.output.max_pixels < 1:
        raise ConfigError("output.max_pixels must be positive")
    model = config.model
    parts = model.devices.split(",")
    if not all(p.strip().isdigit() for p in parts) or len(set(parts)) != len(parts):
        raise ConfigError(
            f"model.devices = {model.devices!r}: use distinct TPU ids separated by commas, e.g. 0,1"
        )
    if not 1 <= model.engines_per_device <= 16:
        raise ConfigError(f"model.engines_per_device = {model.engines_per_device}: use 1-16")
    if model.engine_timeout_s is not None and not model.engine_timeout_s >= 0:
        raise ConfigError(
            f"model.engine_timeout_s = {model.engine_timeout_s}: use 0 (none) or more"
        )
    if config.model.threads < 0:
        raise ConfigError(f"model.threads = {config.model.threads}: use 0 (default) or more")
