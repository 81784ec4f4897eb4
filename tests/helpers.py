"""Helpers shared by the tests: composing the app's config and running the CLI."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_module
from omegaconf import DictConfig

REPO_ROOT = Path(__file__).resolve().parents[1]


def compose_config(overrides: list[str] = ()) -> DictConfig:
    with initialize_config_module(config_module="noisybench.conf", version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def run_cli(args: list[str], cwd: Path, timeout: int = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "noisybench", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
