"""Plots (matplotlib, Agg, PNG) of one run and of a sweep.

``plot_run(run_dir)`` writes, next to the run's metrics.csv, the test accuracy of every class per
epoch (as Figure 1 of the SCE paper) and the memorisation curves: the share of flipped training
samples predicted as their noisy label (memorised) and as their true label (corrected), beside
train accuracy on the noisy and on the clean labels. ``plot_sweep(board)`` writes, next to the
leaderboard, accuracy vs noise rate per loss (mean over seeds, shaded ± 1 sample std; one panel
per dataset x noise type) and, per dataset and model, test accuracy vs epoch (mean over seeds per
cell, one panel per noise column), and per metric the critical-difference diagram of the losses'
average ranks over the settings (scikit-posthocs, from leaderboard/stats.py). A metrics.csv that cannot be trusted (``read_metrics``) is
never plotted nor averaged: the runs left out of a sweep's curves are named in
``board.unplotted``. Figures are built with ``matplotlib.figure.Figure`` on the Agg canvas,
never through pyplot's global state, so that plotting inside a long sweep leaks nothing.
"""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from noisybench.artifacts import METRICS_FILE, read_summary
from noisybench.leaderboard import Leaderboard
from noisybench.leaderboard.render import column_labels, column_order, row_labels, row_order, varying_keys
from noisybench.leaderboard.runs import COMPLETED, Problem, cell_keys, fixed_rate, format_value
from noisybench.leaderboard.stats import ALPHA, CD_PLOT, METRIC_NAMES, Ranking

PER_CLASS_PLOT = "per_class_acc.png"
MEMORISATION_PLOT = "memorisation.png"
RATE_PLOT = "acc_vs_rate.png"
DPI = 100
PANEL_SIZE = (4.2, 3.2)  # inches per panel
TITLE_HEIGHT = 0.3  # inches above the panels for the figure's title
LEGEND_HANDLE, LEGEND_CHAR = 0.7, 0.075  # inches: a legend entry's line and gap, and one character
MAX_PANEL_COLUMNS = 4


def _figure(panels: int, legend_labels: Any = (), sharey: bool = False) -> tuple[Figure, list[Any]]:
    """A grid of ``panels`` axes, with room on the right for a legend of ``legend_labels``.

    Margins are fixed in inches rather than solved by constrained layout, which costs more than
    the drawing itself once a figure has ten panels.
    """
    cols = min(panels, MAX_PANEL_COLUMNS)
    rows = math.ceil(panels / cols)
    lines = [line for label in legend_labels for line in label.split("\n")]
    legend_width = LEGEND_HANDLE + LEGEND_CHAR * max(map(len, lines)) if lines else 0.0
    width = PANEL_SIZE[0] * cols + legend_width
    height = PANEL_SIZE[1] * rows + TITLE_HEIGHT
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.75 / width, right=1 - (legend_width + 0.15) / width, bottom=0.55 / height,
                        top=1 - (TITLE_HEIGHT + 0.3) / height, wspace=0.3, hspace=0.5)
    axes = fig.subplots(rows, cols, squeeze=False, sharey=sharey).ravel()
    for ax in axes[panels:]:
        ax.set_visible(False)
    return fig, list(axes[:panels])


def _legend(fig: Figure, handles: list[Any], labels: list[str]) -> None:
    right = fig.subplotpars.right
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(right + 0.01, 0.5), fontsize="small",
               frameon=False)


def _colours(n: int) -> list[Any]:
    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    return [colormaps["viridis"](i / (n - 1)) for i in range(n)]


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI)
    return path


def _run_title(run_dir: Path) -> str:
    try:
        summary = read_summary(run_dir)
    except ValueError:
        summary = None
    if summary is None:
        return str(run_dir.name)
    noise = summary.get("noise") or {}
    realised = noise.get("realised_rate")
    realised = f" (realised {realised:.3f})" if isinstance(realised, (int, float)) else ""
    return (f"{summary.get('dataset')} · {summary.get('model')} · {noise.get('type')} {noise.get('rate')}"
            f"{realised} · {summary.get('loss')} · seed {summary.get('seed')}")


