"""batchsr: deploy and score x4 super-resolution models, CCF BDCI 2023 style."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
