"""What a ``.bmodel`` holds, read with tpu-mlir's ``model_tool --info``.

sail cannot list the stages of a combined bmodel and ``pyruntime_bm`` shows only each
net's largest buffers, but ``model_tool --info`` prints the chip, every net and, per
stage, the input and output names, shapes, dtypes and scales. That is the record the
emulator backend, ``compile --register`` and the tests check a bmodel against.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from batchsr.errors import ModelError
from batchsr.tpumlir import TpuMlir
from batchsr.vocab import NCHW

__all__ = ["BmodelInfo", "NetInfo", "StageInfo", "TensorInfo", "parse_info", "read_bmodel_info"]

_NET = re.compile(r"^net (\d+): \[(.+)\]\s+(static|dynamic)")
_STAGE = re.compile(r"^stage (\d+)")
_TENSOR = re.compile(
    r"^(input|output): (.+?), \[([0-9, ]+)\], (\w+), scale: ([0-9.eE+-]+), zero_point: (-?\d+)"
)
_INFO_TIMEOUT_S = 60


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """One input or output of one stage."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: float
    zero_point: int


@dataclass(frozen=True, slots=True)
class StageInfo:
    """One stage: one exact set of input shapes of a net."""

    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]


@dataclass(frozen=True, slots=True)
class NetInfo:
    """One net (graph) and its stages."""

    name: str
    dynamic: bool
    stages: tuple[StageInfo, ...]


@dataclass(frozen=True, slots=True)
class BmodelInfo:
    """The chip and nets of a bmodel.

    Attributes:
        chip: e.g. ``BM1684X``.
        nets: in file order.
        version: the bmodel version line (names the tpu-mlir that built it).
    """

    chip: str
    nets: tuple[NetInfo, ...]
    version: str

    def stage_shapes(self) -> tuple[tuple[str, NCHW], ...]:
        """``(net name, NCHW input shape)`` of every single-input 4-D stage."""
        found = []
        for net in self.nets:
            for stage in net.stages:
                if len(stage.inputs) == 1 and len(stage.inputs[0].shape) == 4:
                    n, c, h, w = stage.inputs[0].shape
                    found.append((net.name, (n, c, h, w)))
        return tuple(found)


def parse_info(text: str, *, source: str = "bmodel") -> BmodelInfo:
    """Parse ``model_tool --info`` output.

    Raises:
        ModelError: no chip or no net in it.
    """
    chip = version = ""
    nets: list[NetInfo] = []
    name = ""
    dynamic = False
    stages: list[StageInfo] = []
    ins: list[TensorInfo] = []
    outs: list[TensorInfo] = []

    def close_stage() -> None:
        if ins or outs:
            stages.append(StageInfo(tuple(ins), tuple(outs)))
            ins.clear()
            outs.clear()

    def close_net() -> None:
        close_stage()
        if name:
            nets.append(NetInfo(name, dynamic, tuple(stages)))
            stages.clear()

    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("chip:"):
            chip = line.split(":", 1)[1].strip()
        elif line.startswith("bmodel version:"):
            version = line.split(":", 1)[1].strip()
        elif m := _NET.match(line):
            close_net()
            name, dynamic = m.group(2), m.group(3) == "dynamic"
        elif _STAGE.match(line):
            close_stage()
        elif m := _TENSOR.match(line):
            tensor = TensorInfo(
                name=m.group(2),
                shape=tuple(int(v) for v in m.group(3).split(",")),
                dtype=m.group(4),
                scale=float(m.group(5)),
                zero_point=int(m.group(6)),
            )
            (ins if m.group(1) == "input" else outs).append(tensor)
    close_net()
    if not chip or not nets:
        raise ModelError(f"{source}: model_tool --info shows no chip or no net; not a bmodel?")
    return BmodelInfo(chip=chip, nets=tuple(nets), version=version)


def read_bmodel_info(path: Path, tpu: TpuMlir) -> BmodelInfo:
    """Run ``model_tool --info`` on ``path``.

    Raises:
        ModelError: the file is missing, corrupt or truncated (model_tool refuses it).
    """
    if not path.is_file():
        raise ModelError(f"{path}: no such bmodel file")
    try:
        done = subprocess.run(
            [tpu.tools["model_tool"], "--info", str(path)],
            capture_output=True,
            text=True,
            errors="replace",
            env=tpu.env(),
            timeout=_INFO_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as err:
        raise ModelError(f"{path}: cannot run model_tool --info: {err}") from err
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
        raise ModelError(
            f"{path}: model_tool cannot read it (exit {done.returncode}): corrupt or "
            f"truncated bmodel? {' | '.join(tail)}"
        )
    return parse_info(done.stdout, source=str(path))
