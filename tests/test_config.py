"""Config loading: defaults, TOML files, CLI overrides, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchsr.config import DEFAULT_CONFIG_PATH, Config, load_config
from batchsr.errors import ConfigError
from batchsr.vocab import EDGES


def test_default_toml_matches_the_builtin_defaults() -> None:
    """configs/default.toml documents every knob; it must not drift from the code."""
    assert DEFAULT_CONFIG_PATH.is_file()
    assert load_config() == Config()


def test_overrides_replace_single_fields(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[queues]\ntiles = 7\n[workers]\nscore = 3\n")
    config = load_config(path, {"queues.decoded": 9, "tiling.tile_pad": "none", "workers.infer": 2})
    assert config.queues.tiles == 7 and config.queues.decoded == 9
    assert config.workers.score == 3 and config.workers.infer == 2
    assert config.tiling.tile_pad is None
    assert set(EDGES) == {"paths", "decoded", "tiles", "inferred", "stitched", "saved", "scored"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[queue]\ntiles = 1\n", "unknown section(s) ['queue']"),
        ("[queues]\ntiles = 0\n", "queues.tiles = 0"),
        ("[tiling]\ntile = 16\ntile_pad = 8\n", "leaves no core"),
        ("[model]\nbackend = 'tpu'\n", "'tpu' is not one of"),
        ("[output]\ncompress_level = 'high'\n", "expected int"),
        ("queues = 3\n", "must be a table"),
    ],
)
def test_invalid_configs_raise_config_error_naming_the_key(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=None) as info:
        load_config(path)
    assert message in str(info.value)


def test_pixel_hash_changes_with_pixel_settings_only() -> None:
    base = load_config()
    assert base.pixel_hash() == load_config(None, {"queues.tiles": 32}).pixel_hash()
    assert base.pixel_hash() != load_config(None, {"tiling.tile": 64}).pixel_hash()