class UnreadableMetrics(ValueError):
    """A metrics.csv that cannot be trusted; ``reason`` says why."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"unreadable {path}: {reason}")
        self.reason = reason


REQUIRED_METRICS = ("epoch", "test_acc")


def _is_share(column: str) -> bool:
    """An accuracy or a share of samples: a number in [0, 1]."""
    return column in ("test_acc", "memorised", "corrected") or column.startswith(("test_acc_", "train_acc_"))


def _epochs_text(epochs: list) -> str:
    shown = [format_value(e) for e in epochs]
    return ", ".join(shown if len(shown) <= 5 else [*shown[:3], "…", shown[-1]])


def read_metrics(run_dir: Path, columns: list[str] | None = None, epochs: int | None = None) -> pd.DataFrame | None:
    """The run's metrics.csv (``columns`` of it; default all), or None when it has no epoch yet.

    UnreadableMetrics (a ValueError) when it cannot be trusted: not CSV, no ``epoch`` or
    ``test_acc`` column (or one of ``columns``), a value that is not a number, a last line cut
    short, an accuracy outside [0, 1], epochs other than 1, 2, 3, ... (up to ``epochs``, given).
    NaN is a number here: a diverged run's loss is one.
    """
    path = Path(run_dir) / METRICS_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    if not data:
        return None
    # MetricsCSV writes whole lines: a file that does not end with one was cut mid-line.
    if not data.endswith(b"\n"):
        raise UnreadableMetrics(path, "last line cut short (no line end)")
    try:
        # Blank lines kept (as empty values), so that a row's line in the file is its index + 2.
        metrics = pd.read_csv(io.BytesIO(data), skip_blank_lines=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise UnreadableMetrics(path, f"not CSV: {str(e).strip()}") from None
    wanted = list(dict.fromkeys([*REQUIRED_METRICS, *(columns or metrics.columns)]))
    missing = [c for c in wanted if c not in metrics.columns]
    if missing:
        raise UnreadableMetrics(path, f"no column {', '.join(missing)}")
    metrics = metrics[wanted]
    for column in wanted:
        _check_numbers(metrics[column], column, path)
    found = metrics["epoch"].tolist()
    if found != list(range(1, len(found) + 1)):
        raise UnreadableMetrics(path, f"epochs {_epochs_text(found)}, not 1, 2, 3, ...")
    if epochs is not None and len(found) != epochs:
        raise UnreadableMetrics(path, f"epochs {_epochs_text(found)} of {epochs}" if found else
                                f"no epoch of {epochs}")
    return None if metrics.empty else metrics


def _check_numbers(values: pd.Series, column: str, path: Path) -> None:
    numbers = pd.to_numeric(values, errors="coerce")
    text = numbers.isna() & values.notna()
    if text.any():
        line = text.idxmax()
        raise UnreadableMetrics(path, f"{column}: {values[line]!r} (line {line + 2}) is not a number")
    share = _is_share(column)
    if (share or column == "epoch") and numbers.isna().any():
        count = int(numbers.isna().sum())
        raise UnreadableMetrics(path, f"{column}: {count} empty value{'s' if count > 1 else ''}")
    outside = (numbers < 0) | (numbers > 1)
    if share and outside.any():
        line = outside.idxmax()
        raise UnreadableMetrics(path, f"{column}: {format_value(numbers[line])} (line {line + 2}) is outside [0, 1]")


def plot_run(run_dir: Path) -> list[Path]:
    """Per-class test accuracy and memorisation curves next to ``run_dir/metrics.csv``; the paths
    written (none when the run has no finished epoch). ValueError when metrics.csv is unreadable."""
    run_dir = Path(run_dir)
    metrics = read_metrics(run_dir)
    if metrics is None:
        return []
    title = _run_title(run_dir)
    return [plot_per_class(metrics, run_dir / PER_CLASS_PLOT, title),
            plot_memorisation(metrics, run_dir / MEMORISATION_PLOT, title)]


def plot_per_class(metrics: pd.DataFrame, path: Path, title: str = "") -> Path:
    """Test accuracy of each class vs epoch, one line per class, and the overall accuracy."""
    classes = sorted((c for c in metrics.columns if c.startswith("test_acc_class_")),
                     key=lambda c: int(c.rsplit("_", 1)[1]))
    legend = [f"class {c.rsplit('_', 1)[1]}" for c in classes] + ["all classes"] if len(classes) <= 20 else []
    fig, (ax,) = _figure(1, legend)
    epochs = metrics["epoch"]
    for column, colour in zip(classes, _colours(len(classes))):
        ax.plot(epochs, metrics[column] * 100, color=colour, lw=1.2 if legend else 0.6,
                label=f"class {column.rsplit('_', 1)[1]}")
    ax.plot(epochs, metrics["test_acc"] * 100, color="black", lw=2.0, ls="--", label="all classes")
    ax.set(xlabel="epoch", ylabel="test accuracy (%)", ylim=(-2, 102))
    ax.grid(alpha=0.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if legend:
        _legend(fig, *ax.get_legend_handles_labels())
    fig.suptitle(title or "test accuracy per class", fontsize="medium")
    return _save(fig, path)


def plot_memorisation(metrics: pd.DataFrame, path: Path, title: str = "") -> Path:
    """Left: shares of flipped training samples predicted as their noisy / true label.
    Right: training accuracy on the noisy and on the clean labels, and test accuracy."""
    fig, (left, right) = _figure(2)
    epochs = metrics["epoch"]
    left.plot(epochs, metrics["memorised"] * 100, color="tab:red", label="memorised (noisy label)")
    left.plot(epochs, metrics["corrected"] * 100, color="tab:green", label="corrected (true label)")
    left.set(xlabel="epoch", ylabel="% of flipped train samples", ylim=(-2, 102), title="flipped samples")
    right.plot(epochs, metrics["train_acc_noisy"] * 100, color="tab:red", label="train, noisy labels")
    right.plot(epochs, metrics["train_acc_clean"] * 100, color="tab:green", label="train, clean labels")
    right.plot(epochs, metrics["test_acc"] * 100, color="black", ls="--", label="test")
    right.set(xlabel="epoch", ylabel="accuracy (%)", ylim=(-2, 102), title="accuracy")
    for ax in (left, right):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle(title or "memorisation", fontsize="medium")
    return _save(fig, path)


def plot_sweep(board: Leaderboard, out_dir: Path | None = None, metric: str = "last") -> list[Path]:
    """Accuracy vs noise rate, accuracy vs epoch and the critical-difference diagrams for the runs of
    ``board`` (a Leaderboard), written to ``out_dir`` (default: the leaderboard's root); the paths
    written. The completed runs left out of the epoch curves (their metrics.csv missing or unreadable)
    go to ``board.unplotted``."""
    out = Path(out_dir if out_dir is not None else board.root)
    out.mkdir(parents=True, exist_ok=True)
    if not (board.cells["n_seeds"] > 0).any():
        return []
    curves, board.unplotted = mean_curves(board.runs[board.runs["status"] == COMPLETED])
    cd = [_save(cd_diagram_figure(r), out / CD_PLOT.format(metric=m)) for m, r in board.stats.rankings.items()]
    return [plot_acc_vs_rate(board.cells, out / RATE_PLOT, metric), *plot_acc_vs_epoch(board, curves, out), *cd]


def cd_title(ranking: Ranking) -> str:
    """The diagram's title: the metric, what was ranked, and the tests."""
    seeds = ranking.seeds
    seeds = f"{seeds[0]}" if seeds[0] == seeds[1] else f"{seeds[0]}–{seeds[1]}"
    test = (f"Friedman p = {ranking.p_value:.3g}" if ranking.test == "Friedman"
            else f"sign test p = {ranking.p_value:.3g}")
    return (f"Average rank of test accuracy, {METRIC_NAMES[ranking.metric]} (1 = best)\n"
            f"{ranking.n_settings} settings × {ranking.n_methods} losses, {seeds} seeds per cell; {test}\n"
            f"bars join losses the Nemenyi test (α = {ALPHA}) does not tell apart")


def cd_diagram_figure(ranking: Ranking) -> Figure:
    """The critical-difference diagram of ``ranking`` (scikit-posthocs): each loss at its average
    rank, a bar under the losses the Nemenyi test does not tell apart, and the critical difference."""
    import scikit_posthocs as sp

    k = ranking.n_methods
    average = ranking.methods.set_index("method")["avg_rank"]
    # Labels hang below the axis in two columns, one row each; the bars stack between them and the axis.
    side = LEGEND_CHAR * 1.1 * (max(len(m) for m in average.index) + 7) + 0.2
    width = max(7.5, 2 * side + 0.8 * k)
    rows = (k + 1) // 2 + len(ranking.groups) + 2
    height = 1.6 + 0.3 * rows
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=side / width, right=1 - side / width, top=1 - 0.95 / height, bottom=0.1 / height)
    ax = fig.add_subplot()
    sp.critical_difference_diagram(average, ranking.posthoc, ax=ax, alpha=ALPHA,
                                   label_fmt_left="{label} ({rank:.2f})", label_fmt_right="({rank:.2f}) {label}",
                                   label_props={"fontsize": "small"}, text_h_margin=0.03 * k)
    pad = 0.05 + 0.02 * k  # the markers at rank 1 and k whole
    ax.set_xlim(1 - pad, k + pad)
    ax.set_xticks(range(1, k + 1))
    # The critical difference, above the rank axis's labels (past its end when no two losses can differ).
    ax.plot([1, 1 + ranking.cd], [1.3, 1.3], color="k", lw=1.5, clip_on=False)
    ax.text(1 + ranking.cd / 2, 1.45, f"critical difference (Nemenyi) = {ranking.cd:.2f}", ha="center",
            va="bottom", fontsize="small")
    ax.set_ylim(top=2.2)
    fig.suptitle(cd_title(ranking), fontsize="medium")
    return fig


