"""Bad inputs: each odd or broken file costs exactly one row, with a clear message,
while the good images of the same run complete (issue: reliability)."""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import anyio
import numpy as np
import pytest
from PIL import Image

from batchsr.config import load_config
from batchsr.files import output_path
from batchsr.images import list_inputs
from batchsr.pipeline.run import run_pipeline
from batchsr.resolve import ResolvedModel
from tests.helpers.images import photo_like


def _png16_rgb(arr: np.ndarray) -> bytes:
    """A 16-bit RGB PNG, written by hand: PIL cannot write 48-bit RGB."""
    h, w, _ = arr.shape
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def _encoded(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


PHOTO = photo_like(100, 120, seed=7)
GOOD_PNG = _encoded(Image.fromarray(PHOTO), "PNG")
GOOD_JPEG = _encoded(Image.fromarray(PHOTO), "JPEG", quality=90)


def _bomb_png() -> bytes:
    """A tiny file whose header claims 10000 x 10000 pixels (100 M): over our 40 M
    limit, under PIL's own hard limit, so our header check is what refuses it."""
    return _encoded(Image.new("1", (10000, 10000)), "PNG")


# name -> (how to make it, expected: "ok", "ok+niqe_error" or a message in the error row)
CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "zero_byte.png": (lambda p: p.write_bytes(b""), "not a recognised image format"),
    "truncated.png": (lambda p: p.write_bytes(GOOD_PNG[: len(GOOD_PNG) // 2]), "cannot decode"),
    "truncated_jpeg.jpg": (
        lambda p: p.write_bytes(GOOD_JPEG[: len(GOOD_JPEG) // 2]),
        "cannot decode",
    ),
    "text.png": (lambda p: p.write_text("just some text\n"), "not a recognised image format"),
    "folder.png": (lambda p: p.mkdir(), "is a folder"),
    "broken_link.png": (lambda p: p.symlink_to(p.parent / "missing.png"), "file not found"),
    "bomb.png": (lambda p: p.write_bytes(_bomb_png()), "refused before decoding"),
    "grey_L.png": (lambda p: p.write_bytes(_encoded(Image.fromarray(PHOTO[..., 0]), "PNG")), "ok"),
    "grey_alpha_LA.png": (
        lambda p: p.write_bytes(_encoded(Image.fromarray(PHOTO[..., :2].copy(), "LA"), "PNG")),
        "ok",
    ),
    "rgba.png": (
        lambda p: p.write_bytes(
            _encoded(Image.fromarray(np.dstack([PHOTO, PHOTO[..., :1]]), "RGBA"), "PNG")
        ),
        "ok",
    ),
    "grey16.png": (
        lambda p: p.write_bytes(
            _encoded(Image.fromarray(PHOTO[..., 0].astype(np.uint16) * 257), "PNG")
        ),
        "ok",
    ),
    "rgb16.png": (lambda p: p.write_bytes(_png16_rgb(PHOTO.astype(np.uint16) * 257)), "ok"),
    "palette_transparent.png": (
        lambda p: p.write_bytes(
            _encoded(Image.fromarray(PHOTO).quantize(64), "PNG", transparency=0)
        ),
        "ok",
    ),
    "cmyk.jpg": (
        lambda p: p.write_bytes(_encoded(Image.fromarray(PHOTO).convert("CMYK"), "JPEG")),
        "ok",
    ),
    "one_pixel.png": (
        lambda p: p.write_bytes(_encoded(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG")),
        "ok+niqe_error",
    ),
    "small_20x16.png": (
        lambda p: p.write_bytes(_encoded(Image.fromarray(PHOTO[:16, :20].copy()), "PNG")),
        "ok+niqe_error",
    ),
}


@pytest.fixture(scope="module")
def bad_run(tmp_path_factory: pytest.TempPathFactory, espcn_onnx: Path) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("bad")
    for name, (make, _) in CASES.items():
        make(folder / name)
    (folder / "good.png").write_bytes(GOOD_PNG)
    # A file name that is not valid UTF-8 (bytes the file system accepts as they are).
    odd = os.fsdecode(b"caf\xe9_latin1.png")
    (folder / odd).write_bytes(GOOD_PNG)
    out = folder.parent / (folder.name + "_out")
    config = load_config(None, {"tiling.tile": 64})

    async def go():
        with anyio.fail_after(120):
            return await run_pipeline(
                list_inputs(folder),
                config=config,
                out_dir=out,
                model=ResolvedModel("m", espcn_onnx, "onnx", margin=4),
            )

    anyio.run(go)
    report = json.loads((out / "report.json").read_text())
    rows = {r["img_name"]: r for r in report["A"][0]["images"]}
    return out, rows


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_bad_or_odd_input_is_one_row(bad_run: tuple[Path, dict], name: str) -> None:
    out, rows = bad_run
    row = rows[Path(name).stem]
    expected = CASES[name][1]
    if expected.startswith("ok"):
        assert row["runtime"] is not None, row
        with Image.open(out / f"{Path(name).stem}.png") as img:
            # Grey inputs stay grey (one channel); everything else is written RGB.
            assert img.mode == ("L" if name.startswith("grey") else "RGB")
        if expected == "ok+niqe_error":
            assert row["niqe"] is None and "NIQEError" in row["error"]
        else:
            assert row.get("error") is None and float(row["niqe"]) > 0
    else:
        assert row["runtime"] is None and row["niqe"] is None
        assert expected in row["error"] and row["error"].startswith("decode: DecodeError")
        assert not (out / f"{Path(name).stem}.png").exists()


def test_good_images_complete_beside_the_bad_ones(bad_run: tuple[Path, dict]) -> None:
    out, rows = bad_run
    assert len(rows) == len(CASES) + 2
    for name in ("good", os.fsdecode(b"caf\xe9_latin1")):
        assert float(rows[name]["niqe"]) > 0
        assert (out / f"{name}.png").is_file()
    # The report is valid JSON with every row, even with a non-UTF-8 name in it.
    assert json.loads((out / "report.json").read_text())


def test_output_names_cannot_escape_the_output_folder(tmp_path: Path) -> None:
    for name in ("..", "../x", "a/../../b", "/abs", ""):
        with pytest.raises(ValueError, match="cannot be used"):
            output_path(tmp_path, name)
    assert output_path(tmp_path, "x").parent == tmp_path
    # A recursive input's relative name mirrors its folder, still inside the output.
    assert output_path(tmp_path, "a/b").parent == tmp_path / "a"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file_is_a_decode_error(tmp_path: Path) -> None:
    from batchsr.errors import DecodeError
    from batchsr.images import decode_image

    path = tmp_path / "locked.png"
    path.write_bytes(GOOD_PNG)
    path.chmod(0)
    with pytest.raises(DecodeError, match="not readable"):
        decode_image(path, max_pixels=10**6)
