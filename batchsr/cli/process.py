"""What only the command line may do to the process: turn SIGINT/SIGTERM into a stop
request the library honours, exit at once on a second one, and leave without waiting
for threads that will never finish."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio

from batchsr.pipeline.stop import StopRequest

__all__ = ["exit_if_engine_calls_hang", "stop_on_signals", "until_signalled"]

T = TypeVar("T")
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


async def until_signalled(run: Callable[[StopRequest], Awaitable[T]]) -> T:
    """``run(stop)`` beside :func:`stop_on_signals`, so the first SIGINT/SIGTERM stops
    it cleanly; what it raises comes out as itself, not inside an ExceptionGroup (the
    CLI turns a ``BatchSRError`` into one line)."""
    stop = StopRequest()
    failure: Exception | None = None
    async with anyio.create_task_group() as tg:
        tg.start_soon(stop_on_signals, stop)
        try:
            result = await run(stop)
        except Exception as err:
            failure = err
        tg.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return result


async def stop_on_signals(stop: StopRequest) -> None:
    """The first SIGINT/SIGTERM requests ``stop`` (the run keeps every finished image);
    from then on a second one exits the process at once, with 128 + its number. Runs
    until cancelled, then puts the previous handlers back."""
    previous: dict[int, Any] = {sig: signal.getsignal(sig) for sig in _STOP_SIGNALS}
    try:
        with anyio.open_signal_receiver(*_STOP_SIGNALS) as received:
            async for signum in received:
                stop.request(int(signum))
                break
        # From here on the user wants out now: no second graceful stop. A handler, not
        # the receiver: it acts even while the event loop is blocked.
        for sig in _STOP_SIGNALS:
            signal.signal(sig, _exit_now)
        await anyio.sleep_forever()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _exit_now(signum: int, _frame: object) -> None:
    os._exit(128 + signum)


def exit_if_engine_calls_hang(code: int, abandoned: int) -> None:
    """A device call abandoned after its timeout may never return, and Python waits
    for every thread at exit: the run is complete and written, so leave without them."""
    if abandoned:
        print(
            f"warning: {abandoned} engine call(s) timed out and are still running; "
            "exiting without waiting for them",
            file=sys.stderr,
        )
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
