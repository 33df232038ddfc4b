"""tune: the grid, the TOML it writes (read back by load_config), a real short tune."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import anyio
import numpy as np
import pytest

from batchsr.analysis import read_runs
from batchsr.config import Config, load_config
from batchsr.images import list_inputs
from batchsr.logging import configure_logging
from batchsr.records import Job
from batchsr.resolve import ResolvedModel
from batchsr.tune import TUNED_EDGES, config_to_toml, grid_configs, sample_jobs, tune, write_toml
from tests.helpers.cli import run_cli
from tests.helpers.images import photo_folder


def _folder(tmp_path: Path, n: int = 3) -> Path:
    folder = photo_folder(tmp_path / "in", n, 36, 40, name="img_{i:02d}")
    return folder


def test_grid_tries_each_buffer_size_with_base_and_one_more_worker() -> None:
    base = Config()
    configs = grid_configs(base, queue_sizes=[8, 2], stages=["infer", "save"])
    assert len(configs) == 2 * 2 * 2
    seen = {(c.queues.tiles, c.workers.infer, c.workers.save) for c in configs}
    assert seen == {(q, i, s) for q in (2, 8) for i in (1, 2) for s in (1, 2)}
    for c in configs:
        assert len({getattr(c.queues, e) for e in TUNED_EDGES}) == 1
        assert (c.queues.paths, c.queues.scored) == (base.queues.paths, base.queues.scored)
        assert (c.model, c.tiling, c.output) == (base.model, base.tiling, base.output)


def test_sample_spreads_over_the_input_and_renumbers() -> None:
    jobs = [Job(i, f"n{i}", Path(f"{i}.png")) for i in range(10)]
    chosen = sample_jobs(jobs, 4)
    assert [j.name for j in chosen] == ["n0", "n2", "n5", "n7"]
    assert [j.id for j in chosen] == [0, 1, 2, 3]
    assert len(sample_jobs(jobs[:2], 4)) == 2


@pytest.mark.parametrize("tile_pad", [None, 6])
def test_written_toml_is_read_back_by_load_config(tmp_path: Path, tile_pad: int | None) -> None:
    config = load_config(
        None,
        {
            "model.name": "some dir/model.onnx",
            "tiling.tile_pad": tile_pad,
            "queues.tiles": 7,
            "workers.save": 3,
            "output.score": False,
            "output.dir": tmp_path,  # a run's folder is not part of a tuned config
        },
    )
    path = write_toml(config, tmp_path / "t" / "tuned.toml", comments=["a comment", ""])
    assert path.read_text().startswith("# a comment\n#\n")
    assert load_config(path) == dataclasses.replace(
        config, output=dataclasses.replace(config.output, dir=None)
    )
    assert "[queues]" in config_to_toml(config) and "[workers]" in config_to_toml(config)


def _fake_niqe(rgb: np.ndarray) -> float:
    return float(rgb.mean()) / 10.0


@pytest.mark.slow  # about 3 s: four trial runs
@pytest.mark.asyncio
async def test_tune_runs_the_grid_and_recommends_a_config_that_loads(
    tmp_path: Path, espcn_onnx: Path
) -> None:
    base = load_config(None, {"tiling.tile": 32})
    seen: list[int] = []
    with anyio.fail_after(60):
        result = await tune(
            list_inputs(_folder(tmp_path)),
            base=base,
            model=ResolvedModel(name="m", path=espcn_onnx, format="onnx", margin=4),
            out_dir=tmp_path / "tune",
            open_log=lambda path: configure_logging(path, append=True),
            scorer=_fake_niqe,
            sample=2,
            queue_sizes=(1, 4),
            stages=["save"],
            repeat=2,
            on_trial=lambda t: seen.append(t.index),
        )
    # baseline, then the grid less the config equal to the baseline (buffers 4, save 1)
    assert seen == [1, 2, 3, 4] and result.baseline.config == base
    assert {(t.queue_size, t.config.workers.save) for t in result.trials} == {
        (4, 1),
        (1, 1),
        (1, 2),
        (4, 2),
    }
    assert result.sample == ("img_00", "img_01") and result.stages == ("save",)
    assert all(t.images_per_s and t.images_per_s > 0 for t in result.trials)
    # each trial's log holds one run per repeat, which analyze reads back
    assert all(len(read_runs(t.log)) == 2 for t in result.trials)
    assert all(t.spread is not None and t.spread >= 0 for t in result.trials)
    assert result.noise is not None
    fastest = max(t.images_per_s or 0 for t in result.trials)
    assert (result.best.images_per_s or 0) >= 0.95 * fastest
    assert (tmp_path / "tune" / "warm-up.jsonl").is_file()
    path = write_toml(result.best.config, tmp_path / "tuned.toml")
    assert load_config(path) == result.best.config


@pytest.mark.slow  # about 3 s: tune and a run, two processes
def test_cli_tune_writes_a_config_that_run_accepts(tmp_path: Path, espcn_onnx: Path) -> None:
    folder = _folder(tmp_path)
    out = tmp_path / "tune"
    proc = run_cli(
        "tune",
        "--input",
        str(folder),
        "--model",
        str(espcn_onnx),
        "--no-score",
        "--sample",
        "2",
        "--queue-sizes",
        "2",
        "--vary",
        "save",
        "--output",
        str(out),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "best:  trial" in proc.stdout and "base:  trial 1" in proc.stdout
    tuned = out / "tuned.toml"
    config = load_config(tuned)
    # the baseline (buffers 4, one saver) is a candidate too
    assert config.queues.tiles in (2, 4) and config.workers.save in (1, 2)
    assert config.queues.paths == 16 and config.workers.infer == 1
    assert config.model.name == str(espcn_onnx)
    assert config.output.score is True  # --no-score applied to the trials only
    run = run_cli(
        "--config",
        str(tuned),
        "--input",
        str(folder),
        "--output",
        str(tmp_path / "run"),
        "--no-score",
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    start = json.loads((tmp_path / "run" / "run.jsonl").read_text().splitlines()[0])
    assert start["config"]["queues"] == dataclasses.asdict(config.queues)
