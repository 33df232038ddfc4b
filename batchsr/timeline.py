"""Draw a run's timeline: one lane per worker per stage, bars coloured by image.

Each run gets three panels on a shared time axis (seconds from the run's first
receive), so runs stacked in one figure compare directly:

- lanes: every item a worker handled, from ``t_start`` to ``t_end``, coloured by the
  image it belongs to (a batch holding tiles of several images is striped). The part
  of an item spent blocked sending (``wait_out_s``) is drawn hatched at the item's
  end, where a single send happens; tile sends while it cuts, so there it is an
  approximation of where, not of how long.
- buffers: each stream's fill (``queue_in`` / capacity) at the moments its consumer
  asked for input. These are samples, not a continuous trace.
- completed: images finished by the report stage, cumulative.

matplotlib is imported on first use with the ``Agg`` backend: plotting is optional
and must work without a display.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from batchsr.analysis import RunLog, batch_images
from batchsr.vocab import INPUT_EDGE, STAGES

__all__ = ["lanes", "plot_timeline"]

_MAX_LEGEND_IMAGES = 12


def lanes(run: RunLog) -> list[tuple[str, int]]:
    """(stage, worker) for every lane, in pipeline order then worker order."""
    seen = {(r["stage"], int(r.get("worker", 0))) for r in run.items}
    order = {s: i for i, s in enumerate(STAGES)}
    return sorted(seen, key=lambda sw: (order.get(sw[0], len(STAGES)), sw[0], sw[1]))


def _image_colour(cmap: Any, image_id: int, images: int) -> Any:
    return cmap(image_id % cmap.N) if images > cmap.N else cmap(image_id)


def _draw_lanes(ax: Any, run: RunLog, origin: float, cmap: Any, images: int) -> None:
    rows = lanes(run)
    index = {lane: i for i, lane in enumerate(rows)}
    by_batch = batch_images(run)
    for r in run.items:
        if r["event"] != "item_done":
            continue
        y = index[(r["stage"], int(r.get("worker", 0)))]
        t0, t1 = r["t_start"] - origin, r["t_end"] - origin
        blocked = min(max(0.0, float(r.get("wait_out_s", 0.0))), t1 - t0)
        ids = (
            [r["image_id"]]
            if isinstance(r.get("image_id"), int)
            else list(r.get("image_ids") or by_batch.get(int(r.get("batch_id", -1)), []))
        )
        ids = ids or [-1]
        height = 0.8 / len(ids)
        for k, image_id in enumerate(ids):
            colour = "0.6" if image_id < 0 else _image_colour(cmap, image_id, images)
            bottom = y - 0.4 + k * height
            ax.broken_barh(
                [(t0, max(t1 - t0 - blocked, 1e-4))],
                (bottom, height),
                facecolors=colour,
                # A white outline separates back-to-back items of one image.
                edgecolor="black" if r.get("failed") else "white",
                linewidth=0.6,
            )
        if blocked > 0:
            ax.broken_barh(
                [(t1 - blocked, blocked)],
                (y - 0.4, 0.8),
                facecolors="white",
                edgecolor="0.45",
                hatch="////",
                linewidth=0.0,
            )
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(
        [f"{s}" if s in ("tile", "stitch", "report") else f"{s}-{w}" for s, w in rows],
        fontsize=8,
    )
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.grid(axis="x", color="0.9", linewidth=0.6)
    ax.set_axisbelow(True)


def _draw_buffers(ax: Any, run: RunLog, origin: float, config: Mapping[str, Any]) -> None:
    queues = config.get("queues", {}) if isinstance(config.get("queues"), Mapping) else {}
    relative = all(isinstance(queues.get(e), int) for e in INPUT_EDGE.values())
    cmap = _pyplot().get_cmap("tab10")
    for i, stage in enumerate(STAGES):
        edge = INPUT_EDGE[stage]
        samples = sorted(
            (r["t_start"] - float(r.get("wait_in_s", 0.0)) - origin, int(r["queue_in"]))
            for r in run.stage_items(stage)
            if isinstance(r.get("queue_in"), int)
        )
        if not samples:
            continue
        xs = [t for t, _ in samples]
        ys = [q / queues[edge] if relative else q for _, q in samples]
        ax.step(xs, ys, where="post", color=cmap(i), linewidth=1.2, label=f"{edge} -> {stage}")
    if relative:
        ax.axhline(1.0, color="0.3", linestyle=":", linewidth=0.8)
        ax.set_ylim(-0.05, 1.1)
        ax.set_ylabel("buffer fill", fontsize=8)
        what = "queue_in / buffer size"
    else:
        ax.set_ylabel("items buffered", fontsize=8)
        what = "queue_in"
    ax.set_title(
        f"buffer occupancy ({what}), sampled each time the consumer asked for input",
        fontsize=8,
        loc="left",
    )
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.05), frameon=False)
    ax.grid(color="0.9", linewidth=0.6)


def _draw_completed(ax: Any, run: RunLog, origin: float) -> None:
    ends = sorted(r["t_end"] - origin for r in run.stage_items("report"))
    if ends:
        ax.step([0.0, *ends], list(range(len(ends) + 1)), where="post", color="black")
    ax.set_ylabel("images\ncompleted", fontsize=8)
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.grid(color="0.9", linewidth=0.6)


def plot_timeline(
    runs: Sequence[RunLog], path: Path, *, titles: Sequence[str] | None = None
) -> Path:
    """Draw the timeline of each run, stacked on a shared time axis, into ``path``.

    Args:
        runs: the runs to draw (one block of panels each).
        path: the image file to write (format from its suffix, e.g. ``.png``).
        titles: one title per run; defaults to the run labels.

    Returns:
        ``path``.
    """
    plt = _pyplot()
    from matplotlib.patches import Patch

    heights: list[float] = []
    for run in runs:
        heights += [max(1.5, 0.28 * len(lanes(run))), 1.3, 0.8]
    fig, axes = plt.subplots(
        len(heights),
        1,
        figsize=(12, sum(heights) + 0.9 * len(runs)),
        sharex=True,
        gridspec_kw={"height_ratios": heights},
        squeeze=False,
    )
    axes = axes[:, 0]
    for k, run in enumerate(runs):
        origin = run.origin
        config = run.started.get("config", {}) if run.started else {}
        images = 1 + max((i for r in run.items for i in _ids(r) if isinstance(i, int)), default=0)
        cmap = plt.get_cmap("tab10" if images <= 10 else "tab20")
        ax_lanes, ax_buf, ax_done = axes[3 * k : 3 * k + 3]
        _draw_lanes(ax_lanes, run, origin, cmap, images)
        _draw_buffers(ax_buf, run, origin, config if isinstance(config, Mapping) else {})
        _draw_completed(ax_done, run, origin)
        title = titles[k] if titles is not None else run.label
        ax_lanes.set_title(title, fontsize=10, loc="left")
        handles = [
            Patch(facecolor="white", edgecolor="0.45", hatch="////", label="blocked sending")
        ]
        if images <= _MAX_LEGEND_IMAGES:
            handles += [
                Patch(facecolor=_image_colour(cmap, i, images), label=f"image {i}")
                for i in range(images)
            ]
        ax_lanes.legend(
            handles=handles,
            fontsize=7,
            loc="upper left",
            bbox_to_anchor=(1.0, 1.0),
            frameon=False,
        )
    axes[-1].set_xlabel("seconds since the run's first receive")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _ids(record: Mapping[str, Any]) -> list[Any]:
    if "image_id" in record:
        return [record["image_id"]]
    return list(record.get("image_ids") or [])


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
