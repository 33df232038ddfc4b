"""Dispatch: the main job, or a subcommand; a ``BatchSRError`` becomes one line and
exit code 2, in the flags' words."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType

from batchsr.allocator import configure_malloc
from batchsr.cli import analyze, score, selfcheck, tune, upscale
from batchsr.cli.flags import worded
from batchsr.errors import BatchSRError, StoppedError

__all__ = ["SUBCOMMANDS", "Subcommand", "main"]


@dataclass(frozen=True, slots=True)
class Subcommand:
    """One ``run.py NAME ...`` command: its help line, its entry point, and the flags
    of its own parameters (for wording the library's messages)."""

    help: str
    main: Callable[[Sequence[str]], int]
    flags: Mapping[str, str] | None = None

    @classmethod
    def of(cls, module: ModuleType) -> Subcommand:
        return cls(module.HELP, module.main, module.FLAGS)


SUBCOMMANDS: Mapping[str, Subcommand] = {
    "score": Subcommand.of(score),
    "analyze": Subcommand.of(analyze),
    "tune": Subcommand.of(tune),
    "selfcheck": Subcommand.of(selfcheck),
}


def main(argv: Sequence[str] | None = None) -> int:
    """``run.py [SUBCOMMAND] ARGS``; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    configure_malloc()
    t0 = time.perf_counter()
    if args and args[0] in SUBCOMMANDS:
        command = SUBCOMMANDS[args.pop(0)]
    else:
        lines = {name: c.help for name, c in SUBCOMMANDS.items()}
        command = Subcommand("", lambda a: upscale.main(a, subcommands=lines))  # flags: the run's
    try:
        return command.main(args)
    except StoppedError as err:
        print(
            f"\ninterrupted by {signal.Signals(err.signum).name} before any image ran",
            file=sys.stderr,
        )
        return 128 + err.signum
    except BatchSRError as err:
        message = worded(str(err), command.flags)
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted after {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        return 130
