"""The picture ``doorgw bench tap --plot FILE`` draws (matplotlib, the ``plot`` extra).

One panel per reader kind: the share of taps (y) whose relay had moved by a
given time after the read (x, milliseconds, logarithmic), for the run with
no added sync delay and the run with one, and for the floor.  Curves that
lie on each other say the relay does not wait for the disk.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from gateway.errors import DoorgwError, UsageError


def check_plot_target(path: Path) -> None:
    """Refuse, before minutes of taps, a plot that could not be drawn or written.

    UsageError when matplotlib is missing, ``path`` is a directory, or its
    directory does not exist or cannot be written.
    """
    if importlib.util.find_spec("matplotlib") is None:
        raise UsageError("--plot needs matplotlib: pip install 'doorgw[plot]' (or matplotlib)")
    if path.is_dir():
        raise UsageError(f"--plot {path}: is a directory; give a file name, e.g. {path}/taps.png")
    where = path.parent
    if not where.is_dir():
        raise UsageError(f"--plot {path}: there is no directory {where}")
    if not os.access(where, os.W_OK | os.X_OK):
        raise UsageError(f"--plot {path}: {where} is not writable")


def plot_taps(path: Path, result: dict[str, Any]) -> None:
    """Write the PNG for one ``bench tap`` result (with its ``compare`` run).

    The caller checks the target first (:func:`check_plot_target`); DoorgwError
    when the file cannot be written after all (a full disk, a directory gone)."""
    import matplotlib

    matplotlib.use("Agg")  # no display on a gateway
    from matplotlib import pyplot, ticker

    runs = [(result["fsync_delay_ms"], result["samples_ns"])]
    if result.get("compare"):
        runs.append((result["compare"]["fsync_delay_ms"], result["compare"]["samples_ns"]))
    runs.sort(key=lambda run: run[0])
    kinds = list(result["samples_ns"])
    figure, axes = pyplot.subplots(1, len(kinds), figsize=(4 * len(kinds), 3.2), squeeze=False)
    for ax, kind in zip(axes[0], kinds, strict=True):
        for delay, samples in runs:
            _cdf(ax, samples[kind], f"outbox sync +{delay:g} ms")
        _cdf(ax, result["floor_samples_ns"][kind], "floor (no decision, no storage)", dashed=True)
        everything = [ns for _, samples in runs for ns in samples[kind]]
        everything += result["floor_samples_ns"][kind]
        if max(everything) >= 10 * min(everything):  # else a linear axis reads better
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda x, _: f"{x:g}"))
            ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_title(f"{kind}: read to relay")
        ax.set_xlabel("milliseconds")
        ax.set_ylim(0, 1.01)
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("share of taps")
    axes[0][-1].legend(fontsize="small", loc="lower right")
    figure.suptitle(
        f"doorgw bench tap: {result['bookings']:,} bookings, {result['readers'][kinds[0]]['taps']}"
        " taps per reader",
        fontsize="medium",
    )
    figure.tight_layout()
    try:
        figure.savefig(path, dpi=100)
    except OSError as exc:
        raise DoorgwError(f"--plot {path}: not written ({exc.strerror or exc})") from None
    finally:
        pyplot.close(figure)


def _cdf(ax: Any, samples_ns: list[int], label: str, *, dashed: bool = False) -> None:
    xs = sorted(ns / 1e6 for ns in samples_ns)
    ys = [(i + 1) / len(xs) for i in range(len(xs))]
    ax.step(xs, ys, where="post", label=label, linestyle="--" if dashed else "-")
