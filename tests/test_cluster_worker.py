"""The cluster's building blocks without Ray: the pipeline actor's own logic (driven
directly on this event loop, as Ray's async actor would drive it), the ``--cluster``
address parser, and the planner that decides which nodes run pipelines."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import numpy as np
import pytest
from PIL import Image

from batchsr.cluster.connect import parse_cluster
from batchsr.cluster.driver import pipeline_request, plan_nodes
from batchsr.cluster.worker import PipelineWorker, WorkerSpec
from batchsr.config import load_config
from batchsr.errors import ClusterError, EngineError
from batchsr.images import list_inputs
from batchsr.records import Failed, Scored
from batchsr.resolve import ResolvedModel
from tests.helpers.images import photo_folder, photo_like, write_png


def _spec(model: Path, out: Path, **overrides: object) -> WorkerSpec:
    config = load_config(None, {"output.score": False, "tiling.tile": 32, **overrides})
    return WorkerSpec(
        config=config,
        model=ResolvedModel(name=model.stem, path=model, format="onnx", margin=4),
        out_dir=out,
        pipeline=3,
    )


@pytest.mark.asyncio
async def test_worker_serves_concurrent_chunks_through_one_pipeline(
    tmp_path: Path, espcn_onnx: Path
) -> None:
    """Two chunks in flight at once share one pipeline (one engine, one warm-up): each
    call returns exactly its own rows, in its order; the records carry node and
    pipeline, on the wall clock, and the pipeline's run marks are renamed."""
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(5):
        write_png(folder / f"im_{i}.png", photo_like(40 + 8 * i, 48, seed=i))
    write_png(folder / "broken.png", photo_like(8, 8))
    (folder / "broken.png").write_bytes(b"not a png")
    jobs = list_inputs(folder)
    worker = PipelineWorker(_spec(espcn_onnx, tmp_path / "out"), node="node-a")
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            results: dict[int, object] = {}

            async def run(k: int, chunk: list) -> None:
                results[k] = await worker.run_chunk(chunk)

            tg.start_soon(run, 0, jobs[:3])
            tg.start_soon(run, 1, jobs[3:])
        tail = await worker.finish()
    first, second = results[0], results[1]
    assert [r.id for r in first.rows] == [0, 1, 2]  # type: ignore[attr-defined]
    assert [r.id for r in second.rows] == [3, 4, 5]  # type: ignore[attr-defined]
    rows = [*first.rows, *second.rows]  # type: ignore[attr-defined]
    assert isinstance(rows[0], Failed) and rows[0].name == "broken"
    assert all(isinstance(r, Scored) for r in rows[1:])
    for row in rows[1:]:
        with Image.open(row.path) as img:
            src = np.asarray(Image.open(folder / f"{row.name}.png"))
            assert img.size == (src.shape[1] * 4, src.shape[0] * 4)
    records = [json.loads(line) for line in (*first.records, *second.records, *tail)]  # type: ignore[attr-defined]
    events = [r["event"] for r in records]
    assert "run_started" not in events and "run_finished" not in events
    assert events.count("pipeline_started") == 1 and events.count("pipeline_finished") == 1
    assert all(r["node"] == "node-a" and r["pipeline"] == 3 for r in records)
    timed = [r for r in records if r["event"] == "item_done"]
    assert timed and all(abs(r["t_end"] - __import__("time").time()) < 120 for r in timed)


@pytest.mark.asyncio
async def test_worker_whose_engine_cannot_open_refuses_to_start_and_fails_each_chunk(
    tmp_path: Path,
) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    folder = photo_folder(tmp_path / "in", 1, 40, 40, name="a")
    (tmp_path / "out").mkdir()
    with anyio.fail_after(30), pytest.raises(EngineError, match="cannot load"):
        await PipelineWorker(_spec(bad, tmp_path / "out"), node="n").start()
    worker = PipelineWorker(_spec(bad, tmp_path / "out"), node="n")
    with anyio.fail_after(30):
        with pytest.raises(EngineError):
            await worker.run_chunk(list_inputs(folder))
        with pytest.raises(EngineError):  # and every later one, at once
            await worker.run_chunk(list_inputs(folder))


@pytest.mark.parametrize(
    ("value", "address", "loopback"),
    [
        ("ray", None, True),
        ("auto", "auto", False),
        ("127.0.0.1:6379", "127.0.0.1:6379", True),
        ("localhost:6379", "localhost:6379", True),
        ("10.0.0.5:6379", "10.0.0.5:6379", False),
        ("ray://head.example:10001", "ray://head.example:10001", False),
        ("ray://127.0.0.1:10001", "ray://127.0.0.1:10001", True),
    ],
)
def test_parse_cluster(value: str, address: str | None, loopback: bool) -> None:
    target = parse_cluster(value)
    assert (target.address, target.loopback) == (address, loopback)


@pytest.mark.parametrize("value", ["", "rayy", "host", "host:", "host:99999", "ray://:1"])
def test_parse_cluster_refuses(value: str) -> None:
    with pytest.raises(ClusterError, match="expected ray"):
        parse_cluster(value)


def _node(node_id: str, alive: bool = True, **resources: float) -> dict:
    return {
        "NodeID": node_id * 8,
        "Alive": alive,
        "NodeManagerAddress": "127.0.0.1",
        "Resources": resources,
    }


def test_plan_nodes_uses_what_each_node_offers() -> None:
    nodes = [
        _node("a", CPU=0.0),  # a head that runs no work
        _node("b", CPU=4.0),
        _node("c", CPU=1.0, TPU=4.0),
        _node("d", alive=False, CPU=8.0),
    ]
    cpu = plan_nodes(nodes, {"CPU": 1.0}, workers_per_node=2, tpu_split=False)
    assert [(p.name[:1], p.pipelines) for p in cpu] == [("b", 2), ("c", 1)]
    tpu = plan_nodes(nodes, {"TPU": 1.0}, workers_per_node=2, tpu_split=True)
    ((plan),) = tpu
    assert plan.name.startswith("c") and plan.pipelines == 2
    assert plan.request == {"TPU": 2.0} and plan.devices == ((0, 1), (2, 3))
    assert plan_nodes(nodes, {"sr_chip": 1.0}, workers_per_node=1, tpu_split=False) == ()


def test_pipeline_request_defaults() -> None:
    config = load_config(None, {"model.backend": "sail"})
    bmodel = ResolvedModel(name="m", path=Path("m.bmodel"), format="bmodel", margin=4)
    onnx = ResolvedModel(name="m", path=Path("m.onnx"), format="onnx", margin=4)
    assert pipeline_request(config, bmodel, {}) == {"TPU": 1.0}
    assert pipeline_request(load_config(None, {}), onnx, {}) == {"CPU": 1.0}
    assert pipeline_request(config, bmodel, {"CPU": 2.0}) == {"CPU": 2.0}


def test_worker_that_cannot_write_the_output_folder_says_so(
    tmp_path: Path, espcn_onnx: Path
) -> None:
    """A node that does not reach the shared output folder refuses before any image."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the output folder should be")
    worker = PipelineWorker(_spec(espcn_onnx, blocker / "out"), node="n1")
    with pytest.raises(ClusterError, match=r"node n1 \(.*\) cannot write the output folder"):
        worker.describe()
    ok = PipelineWorker(_spec(espcn_onnx, tmp_path), node="n2")
    assert ok.describe().node == "n2" and list(tmp_path.iterdir()) == [blocker]
