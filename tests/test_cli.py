"""The command line, run as a user runs it: a subprocess of ``python run.py``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.cli import run_cli
from tests.helpers.images import photo_folder, photo_like, write_png
from tests.helpers.paths import REPO


def _unscored(model: Path, folder: Path, out: Path) -> list[str]:
    """The flags of a run of ``model`` on ``folder`` into ``out``, NIQE off."""
    return ["--model", str(model), "--input", str(folder), "--output", str(out), "--no-score"]


def test_cli_run_writes_outputs_report_and_log(
    image_folder: Path, tmp_path: Path, espcn_onnx: Path
) -> None:
    out = tmp_path / "out"
    proc = run_cli(
        *_unscored(espcn_onnx, image_folder, out),
        "--queue-size",
        "2",
        "--workers",
        "infer=2",
        "--tile",
        "32",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "3 images: 3 upscaled, 0 failed" in proc.stdout
    assert "images/s" in proc.stdout and "score: contest" in proc.stdout
    assert not proc.stdout.lstrip().startswith("{")  # the console is not the JSON log
    report = json.loads((out / "report.json").read_text())
    assert len(report["A"][0]["images"]) == 3
    records = [json.loads(line) for line in (out / "run.jsonl").read_text().splitlines()]
    start = records[0]
    assert start["event"] == "run_started"
    assert start["config"]["queues"]["tiles"] == 2 and start["config"]["workers"]["infer"] == 2
    assert start["geometry"]["tile_h"] == 32
    assert records[-1]["event"] == "run_finished"


def test_quiet_prints_nothing(image_folder: Path, tmp_path: Path, espcn_onnx: Path) -> None:
    proc = run_cli(*_unscored(espcn_onnx, image_folder, tmp_path / "o"), "--quiet", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == ""


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        ("none", ["--input", "missing"], "is not a folder"),
        ("empty", ["--input", "empty"], "holds no images"),
        (
            "images",
            ["--input", "imgs", "--model", "no_such_model"],
            "unknown model 'no_such_model'",
        ),
        ("images", ["--input", "imgs", "--config", "bad.toml"], "not valid TOML"),
        ("images", ["--input", "imgs", "--config", "typo.toml"], "unknown key(s) ['tiel']"),
        ("images", ["--input", "imgs", "--queue", "tiles=x"], "expected NAME=N"),
        ("images", ["--input", "imgs", "--workers", "decode=0"], "workers.decode = 0"),
    ],
)
def test_bad_invocations_exit_2_with_one_line_and_write_nothing(
    tmp_path: Path, setup: str, args: list[str], message: str
) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "imgs").mkdir()
    write_png(tmp_path / "imgs" / "a.png", photo_like(16, 16))
    (tmp_path / "bad.toml").write_text("[queues\ntiles = 3")
    (tmp_path / "typo.toml").write_text("[tiling]\ntiel = 3\n")
    before = sorted(p.name for p in tmp_path.iterdir())
    proc = run_cli(*args, "--output", str(tmp_path / "out"), cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1
    assert message in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_score_subcommand_scores_a_folder_and_writes_a_report(tmp_path: Path) -> None:
    folder = tmp_path / "sr"
    folder.mkdir()
    write_png(folder / "a.png", photo_like(200, 230, seed=1))
    write_png(folder / "tiny.png", photo_like(20, 20, seed=2))
    (folder / "broken.png").write_text("nope")
    proc = run_cli("score", str(folder), "--workers", "2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((folder / "niqe.json").read_text())
    rows = {r["img_name"]: r for r in report["images"]}
    assert float(rows["a"]["niqe"]) > 0 and report["niqe_avg"] == rows["a"]["niqe"]
    assert rows["tiny"]["niqe"] is None
    assert "smaller than one 96x96 NIQE block" in rows["tiny"]["error"]
    assert (
        rows["broken"]["niqe"] is None
        and "not a recognised image format" in rows["broken"]["error"]
    )
    assert "niqe_avg" in proc.stdout and "2 left out" in proc.stdout


def test_progress_bar_shows_on_a_terminal_only(
    image_folder: Path, tmp_path: Path, espcn_onnx: Path
) -> None:
    """Under a pseudo-terminal the run draws a progress bar on stderr; piped, it does not
    (test_cli_run_writes_outputs_report_and_log checks the piped side)."""
    import os
    import pty

    args = [
        sys.executable,
        str(REPO / "run.py"),
        *_unscored(espcn_onnx, image_folder, tmp_path / "o"),
    ]
    pid, fd = pty.fork()
    if pid == 0:  # the child: run.py with the pty as its terminal
        os.execv(sys.executable, args)
    chunks = []
    while True:
        try:
            data = os.read(fd, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    _, status = os.waitpid(pid, 0)
    text = b"".join(chunks).decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0
    assert "3/3 images" in text and "[" + "#" * 30 + "]" in text and "0 errors" in text


def test_help_lists_every_subcommand_and_every_flag_has_help() -> None:
    from batchsr.cli.main import SUBCOMMANDS
    from batchsr.cli.upscale import build_parser

    lines = {name: command.help for name, command in SUBCOMMANDS.items()}
    assert set(lines) == {"score", "analyze", "tune", "selfcheck"}
    parser = build_parser(lines)
    text = parser.format_help()
    for name, line in lines.items():
        assert f"  {name:10} {line}" in text
    assert all(a.help for a in parser._actions), [a.dest for a in parser._actions if not a.help]


def test_summary_names_each_failed_image_and_says_why_a_figure_is_na(tmp_path: Path) -> None:
    from tests.helpers.cli import run_cli

    folder = photo_folder(tmp_path / "in", 1, 40, 48, name="good")
    (folder / "broken.png").write_text("not an image")
    done = run_cli(
        "--input", str(folder), "--output", str(tmp_path / "o"), "--no-score", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "2 images: 1 upscaled, 1 failed, 1 without NIQE"
    assert (
        lines[1]
        == "  failed: broken: decode: DecodeError: broken.png: not a recognised image format"
    )
    assert "niqe_avg n/a (NIQE off: --no-score)" in done.stdout
    assert "score: contest n/a (no niqe_avg) (per-image runtime)" in done.stdout


def test_file_input_recursive_tree_suffix_and_exif_orientation(
    tmp_path: Path, espcn_onnx: Path
) -> None:
    """A single file, a mirrored tree with --recursive, --suffix, and a JPEG stored
    sideways with an EXIF Orientation tag comes out upright."""
    from PIL import Image

    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    write_png(tree / "top.png", photo_like(20, 24))
    write_png(tree / "sub" / "a.png", photo_like(16, 12, seed=1))
    # Stored 12 wide x 20 high; Orientation 6 ("rotate 90 CW to view"): seen 20 x 12.
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(photo_like(20, 12, seed=2)).save(tree / "sub" / "phone.jpg", exif=exif)
    base = ["--model", str(espcn_onnx), "--no-score", "-q"]

    one = run_cli(
        *base, "--input", str(tree / "top.png"), "--output", str(tmp_path / "one"), cwd=tmp_path
    )
    assert one.returncode == 0, one.stderr
    assert sorted(p.name for p in (tmp_path / "one").glob("*.png")) == ["top.png"]

    flat = run_cli(*base, "--input", str(tree), "--output", str(tmp_path / "flat"), cwd=tmp_path)
    assert flat.returncode == 0 and "1 subfolder(s)" in flat.stderr and "--recursive" in flat.stderr

    out = tmp_path / "deep"
    deep = run_cli(
        *base, "--input", tree, "--recursive", "--suffix", "_x4", "--output", out, cwd=tmp_path
    )
    assert deep.returncode == 0, deep.stderr
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert written == ["sub/a_x4.png", "sub/phone_x4.png", "top_x4.png"]
    names = [r["img_name"] for r in json.loads((out / "report.json").read_text())["A"][0]["images"]]
    assert names == ["sub/a", "sub/phone", "top"]
    with Image.open(out / "sub" / "phone_x4.png") as im:
        assert im.size == (4 * 20, 4 * 12)  # upright: width 20 x 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--recursive"], "--recursive needs a folder"),
        ([], "is not an image file"),
        (["--suffix", "a/b"], "cannot hold a path separator"),
    ],
)
def test_bad_new_input_options_exit_2_and_write_nothing(
    tmp_path: Path, espcn_onnx: Path, args: list[str], message: str
) -> None:
    target = tmp_path / ("x.png" if args else "notes.txt")
    if args:
        write_png(target, photo_like(16, 16))
    else:
        target.write_text("not an image")
    out = tmp_path / "out"
    done = run_cli(
        "--model",
        str(espcn_onnx),
        "--input",
        str(target),
        "--output",
        str(out),
        *args,
        cwd=tmp_path,
    )
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: ") and message in line
    assert not out.exists()


def test_recursive_output_inside_its_input_tree_is_refused(
    tmp_path: Path, espcn_onnx: Path
) -> None:
    tree = photo_folder(tmp_path / "tree", 1, 16, 16, name="a")
    out = tree / "sr"
    done = run_cli(
        "--model",
        str(espcn_onnx),
        "--input",
        str(tree),
        "--recursive",
        "--output",
        str(out),
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert "inside the --recursive input" in done.stderr and not out.exists()


def test_lossy_outputs_are_scored_as_written_and_the_report_says_so(
    tmp_path: Path, espcn_onnx: Path
) -> None:
    """--ext jpg --quality Q: .jpg outputs, NIQE of the pixels the file decodes to,
    and a lossy_output entry beside the contest's keys."""
    from PIL import Image

    from batchsr.metrics.niqe import niqe

    folder = photo_folder(tmp_path / "in", 1, 60, 70, name="a")
    out = tmp_path / "out"
    done = run_cli("--model", str(espcn_onnx), "--input", str(folder), "--output", str(out),
                   "--ext", "jpg", "--quality", "60", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "outputs JPG at quality 60: lossy" in done.stdout
    entry = json.loads((out / "report.json").read_text())["A"][0]
    assert entry["lossy_output"] == {"format": "jpg", "quality": 60}
    (row,) = entry["images"]
    with Image.open(out / "a.jpg") as im:
        assert im.format == "JPEG"
        written = np.asarray(im.convert("RGB"))
    assert abs(float(row["niqe"]) - niqe(written)) < 1e-3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--quality", "0"], "use 1-100"),
        (["--ext", "gif"], "invalid choice: 'gif'"),
        (["--border", "wrap"], "invalid choice: 'wrap'"),
        (["--tile-mode", "mosaic"], "invalid choice: 'mosaic'"),
        (["--tile", "many"], "invalid int value: 'many'"),
    ],
)
def test_a_bad_flag_value_is_one_line(
    tmp_path: Path, espcn_onnx: Path, args: list[str], message: str
) -> None:
    folder = photo_folder(tmp_path / "in", 1, 16, 16, name="a")
    done = run_cli("--model", str(espcn_onnx), "--input", str(folder), "--output",
                   str(tmp_path / "o"), "--ext", "jpg", *args, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2 and message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "o").exists()