def _labelled(cells: pd.DataFrame) -> pd.DataFrame:
    """Cells with their table row (``row``) and column (``column``) labels, as the leaderboard prints
    them, and their line in a plot: its label (``line``: the row and the values of the config keys
    its table shows beside it) and its place among the lines (``line_order``)."""
    parts = [_lines(group.assign(row=row_labels(group), column=column_labels(group)))
             for _, group in cells.groupby(["dataset", "model", "epochs"], sort=False)]
    return pd.concat(parts) if parts else cells.assign(row=[], column=[], line=[], line_order=[])


def _lines(table: pd.DataFrame) -> pd.DataFrame:
    keys = varying_keys(table)
    swept = list(table[keys].itertuples(index=False, name=None))
    return table.assign(
        line=[" · ".join([row, *(f"{k}={v}" for k, v in zip(keys, values))])
              for row, values in zip(table["row"], swept)],
        line_order=[row_order(row, loss, values) for row, loss, values in zip(table["row"], table["loss"], swept)])


def plot_acc_vs_rate(cells: pd.DataFrame, path: Path, metric: str = "last") -> Path:
    """``acc_vs_rate_figure`` written to ``path``."""
    return _save(acc_vs_rate_figure(cells, metric), path)


def band_label(n_seeds: list[int]) -> str:
    """The legend entry of the rate plot's shaded bands, given the seed counts of the points they span."""
    low, high = min(n_seeds), max(n_seeds)
    n = f"{low}" if low == high else f"{low}–{high}"
    return f"lines: mean over seeds\nshaded, between points of ≥ 2\nseeds: ± 1 sample std (ddof=1),\nn = {n} seeds"


