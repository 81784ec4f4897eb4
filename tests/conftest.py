"""Shared fixtures: where the real data the machines hold lives, and small helpers."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# The real MNIST gzip files sit in ../shared/data beside the checkout (and beside CI's clone).
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    if not (SHARED_DATA / "MNIST" / "raw").is_dir():
        pytest.skip(f"real MNIST files not found under {SHARED_DATA / 'MNIST' / 'raw'}")
    return SHARED_DATA
