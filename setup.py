"""Builds batchsr's C kernels (batchsr/csrc/); pyproject.toml holds the rest.

The library is loaded with ctypes (batchsr/native.py), not imported, and is optional:
where it cannot be built, NIQE and the colour merge run their numpy paths.
``make setup`` builds it in place (``python setup.py build_ext --inplace``).
"""

from setuptools import Extension, setup

# Exact IEEE arithmetic in the order written: no fused multiply-add, no fast-math (the
# NIQE kernels reproduce the official scorer's float32 roundings bit for bit).
_FLAGS = ["-O3", "-ffp-contract=off", "-fno-math-errno", "-std=c11"]

setup(
    ext_modules=[
        Extension(
            "batchsr._native",
            [f"batchsr/csrc/{name}.c" for name in ("abi", "niqe", "color")],
            depends=["batchsr/csrc/kernels.h"],
            extra_compile_args=_FLAGS,
            optional=True,
        )
    ]
)