def test_grey_input_stays_grey_unless_rgb_is_asked(tmp_path: Path, espcn_onnx: Path) -> None:
    """A grey PNG's output is one-channel luma; --rgb writes it as RGB; NIQE is scored on
    the written pixels either way."""
    from PIL import Image

    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(photo_like(40, 48)[..., 0]).save(folder / "g.png")
    for flag, mode in (([], "L"), (["--rgb"], "RGB")):
        out = tmp_path / f"out{mode}"
        done = run_cli("--model", str(espcn_onnx), "--input", str(folder), "--output", str(out),
                       "-q", *flag, cwd=tmp_path)  # fmt: skip
        assert done.returncode == 0, done.stderr
        with Image.open(out / "g.png") as im:
            assert im.mode == mode and im.size == (4 * 48, 4 * 40)
        (row,) = json.loads((out / "report.json").read_text())["A"][0]["images"]
        assert float(row["niqe"]) > 0


def test_icc_profile_is_carried_to_outputs_that_can_hold_it(
    tmp_path: Path, espcn_onnx: Path
) -> None:
    """An input's embedded colour profile is written into its PNG and JPEG outputs; an
    RGB profile is dropped from a grey output (it cannot describe one channel)."""
    from PIL import Image, ImageCms

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(photo_like(40, 48)).save(folder / "c.png", icc_profile=srgb)
    Image.fromarray(photo_like(40, 48)[..., 0]).save(folder / "g.png", icc_profile=srgb)
    Image.fromarray(photo_like(40, 48)).save(folder / "plain.png")
    for ext in ("png", "jpg"):
        out = tmp_path / ext
        done = run_cli("--model", str(espcn_onnx), "--input", str(folder), "--output", str(out),
                       "-q", "--ext", ext, cwd=tmp_path)  # fmt: skip
        assert done.returncode == 0, done.stderr
        with Image.open(out / f"c.{ext}") as im:
            assert im.info.get("icc_profile") == srgb
        with Image.open(out / f"g.{ext}") as im:
            assert im.mode == "L" and not im.info.get("icc_profile")
        with Image.open(out / f"plain.{ext}") as im:
            assert not im.info.get("icc_profile")


