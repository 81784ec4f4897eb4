"""Trainer throughput: noisybench's tensor-resident trainer vs a loop built like the papers' code.

The reference loop (a) is what APL/ALFs/ANL/JAL do: a torchvision-style dataset returning PIL
images, per-image transforms (ToTensor, Normalize; RandomCrop + RandomHorizontalFlip for CIFAR)
in DataLoader worker processes, and a step with zero_grad, forward, CE, backward, clip 5.0, SGD
step and ``.item()`` reads of loss and accuracy. noisybench (b) runs ``noisybench.trainer.train``
for one epoch over the same images. Both use the same model, batch size 128 and number of steps,
in this one process. Each configuration is timed after a warm-up of a few steps; the reference
is measured for several worker counts and the fastest is the baseline.

    python scripts/bench_trainer.py                 # MNIST cnn4 and CIFAR-shaped cnn8
    python scripts/bench_trainer.py --steps 200 --workers 0 2 4
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from noisybench.artifacts import METRICS_FILE
from noisybench.logger import NullLogger
from noisybench.models import build_model
from noisybench.trainer import TrainData, train

REPO = Path(__file__).resolve().parents[1]
MNIST_RAW = REPO.parent / "shared" / "data" / "MNIST" / "raw"
BATCH = 128
WARMUP_STEPS = 5
MNIST_NORM = ((0.1307,), (0.3081,))
CIFAR10_NORM = ((0.49139968, 0.48215827, 0.44653124), (0.24703233, 0.24348505, 0.26158768))


class PILDataset(Dataset):
    """What torchvision.datasets.MNIST / CIFAR10 do per item: array -> PIL image -> transform."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        img = Image.fromarray(self.images[i], mode="L" if self.images.ndim == 3 else "RGB")
        return self.transform(img), int(self.labels[i])


def reference_images_per_s(model, images, labels, transform, steps, workers) -> float:
    loader = DataLoader(PILDataset(images, labels, transform), batch_size=BATCH, shuffle=True,
                        num_workers=workers, pin_memory=False, persistent_workers=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    model.train()
    done, start = 0, None
    while done < steps + WARMUP_STEPS:
        for x, y in loader:
            if done == WARMUP_STEPS:
                start = time.perf_counter()
            model.zero_grad()
            opt.zero_grad()
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            loss.item(), (logits.argmax(1) == y).float().mean().item()
            done += 1
            if done == steps + WARMUP_STEPS:
                break
    return steps * BATCH / (time.perf_counter() - start)


def noisybench_images_per_s(model, images, labels, norm, augment, steps, **trainer) -> float:
    """The real trainer for two epochs of ``steps`` batches each; the second epoch is timed."""
    x = torch.from_numpy(images if images.ndim == 4 else images[:, None])
    if x.shape[-1] == 3:
        x = x.permute(0, 3, 1, 2).contiguous()
    y = torch.from_numpy(labels.astype(np.int64))
    cfg = OmegaConf.create({
        "seed": 0,
        "dataset": {}, "noise": {}, "model": {}, "loss": {},
        "trainer": {"epochs": 2, "batch_size": BATCH, "eval_batch_size": 1024, "lr": 0.01, "momentum": 0.9,
                    "nesterov": False, "weight_decay": 1e-4, "l1": 0.0, "grad_clip": 5.0, "schedule": "cosine",
                    "eta_min": 0.0, "device": "cpu", "amp": "auto", "channels_last": "auto", "compile": False,
                    "num_threads": None, "checkpoint_every": 0, "progress": False, **trainer},
    })
    n = steps * BATCH
    data = TrainData(x[:n], y[:n], y[:n], x[:BATCH], y[:BATCH], 10, *norm, augment)
    with tempfile.TemporaryDirectory() as tmp:
        train(cfg, model, torch.nn.CrossEntropyLoss(), data, Path(tmp), NullLogger())
        times = [float(line.split(",")[-1]) for line in (Path(tmp) / METRICS_FILE).read_text().splitlines()[1:]]
    return n / times[-1]


def mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    with gzip.open(MNIST_RAW / "train-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28).copy()
    with gzip.open(MNIST_RAW / "train-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8).copy()
    return images, labels


def cifar_arrays(n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n)


def peak_rss_of_mnist_run(epochs: int) -> tuple[float, float]:
    """Peak resident memory (MiB) and wall time of a full CPU MNIST cnn4 run through the CLI."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "noisybench", "dataset=mnist", "model=cnn4",
                        f"data.root={MNIST_RAW.parents[1]}", f"trainer.epochs={epochs}",
                        "trainer.checkpoint_every=0", f"hydra.run.dir={tmp}/run"],
                       check=True, capture_output=True)
        wall = time.perf_counter() - start
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100, help="timed steps per configuration")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="reference DataLoader workers")
    parser.add_argument("--skip-cifar", action="store_true")
    parser.add_argument("--compile", action="store_true", help="also time trainer.compile=true")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores, "
          f"batch {BATCH}, {args.steps} timed steps")

    cases = [("MNIST cnn4", "cnn4", (1, 28, 28), *mnist_arrays(), MNIST_NORM, "none",
              transforms.Compose([transforms.ToTensor(), transforms.Normalize(*MNIST_NORM)]))]
    if not args.skip_cifar:
        cases.append(("CIFAR-10 cnn8 (random images)", "cnn8", (3, 32, 32), *cifar_arrays(args.steps * BATCH + 2048),
                      CIFAR10_NORM, "crop_flip",
                      transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                                          transforms.ToTensor(), transforms.Normalize(*CIFAR10_NORM)])))
    results = {}
    for title, model_name, shape, images, labels, norm, augment, transform in cases:
        def fresh():
            torch.manual_seed(0)
            return build_model(OmegaConf.create({"name": model_name}), shape, 10)

        ref = {w: reference_images_per_s(fresh(), images, labels, transform, args.steps, w) for w in args.workers}
        best_w = max(ref, key=ref.get)
        ours = {
            "NCHW fp32": noisybench_images_per_s(fresh(), images, labels, norm, augment, args.steps,
                                                 channels_last=False, amp=False),
            "channels_last fp32": noisybench_images_per_s(fresh(), images, labels, norm, augment, args.steps,
                                                          channels_last=True, amp=False),
            "default (auto)": noisybench_images_per_s(fresh(), images, labels, norm, augment, args.steps),
        }
        if args.compile:
            ours["default+compile"] = noisybench_images_per_s(
                fresh(), images, labels, norm, augment, args.steps, compile=True)
        print(f"\n{title}")
        for w, v in ref.items():
            print(f"  (a) reference, DataLoader num_workers={w}: {v:8.0f} images/s")
        for k, v in ours.items():
            print(f"  (b) noisybench trainer, {k:18s}: {v:8.0f} images/s")
        ratio = ours["default (auto)"] / ref[best_w]
        print(f"  ratio b/a (the trainer's defaults vs the fastest reference, num_workers={best_w}): {ratio:.2f}x")
        results[title] = {"reference": ref, "noisybench": ours, "ratio": ratio}

    rss, wall = peak_rss_of_mnist_run(epochs=1)
    print(f"\nCPU MNIST cnn4 run, 1 epoch through the CLI: peak RSS {rss:.0f} MiB, wall {wall:.1f} s")
    results["mnist_run"] = {"peak_rss_mib": rss, "wall_s": wall}
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
