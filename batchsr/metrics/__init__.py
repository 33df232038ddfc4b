"""Image quality metrics: the contest's NIQE and scoring a folder with it.

``batchsr.metrics.niqe`` is the function (the module of the same name is
``batchsr.metrics.niqe`` in ``sys.modules``; import its helpers with ``from
batchsr.metrics.niqe import ...``).
"""

from __future__ import annotations

from batchsr.metrics.folder import FolderScore, score_folder
from batchsr.metrics.niqe import niqe

__all__ = ["FolderScore", "niqe", "score_folder"]
