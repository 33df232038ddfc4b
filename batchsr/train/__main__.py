"""``python -m batchsr.train --config configs/train-espcn.toml [--out models/espcn]``."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import batchsr.train
from batchsr.errors import BatchSRError, reworded
from batchsr.train.config import load_train_config
from batchsr.train.folder import build_model_folder
from batchsr.train.loop import TrainResult, from_endpoints, save_endpoints, train

# The training library's parameters, as its messages name them, and their flags here.
_FLAGS = {"from_endpoints": "--from-endpoints", "save_endpoints": "--save-endpoints"}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m batchsr.train", description=batchsr.train.__doc__
    )
    parser.add_argument("--config", type=Path, required=True, help="training TOML")
    parser.add_argument("--out", type=Path, help="model folder (default: models/<name>)")
    parser.add_argument("--steps", type=int, help="override optim.steps (for quick trials)")
    parser.add_argument("--no-export", action="store_true", help="train and validate only")
    parser.add_argument(
        "--save-endpoints",
        type=Path,
        metavar="DIR",
        help="also write the NIQE phase's L1 and tuned weights (l1.safetensors, "
        "tuned.safetensors) and the run's figures (run.json) to DIR, to measure other "
        "blends without training again",
    )
    parser.add_argument(
        "--from-endpoints",
        type=Path,
        metavar="DIR",
        help="do not train: blend the endpoints a run of this config saved in DIR "
        "(--save-endpoints) by the config's niqe.blend, validate and write the folder",
    )
    return parser


def _summary(result: TrainResult) -> dict[str, Any]:
    return {
        "wall_s": round(result.wall_s, 1),
        "final_loss": round(result.losses[-1], 5),
        "valid": {
            f.image: [round(f.psnr_y_model, 3), round(f.psnr_y_bicubic, 3)] for f in result.valid
        },
    }


def main(argv: list[str] | None = None) -> int:
    """CLI: train, and write the model folder unless ``--no-export`` is given; a
    config or model error is one line on stderr and exit code 2."""
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except BatchSRError as err:
        message = reworded(str(err), _FLAGS)
        print(f"error: {message}", file=sys.stderr)  # noqa: T201 - the CLI's error line
        return 2


def _run(args: argparse.Namespace) -> int:
    cfg = load_train_config(args.config)
    if args.steps is not None:
        cfg = replace(cfg, steps=args.steps)
    result = train(cfg) if args.from_endpoints is None else from_endpoints(cfg, args.from_endpoints)
    summary = _summary(result)
    if args.save_endpoints is not None and result.endpoints:
        save_endpoints(result, cfg, args.save_endpoints)
    if not args.no_export:
        out = args.out or Path("models", cfg.name)
        summary["manifest"] = str(build_model_folder(result, cfg, out))
    print(json.dumps(summary))  # noqa: T201 - the CLI's one result line
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
