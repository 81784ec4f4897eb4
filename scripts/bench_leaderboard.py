"""Leaderboard speed: ``python -m noisybench.leaderboard`` over 1,000 synthetic run directories.

The runs form a CIFAR-10 benchmark (cnn8, 120 epochs): 10 losses x 10 noise columns (clean,
symmetric 0.2-0.8, asymmetric 0.1-0.4, instance 0.4) x 10 seeds. Each run directory holds what a
real run leaves: ``.hydra/config.yaml`` (the app's composed config), ``summary.json`` (loss
hyperparameters resolved by ``build_loss``) and a 120-row ``metrics.csv``. A few runs are diverged,
failed, or killed before their summary was written (they are placed by their config). The
command runs in a fresh interpreter, so its imports are part of the time; the target is < 10 s.
What it writes and is timed for: the tables, the statistics (ranks over the ten settings with the
Friedman and Nemenyi tests, 900 paired t-tests over seeds) and the plots, critical-difference
diagrams included.

    python scripts/bench_leaderboard.py
    python scripts/bench_leaderboard.py --runs 1000 --plots --keep /tmp/lb_bench
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from noisybench.artifacts import METRICS_FILE, SUMMARY_FILE
from noisybench.losses import build_loss

LOSSES = ("ce", "fl", "gce", "sce", "nce_rce", "nfl_rce", "nce_mae", "nce_agce", "ce_eps_mae", "fl_eps_mae")
COLUMNS = (("none", 0.0), *(("symmetric", r) for r in (0.2, 0.4, 0.6, 0.8)),
           *(("asymmetric", r) for r in (0.1, 0.2, 0.3, 0.4)), ("instance", 0.4))
EPOCHS = 120
NUM_CLASSES = 10
TARGET_S = 10.0


def make_runs(root: Path, n_runs: int, seed: int = 0) -> dict[str, int]:
    """Write ``n_runs`` run directories under ``root``; returns how many have each status."""
    rng = np.random.default_rng(seed)
    cells = list(itertools.product(LOSSES, COLUMNS))
    seeds_per_cell = math.ceil(n_runs / len(cells))
    statuses: dict[str, int] = {}
    with initialize_config_module(config_module="noisybench.conf", version_base="1.3"):
        for n, ((loss, (noise, rate)), seed_) in enumerate(itertools.product(cells, range(seeds_per_cell))):
            if n == n_runs:
                break
            if seed_ == 0:  # one composition per cell; the seed is set below
                # loss.name on the ce group: every loss hyperparameter then takes its default
                cfg = compose(config_name="config", overrides=[
                    "dataset=cifar10", "model=cnn8", "loss=ce", f"loss.name={loss}", f"noise={noise}",
                    f"noise.rate={rate}", f"trainer.epochs={EPOCHS}"])
                params = build_loss(cfg.loss, NUM_CLASSES, dataset="cifar10", noise=noise, rate=rate).params
            cfg.seed = seed_
            run_dir = root / f"{loss}_{noise}_{rate}" / str(seed_)
            (run_dir / ".hydra").mkdir(parents=True)
            (run_dir / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
            status = rng.choice(["completed", "diverged", "failed", "killed"], p=[0.97, 0.01, 0.01, 0.01])
            statuses[status] = statuses.get(status, 0) + 1
            epochs_done = EPOCHS if status == "completed" else int(rng.integers(1, EPOCHS))
            curve = _write_metrics(run_dir / METRICS_FILE, epochs_done, rate, rng)
            if status == "killed":
                continue
            summary = {
                "status": str(status), "dataset": "cifar10", "num_classes": NUM_CLASSES,
                "noise": {"type": noise, "variant": cfg.noise.get("variant"), "rate": rate,
                          "realised_rate": rate * (1 - 0.001 * rng.random())},
                "loss": loss, "loss_params": params, "model": "cnn8", "seed": seed_, "noise_seed": seed_,
                "epochs": EPOCHS, "epochs_completed": epochs_done,
                "test_acc_last": float(curve[-1]), "test_acc_best": float(curve.max()),
                "best_epoch": int(curve.argmax()) + 1, "wall_time_s": 600.0,
            }
            if status == "diverged":
                summary["diverged_epoch"] = epochs_done + 1
            if status == "failed":
                summary["error"] = "RuntimeError: CUDA out of memory"
            (run_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
    return statuses


def _write_metrics(path: Path, epochs: int, rate: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(1, epochs + 1) / EPOCHS
    test_acc = np.clip((0.9 - 0.5 * rate) * (1 - np.exp(-6 * t)) + rng.normal(0, 0.01, epochs), 0, 1)
    class_cols = [f"test_acc_class_{k}" for k in range(NUM_CLASSES)]
    header = ["epoch", "lr", "train_loss", "train_acc_noisy", "train_acc_clean", "memorised", "corrected",
              "test_loss", "test_acc", *class_cols, "epoch_time_s"]
    rows = [",".join(header)]
    for e in range(epochs):
        acc = test_acc[e]
        values = [e + 1, 0.01 * (1 + math.cos(math.pi * e / EPOCHS)) / 2, 1.5 - acc, acc * (1 - rate), acc,
                  rate * t[e], acc * (1 - rate * t[e]), 1.6 - acc, acc,
                  *np.clip(acc + rng.normal(0, 0.05, NUM_CLASSES), 0, 1), 5.0]
        rows.append(",".join(repr(float(v)) if isinstance(v, (float, np.floating)) else str(v) for v in values))
    path.write_text("\n".join(rows) + "\n")
    return test_acc


def time_leaderboard(root: Path, extra: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "noisybench.leaderboard", str(root), *extra],
                          capture_output=True, text=True)
    return time.perf_counter() - start, proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--plots", action="store_true", help="also time the CLI with --plots")
    parser.add_argument("--keep", type=Path, default=None, help="write the runs here and keep them")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lb_bench_") as tmp:
        root = args.keep or Path(tmp)
        start = time.perf_counter()
        statuses = make_runs(root, args.runs)
        print(f"wrote {args.runs} run directories in {time.perf_counter() - start:.1f} s under {root}: "
              + ", ".join(f"{v} {k}" for k, v in sorted(statuses.items())))
        elapsed, proc = time_leaderboard(root, [])
        if proc.returncode != 0:
            sys.exit(f"leaderboard failed ({proc.returncode}):\n{proc.stderr}")
        print(proc.stdout.splitlines()[0])
        verdict = "under" if elapsed < TARGET_S else "OVER"
        print(f"python -m noisybench.leaderboard over {args.runs} runs: {elapsed:.2f} s "
              f"({verdict} the {TARGET_S:.0f} s target)")
        if args.plots:
            elapsed, proc = time_leaderboard(root, ["--plots"])
            if proc.returncode != 0:
                sys.exit(f"leaderboard --plots failed ({proc.returncode}):\n{proc.stderr}")
            print(f"python -m noisybench.leaderboard --plots over {args.runs} runs: {elapsed:.2f} s")


if __name__ == "__main__":
    main()
