"""The cnn4 MNIST training step with each registered loss, relative to the step with CE.

A step as the trainer takes it: zero_grad, forward of a batch of 128 MNIST-shaped images,
the loss (with its L1 term where its defaults have one; L_DMI's DMI stage, not its CE warm-up), backward,
gradient clipping at 5.0 and an SGD step with momentum. Each loss's steps are timed in short
blocks, each next to a block of CE steps on an identical model, so that load on the machine
affects both alike; "ratio" is the median over rounds of loss / CE, "fastest" the ratio of the
fastest blocks of each (the figure of an otherwise idle machine). A loss above ``--limit`` times
CE's step is flagged and the exit status is 1.

    python scripts/bench_loss_steps.py [--threads 1] [--rounds 20] [--repeats 3] [--only nce sce]
        [--classes 10] [--compile]
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys

import torch

from noisybench.losses import LOSSES, build_loss, resolve_loss
from noisybench.models.cnn import cnn4
from noisybench.trainer import cxx_compiler, l1_norm
from timing import alternating_blocks

BATCH = 128


def training_step(loss, model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, l1: float = 0.0):
    """One of the trainer's steps, as a call of no arguments (with the L1 term where ``l1``)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-6, momentum=0.9)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        logits = model(images)
        value = loss(logits, labels) + l1 * l1_norm(model) if l1 else loss(logits, labels)
        value.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()

    return step


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3, help="steps per timed block")
    parser.add_argument("--limit", type=float, default=1.10)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--only", nargs="*", help="loss names (default: all)")
    parser.add_argument("--compile", action="store_true", help="the loss functions through torch.compile "
                        "(trainer.compile=true), compiled before the timing")
    args = parser.parse_args()
    unknown = [name for name in args.only or () if name not in LOSSES]
    if unknown:
        parser.error(LOSSES.unknown_message(unknown[0]))
    if args.compile and cxx_compiler() is None:
        parser.error("--compile needs a C++ compiler (torch.compile's inductor looks for $CXX, then g++)")
    torch.set_num_threads(args.threads)

    generator = torch.Generator().manual_seed(0)
    images = torch.randn(BATCH, 1, 28, 28, generator=generator).contiguous(memory_format=torch.channels_last)
    labels = torch.arange(BATCH) % args.classes  # every class: L_DMI's matrix has no zero row
    torch.manual_seed(0)
    model = cnn4(1, args.classes).to(memory_format=torch.channels_last)
    ce = build_loss({"name": "ce"}, args.classes)

    names = args.only or LOSSES.names()
    print(f"cnn4 training step, batch {BATCH} of 1 x 28 x 28, {args.classes} classes, {args.threads} thread(s), "
          f"{args.rounds} rounds x {args.repeats} steps; median ratio to the step with CE"
          + (", losses compiled" if args.compile else ""))
    print(f"{'loss':<12} {'step (ms)':>10} {'CE (ms)':>9} {'ratio':>6} {'fastest':>8}")
    slow = []
    for name in names:
        loss, settings = resolve_loss({"name": name}, args.classes)
        if args.compile:
            loss.compile()
        blocks = alternating_blocks({"ce": training_step(ce, copy.deepcopy(model), images, labels),
                                     "loss": training_step(loss, copy.deepcopy(model), images, labels, settings.l1)},
                                    args.rounds, args.repeats)
        ratio = statistics.median(t / c for t, c in zip(blocks["loss"], blocks["ce"]))
        fastest = min(blocks["loss"]) / min(blocks["ce"])
        flag = f"  > {args.limit:g}x" if ratio > args.limit else ""
        if flag:
            slow.append(name)
        print(f"{name:<12} {statistics.median(blocks['loss']) * 1e3:>10.2f} "
              f"{statistics.median(blocks['ce']) * 1e3:>9.2f} {ratio:>6.3f} {fastest:>8.3f}{flag}")
    if slow:
        print(f"above {args.limit:g}x the CE step: {', '.join(slow)}")
        return 1
    print(f"all {len(names)} losses within {args.limit:g}x the CE step")
    return 0


if __name__ == "__main__":
    sys.exit(main())
