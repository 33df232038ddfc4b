"""cmodel backend: a ``.bmodel`` run on tpu-mlir's BM1684X emulator, for verification.

The emulator (``libcmodel_bm1684x.so`` under the real runtime ``libbmrt.so``, Python
binding ``pyruntime_bm``) computes what the chip computes, on the CPU, slowly:
seconds to minutes per call (tpu-reference 0: about 8 s for a 4x1x64x64 INT8 stage,
30 s for a 1x1x128x128 F16 one, 100 s for the seed's 1x3x128x128 F16 model). It exists
to check a bmodel end to end before renting a TPU host, not to serve.

``pyruntime_bm`` is built for CPython 3.10, so each engine is a worker process of
tpu-mlir's interpreter (``batchsr/py310/cmodel_worker.py``); arrays cross two pipes as
raw float32 bytes. A crash of the emulator ends that process only: the call raises
:class:`EngineError` (the pipeline turns the batch into error rows and opens a new
engine, once), and so does a call that runs past the engine's timeout, after which the
worker is killed, so no thread or process is left behind.

Stage shapes come from ``model_tool --info`` (every stage of a combined bmodel,
served exactly), cross-checked with the manifest's when a model folder gave them.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
from numpy.typing import NDArray

from batchsr.bmodel_info import BmodelInfo, read_bmodel_info
from batchsr.engines.base import EngineBase, Shape, preferred_first
from batchsr.errors import EngineError, EngineUnavailableError, ModelError, ToolNotFoundError
from batchsr.tpumlir import TpuMlir, find_tpu_mlir
from batchsr.vocab import NCHW

__all__ = ["CHIP", "INSTALL_HINT", "WORKER", "CmodelEngine", "open_tpu_mlir"]

CHIP = "BM1684X"
WORKER = Path(__file__).resolve().parents[1] / "py310" / "cmodel_worker.py"
INSTALL_HINT = (
    "the BM1684X emulator needs tpu-mlir's Python 3.10 environment: run `make tpu-env` "
    "(builds .venv-tpu), or set $BATCHSR_TPU_MLIR to such an environment"
)
_START_TIMEOUT_S = 120.0
_CLOSE_WAIT_S = 5.0


def open_tpu_mlir(tpu: TpuMlir | None = None) -> TpuMlir:
    """The tpu-mlir environment the emulator runs in.

    Raises:
        EngineUnavailableError: none is installed, or it cannot start the emulator.
    """
    try:
        found = tpu or find_tpu_mlir()
    except ToolNotFoundError as err:
        raise EngineUnavailableError(f"{INSTALL_HINT} ({err})") from err
    if found is None or found.python is None or found.root is None:
        raise EngineUnavailableError(INSTALL_HINT)
    return found


class CmodelEngine(EngineBase):
    """One emulator worker process serving the stages of one bmodel.

    Args:
        path: the ``.bmodel`` (a BM1684X one).
        shapes: the stage shapes the manifest lists; must agree with the bmodel's.
        scale: the upscale factor if known; otherwise read from the output shape.
        timeout_s: a call (or the start) slower than this kills the worker and fails;
            None waits for ever.
        tpu: the tpu-mlir environment; None finds it (``.venv-tpu`` first).

    Raises:
        EngineUnavailableError: no tpu-mlir environment.
        ModelError: the file is not a readable bmodel, is for another chip, or
            disagrees with ``shapes``.
        EngineError: the worker does not start or the emulator cannot load it.
    """

    def __init__(
        self,
        path: Path,
        *,
        shapes: Sequence[tuple[int | None, ...]] | None = None,
        scale: int | None = None,
        timeout_s: float | None = None,
        tpu: TpuMlir | None = None,
    ) -> None:
        self._tpu = open_tpu_mlir(tpu)
        self._path = path
        self._timeout_s = timeout_s
        self.info: BmodelInfo = read_bmodel_info(path, self._tpu)
        if self.info.chip.upper() != CHIP:
            raise ModelError(
                f"{path} is a bmodel for {self.info.chip}; this emulator and batchsr's "
                f"bmodels are {CHIP}: recompile it for {CHIP} with `python -m compile`"
            )
        self._stages = _stages(self.info, path, shapes)
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._busy = False  # a call is in flight (close() then kills at once)
        self._lock = threading.Lock()
        self._start()
        first = next(iter(self._stages))
        out = self._stages[first][1]
        self._scale = scale or out[2] // first[2]
        self._shapes: tuple[Shape, ...] = preferred_first(self._stages)

    @property
    def pid(self) -> int | None:
        """The worker's process id (tests kill it to stand for an emulator crash)."""
        return None if self._proc is None else self._proc.pid

    def _run(self, batch: NDArray[np.float32]) -> NDArray[np.float32]:
        shape = (int(batch.shape[0]), int(batch.shape[1]), int(batch.shape[2]), int(batch.shape[3]))
        net, out_shape = self._stages[shape]
        proc = self._proc
        if proc is None or proc.poll() is not None:
            raise EngineError(f"{self._where()}: the emulator worker is not running{self._why()}")
        data = np.ascontiguousarray(batch, dtype=np.float32).tobytes()
        header, payload = self._call({"op": "run", "net": net, "shape": list(shape)}, data)
        if not header.get("ok"):
            raise EngineError(f"{self._where()}: {header.get('error')}")
        got = tuple(header["shape"])
        if got != out_shape:
            raise EngineError(
                f"{self._where()}: output {list(got)} for {list(shape)}; the bmodel "
                f"declares {list(out_shape)}"
            )
        return np.frombuffer(payload, dtype=np.float32).reshape(got).copy()

    def close(self) -> None:
        with self._lock:
            proc, self._proc = self._proc, None
            busy = self._busy
        if proc is None:
            return
        if busy:
            # Closed while a call computes (a stopped run abandons it): the worker
            # would not read "quit" before its call ends, so it is killed; the pipes
            # are closed by the call's thread when it returns, so that their numbers
            # cannot be reused under it by the next engine's pipes.
            if proc.poll() is None:
                proc.kill()
            return
        if proc.poll() is None:
            with contextlib.suppress(OSError, EngineError):
                self._send(proc, {"op": "quit"}, b"")
            try:
                proc.wait(_CLOSE_WAIT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._release()

    def _release(self) -> None:
        for fd in (self._to_worker, self._from_worker):
            with contextlib.suppress(OSError):
                os.close(fd)
        if self._log is not None:
            self._log.close()
            self._log = None

    # --- the worker process ---

    def _start(self) -> None:
        req_r, req_w = os.pipe()
        res_r, res_w = os.pipe()
        # The runtime's own chatter (and a crash's last words) go to a file we read
        # back for error messages; the protocol has the pipes to itself.
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by close())
        try:
            self._proc = subprocess.Popen(
                [str(self._tpu.python), str(WORKER), str(self._path), str(req_r), str(res_w)],
                pass_fds=(req_r, res_w),
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env=self._tpu.emulator_env(),
                start_new_session=True,  # Ctrl-C reaches the pipeline, which closes us
            )
        except OSError as err:
            os.close(req_w)
            os.close(res_r)
            raise EngineError(f"cannot start the emulator worker for {self._path}: {err}") from err
        finally:
            # The worker holds its own copies of these ends now.
            os.close(req_r)
            os.close(res_w)
        self._to_worker, self._from_worker = req_w, res_r
        try:
            hello, _ = self._receive(timeout_s=max(self._timeout_s or 0.0, _START_TIMEOUT_S))
        except EngineError:
            self.close()
            raise
        if not hello.get("ok"):
            error = hello.get("error")
            self.close()
            raise EngineError(f"the emulator cannot load {self._path}: {error}")

    def _call(self, header: dict[str, Any], payload: bytes) -> tuple[dict[str, Any], bytes]:
        with self._lock:
            proc = self._proc
            if proc is None:
                raise EngineError(f"{self._where()}: the engine is closed")
            self._busy = True
        failed = False
        try:
            self._send(proc, header, payload)
            return self._receive(timeout_s=self._timeout_s)
        except (EngineError, OSError) as err:
            failed = True
            self._kill()
            if isinstance(err, EngineError):
                raise
            raise EngineError(f"{self._where()}: {err}") from err
        finally:
            with self._lock:
                self._busy = False
                closed = self._proc is None
                if failed:
                    # A dead worker is not restarted here (the pipeline opens a new
                    # engine): free its pipes now, even if nobody calls close().
                    self._proc = None
            if closed or failed:
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
                self._release()

    def _send(self, proc: subprocess.Popen[bytes], header: dict[str, Any], payload: bytes) -> None:
        raw = json.dumps({**header, "nbytes": len(payload)}).encode()
        try:
            _write_all(self._to_worker, struct.pack(">I", len(raw)) + raw + payload)
        except BrokenPipeError as err:
            self._reap()
            raise EngineError(f"{self._where()}: the emulator worker died{self._why()}") from err

    def _receive(self, *, timeout_s: float | None) -> tuple[dict[str, Any], bytes]:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        (size,) = struct.unpack(">I", self._read(4, deadline, timeout_s))
        try:
            header: dict[str, Any] = json.loads(self._read(size, deadline, timeout_s))
        except ValueError as err:
            raise EngineError(f"{self._where()}: garbled answer from the worker: {err}") from err
        return header, self._read(int(header.get("nbytes", 0)), deadline, timeout_s)

    def _read(self, n: int, deadline: float | None, timeout_s: float | None) -> bytes:
        parts: list[bytes] = []
        while n:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([self._from_worker], [], [], wait)
            if not ready:
                self._kill()
                raise EngineError(
                    f"{self._where()}: no answer from the emulator after {timeout_s:g} s "
                    "(`model.engine_timeout_s`); worker killed"
                )
            chunk = os.read(self._from_worker, min(n, 1 << 20))
            if not chunk:
                self._reap()
                raise EngineError(f"{self._where()}: the emulator worker died{self._why()}")
            parts.append(chunk)
            n -= len(chunk)
        return b"".join(parts)

    def _kill(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def _reap(self) -> None:
        """Collect a worker that closed its pipe (it is exiting); kill it if it lingers."""
        proc = self._proc
        if proc is None:
            return
        try:
            proc.wait(_CLOSE_WAIT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def _where(self) -> str:
        return f"emulator ({self._path.name})"

    def _why(self) -> str:
        """The exit status and the worker's last output lines, for an error message."""
        parts = []
        if self._proc is not None and self._proc.returncode is not None:
            code = self._proc.returncode
            parts.append(f"killed by signal {-code}" if code < 0 else f"exit {code}")
        if self._log is not None:
            self._log.seek(0, os.SEEK_END)
            size = self._log.tell()
            self._log.seek(max(0, size - 2000))
            lines = self._log.read().decode("utf-8", "replace").strip().splitlines()[-3:]
            if lines:
                parts.append(" | ".join(lines))
        return f" ({'; '.join(parts)})" if parts else ""


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _stages(
    info: BmodelInfo, path: Path, shapes: Sequence[tuple[int | None, ...]] | None
) -> dict[NCHW, tuple[str, NCHW]]:
    """Input shape -> (net name, output shape) of every stage; checked against the
    manifest's shapes when a model folder gave them."""
    stages: dict[NCHW, tuple[str, NCHW]] = {}
    for net in info.nets:
        for stage in net.stages:
            if len(stage.inputs) != 1 or len(stage.outputs) != 1:
                raise ModelError(
                    f"{path}: net {net.name!r} has {len(stage.inputs)} inputs and "
                    f"{len(stage.outputs)} outputs; an SR model needs one of each"
                )
            i, o = stage.inputs[0].shape, stage.outputs[0].shape
            if len(i) != 4 or len(o) != 4:
                raise ModelError(f"{path}: net {net.name!r} input {list(i)} is not NCHW")
            stages.setdefault((i[0], i[1], i[2], i[3]), (net.name, (o[0], o[1], o[2], o[3])))
    wanted = {tuple(s) for s in shapes or () if all(d is not None for d in s)}
    if wanted and wanted != set(stages):
        raise ModelError(
            f"{path} holds stages {sorted(map(list, stages))} but the manifest lists "
            f"{sorted(map(list, wanted))}: the bmodel and the manifest disagree; rebuild "
            "them together (`python -m compile`)"
        )
    return stages
