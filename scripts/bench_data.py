"""Time to load MNIST from its IDX files into tensors, against the floor of reading and
decompressing the same files in the same run.

    noisybench   ``load_dataset`` as a run calls it: read, decompress, md5 and header checks, tensors
    floor        read and decompress the same four files (``gzip.decompress`` for a ``.gz``), nothing else

Each figure is the fastest of ``--rounds`` loads after an untimed one, the two alternating. A
load slower than ``--limit`` seconds (the target: under 3 s) is flagged and the exit status is 1.

    python scripts/bench_data.py --root ../shared/data [--rounds 3] [--limit 3]
"""
from __future__ import annotations

import argparse
import gzip
import sys
from pathlib import Path

from noisybench.data import load_dataset
from noisybench.data.base import default_root
from noisybench.data.idx import MNIST, idx_paths
from noisybench.registry import ConfigError
from timing import alternating_blocks

CONFIG = {"name": "mnist", "augment": "none", "train_size": None, "test_size": None, "verify": True}


def read_files(paths: list[Path]) -> None:
    """Read each file, and decompress it if it is a ``.gz``."""
    for path in paths:
        content = path.read_bytes()
        if path.suffix == ".gz":
            gzip.decompress(content)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=None,
                        help="data.root holding MNIST/raw (default: $NOISYBENCH_DATA or ~/.cache/noisybench)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--limit", type=float, default=3.0, help="seconds a load may take (default 3)")
    args = parser.parse_args()
    root = args.root.expanduser() if args.root else default_root()
    try:
        paths = list(idx_paths(MNIST, root, download=False).values())
    except ConfigError as err:
        print(f"error: {err} (here data.root is --root)", file=sys.stderr)
        return 2

    loads = {"noisybench": lambda: load_dataset(CONFIG, root), "floor": lambda: read_files(paths)}
    times = alternating_blocks(loads, args.rounds, repeats=1)
    noisybench, floor = min(times["noisybench"]), min(times["floor"])
    print(f"MNIST from {', '.join(p.name for p in paths)} in {paths[0].parent}, fastest of {args.rounds}")
    print(f"noisybench load_dataset: {noisybench:.3f} s")
    print(f"floor (read + decompress): {floor:.3f} s")
    print(f"ratio: {noisybench / floor:.2f}")
    if noisybench > args.limit:
        print(f"above the limit of {args.limit:g} s")
        return 1
    print(f"within the limit of {args.limit:g} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
