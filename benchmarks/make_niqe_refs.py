"""Record the official (BasicSR 1.4.2) NIQE of every test case in tests/data/niqe_reference.json.

Run from the repository root, in an environment with requirements-bench.txt installed
(numpy, scipy, opencv-python-headless, torch, pillow):

    python benchmarks/make_niqe_refs.py

It fetches BasicSR's sdist into .cache/basicsr/ if needed (see official_niqe.py), rebuilds
each image from its recipe (tests/helpers/niqe_cases.py) and scores it with the unmodified
``calculate_niqe(img_bgr, 0, input_order='HWC', convert_to='y')``. Contest images are read
with ``cv2.imread``, as the contest harness read them. Where the official code raises,
the exception is recorded instead of a value. Needs ../shared/contest for the contest
cases; without it they are left out of the file.
"""

from __future__ import annotations

import json
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO / "tests" / "helpers"))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import scipy  # noqa: E402
import torch  # noqa: E402
from niqe_cases import CASES, CONTEST_DIR, make_case, needs_contest  # noqa: E402
from official_niqe import (  # noqa: E402
    BASICSR_VERSION,
    CACHE_DIR,
    SDIST_NAME,
    load_official_niqe,
    sha256_of,
)

OUT = REPO / "tests" / "data" / "niqe_reference.json"
COMMAND = "python benchmarks/make_niqe_refs.py  # in a venv with requirements-bench.txt"


def main() -> int:
    torch.set_num_threads(1)
    official = load_official_niqe()
    rows: list[dict[str, Any]] = []
    for recipe in CASES:
        if needs_contest(recipe) and not CONTEST_DIR.is_dir():
            print(f"skip {recipe['name']}: {CONTEST_DIR} not found")
            continue
        rgb = make_case(recipe)
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        if recipe["kind"] == "contest":
            read = cv2.imread(str(CONTEST_DIR / recipe["file"]))
            if not np.array_equal(read, bgr):
                raise SystemExit(f"{recipe['file']}: cv2.imread differs from PIL's RGB")
            bgr = read
        row: dict[str, Any] = {
            "name": recipe["name"],
            "recipe": recipe,
            "shape": list(rgb.shape),
            "niqe": None,
            "raises": None,
        }
        start = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                value = official(bgr, 0, input_order="HWC", convert_to="y")
        except Exception as exc:  # recorded: our NIQE must raise NIQEError there
            row["raises"] = f"{type(exc).__name__}: {exc}"
        else:
            if np.isfinite(value):
                row["niqe"] = value
            else:
                row["raises"] = f"non-finite result {value}"
        print(
            f"{recipe['name']:40s} {row['niqe'] or row['raises']}  "
            f"({time.perf_counter() - start:.2f} s)"
        )
        rows.append(row)
    doc = {
        "about": "Official NIQE (BasicSR 1.4.2 calculate_niqe(img_bgr, 0, input_order='HWC', "
        "convert_to='y')) of the cases in tests/helpers/niqe_cases.py.",
        "command": COMMAND,
        "basicsr": {
            "version": BASICSR_VERSION,
            "sdist": SDIST_NAME,
            "sdist_sha256": sha256_of(CACHE_DIR / SDIST_NAME),
        },
        "environment": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "torch": torch.__version__,
            "opencv": cv2.__version__,
            "machine": platform.machine(),
        },
        "cases": rows,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {OUT.relative_to(REPO)} ({len(rows)} cases)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
