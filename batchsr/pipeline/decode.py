"""Decode stage: input files to RGB uint8 images, each read in a worker thread by
:func:`batchsr.images.decode_image` (colour handling, EXIF orientation, the pixel
limit: see there).
"""

from __future__ import annotations

import functools

from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from batchsr.images import decode_image
from batchsr.pipeline.background import BackgroundThreads
from batchsr.pipeline.stage import Meter, failed_from
from batchsr.records import Decoded, Failed, Job, freeze

__all__ = ["run_decode"]


async def run_decode(
    receive: MemoryObjectReceiveStream[Job],
    send: MemoryObjectSendStream[Decoded | Failed],
    *,
    max_pixels: int,
    worker: int = 0,
    threads: BackgroundThreads | None = None,
) -> None:
    """Decode each job in a worker thread; closes ``send`` when ``receive`` is done."""
    meter: Meter[Job] = Meter("decode", worker)
    async with receive, send:
        while (job := await meter.receive(receive)) is not None:
            out: Decoded | Failed
            try:
                rgb, mode, icc = await meter.in_thread(
                    functools.partial(decode_image, job.path, max_pixels=max_pixels),
                    threads=threads,
                )
                out = Decoded(id=job.id, name=job.name, rgb=freeze(rgb), mode=mode, icc_profile=icc)
            except Exception as err:
                out = failed_from(
                    err, image_id=job.id, name=job.name, stage="decode", log=meter.log
                )
            await meter.send(send, out)
            meter.done(image_id=job.id)
