"""Packed training throughput: K cells trained as one stacked model vs the one-cell trainer.

For MNIST-shaped cnn4 (1x28x28, no augmentation) and CIFAR-shaped cnn8 (3x32x32, crop + flip), on
random uint8 images and labels, each configuration runs the trainer itself
(``noisybench.trainer.train_pack``: each cell's own data order, augmentation draws, noisy labels,
loss, per-cell clipping and SGD, per-epoch evaluation) for two epochs of ``--steps`` batches of 128
per cell, and times the second. The test set is the dataset's test/train share of the epoch's
images (MNIST 10,000/60,000, CIFAR-10 10,000/50,000), so the timed epoch carries its share of
evaluation. The one-cell trainer (``noisybench.trainer.train``, what a single run executes) is
timed the same way in the same process.

Prints images/s per cell and in total for each K, the total's ratio to the one-cell trainer and,
from the best K's rate, the projected wall time of APL's whole MNIST table (270 cells x 50 epochs x
60,000 training images and their evaluation). Runs on CUDA when there is a GPU, else on the CPU.

    python scripts/bench_pack.py                                          # cnn4, cnn8; K = 1 4 16 64
    python scripts/bench_pack.py --steps 3 --packs 1 4 16 --models cnn4   # a short CPU run
    python scripts/bench_pack.py --losses ce gce sce nce_rce              # cells cycle through losses
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from noisybench.artifacts import METRICS_FILE
from noisybench.logger import NullLogger
from noisybench.losses import build_loss
from noisybench.models import build_model
from noisybench.pack import cell_footprint_bytes, check_pack_fits, free_memory_bytes, shared_bytes
from noisybench.registry import ConfigError
from noisybench.trainer import Cell, TrainData, bf16_is_fast, resolve_device, seeds_for, train, train_pack

BATCH = 128
NUM_CLASSES = 10
# name: input shape, augmentation, normalisation, test/train share of the real dataset
MODELS = {
    "cnn4": ((1, 28, 28), "none", ((0.1307,), (0.3081,)), 10_000 / 60_000),
    "cnn8": ((3, 32, 32), "crop_flip", ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)), 10_000 / 50_000),
}
APL_MNIST_TABLE = {"cells": 270, "epochs": 50, "train_images": 60_000}


def trainer_config(args, model: str, loss: str, seed: int, pack: int):
    return OmegaConf.create({
        "seed": seed,
        "dataset": {"name": "random"}, "noise": {"name": "random"}, "model": {"name": model},
        "loss": {"name": loss},
        "trainer": {"epochs": 2, "batch_size": BATCH, "eval_batch_size": 1024, "lr": 0.01, "momentum": 0.9,
                    "nesterov": False, "weight_decay": 1e-4, "l1": 0.0, "grad_clip": 5.0, "schedule": "cosine",
                    "eta_min": 0.0, "milestones": [], "gamma": 0.1, "device": args.device, "amp": args.amp,
                    "channels_last": "auto", "compile": args.compile, "num_threads": args.threads,
                    "checkpoint_every": 0, "progress": False, "pack": pack},
    })


def random_data(shape, augment, norm, test_share, steps) -> TrainData:
    generator = torch.Generator().manual_seed(0)
    n_train = steps * BATCH
    n_test = max(1, round(n_train * test_share))
    images = torch.randint(0, 256, (n_train + n_test, *shape), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, NUM_CLASSES, (n_train + n_test,), generator=generator)
    return TrainData(images[:n_train], labels[:n_train], labels[:n_train], images[n_train:], labels[n_train:],
                     NUM_CLASSES, *norm, augment)


def make_cell(args, model_name, shape, loss_name, seed, pack, n_train, run_dir) -> Cell:
    cfg = trainer_config(args, model_name, loss_name, seed, pack)
    run_dir.mkdir(parents=True)
    init = torch.Generator().manual_seed(seeds_for(seed)["init"])
    model = build_model(cfg.model, shape, NUM_CLASSES, generator=init)
    noisy = torch.randint(0, NUM_CLASSES, (n_train,), generator=torch.Generator().manual_seed(1000 + seed))
    return Cell(cfg, model, build_loss(cfg.loss, NUM_CLASSES), noisy, run_dir, NullLogger())


def timed_epoch_s(run_dir: Path) -> float:
    return float((run_dir / METRICS_FILE).read_text().splitlines()[-1].split(",")[-1])


def release(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def bench_model(args, model_name: str, device: torch.device) -> dict:
    shape, augment, norm, test_share = MODELS[model_name]
    data = random_data(shape, augment, norm, test_share, args.steps)
    n_train = len(data.clean_y)
    with tempfile.TemporaryDirectory() as tmp:
        one = make_cell(args, model_name, shape, args.losses[0], 0, 1, n_train, Path(tmp) / "one")
        train(one.cfg, one.model, one.loss_fn, dataclasses.replace(data, noisy_y=one.noisy_y), one.run_dir, one.logger)
        one_cell = n_train / timed_epoch_s(one.run_dir)
    release(device)
    use_amp = bf16_is_fast(device) if args.amp == "auto" else args.amp
    per_cell_bytes = cell_footprint_bytes(build_model({"name": model_name}, shape, NUM_CLASSES), shape, n_train,
                                          BATCH, device, use_amp, True)
    shared = shared_bytes([data.train_x, data.clean_y, data.test_x, data.test_y], device)
    packs = {}
    for k in args.packs:
        try:
            check_pack_fits(k, per_cell_bytes, shared, free_memory_bytes(device), device)
        except ConfigError as e:
            packs[k] = {"skipped": str(e)}
            continue
        with tempfile.TemporaryDirectory() as tmp:
            cells = [make_cell(args, model_name, shape, args.losses[i % len(args.losses)], i, k, n_train,
                               Path(tmp) / str(i)) for i in range(k)]
            train_pack(cells, data)
            seconds = timed_epoch_s(cells[0].run_dir)
        packs[k] = {"per_cell": n_train / seconds, "total": k * n_train / seconds}
        packs[k]["ratio"] = packs[k]["total"] / one_cell
        release(device)
    return {"one_cell": one_cell, "packs": packs, "per_cell_footprint_mib": per_cell_bytes / 2 ** 20,
            "precision": "bf16-autocast" if use_amp else "fp32"}


def print_model(title: str, result: dict) -> None:
    print(f"\n{title} ({result['precision']}, measured footprint {result['per_cell_footprint_mib']:.1f} MiB per cell)")
    print(f"  {'':24s} {'images/s per cell':>18s} {'images/s total':>15s} {'total / one-cell':>17s}")
    print(f"  {'one-cell trainer':24s} {result['one_cell']:18.0f} {result['one_cell']:15.0f} {1.0:16.2f}x")
    for k, r in result["packs"].items():
        if "skipped" in r:
            print(f"  {f'pack K={k}':24s} skipped: {r['skipped']}")
        else:
            print(f"  {f'pack K={k}':24s} {r['per_cell']:18.0f} {r['total']:15.0f} {r['ratio']:16.2f}x")


def print_projection(result: dict) -> None:
    measured = {k: r for k, r in result["packs"].items() if "total" in r}
    if not measured:
        return
    best = max(measured, key=lambda k: measured[k]["total"])
    images = APL_MNIST_TABLE["cells"] * APL_MNIST_TABLE["epochs"] * APL_MNIST_TABLE["train_images"]
    hours = lambda rate: images / rate / 3600  # noqa: E731
    print(f"\nAPL MNIST table, {APL_MNIST_TABLE['cells']} cells x {APL_MNIST_TABLE['epochs']} epochs x "
          f"{APL_MNIST_TABLE['train_images']:,} images (with their evaluation), at the measured rates:")
    print(f"  one cell at a time:     {hours(result['one_cell']):8.2f} h")
    print(f"  packs of K={best:<3d} (best): {hours(measured[best]['total']):8.2f} h "
          f"({measured[best]['ratio']:.2f}x the one-cell trainer)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=50, help="timed batches of 128 per cell (one epoch)")
    parser.add_argument("--packs", type=int, nargs="+", default=[1, 4, 16, 64], help="pack sizes K")
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["cnn4", "cnn8"])
    parser.add_argument("--losses", nargs="+", default=["ce"], help="registered losses, cycled over a pack's cells")
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu or cuda[:index]")
    parser.add_argument("--amp", choices=["auto", "true", "false"], default="auto", help="bf16 autocast (trainer.amp)")
    parser.add_argument("--threads", type=int, default=None, help="trainer.num_threads (CPU)")
    parser.add_argument("--compile", action="store_true", help="trainer.compile=true")
    parser.add_argument("--cudnn-benchmark", action="store_true", help="torch.backends.cudnn.benchmark=True")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.amp != "auto":
        args.amp = args.amp == "true"
    if args.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__} on {device} ({name}), {os.cpu_count()} cores; batch {BATCH}, "
          f"{args.steps} timed steps per cell, losses {', '.join(args.losses)}")
    results = {}
    started = time.perf_counter()
    for model_name in args.models:
        results[model_name] = bench_model(args, model_name, device)
        print_model(f"{model_name} ({'MNIST' if model_name == 'cnn4' else 'CIFAR'}-shaped random images)",
                    results[model_name])
    if "cnn4" in results:
        print_projection(results["cnn4"])
    print(f"\n({time.perf_counter() - started:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