def test_setting_references_in_library_messages_are_spelled_as_flags() -> None:
    from batchsr.cli.flags import worded
    from batchsr.errors import setting

    text = (
        f"{setting('workers.infer', 3)}, {setting('queues.tiles')}, {setting('tiling.tile', 64)}, "
        f"{setting('output.score', 'false')}, {setting('tiling.y_only')}, {setting('resume')}, "
        f"{setting('memory.bytes_per_pixel')}, {setting('sample', 0)}"
    )
    assert worded(text) == (
        "--workers infer=3, --queue tiles=N, --tile 64, --no-score, --y-only, --resume, "
        "`memory.bytes_per_pixel`, `sample = 0`"
    )
    assert worded(text, {"sample": "--sample"}).endswith("--sample 0")
    # a subcommand spells only its own flags: tune has no --tile
    from batchsr.cli import tune

    assert worded(setting("tiling.tile", 0), tune.FLAGS) == "`tiling.tile = 0`"
    # a value the flag cannot express leaves the config key
    assert worded(setting("output.score", "true")) == "`output.score = true`"
    assert worded("run `make tpu-env` first") == "run `make tpu-env` first"


def test_a_library_error_reaches_the_console_in_flag_terms(tmp_path: Path) -> None:
    from tests.helpers.cli import run_cli
    from tests.helpers.images import photo_like, write_png

    write_png(tmp_path / "a.png", photo_like(24, 24))
    done = run_cli("tune", "--input", str(tmp_path), "--sample", "0", cwd=tmp_path)
    assert done.returncode == 2
    assert "--sample 0" in done.stderr and "`" not in done.stderr
