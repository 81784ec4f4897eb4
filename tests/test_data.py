"""Dataset config checks, the embedded digits dataset, stratified subsets and the default root."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from noisybench.data import DATASETS, SUBSET_SEED, check_dataset, default_root, load_dataset, stratified_subset
from noisybench.data.digits import digits_to_uint8
from noisybench.registry import ConfigError

CONF_DIR = Path(__file__).resolve().parents[1] / "conf" / "dataset"
PAPER_AUGMENT = {"digits": "none", "mnist": "none", "fashion_mnist": "none", "cifar10": "crop_flip",
                 "cifar100": "crop_flip_rotate"}
# Class sizes of scikit-learn's digits, classes 0..9.
DIGITS_CLASS_COUNTS = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


def digits_cfg(**fields):
    return {"name": "digits", "augment": "none", "train_size": None, "test_size": None, "verify": True, **fields}


@pytest.fixture(scope="module")
def digits():
    return load_dataset(digits_cfg())


def test_registry_lists_the_five_datasets_with_their_shapes():
    assert DATASETS.names() == ["cifar10", "cifar100", "digits", "fashion_mnist", "mnist"]
    shapes = {n: (DATASETS.meta(n)["num_classes"], DATASETS.meta(n)["input_shape"]) for n in DATASETS.names()}
    assert shapes == {"digits": (10, (1, 8, 8)), "mnist": (10, (1, 28, 28)), "fashion_mnist": (10, (1, 28, 28)),
                      "cifar10": (10, (3, 32, 32)), "cifar100": (100, (3, 32, 32))}


@pytest.mark.parametrize("name", sorted(PAPER_AUGMENT))
def test_yaml_is_valid_and_uses_the_papers_augmentation(name):
    cfg = OmegaConf.load(CONF_DIR / f"{name}.yaml")
    check_dataset(cfg)
    assert set(cfg) == {"name", "augment", "train_size", "test_size", "verify"}
    fields = (cfg.name, cfg.augment, cfg.train_size, cfg.test_size, cfg.verify)
    assert fields == (name, PAPER_AUGMENT[name], None, None, True)


BAD_FIELDS = [
    ({"name": "imagenet"}, "imagenet"),
    ({"augment": "cutout"}, "crop_flip_rotate"),
    ({"train_size": 0}, "1347"),
    ({"train_size": -5}, "1347"),
    ({"train_size": 1348}, "1347"),
    ({"train_size": 1.5}, "dataset.train_size"),
    ({"train_size": "100"}, "dataset.train_size"),
    ({"train_size": True}, "dataset.train_size"),
    ({"test_size": 451}, "450"),
    ({"verify": "yes"}, "dataset.verify"),
]


@pytest.mark.parametrize("fields,named", BAD_FIELDS, ids=[str(f) for f, _ in BAD_FIELDS])
def test_check_dataset_rejects_bad_values_in_one_line(fields, named):
    with pytest.raises(ConfigError) as err:
        check_dataset(digits_cfg(**fields))
    assert named in str(err.value) and "\n" not in str(err.value)


def test_unknown_dataset_lists_the_registered_names():
    with pytest.raises(ConfigError, match="registered: cifar10, cifar100, digits, fashion_mnist, mnist"):
        check_dataset(digits_cfg(name="svhn"))


def test_split_sizes_are_checked_against_each_datasets_own_split():
    check_dataset({"name": "mnist", "train_size": 60000, "test_size": 10000})
    with pytest.raises(ConfigError, match="1 to 50000"):
        check_dataset({"name": "cifar10", "train_size": 60000})


def test_digits_scaling_to_uint8_by_hand():
    # round(v * 255 / 16), halves up: 8 -> 127.5 -> 128.
    expected = [0, 16, 32, 48, 64, 80, 96, 112, 128, 143, 159, 175, 191, 207, 223, 239, 255]
    assert digits_to_uint8(np.arange(17, dtype=np.float64)).tolist() == expected


def test_digits_shapes_types_and_classes(digits):
    assert (digits.train_x.shape, digits.test_x.shape) == ((1347, 1, 8, 8), (450, 1, 8, 8))
    assert digits.train_x.dtype == digits.test_x.dtype == torch.uint8
    assert digits.train_y.dtype == digits.test_y.dtype == torch.int64
    assert digits.train_x.is_contiguous() and digits.test_x.is_contiguous()
    assert (digits.num_classes, digits.input_shape, digits.classes) == (10, (1, 8, 8), [str(d) for d in range(10)])
    assert digits.train_x.max() == 255 and digits.train_x.min() == 0


def test_digits_split_is_stratified_and_covers_every_image(digits):
    from sklearn.datasets import load_digits

    test_counts = torch.bincount(digits.test_y, minlength=10).tolist()
    train_counts = torch.bincount(digits.train_y, minlength=10).tolist()
    assert [a + b for a, b in zip(train_counts, test_counts)] == DIGITS_CLASS_COUNTS
    for count, full in zip(test_counts, DIGITS_CLASS_COUNTS):
        assert abs(count - 0.25 * full) <= 1
    # The two splits together hold each of the 1,797 images once, with its own label.
    bunch = load_digits()
    original = sorted(zip(digits_to_uint8(bunch.images).reshape(1797, 64).tolist(), bunch.target.tolist()))
    split = sorted(zip(torch.cat([digits.train_x, digits.test_x]).reshape(1797, 64).tolist(),
                       torch.cat([digits.train_y, digits.test_y]).tolist()))
    assert split == original


def test_digits_split_is_the_same_every_time(digits):
    again = load_dataset(digits_cfg())
    assert torch.equal(again.train_x, digits.train_x) and torch.equal(again.test_y, digits.test_y)


def test_digits_normalisation_is_the_train_pixel_mean_and_std(digits):
    pixels = digits.train_x.double().numpy() / 255
    assert digits.mean == pytest.approx((pixels.mean(),), abs=1e-12)
    assert digits.std == pytest.approx((pixels.std(),), abs=1e-12)
    assert 0.30 < digits.mean[0] < 0.31 and 0.37 < digits.std[0] < 0.38


def test_stratified_subset_allocation_by_hand():
    labels = np.array([0] * 6 + [1] * 3 + [2])
    # exact shares of 5: 3, 1.5, 0.5 -> floors 3, 1, 0; the one left over goes to the lower tied class.
    picked = stratified_subset(labels, 5, np.random.default_rng(0))
    assert np.bincount(labels[picked], minlength=3).tolist() == [3, 2, 0]
    assert len(set(picked.tolist())) == 5 and picked.tolist() == sorted(picked.tolist())


def test_train_subset_is_stratified_deterministic_and_taken_from_the_split(digits):
    small = load_dataset(digits_cfg(train_size=100))
    counts = torch.bincount(small.train_y, minlength=10).numpy()
    full_counts = torch.bincount(digits.train_y, minlength=10).numpy()
    assert counts.sum() == 100 and np.all(np.abs(counts - 100 * full_counts / 1347) < 1)
    again = load_dataset(digits_cfg(train_size=100))
    assert torch.equal(small.train_x, again.train_x) and torch.equal(small.train_y, again.train_y)
    keep = stratified_subset(digits.train_y.numpy(), 100, np.random.default_rng([SUBSET_SEED, 0]))
    assert torch.equal(small.train_x, digits.train_x[keep]) and torch.equal(small.train_y, digits.train_y[keep])
    assert torch.equal(small.test_x, digits.test_x)


def test_test_subset_does_not_depend_on_the_train_subset():
    alone = load_dataset(digits_cfg(test_size=90))
    both = load_dataset(digits_cfg(train_size=100, test_size=90))
    assert torch.equal(alone.test_x, both.test_x) and torch.equal(alone.test_y, both.test_y)
    assert torch.bincount(alone.test_y, minlength=10).tolist() == [9] * 10


def test_default_root_reads_the_environment(monkeypatch):
    monkeypatch.setenv("NOISYBENCH_DATA", "~/somewhere/data")
    assert default_root() == Path.home() / "somewhere" / "data"
    monkeypatch.delenv("NOISYBENCH_DATA")
    assert default_root() == Path.home() / ".cache" / "noisybench"


def test_mnist_tests_find_the_data_through_noisybench_data(monkeypatch, tmp_path):
    from conftest import SHARED_DATA, mnist_roots

    monkeypatch.setenv("NOISYBENCH_DATA", str(tmp_path))
    assert mnist_roots() == [tmp_path, SHARED_DATA]
    monkeypatch.delenv("NOISYBENCH_DATA")
    assert mnist_roots() == [SHARED_DATA]