def acc_vs_rate_figure(cells: pd.DataFrame, metric: str = "last") -> Figure:
    """Test accuracy vs noise rate, one line per loss setting, one panel per dataset and noise type:
    the mean over seeds, shaded ± 1 sample std (ddof=1, as the tables) between neighbouring points
    that both have two seeds or more (a single seed has no std). Clean runs (noise ``none``) start
    every line of their dataset at rate 0; a noise type with a fixed rate (CIFAR-N) is placed at its
    realised rate."""
    done = _labelled(cells[cells["n_seeds"] > 0])
    done = done.assign(x=done["rate"].where(~done["noise"].map(fixed_rate), done["realised_rate"]))
    clean = done[done["noise"] == "none"]
    noisy = done[done["noise"] != "none"]
    panels = []
    for dataset in sorted(done["dataset"].unique()):
        here = noisy[noisy["dataset"] == dataset]
        keys = sorted({(n, v if not fixed_rate(n) else "") for n, v in zip(here["noise"], here["variant"])},
                      key=lambda k: column_order(k[0], k[1], 0.0))
        for noise, variant in keys:
            same = here[(here["noise"] == noise) & ((here["variant"] == variant) | fixed_rate(noise))]
            panels.append((f"{dataset} · {noise}" + (f" ({variant})" if variant else ""), noise,
                           pd.concat([clean[clean["dataset"] == dataset], same])))
        if not keys:
            panels.append((f"{dataset} · clean", "none", clean[clean["dataset"] == dataset]))
    setups = done[["model", "epochs"]].drop_duplicates()
    order = dict(zip(zip(done["model"], done["epochs"], done["line"]), done["line_order"]))
    line_keys = sorted(order, key=lambda k: (k[0], k[1], order[k]))
    colours = dict(zip(line_keys, _colours(len(line_keys))))
    labels = {key: key[2] if len(setups) == 1 else f"{key[2]} · {key[0]} · {key[1]} ep" for key in line_keys}
    drawn = [(at, key, line.sort_values("x")) for at, (_, _, panel) in enumerate(panels)
             for key, line in panel.groupby(["model", "epochs", "line"], sort=False)]
    several = [(line["n_seeds"] > 1).to_numpy() for _, _, line in drawn]
    # fill_between shades from one point to the next where ``where`` holds at both.
    spanned = [s & (np.r_[s[1:], False] | np.r_[False, s[:-1]]) for s in several]
    banded = [n for (_, _, line), span in zip(drawn, spanned) for n in line.loc[span, "n_seeds"]]
    band = band_label(banded) if banded else None
    fig, axes = _figure(len(panels), [*labels.values(), *filter(None, [band])])
    handles = {}
    for (at, key, line), where, span in zip(drawn, several, spanned):
        mean, std = line[f"{metric}_mean"], line[f"{metric}_std"]
        (handles[labels[key]],) = axes[at].plot(line["x"], mean, marker="o", ms=3, color=colours[key],
                                                label=labels[key])
        if span.any():
            axes[at].fill_between(line["x"], mean - std, mean + std, where=where, color=colours[key], alpha=0.15,
                                  lw=0)
    for ax, (title, noise, _) in zip(axes, panels):
        ax.set(title=title, xlabel="realised noise rate" if fixed_rate(noise) else "noise rate",
               ylabel=f"test accuracy (%), {metric} epoch")
        ax.grid(alpha=0.3)
    if band:
        handles[band] = Patch(color="grey", alpha=0.3, lw=0)
    _legend(fig, list(handles.values()), list(handles))
    return fig


