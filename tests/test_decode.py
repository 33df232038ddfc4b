"""Decoding: every colour mode becomes HxWx3 uint8 RGB; bad files raise DecodeError."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from batchsr.errors import DecodeError, InputError
from batchsr.images import decode_image, list_inputs


def _save(img: Image.Image, path: Path, **kw: object) -> Path:
    img.save(path, **kw)
    return path


def test_grey_is_replicated_to_three_channels(tmp_path: Path) -> None:
    grey = np.arange(60, dtype=np.uint8).reshape(6, 10)
    rgb, mode, _ = decode_image(_save(Image.fromarray(grey), tmp_path / "g.png"), max_pixels=10**6)
    assert mode == "L" and rgb.shape == (6, 10, 3) and rgb.dtype == np.uint8
    assert all(np.array_equal(rgb[:, :, c], grey) for c in range(3))


def test_alpha_is_dropped_keeping_stored_colour(tmp_path: Path) -> None:
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 0  # fully transparent red
    rgb, mode, _ = decode_image(_save(Image.fromarray(rgba), tmp_path / "a.png"), max_pixels=10**6)
    assert mode == "RGBA" and rgb.shape == (4, 5, 3) and (rgb[..., 0] == 200).all()


def test_sixteen_bit_grey_is_scaled_by_bit_depth_not_by_value(tmp_path: Path) -> None:
    # A dark 16-bit image (all values < 256) must stay dark, not be mistaken for 8-bit.
    values = np.array([[0, 257, 65535, 200]], dtype=np.uint16)
    img = Image.fromarray(values)
    rgb, mode, _ = decode_image(_save(img, tmp_path / "s.png"), max_pixels=10**6)
    assert mode.startswith("I")
    assert rgb[0, :, 0].tolist() == [0, 1, 255, 1]


def test_palette_with_transparency_and_cmyk_convert_to_rgb(tmp_path: Path) -> None:
    pal = Image.fromarray(np.arange(16, dtype=np.uint8).reshape(4, 4)).convert("P")
    pal.info["transparency"] = 0
    rgb, _, _ = decode_image(_save(pal, tmp_path / "p.png", transparency=0), max_pixels=10**6)
    assert rgb.shape == (4, 4, 3)
    cmyk = Image.new("CMYK", (3, 2), (0, 255, 255, 0))  # red in CMYK
    rgb, mode, _ = decode_image(_save(cmyk, tmp_path / "c.jpg"), max_pixels=10**6)
    assert mode == "CMYK" and rgb.shape == (2, 3, 3) and rgb[0, 0, 0] > 200 and rgb[0, 0, 1] < 60


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_bytes(b""), "not a recognised image format"),
        (lambda p: p.write_text("hello"), "not a recognised image format"),
        (lambda p: p.mkdir(), "is a folder"),
        (lambda p: p.symlink_to(p.parent / "nowhere.png"), "file not found"),
    ],
)
def test_unreadable_inputs_raise_decode_error(tmp_path: Path, make, message: str) -> None:
    path = tmp_path / "bad.png"
    make(path)
    with pytest.raises(DecodeError, match=message):
        decode_image(path, max_pixels=10**6)


def test_truncated_png_raises_decode_error(tmp_path: Path) -> None:
    good = _save(
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)),
        tmp_path / "g.png",
    )
    bad = tmp_path / "t.png"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(DecodeError, match=r"t\.png"):
        decode_image(bad, max_pixels=10**6)


def test_oversized_image_is_refused_from_its_header(tmp_path: Path) -> None:
    path = _save(Image.new("L", (3000, 2000)), tmp_path / "big.png")
    with pytest.raises(DecodeError, match="refused before decoding"):
        decode_image(path, max_pixels=1_000_000)


def test_list_inputs_sorts_keeps_bad_entries_and_disambiguates_stems(tmp_path: Path) -> None:
    for name in ("b.png", "a.png", "a.jpg", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "dir.png").mkdir()
    jobs = list_inputs(tmp_path)
    assert [j.name for j in jobs] == ["a.jpg", "a.png", "b", "dir"]
    assert [j.id for j in jobs] == [0, 1, 2, 3]
    # One image file is a job of its own; a file that is not image-named is refused.
    (single,) = list_inputs(tmp_path / "b.png")
    assert (single.name, single.path) == ("b", tmp_path / "b.png")
    with pytest.raises(InputError, match="is not an image file"):
        list_inputs(tmp_path / "notes.txt")
    with pytest.raises(InputError, match="`recursive` needs a folder"):
        list_inputs(tmp_path / "b.png", recursive=True)
    with pytest.raises(InputError, match="is not a folder or an image file"):
        list_inputs(tmp_path / "missing")


def test_recursive_input_mirrors_the_tree_and_skips_hidden_folders(tmp_path: Path) -> None:
    from batchsr.files import output_path
    from batchsr.images import unread_subfolders

    for rel in ("top.png", "sub/a.png", "sub/deeper/b.jpg", "sub/a.jpg", ".cache/x.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    assert [j.name for j in list_inputs(tmp_path)] == ["top"]
    assert [d.name for d in unread_subfolders(tmp_path)] == ["sub"]
    jobs = list_inputs(tmp_path, recursive=True)
    assert [j.name for j in jobs] == ["sub/a.jpg", "sub/a.png", "sub/deeper/b", "top"]
    out = tmp_path / "out"
    assert output_path(out, "sub/deeper/b", "_x4") == out / "sub" / "deeper" / "b_x4.png"
    for bad in ("../x", "sub//x", "sub/../../x", ""):
        with pytest.raises(ValueError, match="cannot be used"):
            output_path(out, bad)
