"""The only place that configures structlog.

Library modules call ``structlog.get_logger()`` and never configure anything; the CLI
and the test fixtures call :func:`configure_logging`. Records are JSON lines written to
the run's log file: the console shows the CLI's human summary instead.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any, TextIO

import structlog

__all__ = ["LogSink", "RecordBuffer", "configure_buffered_logging", "configure_logging"]


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

    def __init__(self, file: TextIO | None, writer: _LockedWriter | None = None) -> None:
        self._file = file
        self._writer = writer

    def write_lines(self, lines: Sequence[str]) -> None:
        """Append already rendered JSON lines (a cluster worker's records), each whole."""
        if self._writer is not None:
            for line in lines:
                self._writer.msg(line)

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
    writer = None
    if file is None:
        factory = structlog.ReturnLoggerFactory()
    else:
        writer = _LockedWriter(file)

        def factory(*_args: Any) -> _LockedWriter:
            return writer

    _configure(factory, level, ())
    return LogSink(file, writer)


class RecordBuffer:
    """Rendered JSON lines kept in memory until taken: a cluster worker has no log file
    of its own and hands its records to the driver with each chunk's rows."""

    def __init__(self) -> None:
        self._lines: list[str] = []
        self._lock = threading.Lock()

    def msg(self, message: str) -> None:
        with self._lock:
            self._lines.append(message)

    log = debug = info = warning = warn = error = critical = exception = fatal = msg

    def drain(self) -> list[str]:
        """Every line since the last drain, oldest first."""
        with self._lock:
            lines, self._lines = self._lines, []
        return lines


def configure_buffered_logging(
    buffer: RecordBuffer,
    *,
    level: str = "info",
    fields: Mapping[str, Any] | None = None,
    clock_offset: float = 0.0,
    renames: Mapping[str, str] | None = None,
) -> None:
    """Send structlog events as JSON lines into ``buffer``.

    Args:
        fields: added to every record (a cluster worker's ``node`` and ``pipeline``).
        clock_offset: added to the ``t_start``/``t_end`` stage times, which are
            ``perf_counter`` readings and mean nothing outside their process: with
            ``time.time() - time.perf_counter()`` they become wall-clock seconds, so
            records from several hosts share one time axis (to the hosts' clock sync).
        renames: event names to write under another name (a cluster worker's
            ``run_started`` becomes ``pipeline_started``: the driver's is the run's).
    """
    extra = dict(fields or {})
    names = dict(renames or {})

    def stamp(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
        for key in ("t_start", "t_end"):
            value = event.get(key)
            if isinstance(value, float):
                event[key] = value + clock_offset
        event.update(extra)
        if event.get("event") in names:
            event["event"] = names[event["event"]]
        return event

    _configure(lambda *_args: buffer, level, (stamp,))


def _configure(factory: Any, level: str, extra: tuple[Any, ...]) -> None:
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            *extra,
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
