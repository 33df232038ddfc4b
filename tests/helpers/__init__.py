"""What the tests import, apart from fixtures (those are in ``tests/conftest.py``).

- ``paths``: the checkout, ``../shared`` and its contest inputs, the sail fake's folder.
- ``images``: generated photo-like images and PNG writing.
- ``models``: small seeded ONNX models exported for the tests.
- ``cli``: ``run.py`` as a user runs it.
- ``delayed_engine``, ``faulty_engine``: test-only engines (a known cost, chosen faults).
- ``niqe_cases``: the NIQE reference images, rebuilt from their recipes (numpy and
  Pillow only: ``benchmarks/make_niqe_refs.py`` imports it in another environment).
- ``fakes/``: not a module but a path entry: ``fakes/sophon/sail.py`` is a fake of the
  ``sophon.sail`` wheel, put first on ``sys.path`` or ``PYTHONPATH`` (``paths.FAKES``)
  by the tests, their subprocesses and Ray workers that stand in for a TPU host.

This package imports nothing itself, so each helper costs only what its module imports.
"""
