"""One BM1684X emulator engine: a bmodel loaded in tpu-mlir's ``pyruntime_bm``.

Run by ``batchsr.engines.cmodel`` with tpu-mlir's Python 3.10, one process per engine,
so that an emulator crash (it can segfault) kills this process and not the pipeline:

    python cmodel_worker.py BMODEL READ_FD WRITE_FD

``LD_LIBRARY_PATH`` must already name tpu_mlir's ``lib``, ``lib/capi`` and
``lib/third_party`` (the runtime resolves ``libcmodel.so`` and ``libbmlib.so.0`` by
name when the process starts). stdout and stderr carry only the runtime's own chatter;
the protocol runs over the two pipe file descriptors, as messages of a 4-byte
big-endian header length, a JSON header, then ``header["nbytes"]`` raw bytes:

- first, the worker sends ``{"ok": true, "nets": [...]}`` (each net's name and its
  input/output name, dtype, scale and zero point) or ``{"ok": false, "error": ...}``;
- then per request ``{"op": "run", "net": NAME, "shape": [n, c, h, w], "nbytes": K}``
  with K bytes of float32 C-order input, it answers ``{"ok": true, "shape": [...],
  "nbytes": K}`` with float32 output, or ``{"ok": false, "error": ...}``;
- ``{"op": "quit"}`` ends it.

Inputs and outputs are converted the way tpu-mlir's own ``model_runner`` does it (its
``lowering`` for quantised inputs, ``(q - zero_point) * scale`` for int8 outputs,
f16/bf16 widened to float32), so a bmodel with quantised I/O still takes and returns
float32 here. The emulator needs the stage shape passed to ``forward_dynamic``: a
combined bmodel crashed when run with ``forward()`` on its maximum-shape buffers
(tpu-reference 0). Nothing is written beside the bmodel (``model_runner`` would leave
a folder there).
"""

import ctypes
import json
import os
import struct
import sys
import traceback

import numpy as np

CHIP = "BM1684X"


def read_exact(fd, n):
    parts = []
    while n:
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            raise EOFError("request pipe closed")
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)


def write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def receive(fd):
    (size,) = struct.unpack(">I", read_exact(fd, 4))
    header = json.loads(read_exact(fd, size))
    payload = read_exact(fd, header.get("nbytes", 0))
    return header, payload


def send(fd, header, payload=b""):
    header = dict(header, nbytes=len(payload))
    raw = json.dumps(header).encode()
    write_all(fd, struct.pack(">I", len(raw)) + raw)
    if payload:
        write_all(fd, payload)


def tensor_facts(t):
    return {
        "name": t.name,
        "dtype": str(t.dtype),
        "max_shape": list(t.data.shape),
        "scale": float(t.qscale),
        "zero_point": int(t.qzero_point),
    }


def open_model(path):
    """Load ``path`` on the BM1684X emulator; return ``(model, {name: net})``."""
    root = os.environ["TPUC_ROOT"]
    sys.path[:0] = [os.path.join(root, "python", "tools"), os.path.join(root, "python")]
    # tpu-mlir's own helpers point libcmodel.so (and friends) at the chip's emulator;
    # several processes may switch them, so they hold the file lock tpu-mlir uses.
    from filelock import FileLock
    from model_runner import bind_cmodel_so, link_bmlib_so, link_cmodel_so, link_custom_so

    with FileLock("/tmp/cmodel_so.lock"):
        link_cmodel_so(CHIP)
        link_custom_so(CHIP)
        link_bmlib_so(CHIP)
        import pyruntime_bm

        bind_cmodel_so(CHIP)
    ctypes.CDLL("libcmodel.so")
    model = pyruntime_bm.Model(path, 0, "")
    nets = {name: model.Net(name) for name in model.networks}
    return model, nets


def to_device_dtype(x, t):
    from utils.lowering import lowering

    return lowering(
        x, pdtype=str(t.dtype), pshape=x.shape, pzero_point=t.qzero_point, pscale=t.qscale
    )


def to_float(data, t):
    from utils.lowering import bf16_to_fp32

    dtype = str(t.dtype)
    if data.dtype in (np.int8, np.uint8) and t.qscale != 0:
        return (data.astype(np.float32) - t.qzero_point) * np.float32(t.qscale)
    if dtype == "bf16":
        return bf16_to_fp32(data)
    return data.astype(np.float32)


def run(net, shape, x):
    (inp,) = net.inputs
    (out,) = net.outputs
    count = int(np.prod(shape))
    if count > inp.data.size:
        raise ValueError(
            f"stage {shape} is larger than stage 0 {list(inp.data.shape)}, whose size the "
            "emulator binding gives the net's buffers; rebuild the bmodel with its largest "
            "stage first (python -m compile combines them so)"
        )
    inp.data.reshape(-1)[:count] = to_device_dtype(x.reshape(shape), inp).reshape(-1)
    (out_shape,) = net.forward_dynamic([list(shape)])
    n_out = int(np.prod(out_shape))
    y = np.array(out.data.reshape(-1)[:n_out]).reshape(out_shape)
    return np.ascontiguousarray(to_float(y, out), dtype=np.float32)


def main():
    path, rfd, wfd = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    # Children the runtime may start must not hold our pipe ends: a crash would then
    # leave the engine waiting for an EOF that never comes.
    os.set_inheritable(rfd, False)
    os.set_inheritable(wfd, False)
    try:
        model, nets = open_model(path)
        facts = [
            {
                "name": name,
                "inputs": [tensor_facts(t) for t in net.inputs],
                "outputs": [tensor_facts(t) for t in net.outputs],
            }
            for name, net in nets.items()
        ]
    except Exception as err:  # reported to the engine, which raises EngineError
        send(wfd, {"ok": False, "error": f"{type(err).__name__}: {err}"})
        return 1
    send(wfd, {"ok": True, "nets": facts, "pid": os.getpid()})
    while True:
        try:
            header, payload = receive(rfd)
        except EOFError:
            return 0
        if header.get("op") == "quit":
            return 0
        try:
            net = nets[header["net"]]
            shape = [int(d) for d in header["shape"]]
            x = np.frombuffer(payload, dtype=np.float32).reshape(shape)
            y = run(net, shape, x)
        except Exception as err:
            send(wfd, {"ok": False, "error": f"{type(err).__name__}: {err}"})
            traceback.print_exc()
            continue
        send(wfd, {"ok": True, "shape": list(y.shape)}, y.tobytes())


if __name__ == "__main__":
    sys.exit(main())
