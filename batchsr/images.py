"""Reading image files: the inputs a run lists and how one file becomes RGB pixels.

EXIF orientation is applied (a rotated phone photo comes out upright). Colour handling
(the README repeats it): grey, palette and CMYK images are converted to RGB; alpha is
dropped (the colour channels are kept as stored); 16-bit images are
scaled to 8 bits with rounding. Bit depth comes from the PIL mode, never from pixel
values. An image with more than ``max_pixels`` pixels is refused from its header,
before any pixel is decoded.

The decode stage, the folder scorer and calibration read files through here, so an
image is converted the same way wherever it is read.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps, UnidentifiedImageError

from batchsr.errors import DecodeError, InputError
from batchsr.records import Job
from batchsr.vocab import IMAGE_SUFFIXES

__all__ = ["decode_image", "list_inputs", "unread_subfolders"]

_EXIF_ORIENTATION = 0x0112
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})


def list_inputs(path: Path, *, recursive: bool = False) -> list[Job]:
    """The jobs for ``path``: one image file, or every image-named entry of a folder
    (of its whole tree with ``recursive``), sorted by (relative) name.

    Entries are chosen by suffix only, so a broken file or a folder named ``x.png``
    still becomes a job and then one error row, instead of vanishing unreported. A job
    from a subfolder is named by its relative path (``sub/a``), which its output mirrors.

    Raises:
        InputError: ``path`` does not exist, is a file without an image suffix, is a
            file given with ``recursive``, or is a folder holding no image-named entries.
    """
    suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
    if path.is_file():
        if recursive:
            raise InputError(f"`recursive` needs a folder, and `input` {path} is a file")
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            raise InputError(f"`input` {path} is not an image file (looked for {suffixes})")
        return [Job(id=0, name=path.stem, path=path)]
    if not path.is_dir():
        raise InputError(f"`input` {path} is not a folder or an image file: it does not exist")
    found = path.rglob("*") if recursive else path.iterdir()
    entries = sorted(
        (p for p in found if p.suffix.lower() in IMAGE_SUFFIXES and _kept(p, path)),
        key=lambda p: os.fsencode(p.relative_to(path).as_posix()),
    )
    if not entries:
        where = "its tree" if recursive else path
        raise InputError(f"`input` {path}: {where} holds no images (looked for {suffixes})")
    stems = [p.relative_to(path).with_suffix("").as_posix() for p in entries]
    # Two inputs with one stem (a.png, a.jpg) would write one output: keep the suffix.
    names = [
        p.relative_to(path).as_posix() if stems.count(stem) > 1 else stem
        for p, stem in zip(entries, stems, strict=True)
    ]
    return [Job(id=i, name=n, path=p) for i, (n, p) in enumerate(zip(names, entries, strict=True))]


def _kept(entry: Path, root: Path) -> bool:
    """Not inside a hidden folder of the tree (``.git``, an earlier run's temp files),
    and not a folder named like an image inside a subfolder (reported at the top level
    only, where the user named the folder)."""
    rel = entry.relative_to(root).parts
    if any(part.startswith(".") for part in rel[:-1]):
        return False
    return len(rel) == 1 or not entry.is_dir()


def unread_subfolders(folder: Path) -> list[Path]:
    """Subfolders of ``folder`` holding image-named files, which a run without
    ``recursive`` does not read (the CLI says so rather than skip them silently)."""
    if not folder.is_dir():
        return []
    return sorted(
        d
        for d in folder.iterdir()
        if d.is_dir()
        and not d.name.startswith(".")
        and any(p.suffix.lower() in IMAGE_SUFFIXES for p in d.rglob("*"))
    )


def decode_image(path: Path, *, max_pixels: int) -> tuple[NDArray[np.uint8], str, bytes | None]:
    """Read one image file as RGB.

    Returns:
        (HxWx3 uint8 RGB array, the file's PIL mode, its embedded ICC profile or None).
        The pixels are the file's values, not converted to sRGB: the profile goes with
        them to the output, so colour management stays the viewer's, as for the input.

    Raises:
        DecodeError: unreadable, not an image, truncated, or too large.
    """
    try:
        with warnings.catch_warnings():
            # Our own max_pixels check below is the guard; PIL's warning would only
            # duplicate it (and is an error under pytest's filterwarnings).
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise DecodeError(
                        f"{path.name}: {width}x{height} is over the {max_pixels}-pixel "
                        "limit (`output.max_pixels`); refused before decoding"
                    )
                img.load()
                mode = img.mode
                # A phone's JPEG is stored sideways with an EXIF Orientation tag that
                # viewers apply; apply it too, or the output comes out rotated.
                upright: Image.Image = img
                if img.getexif().get(_EXIF_ORIENTATION, 1) != 1:
                    upright = ImageOps.exif_transpose(img)
                icc = img.info.get("icc_profile") or None
                return _to_rgb(upright), mode, icc
    except DecodeError:
        raise
    except IsADirectoryError as err:
        raise DecodeError(f"{path.name}: is a folder, not an image file") from err
    except FileNotFoundError as err:
        raise DecodeError(f"{path.name}: file not found (a broken link?)") from err
    except PermissionError as err:
        raise DecodeError(f"{path.name}: not readable ({err.strerror})") from err
    except UnidentifiedImageError as err:
        raise DecodeError(f"{path.name}: not a recognised image format") from err
    except Image.DecompressionBombError as err:
        raise DecodeError(f"{path.name}: refused as a decompression bomb ({err})") from err
    except (OSError, SyntaxError, ValueError) as err:
        raise DecodeError(f"{path.name}: cannot decode ({err})") from err


def _to_rgb(img: Image.Image) -> NDArray[np.uint8]:
    if img.mode in _SIXTEEN_BIT_MODES:
        grey = np.asarray(img, dtype=np.float64)
        grey8 = np.clip(np.rint(grey * (255.0 / 65535.0)), 0, 255).astype(np.uint8)
        return np.repeat(grey8[:, :, None], 3, axis=2)
    if img.mode == "P" and "transparency" in img.info:
        # PIL only converts palette transparency correctly by way of RGBA.
        img = img.convert("RGBA")
    rgb = img if img.mode == "RGB" else img.convert("RGB")
    return np.asarray(rgb, dtype=np.uint8)
