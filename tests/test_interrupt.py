"""SIGINT/SIGTERM mid-run: prompt stop, whole outputs, a valid report of every finished
image, an ``run_interrupted`` record, and the conventional exit codes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.images import photo_folder
from tests.helpers.paths import REPO


def _first_report_row_logged(log: Path) -> bool:
    if not log.is_file():
        return False
    return any('"stage": "report"' in line for line in log.read_text().splitlines())


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_mid_run_stops_promptly_and_keeps_finished_work(
    tmp_path: Path, espcn_onnx: Path, signum: int, code: int
) -> None:
    folder = photo_folder(tmp_path / "in", 300, 64, 80, name="{i:03d}")
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "run.py"),
            "--model",
            str(espcn_onnx),
            "--input",
            str(folder),
            "--output",
            str(out),
            "--no-score",
            "--queue-size",
            "2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not _first_report_row_logged(out / "run.jsonl"):
        assert proc.poll() is None and time.monotonic() < deadline, "run ended before the signal"
        time.sleep(0.02)
    sent = time.monotonic()
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=30)
    assert time.monotonic() - sent < 2.0
    assert proc.returncode == code, stderr
    assert "interrupted by" in stderr
    rows = json.loads((out / "report.json").read_text())["A"][0]["images"]
    assert 1 <= len(rows) < 300
    for row in rows:  # every reported image is whole on disk
        assert (out / f"{row['img_name']}.png").stat().st_size > 0
    assert not list(out.glob(".*.partial"))
    last = json.loads((out / "run.jsonl").read_text().splitlines()[-1])
    assert last["event"] == "run_interrupted" and last["finished"] == len(rows)
    assert last["signal"] == signal.Signals(signum).name


@pytest.mark.asyncio
async def test_a_stop_asked_while_the_engine_opens_writes_nothing(
    tmp_path: Path, espcn_onnx: Path
) -> None:
    from batchsr.config import load_config
    from batchsr.errors import StoppedError
    from batchsr.images import list_inputs
    from batchsr.pipeline.run import run_pipeline
    from batchsr.pipeline.stop import StopRequest
    from batchsr.resolve import resolve_model

    folder = photo_folder(tmp_path / "in", 2, 24, 24)
    stop = StopRequest()
    stop.request(signal.SIGINT)
    out = tmp_path / "out"
    with pytest.raises(StoppedError) as caught:
        await run_pipeline(
            list_inputs(folder),
            config=load_config(None, {"output.score": False}),
            model=resolve_model(str(espcn_onnx), backend="onnx"),
            out_dir=out,
            stop=stop,
        )
    assert caught.value.signum == signal.SIGINT
    assert not out.exists()
