"""Unknown keys in a run's config are errors: ``+trainer.epoch=3`` must not silently train the
default ``trainer.epochs``.

Hydra's ``+key=value`` adds any key, so a typo passes composition. The keys a group may hold are
the keys its YAML files in ``conf/<group>/`` define (their union, so one option's extra settings
are allowed in the others'); the top level may hold the keys of ``config.yaml`` and of the
experiment presets. noise, model and loss are checked against their registries where they are
built (each knows its own per-type fields), so they are not repeated here.
"""
from __future__ import annotations

import difflib
import functools
from collections.abc import Iterable
from importlib import resources

import yaml
from omegaconf import DictConfig

from .registry import ConfigError

CONFIG_PACKAGE = "noisybench.conf"
# The groups whose own builders reject unknown keys with their per-type fields.
CHECKED_WHERE_BUILT = ("noise", "model", "loss")
# Top-level keys no YAML of ours sets: Hydra's own node (present in a sweep's job configs).
HYDRA_KEYS = ("hydra",)


def _yaml_keys(texts: Iterable[str]) -> frozenset[str]:
    keys: set[str] = set()
    for text in texts:
        keys.update(yaml.safe_load(text) or {})
    return frozenset(keys - {"defaults"})


@functools.lru_cache(maxsize=None)
def group_keys(group: str) -> frozenset[str]:
    """The keys of every ``conf/<group>/*.yaml``; for ``data``, those of config.yaml's ``data``."""
    conf = resources.files(CONFIG_PACKAGE)
    if group == "data":
        return frozenset(yaml.safe_load(conf.joinpath("config.yaml").read_text())["data"])
    folder = conf.joinpath(group)
    return _yaml_keys(p.read_text() for p in folder.iterdir() if p.name.endswith(".yaml"))


@functools.lru_cache(maxsize=None)
def root_keys() -> frozenset[str]:
    """config.yaml's keys, its groups' and those the experiment presets set at the top level."""
    conf = resources.files(CONFIG_PACKAGE)
    groups = {p.name for p in conf.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))}
    presets = (p.read_text() for p in conf.joinpath("experiment").iterdir() if p.name.endswith(".yaml"))
    return _yaml_keys([conf.joinpath("config.yaml").read_text(), *presets]) | groups | set(HYDRA_KEYS)


def unknown_key_message(where: str, key: str, allowed: Iterable[str]) -> str:
    allowed = sorted(allowed)
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f" (did you mean '{where}{close[0]}'?)" if close else ""
    return f"unknown key '{where}{key}'{hint}; {where.rstrip('.') or 'the top level'} has: {', '.join(allowed)}"


def check_known_keys(cfg: DictConfig) -> None:
    """ConfigError naming the first key that no YAML of its group defines, with the closest one."""
    for key in cfg:
        if key not in root_keys():
            raise ConfigError(unknown_key_message("", str(key), root_keys()))
    for group in ("data", "dataset", "trainer", "logger"):
        for key in cfg.get(group) or {}:
            if key not in group_keys(group):
                raise ConfigError(unknown_key_message(f"{group}.", str(key), group_keys(group)))
