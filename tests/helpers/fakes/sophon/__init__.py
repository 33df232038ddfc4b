"""Test double of the ``sophon`` wheel: only ``sophon.sail`` (see its docstring)."""
