"""batchsr command line.

    python run.py --model espcn --input DIR      upscale, score and report a folder
    python run.py SUBCOMMAND ...                 score, analyze, tune, selfcheck

``python run.py --help`` lists the flags and the subcommands; the code is the
:mod:`batchsr.cli` package.
"""

import sys

from batchsr.cli import main

if __name__ == "__main__":
    sys.exit(main())
