"""Full runs of the paper presets beside the papers' own code: MNIST, seed 0, 50 epochs.

    python scripts/official_training_runs.py --checkouts DIR [--data-root ../shared/data] [--jobs 2]
        [--out multirun/official_training] [--results results/official_training] [--cells SUBSTRING]

Each cell is trained twice: by noisybench (``python -m noisybench experiment=<paper>_mnist ...
trainer.amp=false``, the paper's own noise generator, fp32) and by the paper's own ``main.py`` with
its own config, noise, initialisation and data order (``scripts/check_official_training.py
--full``). DIR holds clones of the official repositories under their GitHub names. A re-run skips
finished sides, those in --out and those already recorded in --results/curves.csv (committed, so a
fresh checkout goes on where the last one stopped), and resumes noisybench's from its last epoch
checkpoint (the papers' code cannot resume: an unfinished run of it starts again). As each run ends, the table
(``table.md``, ``table.csv``: last and best epoch, ours and theirs, per cell), the curves
(``curves.png``) and each run's per-epoch test accuracy (``curves.csv``) go to --results. Each run
records the code that trained it: noisybench's commit (``ours.commit``, one line per launch, so a run
resumed under newer code names both) and the paper repository's (``theirs/official.json``).

Target: last-epoch test accuracy within 3 points of the paper's code for the bounded losses, 8 for CE.
"""
from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
REPOSITORIES = {"apl": "Active-Passive-Losses", "alfs": "ALFs", "anl": "Active-Negative-Loss"}
EPOCHS = 50
TARGET_POINTS = {"ce": 8.0}  # CE swings about 4 points an epoch late in training
DEFAULT_TARGET = 3.0


@dataclass(frozen=True)
class Cell:
    paper: str
    loss: str
    noise: str
    rate: float

    @property
    def name(self) -> str:
        return f"{self.paper}_{self.loss}_{self.noise}{self.rate}"

    @property
    def target(self) -> float:
        return TARGET_POINTS.get(self.loss, DEFAULT_TARGET)


CELLS = [Cell(paper, loss, noise, rate)
         for noise, rate in (("symmetric", 0.8), ("asymmetric", 0.4))
         for paper, loss in (("anl", "anl_ce"), ("anl", "anl_fl"), ("apl", "nce_rce"), ("apl", "ce"),
                             ("apl", "gce"), ("apl", "sce"), ("alfs", "nce_agce"), ("alfs", "nce_aul"))]


def ours_command(cell: Cell, run_dir: Path, data_root: Path) -> list[str]:
    return [sys.executable, "-m", "noisybench", f"experiment={cell.paper}_mnist", f"loss={cell.loss}",
            f"noise={cell.noise}", f"noise.rate={cell.rate}", "seed=0", f"data.root={data_root}",
            "trainer.amp=false", "trainer.num_threads=1", "trainer.progress=false", f"hydra.run.dir={run_dir}"]


def theirs_command(cell: Cell, run_dir: Path, checkouts: Path, data_root: Path) -> list[str]:
    return [sys.executable, str(REPO_ROOT / "scripts" / "check_official_training.py"), "--paper", cell.paper,
            "--checkout", str(checkouts / REPOSITORIES[cell.paper]), "--loss", cell.loss, "--noise", cell.noise,
            "--rate", str(cell.rate), "--seed", "0", "--data-root", str(data_root), "--full", str(run_dir)]


def ours_curve(run_dir: Path) -> list[float] | None:
    summary = run_dir / "summary.json"
    if not summary.is_file() or json.loads(summary.read_text()).get("status") != "completed":
        return None
    with (run_dir / "metrics.csv").open(newline="") as f:
        return [float(row["test_acc"]) for row in csv.DictReader(f)]


def current_commit() -> str:
    result = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short=7", "HEAD"],
                            capture_output=True, text=True)
    return result.stdout.strip() or "unknown"


def record_launch(cell_dir: Path) -> None:
    """Append the commit that runs noisybench's side now, unless it is already the last one recorded."""
    path = cell_dir / "ours.commit"
    commits = path.read_text().split() if path.is_file() else []
    commit = current_commit()
    if not commits or commits[-1] != commit:
        cell_dir.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join([*commits, commit]) + "\n")


