"""Where the shipped data folders (``models/``, ``configs/``) are.

From a checkout (or an editable install) they sit beside the ``batchsr`` package. A
regular ``pip install .`` copies them to ``<prefix>/share/batchsr/`` (the wheel's
data files, see pyproject.toml), since setuptools cannot place folders from outside a
package inside it.
"""

from __future__ import annotations

import sys
import sysconfig
from pathlib import Path

__all__ = ["data_folder"]

_CHECKOUT = Path(__file__).resolve().parents[1]


def data_folder(name: str) -> Path:
    """The folder ``name`` (``models`` or ``configs``): the checkout's if it has one,
    else the installed copy's; the checkout path when neither exists (so that messages
    name where it was looked for)."""
    candidates = [
        _CHECKOUT / name,
        Path(sysconfig.get_path("data")) / "share" / "batchsr" / name,
        Path(sys.prefix) / "share" / "batchsr" / name,
    ]
    return next((p for p in candidates if p.is_dir()), candidates[0])
