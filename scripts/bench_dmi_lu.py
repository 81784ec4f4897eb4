"""L_DMI's determinant and inverse on the CPU: SciPy's LAPACK (getrf + getri) against torch's
lu_factor + lu_solve, the path L_DMI takes on a GPU.

The matrix is ``Y^T P`` of a batch of 128 (every class present) at 10 and 100 classes, with
small logits so that det is not 0 and the inverse is computed. Blocks of each path alternate;
the ratio is the median over rounds of LAPACK / torch.

    python scripts/bench_dmi_lu.py [--threads 1] [--rounds 100] [--repeats 10]
"""
from __future__ import annotations

import argparse
import statistics
import sys

import torch

from noisybench.losses.dmi import _LUFactors
from timing import alternating_blocks

BATCH = 128


def joint_matrix(classes: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(BATCH) % classes
    logits = 0.1 * torch.randn(BATCH, classes, generator=generator)
    logits[torch.arange(BATCH), labels] += 5.0  # a dominant diagonal: det well above float32's range
    p = torch.softmax(logits, dim=1)
    return p.new_zeros(classes, classes).index_add_(0, labels, p)


def det_and_inverse(matrix: torch.Tensor, lapack: bool):
    """|det M| and, where it is not 0, M^-T, as L_DMI computes them, as a call of no arguments."""
    def call() -> None:
        factors = _LUFactors(matrix, lapack=lapack)
        if factors.abs_det():
            factors.inverse_t()
    return call


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"|det M| and M^-T, {args.threads} thread(s), {args.rounds} rounds x {args.repeats} calls")
    print(f"{'classes':>7} {'det':>9} {'LAPACK (us)':>12} {'torch (us)':>11} {'ratio':>6}")
    for classes in (10, 100):
        matrix = joint_matrix(classes)
        det = _LUFactors(matrix).abs_det().item()
        blocks = alternating_blocks({"lapack": det_and_inverse(matrix, True), "torch": det_and_inverse(matrix, False)},
                                    args.rounds, args.repeats)
        lapack_times, torch_times = blocks["lapack"], blocks["torch"]
        ratio = statistics.median(a / b for a, b in zip(lapack_times, torch_times))
        print(f"{classes:>7} {det:>9.2e} {statistics.median(lapack_times) * 1e6:>12.1f} "
              f"{statistics.median(torch_times) * 1e6:>11.1f} {ratio:>6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