def run_commits(cell_dir: Path) -> tuple[str, str]:
    """(noisybench's commit(s) joined by '+', the paper repository's), '' where not recorded."""
    ours = cell_dir / "ours.commit"
    theirs = cell_dir / "theirs" / "official.json"
    return ("+".join(ours.read_text().split()) if ours.is_file() else "",
            json.loads(theirs.read_text()).get("commit", "") if theirs.is_file() else "")


def theirs_curve(run_dir: Path) -> list[float] | None:
    path = run_dir / "curve.csv"
    if not path.is_file():
        return None
    with path.open(newline="") as f:
        curve = [float(row["test_acc"]) for row in csv.DictReader(f)]
    return curve if len(curve) == EPOCHS else None


SIDES = ("noisybench", "paper")


def recorded_runs(results: Path) -> dict[tuple[str, str], tuple[list[float], str]]:
    """(cell name, side) -> (test accuracy per epoch, commit) of the finished runs in --results/curves.csv."""
    path = results / "curves.csv"
    runs: dict[tuple[str, str], tuple[list[float], str]] = {}
    if path.is_file():
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                cell = Cell(row["paper"], row["loss"], row["noise"], float(row["rate"]))
                curve, _ = runs.setdefault((cell.name, row["side"]), ([], row.get("commit", "")))
                curve.append(float(row["test_acc"]))
    return {key: run for key, run in runs.items() if len(run[0]) == EPOCHS}


Run = tuple[list[float] | None, str]  # test accuracy per epoch (None: not finished), the commit that trained it


def cell_runs(cell: Cell, out: Path, recorded: dict) -> tuple[Run, Run]:
    """Each side's finished run: the one in --out, with the commit it recorded there, else the one
    recorded in --results/curves.csv, with the commit written beside it."""
    live = zip(SIDES, (ours_curve(out / cell.name / "ours"), theirs_curve(out / cell.name / "theirs")),
               run_commits(out / cell.name))
    ours, theirs = ((curve, commit) if curve is not None else recorded.get((cell.name, side), (None, ""))
                    for side, curve, commit in live)
    return ours, theirs


def pending_jobs(cells: list[Cell], out: Path, checkouts: Path, data_root: Path,
                 recorded: dict) -> list[tuple[str, list[str], Path]]:
    jobs = []
    for cell in cells:
        ours_dir, theirs_dir = out / cell.name / "ours", out / cell.name / "theirs"
        (ours, _), (theirs, _) = cell_runs(cell, out, recorded)
        if ours is None:
            jobs.append((f"{cell.name} ours", ours_command(cell, ours_dir, data_root), out / cell.name / "ours.log"))
        if theirs is None:
            jobs.append((f"{cell.name} theirs", theirs_command(cell, theirs_dir, checkouts, data_root),
                         out / cell.name / "theirs.log"))
    return jobs


def run_jobs(jobs, parallel: int, on_done=lambda: None) -> int:
    """Run the jobs, ``parallel`` at a time, each with one intra-op thread, calling ``on_done`` as each
    ends; return the failures."""
    running: list[tuple[str, subprocess.Popen]] = []
    failures = 0
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    while jobs or running:
        while jobs and len(running) < parallel:
            name, command, log = jobs.pop(0)
            log.parent.mkdir(parents=True, exist_ok=True)
            print(f"start {name}", flush=True)
            if name.endswith(" ours"):
                record_launch(log.parent)
            with log.open("ab") as f:
                running.append((name, subprocess.Popen(command, stdout=f, stderr=subprocess.STDOUT,
                                                       cwd=REPO_ROOT, env=env)))
        time.sleep(5)
        for name, process in list(running):
            if process.poll() is not None:
                running.remove((name, process))
                failures += process.returncode != 0
                print(f"{'done' if process.returncode == 0 else 'FAILED'} {name}", flush=True)
                on_done()
    return failures


