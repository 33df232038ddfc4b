"""What only the command line may do to the process: leave it without waiting for
threads that will never finish."""

from __future__ import annotations

import os
import sys

__all__ = ["exit_if_engine_calls_hang"]


def exit_if_engine_calls_hang(code: int) -> None:
    """A device call abandoned after its timeout may never return, and Python waits
    for every thread at exit: the run is complete and written, so leave without them."""
    from batchsr.pipeline.infer import abandoned_calls

    if abandoned_calls():
        print(
            f"warning: {abandoned_calls()} engine call(s) timed out and are still running; "
            "exiting without waiting for them",
            file=sys.stderr,
        )
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
