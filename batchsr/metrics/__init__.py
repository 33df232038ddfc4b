"""Image quality metrics: the contest's NIQE and folder scoring."""

from __future__ import annotations

from batchsr.metrics.niqe import niqe

__all__ = ["niqe"]
