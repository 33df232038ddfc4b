"""The only place that configures structlog.

Library modules call ``structlog.get_logger()`` and never configure anything; the CLI
and the test fixtures call :func:`configure_logging`. Records are JSON lines written to
the run's log file: the console shows the CLI's human summary instead.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import IO, Any, TextIO

import structlog

__all__ = ["LogSink", "configure_logging"]


class _LockedWriter:
    """A structlog logger writing whole lines under a lock: stages log from worker
    threads as well as from the event loop, and lines must never interleave."""

    def __init__(self, file: IO[str]) -> None:
        self._file = file
        self._lock = threading.Lock()

    def msg(self, message: str) -> None:
        with self._lock:
            self._file.write(message + "\n")
            self._file.flush()

    log = debug = info = warning = warn = error = critical = exception = fatal = msg


class LogSink:
    """The open log file of a run; close it when the run ends."""

    def __init__(self, file: TextIO | None) -> None:
        self._file = file

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def configure_logging(path: Path | None, *, level: str = "info", append: bool = False) -> LogSink:
    """Send structlog events as JSON lines to ``path``, or nowhere.

    Args:
        path: the JSON-lines log file; its folder is created. None drops all events.
        level: the lowest level written (``debug`` adds per-tile records).
        append: keep earlier runs' records (a resumed run continues its log).

    Returns:
        The sink to close at the end of the run.
    """
    file: TextIO | None = None
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        file = path.open("a" if append else "w", encoding="utf-8")
    factory: Any
    if file is None:
        factory = structlog.ReturnLoggerFactory()
    else:
        writer = _LockedWriter(file)

        def factory(*_args: Any) -> _LockedWriter:
            return writer

    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.dict_tracebacks,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=factory,
        # Off so that reconfiguring (tests, a second run in one process) takes effect.
        cache_logger_on_first_use=False,
    )
    return LogSink(file)
