"""Decode stage: input files to RGB uint8 images.

Colour handling (the README repeats it): grey, palette and CMYK images are converted
to RGB; alpha is dropped (the colour channels are kept as stored); 16-bit images are
scaled to 8 bits with rounding. Bit depth comes from the PIL mode, never from pixel
values. An image with more than ``max_pixels`` pixels is refused from its header,
before any pixel is decoded.
"""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path

import anyio
import numpy as np
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from numpy.typing import NDArray
from PIL import Image, UnidentifiedImageError

from batchsr.errors import DecodeError, InputError
from batchsr.pipeline.stage import Meter, failed_from
from batchsr.records import Decoded, Failed, Job, freeze

__all__ = ["IMAGE_SUFFIXES", "decode_image", "list_inputs", "run_decode"]

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})


def list_inputs(folder: Path) -> list[Job]:
    """The jobs for every image-named entry of ``folder``, sorted by name.

    Entries are chosen by suffix only, so a broken file or a folder named ``x.png``
    still becomes a job and then one error row, instead of vanishing unreported.

    Raises:
        InputError: ``folder`` is not a folder, or holds no image-named entries.
    """
    if not folder.is_dir():
        raise InputError(f"--input {folder} is not a folder; pass a folder of images")
    entries = sorted(
        (p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES),
        key=lambda p: os.fsencode(p.name),
    )
    if not entries:
        raise InputError(
            f"--input {folder} holds no images (looked for {', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    stems = [p.stem for p in entries]
    # Two inputs with one stem (a.png, a.jpg) would write one output: keep the suffix.
    names = [p.name if stems.count(p.stem) > 1 else p.stem for p in entries]
    return [Job(id=i, name=n, path=p) for i, (n, p) in enumerate(zip(names, entries, strict=True))]


def decode_image(path: Path, *, max_pixels: int) -> tuple[NDArray[np.uint8], str]:
    """Read one image file as RGB.

    Returns:
        (HxWx3 uint8 RGB array, the file's PIL mode).

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
                        "limit (output.max_pixels); refused before decoding"
                    )
                img.load()
                return _to_rgb(img), img.mode
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


async def run_decode(
    receive: MemoryObjectReceiveStream[Job],
    send: MemoryObjectSendStream[Decoded | Failed],
    *,
    max_pixels: int,
    worker: int = 0,
) -> None:
    """Decode each job in a worker thread; closes ``send`` when ``receive`` is done."""
    meter: Meter[Job] = Meter("decode", worker)
    async with receive, send:
        while (job := await meter.receive(receive)) is not None:
            out: Decoded | Failed
            try:
                rgb, mode = await anyio.to_thread.run_sync(
                    functools.partial(decode_image, job.path, max_pixels=max_pixels)
                )
                out = Decoded(id=job.id, name=job.name, rgb=freeze(rgb), mode=mode)
            except Exception as err:
                out = failed_from(
                    err, image_id=job.id, name=job.name, stage="decode", log=meter.log
                )
            await meter.send(send, out)
            meter.done(image_id=job.id)
