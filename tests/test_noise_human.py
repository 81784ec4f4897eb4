"""CIFAR-N human labels: loading a file in the official format, and refusing wrong or missing files.

The tests write a small file in the real format (a ``torch.save``'d dict of numpy int64 arrays)
and point the expected-file table at it; nothing is downloaded.
"""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from noisybench.noise import make_noisy_labels
from noisybench.noise import human as human_noise
from noisybench.registry import ConfigError

N = 600


def human(key=None) -> dict:
    return {"name": "human", "rate": 0.0, "seed": 0, "key": key}


@pytest.fixture
def cifar10n(tmp_path, monkeypatch) -> tuple[Path, dict[str, np.ndarray]]:
    """A CIFAR-10N-format file of N labels under <root>/CIFAR-N/, registered in the expected-file table."""
    rng = np.random.Generator(np.random.PCG64(0))
    clean = rng.integers(0, 10, N)
    arrays = {"clean_label": clean}
    for name, rate in [("aggre_label", 0.09), ("worse_label", 0.4), ("random_label1", 0.17),
                       ("random_label2", 0.18), ("random_label3", 0.176)]:
        flip = rng.random(N) < rate
        arrays[name] = np.where(flip, (clean + rng.integers(1, 10, N)) % 10, clean)
    path = tmp_path / "CIFAR-N" / "CIFAR-10_human.pt"
    path.parent.mkdir()
    torch.save(arrays, path)
    spec = dataclasses.replace(
        human_noise.CIFAR_N_FILES["cifar10"], size=path.stat().st_size, md5=hashlib.md5(path.read_bytes()).hexdigest()
    )
    monkeypatch.setitem(human_noise.CIFAR_N_FILES, "cifar10", spec)
    return tmp_path, arrays


def test_the_expected_files_are_the_official_ones():
    c10, c100 = human_noise.CIFAR_N_FILES["cifar10"], human_noise.CIFAR_N_FILES["cifar100"]
    assert (c10.size, c10.md5) == (2_401_007, "96644db5574813cae939af5f7f2a0aec")
    assert (c100.size, c100.md5) == (1_000_959, "a67b45c1d7992051865b5c755bd68bb1")
    assert c10.url == "https://github.com/UCSC-REAL/cifar-10-100n/raw/main/data/CIFAR-10_human.pt"


@pytest.mark.parametrize(
    ("key", "array"),
    [(None, "aggre_label"), ("aggre", "aggre_label"), ("worse", "worse_label"), ("worst", "worse_label"),
     ("random2", "random_label2"), ("rand3", "random_label3")],
)
def test_human_labels_load_from_a_file_in_the_official_format(cifar10n, key, array):
    root, arrays = cifar10n
    result = make_noisy_labels(human(key), arrays["clean_label"], 10, "cifar10", root=root)
    assert np.array_equal(result.noisy, arrays[array])
    assert result.noisy.dtype == np.int64
    assert result.realised_rate == (arrays[array] != arrays["clean_label"]).mean()


def test_a_file_with_the_wrong_md5_is_refused_before_loading(cifar10n, monkeypatch):
    root, arrays = cifar10n
    spec = dataclasses.replace(human_noise.CIFAR_N_FILES["cifar10"], md5="0" * 32)
    monkeypatch.setitem(human_noise.CIFAR_N_FILES, "cifar10", spec)
    monkeypatch.setattr(torch, "load", pytest.fail)  # the check must come first
    with pytest.raises(ConfigError, match=r"CIFAR-N file .*CIFAR-10_human.pt has md5 [0-9a-f]{32}, expected 0{32}"):
        make_noisy_labels(human(), arrays["clean_label"], 10, "cifar10", root=root)


def test_a_file_with_the_wrong_size_is_refused(cifar10n):
    root, arrays = cifar10n
    path = root / "CIFAR-N" / "CIFAR-10_human.pt"
    expected = path.stat().st_size
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(ConfigError, match=f"has {expected + 1} bytes, expected {expected}; .*data.download=true"):
        make_noisy_labels(human(), arrays["clean_label"], 10, "cifar10", root=root)


def test_a_missing_file_with_download_off_names_path_url_and_switch(tmp_path):
    with pytest.raises(ConfigError) as caught:
        make_noisy_labels(human(), np.zeros(N, dtype=np.int64), 100, "cifar100", root=tmp_path, download=False)
    message = str(caught.value)
    assert str(tmp_path / "CIFAR-N" / "CIFAR-100_human.pt") in message
    assert "https://github.com/UCSC-REAL/cifar-10-100n/raw/main/data/CIFAR-100_human.pt" in message
    assert "data.download=true" in message
    assert "\n" not in message


def test_labels_must_cover_the_whole_train_set_in_its_order(cifar10n):
    root, arrays = cifar10n
    with pytest.raises(ConfigError, match=f"have length {N}, the cifar10 train set {N - 1}"):
        make_noisy_labels(human(), arrays["clean_label"][:-1], 10, "cifar10", root=root)
    with pytest.raises(ConfigError, match=f"differ from the cifar10 train labels at {N} positions"):
        shifted = (arrays["clean_label"] + 1) % 10
        make_noisy_labels(human(), shifted, 10, "cifar10", root=root)
