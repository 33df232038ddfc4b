"""Builds NIQE's C kernels (batchsr/metrics/_niqe_native.c); pyproject.toml holds the rest.

The library is loaded with ctypes (batchsr/metrics/native.py), not imported, and is
optional: where it cannot be built, NIQE runs its numpy path with the same values.
``make setup`` builds it in place (``python setup.py build_ext --inplace``).
"""

from setuptools import Extension, setup

# Exact IEEE arithmetic in the order written: no fused multiply-add, no fast-math (the
# kernels reproduce the official scorer's float32 roundings bit for bit).
_FLAGS = ["-O3", "-ffp-contract=off", "-fno-math-errno", "-std=c11"]

setup(
    ext_modules=[
        Extension(
            "batchsr.metrics._niqe_native",
            ["batchsr/metrics/_niqe_native.c"],
            extra_compile_args=_FLAGS,
            optional=True,
        )
    ]
)
