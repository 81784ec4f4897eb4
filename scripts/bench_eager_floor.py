"""Why an eager loss costs more than its ops timed one by one: ``F.cross_entropy``'s forward +
backward (batch 128 x 100, one thread), alone and right after 20 elementwise ops on a tensor of
the same shape.

    alone           CE by itself
    one op x 20     the same op 20 times, then CE
    20 ops          20 different ops, each into a new tensor, then CE
    20 ops, out=    the same 20 ops, all written into one preallocated buffer, then CE

"added" is the time of the pair less the two parts timed apart: what running the ops costs CE
(and CE the ops). When it grows with the number of *different* ops and not with the memory they
allocate, it is the processor's caches refilling with each op's own code, which an eager loss
with many ops pays on every call and a fused (``torch.compile``) one does not.

Two more lines split CE's time: its forward alone (logits that need no gradient) and what
``backward()`` costs on a graph of one node, which every loss pays whatever its ops. Each figure
is the fastest of ``--rounds`` blocks, and the blocks of all of them alternate.

    python scripts/bench_eager_floor.py [--threads 1] [--rounds 9] [--repeats 300]
"""
from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F

from timing import alternating_blocks

BATCH, CLASSES = 128, 100

# 20 different elementwise ops, each well defined on any input (no NaN slow paths).
OPS = (torch.sigmoid, torch.tanh, torch.exp, torch.log1p, torch.sqrt, torch.neg, torch.abs,
       torch.exp2, torch.reciprocal, torch.rsqrt, torch.square, torch.sin, torch.cos, torch.atan,
       torch.floor, torch.ceil, torch.trunc, torch.sign, torch.erf, torch.expm1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--repeats", type=int, default=300, help="calls per timed block")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(BATCH, CLASSES, generator=generator).requires_grad_()
    labels = torch.arange(BATCH) % CLASSES
    x = torch.rand(BATCH, CLASSES, generator=generator) + 0.5
    buffer = torch.empty_like(x)

    def cross_entropy() -> None:
        F.cross_entropy(logits, labels).backward()
        logits.grad = None

    def one_op() -> None:
        for _ in OPS:
            torch.sigmoid(x)

    def different_ops() -> None:
        for op in OPS:
            op(x)

    def different_ops_out() -> None:
        for op in OPS:
            op(x, out=buffer)

    plain = logits.detach()
    scalar = torch.ones((), requires_grad=True)

    def cross_entropy_forward() -> None:
        F.cross_entropy(plain, labels)

    def one_node_backward() -> None:
        (scalar * 2.0).backward()
        scalar.grad = None

    def then_ce(ops):
        def pair() -> None:
            ops()
            cross_entropy()
        return pair

    op_sets = {"one op x 20": one_op, "20 ops": different_ops, "20 ops, out=": different_ops_out}
    fns = {"CE": cross_entropy, "CE forward": cross_entropy_forward, "one node": one_node_backward}
    for name, ops in op_sets.items():
        fns[name], fns[name + " + CE"] = ops, then_ce(ops)
    blocks = alternating_blocks(fns, args.rounds, args.repeats)
    times = {name: min(block_times) * 1e6 for name, block_times in blocks.items()}  # the fastest, in µs

    ce = times["CE"]
    print(f"F.cross_entropy forward + backward, batch {BATCH} x {CLASSES}, {args.threads} thread(s): "
          f"{ce:.1f} us alone")
    print(f"{'before CE':<16} {'ops (us)':>9} {'ops + CE (us)':>14} {'added (us)':>11}")
    for name in op_sets:
        alone, both = times[name], times[name + " + CE"]
        print(f"{name:<16} {alone:>9.1f} {both:>14.1f} {both - alone - ce:>11.1f}")
    print(f"CE forward alone: {times['CE forward']:.1f} us")
    print(f"a one-node graph, forward + backward(): {times['one node']:.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