def write_results(cells: list[Cell], out: Path, results: Path) -> None:
    rows, curves, commits = [], {}, {}
    recorded = recorded_runs(results)
    for cell in cells:
        (ours, ours_commit), (theirs, theirs_commit) = cell_runs(cell, out, recorded)
        curves[cell] = (ours, theirs)
        commits[cell] = (ours_commit if ours else "", theirs_commit if theirs else "")
        if ours is None and theirs is None:
            continue
        pct = lambda curve, f: None if curve is None else round(100 * f(curve), 2)  # noqa: E731
        row = {"paper": cell.paper, "loss": cell.loss, "noise": cell.noise, "rate": cell.rate,
               "ours_last": pct(ours, lambda c: c[-1]), "theirs_last": pct(theirs, lambda c: c[-1]),
               "ours_best": pct(ours, max), "theirs_best": pct(theirs, max), "target": cell.target,
               "ours_commit": commits[cell][0], "theirs_commit": commits[cell][1]}
        both = ours is not None and theirs is not None
        row["delta_last"] = round(row["ours_last"] - row["theirs_last"], 2) if both else None
        row["within_target"] = (abs(row["delta_last"]) <= cell.target) if both else None
        rows.append(row)
    results.mkdir(parents=True, exist_ok=True)
    columns = ["paper", "loss", "noise", "rate", "ours_last", "theirs_last", "delta_last", "target",
               "within_target", "ours_best", "theirs_best", "ours_commit", "theirs_commit"]
    with (results / "table.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    show = lambda v: "–" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| paper | loss | noise | last: ours | last: paper's code | Δ | within | best: ours | best: paper's code "
             "| noisybench commit |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        within = "–" if r["within_target"] is None else ("yes" if r["within_target"] else "NO") + f" (±{r['target']:g})"
        lines.append(f"| {r['paper']} | {r['loss']} | {r['noise']} {r['rate']} | {show(r['ours_last'])} | "
                     f"{show(r['theirs_last'])} | {show(r['delta_last'])} | {within} | {show(r['ours_best'])} | "
                     f"{show(r['theirs_best'])} | {r['ours_commit'] or '–'} |")
    (results / "table.md").write_text("\n".join(lines) + "\n")
    with (results / "curves.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["paper", "loss", "noise", "rate", "side", "epoch", "test_acc", "commit"])
        for cell, (ours, theirs) in curves.items():
            for side, curve, commit in zip(SIDES, (ours, theirs), commits[cell]):
                for epoch, acc in enumerate(curve or [], 1):
                    writer.writerow([cell.paper, cell.loss, cell.noise, cell.rate, side, epoch, f"{acc:.6f}", commit])
    plot_curves({c: v for c, v in curves.items() if v != (None, None)}, results / "curves.png")


def plot_curves(curves: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not curves:
        return
    cols = min(4, len(curves))
    rows = (len(curves) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False, sharex=True)
    for ax, (cell, (ours, theirs)) in zip(axes.flat, curves.items()):
        for curve, label, style in ((ours, "noisybench", "-"), (theirs, "paper's code", "--")):
            if curve:
                ax.plot(range(1, len(curve) + 1), [100 * a for a in curve], style, label=label)
        ax.set_title(f"{cell.paper} {cell.loss}, {cell.noise} {cell.rate}", fontsize=9)
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(curves):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    fig.suptitle("MNIST, seed 0: noisybench's preset beside the paper's own code (fp32, CPU)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkouts", type=Path, required=True)
    parser.add_argument("--data-root", type=Path, default=REPO_ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "multirun" / "official_training")
    parser.add_argument("--results", type=Path, default=REPO_ROOT / "results" / "official_training")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once, one thread each")
    parser.add_argument("--cells", default="", help="only the cells whose name contains this")
    parser.add_argument("--report-only", action="store_true", help="write the results of the runs so far")
    args = parser.parse_args(argv)
    missing = [name for name in REPOSITORIES.values() if not (args.checkouts / name).is_dir()]
    if missing:
        parser.error(f"--checkouts {args.checkouts} lacks {', '.join(missing)}")
    cells = [cell for cell in CELLS if args.cells in cell.name]
    failures = 0
    if not args.report_only:
        jobs = pending_jobs(cells, args.out, args.checkouts.resolve(), args.data_root.resolve(),
                            recorded_runs(args.results))
        print(f"{len(jobs)} runs to go", flush=True)
        # The results are rewritten as each run ends, so a runner stopped midway leaves them current.
        failures = run_jobs(jobs, args.jobs, on_done=lambda: write_results(CELLS, args.out, args.results))
    write_results(CELLS, args.out, args.results)
    print((args.results / "table.md").read_text())
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
