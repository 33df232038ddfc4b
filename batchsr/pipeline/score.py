"""Score stage: NIQE of each saved image, on exactly the pixels that were saved.

NIQE is undefined for some images (smaller than a 96x96 block, or too flat); such an
image keeps its output and runtime, and its row carries the reason instead of a score.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from numpy.typing import NDArray

from batchsr.errors import NIQEError
from batchsr.pipeline.background import BackgroundThreads
from batchsr.pipeline.stage import Meter
from batchsr.records import Failed, Saved, Scored

__all__ = ["run_score"]

Scorer = Callable[[NDArray[np.uint8]], float]


async def run_score(
    receive: MemoryObjectReceiveStream[Saved | Failed],
    send: MemoryObjectSendStream[Scored | Failed],
    *,
    scorer: Scorer | None,
    worker: int = 0,
    threads: BackgroundThreads | None = None,
) -> None:
    """Score each image in a worker thread (None skips scoring); closes ``send`` at the end."""
    meter: Meter[Saved | Failed] = Meter("score", worker)
    async with receive, send:
        async for item in meter.work(receive, send):
            value: float | None = None
            error: str | None = None
            if scorer is not None:
                try:
                    value = await meter.in_thread(scorer, item.rgb, threads=threads)
                except NIQEError as err:
                    error = str(err)
                    meter.log.warning("niqe_undefined", image_id=item.id, reason=error)
                except Exception as err:
                    error = f"{type(err).__name__}: {err}"
                    meter.log.error("niqe_failed", image_id=item.id, error=error, exc_info=err)
            await meter.send(send, item.scored(value, error))
            meter.done(image_id=item.id, niqe=value)
