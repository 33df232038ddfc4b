"""``--cluster`` on a real Ray cluster on this machine: three nodes on loopback.

The cluster is Ray's own test cluster (``ray.cluster_utils.Cluster``): a head that runs
no work (``num_cpus=0``), node A with one CPU, node B with one CPU and a custom
resource ``sr_chip``, and node C, a TPU host: two ``TPU`` and no CPU for pipelines,
with the sophon.sail fake (``tests/helpers/fakes``, standing for the hardware we lack) on its
workers' path and on no other node's. Every process of it, and of the drivers the tests start, must
listen on 127.0.0.1 only; the first test reads their sockets to show it. The module
starts and stops its own cluster, and each run is bounded in time.

Skipped, saying so, when Ray is not installed (``pip install -r requirements-ray.txt``;
``make test`` installs it).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
from PIL import Image

from batchsr.analysis import analyze_run, read_runs
from batchsr.cluster.connect import import_ray, parse_cluster
from batchsr.cluster.driver import ClusterOptions, run_cluster
from batchsr.config import load_config
from batchsr.errors import ClusterError
from batchsr.images import list_inputs
from batchsr.logging import configure_logging
from batchsr.resolve import ResolvedModel
from tests.helpers.cli import run_cli
from tests.helpers.images import photo_like, write_png
from tests.helpers.paths import FAKES, REPO

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}
IMAGES = 12
LONG = 40


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Any]:
    try:
        ray = import_ray(loopback=True)
    except ClusterError as err:
        pytest.skip(f"Ray is not installed ({err})")
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "include_dashboard": False, "node_ip_address": "127.0.0.1"},
    )
    try:
        cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
        cluster.add_node(num_cpus=1, resources={"sr_chip": 1}, node_ip_address="127.0.0.1")
        paths = [str(FAKES), *filter(None, [os.environ.get("PYTHONPATH")])]
        cluster.add_node(
            num_cpus=0,
            resources={"TPU": 2},
            node_ip_address="127.0.0.1",
            env_vars={"PYTHONPATH": os.pathsep.join(paths)},
        )
        cluster.wait_for_nodes(timeout=60)
        yield cluster
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Twelve small photos of a few sizes, and one file that is not an image."""
    root = tmp_path_factory.mktemp("cluster_in")
    for i in range(IMAGES - 1):
        write_png(root / f"im_{i:02d}.png", photo_like(48 + 8 * (i % 3), 64, seed=i))
    (root / "im_99.png").write_bytes(b"this is not a png")
    return root


@pytest.fixture(scope="module")
def long_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Enough work that a kill or a signal lands mid-run on any machine: 40 photos of
    160x160 (about 2 s of pipeline time here), one chunk each."""
    root = tmp_path_factory.mktemp("cluster_long")
    for i in range(LONG):
        write_png(root / f"im_{i:02d}.png", photo_like(160, 160, seed=i))
    return root


def _node_ids(cluster: Any) -> dict[str, str]:
    """'A'/'B'/'C' -> the 12-character node names the report uses."""
    import ray

    ray.init(address=cluster.address, _node_ip_address="127.0.0.1", log_to_driver=False)
    try:
        names = {}
        for node in ray.nodes():
            res = node["Resources"]
            if "TPU" in res:
                names["C"] = node["NodeID"][:12]
            elif res.get("CPU", 0) >= 1:
                names["B" if "sr_chip" in res else "A"] = node["NodeID"][:12]
        return names
    finally:
        ray.shutdown()


def _listeners(root: psutil.Process) -> list[tuple[str, str, int]]:
    """(process name, address, port) of every listening socket of ``root``'s tree."""
    found = []
    for proc in [root, *root.children(recursive=True)]:
        try:
            name = proc.name()
            conns = proc.net_connections(kind="inet")
        except psutil.Error:
            continue
        found += [(name, c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN]
    return found


def _rows(report: Path) -> list[dict[str, Any]]:
    return json.loads(report.read_text())["A"][0]["images"]


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img)


