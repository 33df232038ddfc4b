"""Hide the Ubuntu glibc that the tpu_mlir wheel bundles, so its tools run on newer hosts.

``tpu_mlir/lib/third_party`` holds Ubuntu 22.04's ``libc.so.6``, ``libm.so.6`` and
``libpthread.so.0`` (glibc 2.35). tpu-mlir puts that folder on ``LD_LIBRARY_PATH``
and its binaries carry it in their RUNPATH, so on a host with a newer glibc every
child process mixes the system's loader with the old libc and dies (``GLIBC_2.36 not
found``, or ``stack smashing detected`` in ``tpuc-opt``). Moving the three files
aside (into ``lib/glibc-hidden``) lets the host's own, newer and compatible, glibc
serve them; nothing else in the folder changes.

A pip reinstall of tpu_mlir puts the files back. So ``make tpu-env`` installs this
module into the environment's site-packages with a ``.pth`` line that imports it:
every start of that interpreter (each tpu-mlir tool is one) hides them again before
tpu_mlir is imported. ``python -m compile`` also runs it as a script to probe an
environment (``--probe`` prints JSON facts about it).

Standard library only; Python 3.10 (runs inside the tpu-mlir environment).
"""

import contextlib
import importlib.util
import json
import os
import sys

HIDDEN_DIR = "glibc-hidden"
GLIBC_FILES = ("libc.so.6", "libm.so.6", "libpthread.so.0")
# The bundled copy's version: hiding it is safe only where the host's is at least this.
BUNDLED_GLIBC = (2, 35)


def host_glibc():
    """The host's glibc version as a tuple, or None when it is not glibc."""
    try:
        text = os.confstr("CS_GNU_LIBC_VERSION")  # "glibc 2.36"
    except (ValueError, OSError):
        return None
    if not text or not text.startswith("glibc "):
        return None
    try:
        return tuple(int(p) for p in text.split()[1].split(".")[:2])
    except ValueError:
        return None


def package_root():
    """tpu_mlir's package folder, found without importing it (its import sets env)."""
    spec = importlib.util.find_spec("tpu_mlir")
    if spec is None or not spec.submodule_search_locations:
        return None
    return list(spec.submodule_search_locations)[0]


def apply():
    """Move the bundled glibc files aside; return the names moved (idempotent)."""
    root = package_root()
    glibc = host_glibc()
    if root is None or glibc is None or glibc < BUNDLED_GLIBC:
        return []
    src = os.path.join(root, "lib", "third_party")
    dst = os.path.join(root, "lib", HIDDEN_DIR)
    moved = []
    for name in GLIBC_FILES:
        path = os.path.join(src, name)
        if os.path.lexists(path):
            os.makedirs(dst, exist_ok=True)
            os.replace(path, os.path.join(dst, name))
            moved.append(name)
    return moved


def probe():
    """Facts the 3.11 side needs about this environment, as a dict."""
    from importlib import metadata

    try:
        version = metadata.version("tpu_mlir")
    except metadata.PackageNotFoundError:
        version = "unknown"
    root = package_root()
    left = (
        []
        if root is None
        else [
            n for n in GLIBC_FILES if os.path.lexists(os.path.join(root, "lib", "third_party", n))
        ]
    )
    return {
        "python": sys.executable,
        "python_version": list(sys.version_info[:3]),
        "prefix": sys.prefix,
        "root": root,
        "version": version,
        "bundled_glibc_left": left,
    }


def _startup():
    # Runs from the .pth line at every interpreter start: never let it break Python.
    with contextlib.suppress(OSError):
        apply()


if __name__ == "__main__":
    moved = apply()
    if "--probe" in sys.argv[1:]:
        print(json.dumps({**probe(), "moved": moved}))
    else:
        print("hid " + ", ".join(moved) if moved else "nothing to hide")
else:
    _startup()
