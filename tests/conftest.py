"""Shared fixtures: where the real data the machines hold lives, and small helpers."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# The real MNIST gzip files: in $NOISYBENCH_DATA (the harness's own default data.root) when it
# holds them, else in ../shared/data beside the checkout (and beside CI's clone).
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")


def mnist_roots() -> list[Path]:
    env = os.environ.get("NOISYBENCH_DATA")
    return [*([Path(env).expanduser()] if env else []), SHARED_DATA]


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    for root in mnist_roots():
        if (root / "MNIST" / "raw").is_dir():
            return root
    pytest.skip("real MNIST files not found under " + " or ".join(str(r / "MNIST" / "raw") for r in mnist_roots()))