def test_every_cluster_process_listens_on_loopback_only(
    ray_cluster: Any, folder: Path, tmp_path: Path, espcn_onnx: Path
) -> None:
    """Read the sockets of the GCS, the raylets, the workers and the driver while a run
    is going: each listens on 127.0.0.1, none on the machine's routed address or on
    all interfaces."""
    snapshot: list[tuple[str, str, int]] = []

    def look(_progress: object) -> None:
        if not snapshot:
            snapshot.extend(_listeners(psutil.Process()))

    config = load_config(None, {"output.score": False, "tiling.tile": 32})
    sink = configure_logging(tmp_path / "run.jsonl")
    try:
        run_cluster(
            list_inputs(folder),
            config=config,
            model=ResolvedModel(name="tiny", path=espcn_onnx, format="onnx", margin=4),
            out_dir=tmp_path / "out",
            options=ClusterOptions(target=parse_cluster(ray_cluster.address), chunk=1),
            forward=sink.write_lines,
            on_progress=look,
        )
    finally:
        sink.close()
    names = {name for name, _, _ in snapshot}
    # The check sees the whole cluster: its servers and the pipelines' workers.
    assert {"gcs_server", "raylet"} <= names, names
    assert any(n.startswith("ray::PipelineWorker") for n in names), names
    assert sum(n == "raylet" for n, _, _ in snapshot) >= 4 * 2  # node manager + object manager
    wild = [(n, ip, port) for n, ip, port in snapshot if ip not in LOOPBACK]
    assert not wild, f"listening beyond loopback: {wild}"


def test_cluster_run_equals_local_run_and_tags_nodes(
    ray_cluster: Any, folder: Path, tmp_path: Path, espcn_onnx: Path
) -> None:
    """Same images, report rows (minus timings) and pixels as a local run; both nodes
    took work; the broken file is one error row; analyze reads the merged log."""
    common = ("--model", str(espcn_onnx), "--input", str(folder), "--tile", "32", "--quiet")
    local = run_cli(*common, "--output", str(tmp_path / "local"), cwd=tmp_path)
    assert local.returncode == 0, local.stderr
    cluster = run_cli(
        *common,
        "--output",
        str(tmp_path / "cl"),
        "--cluster",
        ray_cluster.address,
        "--chunk",
        "1",
        cwd=tmp_path,
    )
    assert cluster.returncode == 0, cluster.stderr
    want, got = _rows(tmp_path / "local" / "report.json"), _rows(tmp_path / "cl" / "report.json")
    strip = [{k: v for k, v in r.items() if k not in ("runtime", "node")} for r in got]
    assert strip == [{k: v for k, v in r.items() if k != "runtime"} for r in want]
    assert len(got) == IMAGES and "error" in got[-1] and got[-1]["img_name"] == "im_99"
    nodes = _node_ids(ray_cluster)
    assert {r["node"] for r in got} == {nodes["A"], nodes["B"]}
    for row in want[:-1]:
        name = f"{row['img_name']}.png"
        assert np.array_equal(_pixels(tmp_path / "cl" / name), _pixels(tmp_path / "local" / name))
    (run,) = read_runs(tmp_path / "cl" / "run.jsonl")
    analysis = analyze_run(run)
    assert analysis.ok == IMAGES - 1 and analysis.failed == 1
    assert {n.node for n in analysis.nodes} == {nodes["A"], nodes["B"]}
    assert sum(n.images for n in analysis.nodes) == IMAGES
    assert analysis.slowest_node in {nodes["A"], nodes["B"]}
    infer = analysis.stage("infer")
    assert infer is not None and infer.workers == 2  # one infer worker in each pipeline
    assert analysis.geometry is not None and analysis.geometry["tile_h"] == 32
    shown = run_cli("analyze", str(tmp_path / "cl" / "run.jsonl"), cwd=tmp_path)
    assert shown.returncode == 0 and "slowest node" in shown.stdout, shown.stdout


