"""The command line (``python run.py``, or ``batchsr`` when installed): one module per
subcommand, the text it shows in :mod:`batchsr.cli.render`, the flags' names in
:mod:`batchsr.cli.flags`. The library below raises typed errors and returns records;
this package alone prints, chooses exit codes and leaves the process."""

from batchsr.cli.main import main

__all__ = ["main"]
