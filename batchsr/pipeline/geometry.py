"""The tile geometry of a run: what the engine's shapes, the model and the ``tiling``
settings allow, decided once before the stages start (``batchsr.tiling`` cuts with it).
"""

from __future__ import annotations

from batchsr.config import TilingConfig
from batchsr.engines.base import Engine
from batchsr.errors import ConfigError, EngineError
from batchsr.resolve import ResolvedModel
from batchsr.tiling import TileGeometry, round_up
from batchsr.vocab import CORE_MODES

__all__ = ["DEFAULT_TILE_PAD", "geometry_for"]

# Context margin used when neither the config nor the model's manifest gives one
# (a bare .onnx file): wide enough for the small x4 models the contest used.
DEFAULT_TILE_PAD = 8


def geometry_for(engine: Engine, tiling: TilingConfig, model: ResolvedModel) -> TileGeometry:
    """Tile geometry from the engine's shape; static model dimensions win over config.

    Raises:
        ConfigError: the settings cannot work with this engine.
        EngineError: the engine does not take RGB input.
    """
    n, c, h, w = engine.input_shapes[0]
    y_only = tiling.y_only or c == 1
    if c != (1 if y_only else 3):
        raise EngineError(
            f"{model.path} takes {c} input channels; the pipeline feeds RGB (3), or Y (1) "
            "with `tiling.y_only`"
        )
    if tiling.tile == 0 and (h is not None or w is not None):
        raise ConfigError(
            f"`tiling.tile` 0 (whole images) needs a model with dynamic height and width; "
            f"{model.path} is fixed at {h}x{w}"
        )
    multiple = model.size_multiple
    if any(side is not None and side % multiple for side in (h, w)):
        raise EngineError(
            f"{model.path} is fixed at {h}x{w}, but its model takes only multiples of "
            f"{multiple} (the manifest's size_multiple)"
        )
    # A free side is cut in tiles of the configured size, rounded up to what the model
    # can take.
    tile_h = h if h is not None else round_up(tiling.tile, multiple)
    tile_w = w if w is not None else round_up(tiling.tile, multiple)
    pad, rim = _margins(tiling, model, tile_h, tile_w)
    batch = n if n is not None else (1 if tiling.tile == 0 else tiling.batch)
    # A combined bmodel may hold the same tile at smaller batch sizes: use them for the
    # last, partial batch.
    tails = sorted(
        {s[0] for s in engine.input_shapes if s[1:] == (c, h, w) and s[0] is not None} - {batch}
    )
    return TileGeometry(
        tile_h=tile_h,
        tile_w=tile_w,
        alt_tiles=_alt_tiles(engine, pad),
        pad=pad,
        rim=rim,
        batch=batch,
        static_batch=n is not None,
        dynamic_hw=h is None and w is None,
        scale=engine.scale,
        mode=tiling.mode,
        border=tiling.border,
        y_only=y_only,
        tail_batches=tuple(t for t in tails if t < batch) if n is not None else (),
        multiple=multiple,
        whole_pixels=tiling.whole_pixels,
    )


def _margins(
    tiling: TilingConfig, model: ResolvedModel, tile_h: int, tile_w: int
) -> tuple[int, int]:
    """``(pad, rim)``: the context margin around each core, and the rim of each window
    that overlapping modes give no weight.

    Raises:
        ConfigError: a tile leaves no core inside the margin.
    """
    margin = model.margin or DEFAULT_TILE_PAD
    context = tiling.tile_pad if tiling.tile_pad is not None else margin
    pad, rim = context, 0
    if tiling.mode not in CORE_MODES and bool(tile_h):
        # Averaging and blending give no weight to each window's rim of ``context``
        # pixels (computed without full context), so the windows overlap twice as far
        # beyond it to have something to average or blend; a small static tile without
        # room for that blends within the margin instead.
        pad, rim = (
            (2 * context, context) if min(tile_h, tile_w) > 4 * context else (context, context // 2)
        )
    if tile_h and min(tile_h, tile_w) <= 2 * pad:
        raise ConfigError(
            f"tile {tile_h}x{tile_w} leaves no core inside a margin of {pad} px; "
            "use a larger tile or a smaller `tiling.tile_pad`"
        )
    return pad, rim


def _alt_tiles(engine: Engine, pad: int) -> tuple[tuple[int, int], ...]:
    """Other static tile sizes at the first shape's batch size (a combined bmodel, e.g.
    128x128 and 192x256) that leave a core: each image is cut with whichever needs the
    fewest device calls."""
    n, c, h, w = engine.input_shapes[0]
    return tuple(
        sorted(
            {
                (sh, sw)
                for sn, sc, sh, sw in engine.input_shapes
                if sn == n
                and sc == c
                and sh is not None
                and sw is not None
                and (sh, sw) != (h, w)
                and min(sh, sw) > 2 * pad
            }
        )
    )