def test_a_node_without_the_requested_resource_is_not_used(
    ray_cluster: Any, folder: Path, tmp_path: Path, espcn_onnx: Path
) -> None:
    args = ("--model", str(espcn_onnx), "--input", str(folder), "--tile", "32", "--no-score")
    done = run_cli(
        *args,
        "--output",
        str(tmp_path / "chip"),
        "--cluster",
        ray_cluster.address,
        "--cluster-resource",
        "sr_chip=1",
        "--quiet",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert {r["node"] for r in _rows(tmp_path / "chip" / "report.json")} == {
        _node_ids(ray_cluster)["B"]
    }
    none = run_cli(
        *args,
        "--output",
        str(tmp_path / "none"),
        "--cluster",
        ray_cluster.address,
        "--cluster-resource",
        "fpga=1",
        cwd=tmp_path,
    )
    assert none.returncode == 2
    assert "no node of the cluster offers what a pipeline needs (fpga=1)" in none.stderr
    assert "sr_chip=1" in none.stderr  # it says what the nodes do offer
    assert not (tmp_path / "none").exists()


def _start_cli(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(REPO / "run.py"), *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _records(log: Path) -> list[dict[str, Any]]:
    if not log.exists():
        return []
    out = []
    for line in log.read_text().splitlines():
        with contextlib.suppress(ValueError):  # a line being written
            out.append(json.loads(line))
    return out


def _wait_for(log: Path, event: str, proc: subprocess.Popen[str], count: int = 1) -> list[dict]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        found = [r for r in _records(log) if r.get("event") == event]
        if len(found) >= count:
            return found
        if proc.poll() is not None:
            pytest.fail(f"the run ended before {event}: {proc.communicate()[1][-2000:]}")
        time.sleep(0.1)
    proc.kill()
    pytest.fail(f"no {event} record within 120 s")


def test_a_killed_worker_process_loses_nothing(
    ray_cluster: Any, long_folder: Path, tmp_path: Path, espcn_onnx: Path
) -> None:
    """SIGKILL one pipeline's process after its first chunk: Ray restarts it and runs
    its unfinished chunks again; the report is complete, each image once, every
    output whole and equal to a local run's."""
    folder = long_folder
    out = tmp_path / "out"
    proc = _start_cli(
        "--model", str(espcn_onnx), "--input", str(folder), "--tile", "32", "--no-score",
        "--output", str(out), "--cluster", ray_cluster.address, "--chunk", "1", "--quiet",
        cwd=tmp_path,
    )  # fmt: skip
    try:
        ready = _wait_for(out / "run.jsonl", "pipeline_ready", proc, count=2)
        victim = ready[0]
        deadline = time.monotonic() + 120
        while not any(
            r.get("event") == "chunk_done" and r.get("pid") == victim["pid"]
            for r in _records(out / "run.jsonl")
        ):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        os.kill(victim["pid"], signal.SIGKILL)
        _, stderr = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    rows = _rows(out / "report.json")
    assert [r["img_name"] for r in rows] == sorted(p.stem for p in folder.iterdir())
    records = _records(out / "run.jsonl")
    pids = {
        r["pid"]
        for r in records
        if r.get("event") == "chunk_done" and r.get("pipeline") == victim["pipeline"]
    }
    assert victim["pid"] in pids and len(pids) >= 2, "the killed pipeline came back"
    local = run_cli(
        "--model", str(espcn_onnx), "--input", str(folder), "--tile", "32", "--no-score",
        "--output", str(tmp_path / "local"), "--quiet", cwd=tmp_path,
    )  # fmt: skip
    assert local.returncode == 0
    for row in rows:
        name = f"{row['img_name']}.png"
        assert np.array_equal(_pixels(out / name), _pixels(tmp_path / "local" / name))
    assert not list(out.glob(".*partial*"))


def test_ctrl_c_leaves_a_valid_partial_report_that_resume_finishes(
    ray_cluster: Any, long_folder: Path, tmp_path: Path, espcn_onnx: Path
) -> None:
    folder = long_folder
    out = tmp_path / "out"
    args = (
        "--model", str(espcn_onnx), "--input", str(folder), "--tile", "32", "--no-score",
        "--output", str(out), "--cluster", ray_cluster.address, "--chunk", "1", "--quiet",
    )  # fmt: skip
    proc = _start_cli(*args, cwd=tmp_path)
    try:
        _wait_for(out / "run.jsonl", "chunk_done", proc)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGINT, stderr
    partial = _rows(out / "report.json")
    assert 1 <= len(partial) < LONG
    assert any(r.get("event") == "run_interrupted" for r in _records(out / "run.jsonl"))
    again = run_cli(*args, "--resume", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    rows = _rows(out / "report.json")
    assert [r["img_name"] for r in rows] == sorted(p.stem for p in folder.iterdir())
    assert {r["img_name"]: r["runtime"] for r in partial}.items() <= {
        r["img_name"]: r["runtime"] for r in rows
    }.items()


def test_a_local_ray_instance_listens_on_loopback_only(
    folder: Path, tmp_path: Path, espcn_onnx: Path
) -> None:
    """``--cluster ray`` starts its own Ray on this machine: all of it on 127.0.0.1,
    and stopped when the run ends."""
    pytest.importorskip("ray", reason="Ray is not installed (pip install -r requirements-ray.txt)")
    out = tmp_path / "out"
    proc = _start_cli(
        "--model", str(espcn_onnx), "--input", str(folder), "--tile", "32", "--no-score",
        "--output", str(out), "--cluster", "ray", "--chunk", "1", "--quiet", cwd=tmp_path,
    )  # fmt: skip
    try:
        _wait_for(out / "run.jsonl", "chunk_done", proc)
        listening = _listeners(psutil.Process(proc.pid))
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert {"gcs_server", "raylet"} <= {name for name, _, _ in listening}
    wild = [entry for entry in listening if entry[1] not in LOOPBACK]
    assert not wild, f"listening beyond loopback: {wild}"
    assert len(_rows(out / "report.json")) == IMAGES


def test_a_run_without_cluster_never_imports_ray(folder: Path, tmp_path: Path) -> None:
    code = (
        "import sys, run\n"
        f"code = run.main(['--input', {str(folder)!r}, '--output', {str(tmp_path / 'o')!r}, "
        "'--no-score', '--quiet'])\n"
        "assert 'ray' not in sys.modules, 'ray was imported'\n"
        "sys.exit(code)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr


def test_an_unreachable_cluster_is_one_line_and_nothing_written(
    folder: Path, tmp_path: Path
) -> None:
    pytest.importorskip("ray", reason="Ray is not installed (pip install -r requirements-ray.txt)")
    t = time.monotonic()
    done = run_cli(
        "--input", str(folder), "--output", str(tmp_path / "o"), "--cluster", "127.0.0.1:9",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2 and time.monotonic() - t < 60
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert "nothing answers there" in done.stderr
    assert not (tmp_path / "o").exists()


def test_a_model_no_node_can_open_refuses_before_any_image(
    ray_cluster: Any, folder: Path, tmp_path: Path
) -> None:
    """As locally: an engine that cannot open is one line, exit 2, nothing written."""
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    done = run_cli(
        "--model", str(bad), "--input", str(folder), "--output", str(tmp_path / "o"),
        "--cluster", ray_cluster.address, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: ") and "cannot load" in done.stderr
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert not (tmp_path / "o").exists()


def test_bmodel_pipelines_run_on_the_tpu_host_with_its_devices_split(
    ray_cluster: Any, folder: Path, tmp_path: Path, espcn_onnx: Path
) -> None:
    """A bmodel on the sail backend asks for TPUs: only node C has them (and the sail
    fake); its two TPUs are split between its two pipelines, one device each."""
    spec = importlib.util.spec_from_file_location("_fake_sail", FAKES / "sophon" / "sail.py")
    assert spec is not None and spec.loader is not None
    fake = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = fake  # dataclasses look their module up
    try:
        spec.loader.exec_module(fake)
    finally:
        del sys.modules[spec.name]
    bmodel = fake.write_bmodel(tmp_path / "espcn.bmodel", onnx=espcn_onnx, stages=[[2, 3, 48, 48]])
    out = tmp_path / "out"
    done = run_cli(
        "--model", str(bmodel), "--input", str(folder), "--output", str(out), "--no-score",
        "--cluster", ray_cluster.address, "--workers-per-node", "2", "--chunk", "1",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = _rows(out / "report.json")
    assert {r["node"] for r in rows} == {_node_ids(ray_cluster)["C"]}
    assert sum("error" in r for r in rows) == 1  # the broken file, as locally
    started = [r for r in _records(out / "run.jsonl") if r.get("event") == "pipeline_started"]
    assert sorted(r["config"]["model"]["devices"] for r in started) == ["0", "1"]
    assert "cluster: 1 node(s), 2 pipeline(s)" in done.stdout
