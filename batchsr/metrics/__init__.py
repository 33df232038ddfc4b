"""Image quality metrics: the contest's NIQE (:mod:`batchsr.metrics.niqe`), the visible
artifacts a user would see (:mod:`batchsr.metrics.artifacts`), and scoring a folder of
finished images (:mod:`batchsr.metrics.folder`, a tool above the pipeline: import it by
its own name).

``batchsr.metrics.niqe`` is the function (the module of the same name is
``batchsr.metrics.niqe`` in ``sys.modules``; import its helpers with ``from
batchsr.metrics.niqe import ...``).
"""

from __future__ import annotations

from batchsr.metrics.niqe import niqe

__all__ = ["niqe"]
