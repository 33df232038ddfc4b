"""Code that runs under tpu-mlir's Python 3.10, not batchsr's 3.11.

The files here are run as scripts by the 3.10 interpreter of a tpu-mlir environment
(``.venv-tpu``): they import only the standard library, numpy and what tpu-mlir ships,
never batchsr itself (whose dependencies live in the 3.11 venv). This ``__init__``
exists so that the 3.11 side can find them with ``importlib.resources``.
"""
