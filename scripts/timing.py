"""Timing shared by the benchmark scripts (imported from beside them: ``from timing import ...``)."""
from __future__ import annotations

import time
from collections.abc import Callable


def alternating_blocks(fns: dict[str, Callable[[], object]], rounds: int, repeats: int) -> dict[str, list[float]]:
    """Each function's mean time per call, in seconds, in each of ``rounds`` blocks of ``repeats``
    calls, after one untimed block of each. The functions' blocks alternate within each round, so
    that a spell of load on the machine slows a block of each rather than every block of one."""
    def block(fn: Callable[[], object]) -> float:
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        return (time.perf_counter() - start) / repeats

    for fn in fns.values():
        block(fn)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name].append(block(fn))
    return times
