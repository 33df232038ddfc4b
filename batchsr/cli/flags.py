"""What the CLI's flags are called: argparse without the usage dump, the table from
config keys to flags, and the spelling of the library's setting references.

The library names settings by config key (`` `tiling.tile` ``, see
:mod:`batchsr.errors`); :func:`spell` turns those into the flags a user of this command
line types, from the same table that turns the flags into config overrides, so the two
cannot drift apart.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from batchsr.errors import ConfigError, reword, reworded

__all__ = [
    "CONFIG_FLAGS",
    "Parser",
    "add_model_flags",
    "ints",
    "overrides_from",
    "pairs",
    "spell",
    "worded",
]

BACKEND_HELP = (
    "onnx (onnxruntime, default), torch, sail (a bmodel on a SOPHGO TPU), or cmodel (a "
    "bmodel on tpu-mlir's BM1684X emulator, needs `make tpu-env`: SLOW, seconds to minutes "
    "per tile batch; for checking a bmodel before a TPU host, not for serving)"
)

#: Config key -> the flag that sets it. A value-less flag (store_true) sets True; one
#: in ``_NEGATIVE`` sets False.
CONFIG_FLAGS: Mapping[str, str] = {
    "model.name": "--model",
    "model.backend": "--backend",
    "model.device": "--device",
    "model.threads": "--threads",
    "model.devices": "--devices",
    "model.engines_per_device": "--engines-per-device",
    "model.engine_timeout_s": "--engine-timeout",
    "model.warmup": "--no-warmup",
    "model.quantize": "--quantize",
    "memory.max_mib": "--max-memory",
    "tiling.tile": "--tile",
    "tiling.tile_pad": "--tile-pad",
    "tiling.batch": "--batch",
    "tiling.mode": "--tile-mode",
    "tiling.border": "--border",
    "tiling.y_only": "--y-only",
    "tiling.in_flight": "--in-flight",
    "tiling.whole_pixels": "--whole-pixels",
    "output.dir": "--output",
    "output.suffix": "--suffix",
    "output.ext": "--ext",
    "output.quality": "--quality",
    "output.rgb": "--rgb",
    "output.compress_level": "--compress-level",
    "output.filter": "--filter",
    "output.score": "--no-score",
}
_SWITCHES = frozenset({"--y-only", "--rgb"})
_NEGATIVE = frozenset({"--no-warmup", "--no-score"})
#: ``[queues]`` and ``[workers]`` keys are set one at a time as NAME=N.
_PAIRED = {"queues": "--queue", "workers": "--workers"}
#: Run parameters that are not config keys, as the library names them.
_PARAMETERS: Mapping[str, str] = {
    "input": "--input",
    "output": "--output",
    "recursive": "--recursive",
    "resume": "--resume",
    "overwrite": "--overwrite",
    "cluster": "--cluster",
}


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: a bad flag prints what was wrong and where help
    is, not the whole usage block (the message is what the user needs to read)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


#: The model flags the main job and tune share.
MODEL_FLAGS: Mapping[str, str] = {
    "model.name": "--model",
    "model.backend": "--backend",
    "model.device": "--device",
    "model.quantize": "--quantize",
}


def add_model_flags(p: argparse._ActionsContainer, *, model_help: str) -> None:
    """``--model``, ``--backend``, ``--device``, ``--quantize``: which model runs on what."""
    from batchsr.vocab import BACKENDS, DEVICES, QUANTIZE

    p.add_argument("--model", "-m", help=model_help)
    p.add_argument("--backend", choices=BACKENDS, help=BACKEND_HELP)
    p.add_argument(
        "--device",
        choices=DEVICES,
        help="onnx/torch: where the model runs (cuda without a CUDA runtime is an error)",
    )
    p.add_argument(
        "--quantize",
        type=str.upper,
        choices=QUANTIZE,
        help="run the model folder's artifact that computes in this, e.g. INT8 (onnx: "
        "NAME_int8.onnx from python -m compile --target onnx-int8); default: the first "
        "listed (float)",
    )


def spell(key: str, value: str | None) -> str | None:
    """The main job's spelling of the setting ``key`` (with ``value`` if given), or
    None when no flag of it sets the key (the reference then stays a config key, which
    ``--config`` files set)."""
    section, _, name = key.partition(".")
    if name and section in _PAIRED:
        return f"{_PAIRED[section]} {name}={value if value is not None else 'N'}"
    flag = CONFIG_FLAGS.get(key) or _PARAMETERS.get(key)
    if flag is None:
        return None
    if flag in _NEGATIVE:
        return flag if value is None or value.lower() == "false" else None
    if flag in _SWITCHES or value is None:
        return flag if value is None or value.lower() == "true" else None
    return f"{flag} {value}"


def worded(text: str, flags: Mapping[str, str] | None = None) -> str:
    """The library's ``text`` with its setting references spelled as flags: the main
    job's (:func:`spell`), or a subcommand's own table (key -> flag) when given, so a
    message never names a flag the command does not have."""
    return reword(text, spell) if flags is None else reworded(text, flags)


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    """Dotted config keys set on the command line (None means 'not given')."""
    from batchsr.vocab import EDGES, MULTI_WORKER_STAGES

    out: dict[str, Any] = {}
    if args.queue_size is not None:
        out.update({f"queues.{edge}": args.queue_size for edge in EDGES})
    out.update({f"queues.{k}": v for k, v in pairs(args.queue, EDGES, "--queue").items()})
    workers = pairs(args.workers, MULTI_WORKER_STAGES, "--workers")
    out.update({f"workers.{k}": v for k, v in workers.items()})
    for key, flag in CONFIG_FLAGS.items():
        value = getattr(args, _dest(flag), None)
        if flag in _NEGATIVE:
            value = False if value else None
        if value is not None:
            out[key] = value
    return out


def pairs(values: Sequence[str], known: Sequence[str], flag: str) -> dict[str, int]:
    """``NAME=N`` flag values as a dict, NAME checked against ``known``."""
    out: dict[str, int] = {}
    for value in values:
        key, sep, num = value.partition("=")
        if not sep or key not in known or not num.strip().isdigit():
            raise ConfigError(f"{flag} {value!r}: expected NAME=N with NAME one of {list(known)}")
        out[key] = int(num)
    return out


def ints(text: str, flag: str) -> list[int]:
    """A comma-separated list of integers, at least one."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise ConfigError(f"{flag} {text!r}: expected comma-separated integers") from err
    if not values:
        raise ConfigError(f"{flag} {text!r}: give at least one value")
    return values