def plot_acc_vs_epoch(board: Leaderboard, curves: dict[tuple, pd.Series], out_dir: Path) -> list[Path]:
    """Per dataset, model and epoch count: test accuracy vs epoch, mean over the completed seeds of
    each cell (``curves``, from ``mean_curves``), one line per loss setting, one panel per noise column."""
    keys = cell_keys(board.cells)
    done = _labelled(board.cells[board.cells["n_seeds"] > 0])
    paths = []
    for (dataset, model, epochs), group in done.groupby(["dataset", "model", "epochs"], sort=True):
        columns = sorted({(n, v, r): c for n, v, r, c in zip(group["noise"], group["variant"], group["rate"],
                                                              group["column"])}.items(),
                         key=lambda kv: column_order(*kv[0]))
        column_names = list(dict.fromkeys(c for _, c in columns))
        order = dict(zip(group["line"], group["line_order"]))
        lines = sorted(order, key=order.get)
        colours = dict(zip(lines, _colours(len(lines))))
        fig, axes = _figure(len(column_names), colours, sharey=True)
        handles = {}
        for ax, column in zip(axes, column_names):
            for cell in group[group["column"] == column].to_dict("records"):
                curve = curves.get(tuple(cell[k] for k in keys))
                if curve is None:
                    continue
                (handle,) = ax.plot(curve.index, curve, color=colours[cell["line"]], lw=1.2, label=cell["line"])
                handles.setdefault(cell["line"], handle)
            ax.set(title=column, xlabel="epoch", ylabel="test accuracy (%)")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
        _legend(fig, list(handles.values()), list(handles))
        fig.suptitle(f"{dataset} · {model} · {epochs} epochs: test accuracy, mean over seeds", fontsize="medium")
        paths.append(_save(fig, Path(out_dir) / f"acc_vs_epoch_{dataset}_{model}_{epochs}ep.png"))
    return paths


def mean_curves(runs: pd.DataFrame) -> tuple[dict[tuple, pd.Series], list[Problem]]:
    """Test accuracy (%) per epoch, mean over the runs of each cell (keyed by its ``cell_keys``), and
    the runs left out: those whose metrics.csv is missing, unreadable or not of their epoch count."""
    cell_ids: dict[tuple, int] = {}
    frames, unplotted = [], []
    keys = runs[cell_keys(runs)].itertuples(index=False, name=None)
    for key, run_dir, path, epochs in zip(keys, runs["run_dir"], runs["path"], runs["epochs"]):
        try:
            metrics = read_metrics(Path(run_dir), list(REQUIRED_METRICS), epochs)
        except UnreadableMetrics as e:
            reason = e.reason
        except OSError as e:
            reason = f"{type(e).__name__}: {e}"
        else:
            if metrics is not None:
                frames.append(metrics.assign(cell=cell_ids.setdefault(key, len(cell_ids))))
                continue
            reason = "missing"
        unplotted.append(Problem(f"{path}/{METRICS_FILE}", "unplotted", reason))
    if not frames:
        return {}, unplotted
    means = pd.concat(frames, ignore_index=True).groupby(["cell", "epoch"])["test_acc"].mean() * 100
    by_id = {cell: curve.droplevel(0) for cell, curve in means.groupby(level=0)}
    return {key: by_id[cell] for key, cell in cell_ids.items()}, unplotted
