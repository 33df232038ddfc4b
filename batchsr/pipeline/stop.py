"""A request from outside a run to stop it, as an interrupt stops it.

The library watches no signal and never exits the process: the caller decides what
stops a run (the CLI turns the first SIGINT/SIGTERM into a request, and exits on the
second itself). A requested stop cancels the stages; the report keeps every finished
image, the log ends with ``run_interrupted`` and the result names the signal.
"""

from __future__ import annotations

import anyio

__all__ = ["StopRequest"]


class StopRequest:
    """A stop a run may be asked for, once.

    Create it inside the event loop that runs the pipeline, and call :meth:`request`
    from that loop's thread (a task watching signals does). The cluster driver, which
    runs in a worker thread, only reads :attr:`signum`.
    """

    def __init__(self) -> None:
        self._signum: int | None = None
        self._requested = anyio.Event()

    @property
    def signum(self) -> int | None:
        """The signal the stop was requested for; None while none was."""
        return self._signum

    def request(self, signum: int) -> None:
        """Ask the run to stop for ``signum``; a later request changes nothing."""
        if self._signum is None:
            self._signum = signum
            self._requested.set()

    async def wait(self) -> int:
        """Return, with the signal, once a stop is requested."""
        await self._requested.wait()
        assert self._signum is not None
        return self._signum
