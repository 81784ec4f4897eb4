"""Forward + backward time of every registered loss relative to ``F.cross_entropy`` on CPU.

Batch 128 x 100 classes (float32 logits; labels cover every class, so that L_DMI's 100 x 100
matrix has no zero row; its determinant still underflows to 0 in float32, so L_DMI's inverse is
not timed here: scripts/bench_dmi_lu.py times it). Each loss is timed in short rounds, each next
to a round of CE, so that load on the machine affects both alike; the ratio is the median over
rounds of loss / CE (robust to load that changes during the run), the times the medians of each.
"fastest" is the ratio of the fastest blocks of each, the figure of an otherwise idle machine
(load adds to both times alike and so pulls the median ratio towards 1). Losses with an L1 term
are timed without it (its cost is the model's, not the loss's); staged losses (L_DMI) are timed
in their last stage. A loss above ``--limit`` times CE is flagged and the exit status is 1.

``--compile`` times the losses as ``trainer.compile=true`` runs them: ``evaluate`` through
``torch.compile`` (compiled before the timing; a loss that cannot be compiled, L_DMI, is timed
eager and marked so), against the same plain ``F.cross_entropy``.

    python scripts/bench_losses.py [--threads 1] [--rounds 60] [--repeats 10] [--only nce sce] [--compile]
"""
from __future__ import annotations

import argparse
import statistics
import sys

import torch
import torch.nn.functional as F

from noisybench.losses import LOSSES, build_loss
from noisybench.models.cnn import cnn4
from noisybench.trainer import cxx_compiler
from timing import alternating_blocks

BATCH, CLASSES = 128, 100


def build_for_bench(name: str, compile: bool = False):
    loss = build_loss({"name": name}, CLASSES)
    if loss.needs_model:  # the L1 term's cost is the model's
        loss = build_loss({"name": name, "delta": 0.0}, CLASSES)
    loss.stage_lr(1_000_000)
    if compile and hasattr(loss, "compile_evaluate"):
        loss.compile_evaluate()
    return loss


def model_step_time(repeats: int) -> float:
    """The fastest forward + backward of cnn4 (the MNIST model) with CE at the benchmark's batch."""
    model = cnn4(1, 10)
    images, labels = torch.randn(BATCH, 1, 28, 28), torch.arange(BATCH) % 10

    def step() -> None:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(images), labels).backward()

    return min(alternating_blocks({"step": step}, max(repeats, 3), repeats=1)["step"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=10, help="calls per timed block")
    parser.add_argument("--limit", type=float, default=3.0)
    parser.add_argument("--only", nargs="*", help="loss names (default: all)")
    parser.add_argument("--compile", action="store_true",
                        help="time the losses' evaluate through torch.compile (trainer.compile=true)")
    args = parser.parse_args()
    if args.compile and cxx_compiler() is None:
        parser.error("--compile needs a C++ compiler (torch.compile's inductor looks for $CXX, then g++)")
    torch.set_num_threads(args.threads)

    generator = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(BATCH, CLASSES, generator=generator)).requires_grad_()
    labels = torch.arange(BATCH) % CLASSES

    def step(fn):
        """One forward + backward of ``fn(logits, labels)``, as a call of no arguments."""
        def call() -> None:
            fn(logits, labels).backward()
            logits.grad = None
        return call

    names = args.only or LOSSES.names()
    print(f"forward+backward, batch {BATCH} x {CLASSES}, {args.threads} thread(s), "
          f"{args.rounds} rounds x {args.repeats} calls, median ratio to F.cross_entropy"
          + (", losses compiled (trainer.compile=true)" if args.compile else ""))
    print(f"{'loss':<12} {'time (us)':>10} {'CE (us)':>9} {'ratio':>6} {'fastest':>8}")
    slow, times = [], {}
    for name in names:
        loss = build_for_bench(name, args.compile)
        blocks = alternating_blocks({"ce": step(F.cross_entropy), "loss": step(loss)}, args.rounds, args.repeats)
        ce_times, loss_times = blocks["ce"], blocks["loss"]
        ratio = statistics.median(t / c for t, c in zip(loss_times, ce_times))
        ce_us, loss_us = statistics.median(ce_times) * 1e6, statistics.median(loss_times) * 1e6
        times[name] = min(loss_times)
        fastest = times[name] / min(ce_times)
        flag = f"  > {args.limit:g}x" if ratio > args.limit else ""
        if flag:
            slow.append(name)
        if args.compile and hasattr(loss, "compile_evaluate") and loss.compiled_evaluate is None:
            flag += "  (eager: not compilable)"
        print(f"{name:<12} {loss_us:>10.1f} {ce_us:>9.1f} {ratio:>6.2f} {fastest:>8.2f}{flag}")
    slowest = max(times, key=times.get)
    step_seconds = model_step_time(args.repeats)
    print(f"for scale: a cnn4 training step (batch {BATCH} of 1 x 28 x 28, forward + backward) takes "
          f"{step_seconds * 1e3:.1f} ms; {slowest}, the slowest loss, is {times[slowest] / step_seconds:.2%} of it")
    if slow:
        print(f"above {args.limit:g}x cross entropy: {', '.join(slow)}")
        return 1
    print(f"all {len(names)} losses within {args.limit:g}x cross entropy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
