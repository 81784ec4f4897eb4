"""Noise injectors: realised rates and transition matrices on real MNIST labels and CIFAR-shaped labels."""
from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from omegaconf import OmegaConf
from scipy.stats import truncnorm

from noisybench.noise import NOISE, NoisyLabels, check_noise, make_noisy_labels
from noisybench.noise.asymmetric import ASYMMETRIC_MAPS
from noisybench.noise.base import realised_transition
from noisybench.noise.instance import ptd_label_distributions
from noisybench.registry import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[1]
K = 10


def read_idx(path: Path, header_bytes: int) -> np.ndarray:
    """The payload of a gzip IDX file (8 header bytes for labels, 16 for images)."""
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read(), dtype=np.uint8, offset=header_bytes)


@pytest.fixture(scope="module")
def mnist_labels(mnist_root: Path) -> np.ndarray:
    return read_idx(mnist_root / "MNIST/raw/train-labels-idx1-ubyte.gz", 8).astype(np.int64)


@pytest.fixture(scope="module")
def mnist_images(mnist_root: Path) -> np.ndarray:
    return read_idx(mnist_root / "MNIST/raw/train-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28)


def balanced_labels(num_classes: int, per_class: int) -> np.ndarray:
    """CIFAR-shaped training labels: ``per_class`` of each class, in a shuffled order."""
    labels = np.repeat(np.arange(num_classes), per_class)
    return np.random.Generator(np.random.PCG64(99)).permutation(labels)


def noise(name: str, rate: float, seed: int = 0, **fields) -> dict:
    return {"name": name, "rate": rate, "seed": seed, **fields}


def within_se(observed: np.ndarray, expected: np.ndarray, n: np.ndarray | int, k: float = 4.0) -> bool:
    """Each observed proportion lies within k binomial standard errors of its expectation."""
    se = np.sqrt(expected * (1.0 - expected) / n)
    return bool(np.all(np.abs(observed - expected) <= k * se + 1e-12))


def symmetric_t(rate: float, num_classes: int) -> np.ndarray:
    return np.full((num_classes, num_classes), rate / (num_classes - 1)) + np.eye(num_classes) * (
        1.0 - rate - rate / (num_classes - 1)
    )


# --- symmetric ------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [0.2, 0.4, 0.6, 0.8])
def test_symmetric_exact_realises_eta_exactly_on_mnist(mnist_labels, rate):
    result = make_noisy_labels(noise("symmetric", rate), mnist_labels, K, "mnist")
    n = mnist_labels.size
    per_class = int(int(rate * n) / K)  # APL: 1200 / 2400 / 3600 / 4800 of each digit
    assert result.realised_rate == rate
    # every chosen sample changed its label: K * per_class changes, none kept by a "flip"
    assert result.flipped.sum() == K * per_class == round(rate * n)
    assert np.array_equal(np.bincount(mnist_labels[result.flipped], minlength=K), np.full(K, per_class))
    assert np.array_equal(result.flipped, result.noisy != result.clean)
    # the flipped samples spread uniformly over the other nine classes
    class_sizes = np.bincount(mnist_labels, minlength=K)
    off_diagonal = ~np.eye(K, dtype=bool)
    flipped_counts = result.transition * class_sizes[:, None]
    spread = flipped_counts[off_diagonal].reshape(K, K - 1) / per_class
    assert within_se(spread, np.full_like(spread, 1 / (K - 1)), per_class)


@pytest.mark.parametrize("rate", [0.2, 0.4, 0.6, 0.8])
def test_symmetric_sampled_rate_and_transition_within_sampling_error(mnist_labels, rate):
    result = make_noisy_labels(noise("symmetric", rate, variant="sampled"), mnist_labels, K, "mnist")
    assert within_se(np.array(result.realised_rate), np.array(rate), mnist_labels.size)
    assert result.realised_rate != rate  # a per-sample draw, not a fixed count
    class_sizes = np.bincount(mnist_labels, minlength=K)[:, None]
    assert within_se(result.transition, symmetric_t(rate, K), class_sizes)
    np.testing.assert_allclose(result.transition.sum(axis=1), 1.0)


@pytest.mark.parametrize("rate", [0.2, 0.4, 0.6, 0.8])
def test_symmetric_pair_counts_flips_int_t_ij_n_i_per_pair(mnist_labels, rate):
    """ANL's create_noisy_labels: int(T[i][j] * n_i) samples of class i become class j, j != i."""
    result = make_noisy_labels(noise("symmetric", rate, variant="pair_counts"), mnist_labels, K, "mnist")
    sizes = np.bincount(mnist_labels, minlength=K)
    per_pair = (rate / (K - 1) * sizes).astype(int)
    confusion = np.bincount(result.clean * K + result.noisy, minlength=K * K).reshape(K, K)
    expected = np.diag(sizes - (K - 1) * per_pair) + (~np.eye(K, dtype=bool)) * per_pair[:, None]
    assert np.array_equal(confusion, expected)
    # every class flips a share just below rate whatever its size
    flipped_share = 1 - confusion.diagonal() / sizes
    assert np.all(flipped_share <= rate) and np.all(flipped_share > rate - (K - 1) / sizes)
    if rate == 0.8:  # MNIST's smallest class, 5 (5,421 images): 4,329 flipped (0.7986), not 4,800
        assert confusion[5, 5] == 5421 - 9 * 481 and sizes[5] == 5421


def test_symmetric_exact_and_pair_counts_differ_on_the_small_mnist_class(mnist_labels):
    """At 0.8, APL's equal count leaves class 5 with 621 true labels (0.885 flipped) against ANL's 1,092."""
    exact = make_noisy_labels(noise("symmetric", 0.8), mnist_labels, K, "mnist")
    pairs = make_noisy_labels(noise("symmetric", 0.8, variant="pair_counts"), mnist_labels, K, "mnist")
    fives = mnist_labels == 5
    assert (exact.noisy[fives] == 5).sum() == 5421 - 4800
    assert (pairs.noisy[fives] == 5).sum() == 5421 - 9 * 481


def test_symmetric_exact_refuses_a_class_too_small_for_its_count():
    labels = np.array([0] * 10 + [1] * 90)  # int(int(0.5 * 100) / 2) = 25 > 10 samples of class 0
    with pytest.raises(ConfigError, match="class 0 has 10"):
        make_noisy_labels(noise("symmetric", 0.5), labels, 2, "digits")


# --- asymmetric and pairflip -----------------------------------------------------------------------


def expected_map_counts(labels: np.ndarray, pairs, rate: float, num_classes: int) -> np.ndarray:
    """Confusion counts (true, noisy) when exactly int(rate * n_s) of each source class s move to t."""
    sizes = np.bincount(labels, minlength=num_classes)
    counts = np.diag(sizes)
    for source, target in pairs:
        moved = int(rate * sizes[source])
        counts[source, source] -= moved
        counts[source, target] += moved
    return counts


def confusion(result: NoisyLabels, num_classes: int) -> np.ndarray:
    return np.bincount(result.clean * num_classes + result.noisy, minlength=num_classes**2).reshape(
        num_classes, num_classes
    )


@pytest.mark.parametrize("rate", [0.2, 0.4])
def test_asymmetric_mnist_flips_exactly_the_listed_classes(mnist_labels, rate):
    result = make_noisy_labels(noise("asymmetric", rate), mnist_labels, K, "mnist")
    pairs = ((7, 1), (2, 7), (5, 6), (6, 5), (3, 8))
    assert np.array_equal(confusion(result, K), expected_map_counts(mnist_labels, pairs, rate, K))
    sizes = np.bincount(mnist_labels, minlength=K)
    for source, target in pairs:  # the flip rate of each mapped class is rate, up to int truncation
        assert abs(result.transition[source, target] - rate) < 1 / sizes[source]
    for unmapped in (0, 1, 4, 8, 9):
        assert result.transition[unmapped, unmapped] == 1.0


def test_asymmetric_cifar10_clean_pool_has_no_cascade():
    labels = balanced_labels(10, 5000)
    result = make_noisy_labels(noise("asymmetric", 0.4), labels, 10, "cifar10")
    pairs = ((9, 1), (2, 0), (3, 5), (5, 3), (4, 7))
    assert np.array_equal(confusion(result, 10), expected_map_counts(labels, pairs, 0.4, 10))
    assert result.transition[3, 5] == result.transition[5, 3] == 0.4  # 2000 of 5000 cats and dogs
    assert result.realised_rate == 0.2  # five classes of ten at 0.4


def test_asymmetric_apl_cascade_reflips_cats_on_cifar10():
    rate, labels = 0.4, balanced_labels(10, 5000)
    result = make_noisy_labels(noise("asymmetric", rate, variant="apl_cascade"), labels, 10, "cifar10")
    # 3→5 moves 2000 cats into a dog pool of 7000; 5→3 picks 2800 of it, ~800 of them cats (hypergeometric,
    # sd ≈ 18.5), so true-cat noise ≈ (2000 - 800) / 5000 = 0.24 = rate - rate² (reference §3.3).
    cat_rate = result.flipped[labels == 3].mean()
    assert cat_rate < rate - 0.1
    assert abs(cat_rate - (rate - rate**2)) < 4 * 18.5 / 5000
    assert abs(result.flipped[labels == 5].mean() - rate) < 4 * 18.5 / 5000
    for source in (9, 2, 4):  # pools untouched by earlier steps: exact counts
        assert result.flipped[labels == source].sum() == 2000
    # the reference's simulation of APL's code gives 0.1848 overall at rate 0.4 (vs 0.2 without re-flip)
    assert abs(result.realised_rate - 0.184) < 4 * 18.5 / 50000 + 1e-9


def test_asymmetric_apl_cascade_samples_per_label_on_mnist(mnist_labels):
    rate = 0.3
    result = make_noisy_labels(noise("asymmetric", rate, variant="apl_cascade"), mnist_labels, K, "mnist")
    sizes = np.bincount(mnist_labels, minlength=K)
    mapped = np.array([7, 2, 5, 6, 3])
    targets = [1, 7, 6, 5, 8]
    assert within_se(result.transition[mapped, targets], np.full(5, rate), sizes[mapped])
    fixed_counts = (rate * sizes[mapped]).astype(np.int64)
    assert not np.array_equal(confusion(result, K)[mapped, targets], fixed_counts)  # per-label draws
    assert np.array_equal(result.noisy[~np.isin(mnist_labels, mapped)], mnist_labels[~np.isin(mnist_labels, mapped)])


def test_asymmetric_cifar100_moves_to_next_class_within_blocks_of_five():
    labels = balanced_labels(100, 500)
    result = make_noisy_labels(noise("asymmetric", 0.4), labels, 100, "cifar100")
    for source, target in [(0, 1), (3, 4), (4, 0), (7, 8), (9, 5), (97, 98), (99, 95)]:
        assert result.transition[source, target] == 0.4  # int(0.4 * 500) = 200 of 500
        assert result.transition[source, source] == 0.6
    assert np.count_nonzero(result.transition) == 200  # each row: itself and its successor only
    assert result.realised_rate == 0.4


@pytest.mark.parametrize("variant", ["exact", "sampled"])
def test_pairflip_moves_each_class_to_the_next(mnist_labels, variant):
    rate = 0.45
    result = make_noisy_labels(noise("pairflip", rate, variant=variant), mnist_labels, K, "mnist")
    successor = (np.arange(K) + 1) % K
    sizes = np.bincount(mnist_labels, minlength=K)
    assert np.array_equal(result.noisy[result.flipped], successor[result.clean[result.flipped]])
    if variant == "exact":
        moved = confusion(result, K)[np.arange(K), successor]
        assert np.array_equal(moved, (rate * sizes).astype(np.int64))
    else:
        assert within_se(result.transition[np.arange(K), successor], np.full(K, rate), sizes)


# --- random, none ----------------------------------------------------------------------------------


def test_random_labels_at_rate_one_are_uniform(mnist_labels):
    result = make_noisy_labels(noise("random", 1.0), mnist_labels, K, "mnist")
    # the uniform draw keeps the true class 1 time in K
    assert within_se(np.array(result.realised_rate), np.array((K - 1) / K), mnist_labels.size)
    sizes = np.bincount(mnist_labels, minlength=K)[:, None]
    assert within_se(result.transition, np.full((K, K), 1 / K), sizes)


def test_random_at_half_rate_replaces_half_the_labels(mnist_labels):
    result = make_noisy_labels(noise("random", 0.5), mnist_labels, K, "mnist")
    assert within_se(np.array(result.realised_rate), np.array(0.5 * (K - 1) / K), mnist_labels.size)


def test_none_keeps_the_clean_labels(mnist_labels):
    result = make_noisy_labels(noise("none", 0.0), mnist_labels, K, "mnist")
    assert np.array_equal(result.noisy, mnist_labels)
    assert result.realised_rate == 0.0
    assert np.array_equal(result.transition, np.eye(K))


# --- instance ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [0.2, 0.4])
def test_instance_mean_rate_close_to_eta_on_mnist(mnist_labels, mnist_images, rate):
    cfg = noise("instance", rate, seed=5, norm_std=0.1)
    result = make_noisy_labels(cfg, mnist_labels, K, "mnist", images=mnist_images)
    assert abs(result.realised_rate - rate) < 0.02
    again = make_noisy_labels(cfg, mnist_labels, K, "mnist", images=mnist_images)
    assert np.array_equal(again.noisy, result.noisy)
    other_seed = make_noisy_labels({**cfg, "seed": 6}, mnist_labels, K, "mnist", images=mnist_images)
    assert not np.array_equal(other_seed.noisy, result.noisy)


def test_instance_flip_rates_and_targets_vary_per_sample(mnist_labels, mnist_images):
    rng = np.random.Generator(np.random.PCG64(5))
    probs = ptd_label_distributions(mnist_images, mnist_labels, K, 0.4, 0.1, rng)
    rows = np.arange(mnist_labels.size)
    flip_rate = 1.0 - probs[rows, mnist_labels]
    # q_i ~ N(0.4, 0.1²) truncated to [0, 1]: its mean and sd within 4 standard errors
    q = truncnorm(-4.0, 6.0, loc=0.4, scale=0.1)
    assert abs(flip_rate.mean() - q.mean()) < 4 * q.std() / np.sqrt(flip_rate.size)
    assert abs(flip_rate.std() - q.std()) < 4 * q.std() / np.sqrt(2 * flip_rate.size)
    assert flip_rate.min() >= 0.0 and flip_rate.max() <= 1.0
    # the wrong class a sample moves to depends on the image, not only on its class
    masked = probs.copy()
    masked[rows, mnist_labels] = -1.0
    favoured = masked.argmax(axis=1)
    for digit in range(K):
        assert np.unique(favoured[mnist_labels == digit]).size >= 3
    # realised flips follow the per-sample rates: samples above the median flip more often
    result = make_noisy_labels(noise("instance", 0.4, seed=5), mnist_labels, K, "mnist", images=mnist_images)
    high = flip_rate > np.median(flip_rate)
    assert result.flipped[high].mean() - result.flipped[~high].mean() > 0.1


def test_instance_at_rate_zero_keeps_the_clean_labels(mnist_labels, mnist_images):
    result = make_noisy_labels(noise("instance", 0.0), mnist_labels, K, "mnist", images=mnist_images)
    assert result.realised_rate == 0.0



@pytest.mark.parametrize("rate, warned", [(0.4, False), (0.5, True), (0.7, True)])
def test_instance_noise_warns_from_the_rate_its_labels_cannot_be_learned(rate, warned, caplog):
    labels = np.arange(400) % K
    images = np.random.Generator(np.random.PCG64(3)).integers(0, 256, (400, 1, 8, 8), dtype=np.uint8)
    with caplog.at_level("WARNING", logger="noisybench"):
        result = make_noisy_labels(noise("instance", rate), labels, K, "digits", images=images)
    messages = [r.getMessage() for r in caplog.records if "cannot be learned" in r.getMessage()]
    assert len(messages) == int(warned)
    if warned:
        assert f"rate {rate:g}" in messages[0]
        assert result.realised_rate > 0.45  # the warning is true: about half the labels or more are wrong


# --- determinism ------------------------------------------------------------------------------------

DETERMINISM_SCRIPT = """
import hashlib, sys
import numpy as np
from noisybench.noise import make_noisy_labels
labels = np.random.Generator(np.random.PCG64(1)).integers(0, 10, 20000)
images = np.random.Generator(np.random.PCG64(2)).integers(0, 256, (20000, 1, 8, 8), dtype=np.uint8)
configs = [
    {"name": "symmetric", "rate": 0.4, "seed": 7},
    {"name": "symmetric", "rate": 0.4, "seed": 7, "variant": "sampled"},
    {"name": "asymmetric", "rate": 0.4, "seed": 7},
    {"name": "asymmetric", "rate": 0.4, "seed": 7, "variant": "apl_cascade"},
    {"name": "pairflip", "rate": 0.3, "seed": 7},
    {"name": "random", "rate": 1.0, "seed": 7},
    {"name": "instance", "rate": 0.3, "seed": 7},
]
for cfg in configs:
    noisy = make_noisy_labels(cfg, labels, 10, "cifar10", images=images).noisy
    print(hashlib.sha256(noisy.tobytes()).hexdigest())
"""


def test_same_seed_gives_identical_labels_in_another_process():
    def run() -> list[str]:
        out = subprocess.run(
            [sys.executable, "-c", DETERMINISM_SCRIPT],
            capture_output=True, text=True, check=True, cwd=REPO_ROOT, env={**os.environ, "PYTHONHASHSEED": "random"},
        )
        return out.stdout.split()

    namespace: dict = {}
    printed: list[str] = []
    namespace["print"] = printed.append
    exec(DETERMINISM_SCRIPT, namespace)
    hashes = run()
    assert len(hashes) == 7 and hashes == printed
    assert len(set(hashes)) == 7  # each config gives different labels


def test_different_seeds_give_different_labels(mnist_labels):
    first = make_noisy_labels(noise("symmetric", 0.4, seed=0), mnist_labels, K, "mnist")
    second = make_noisy_labels(noise("symmetric", 0.4, seed=1), mnist_labels, K, "mnist")
    assert first.realised_rate == second.realised_rate == 0.4
    assert (first.noisy != second.noisy).mean() > 0.4


# --- result type --------------------------------------------------------------------------------------


def test_transition_is_row_normalised_counts_with_identity_for_empty_classes():
    clean = np.array([0, 0, 0, 0, 1, 1])
    noisy = np.array([0, 1, 2, 2, 1, 0])
    expected = np.array([[0.25, 0.25, 0.5], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    assert np.array_equal(realised_transition(clean, noisy, 3), expected)


def test_noisy_labels_round_trip_through_npz(tmp_path):
    result = make_noisy_labels(noise("symmetric", 0.5, seed=3), balanced_labels(4, 50), 4, "digits")
    written = result.save(tmp_path)
    assert written == tmp_path / "noisy_labels.npz"
    assert set(np.load(written).files) == {"noisy", "clean", "flipped", "transition"}
    loaded = NoisyLabels.load(tmp_path)
    for field in ("noisy", "clean", "flipped", "transition"):
        assert np.array_equal(getattr(loaded, field), getattr(result, field))
    assert loaded.noisy.dtype == np.int64 and loaded.flipped.dtype == bool
    assert loaded.realised_rate == result.realised_rate == 0.5


# --- configs and bad input -----------------------------------------------------------------------------


def test_each_noise_yaml_names_its_registered_injector_and_validates():
    files = sorted((REPO_ROOT / "conf" / "noise").glob("*.yaml"))
    assert sorted(f.stem for f in files) == NOISE.names()
    for path in files:
        assert yaml.safe_load(path.read_text())["name"] == path.stem
        root = OmegaConf.create({"seed": 4, "noise": OmegaConf.load(path)})
        assert root.noise.seed == 4  # ${seed}: the training seed, unless noise.seed is set
        check_noise(root.noise, "cifar10", 10)


@pytest.mark.parametrize(
    ("cfg", "dataset", "message"),
    [
        (noise("symmetric", 1.0), "mnist", r"noise.rate=1 is not allowed for symmetric noise; allowed: \[0, 1\)"),
        (noise("symmetric", -0.1), "mnist", r"noise.rate=-0.1 .* allowed: \[0, 1\)"),
        (noise("asymmetric", 1.2), "mnist", r"noise.rate=1.2 .* allowed: \[0, 1\)"),
        (noise("instance", 1.0), "mnist", r"noise.rate=1 .* allowed: \[0, 1\)"),
        (noise("random", 1.01), "mnist", r"noise.rate=1.01 .* allowed: \[0, 1\]"),
        (noise("none", 0.2), "mnist", r"noise.rate=0.2 .* allowed: 0"),
        (noise("human", 0.2), "cifar10", r"noise.rate=0.2 .* allowed: 0"),
        (noise("symmetric", "high"), "mnist", r"noise.rate='high' is not a number"),
        (noise("asymmetric", 0.4), "fashion_mnist",
         "no class map for dataset fashion_mnist; maps exist for: mnist, cifar10, cifar100"),
        (noise("asymmetric", 0.4), "digits", "no class map for dataset digits"),
        (noise("human", 0.0), "mnist",
         "human noise is not available for dataset mnist; allowed datasets: cifar10, cifar100"),
        (noise("human", 0.0, key="best"), "cifar10",
         "noise.key='best' .* allowed: aggre, worse, random1, random2, random3"),
        (noise("human", 0.0, key="aggre"), "cifar100", "noise.key='aggre' .* allowed: noisy"),
        (noise("symmetric", 0.2, variant="pairwise"), "mnist", "noise.variant='pairwise' .* allowed: exact, sampled, pair_counts"),
        (noise("asymmetric", 0.2, variant="exact"), "mnist",
         "noise.variant=.exact. is not a variant of asymmetric noise; allowed: clean_pool, apl_cascade"),
        (noise("symmetric", 0.2, norm_std=0.1), "mnist", "noise.norm_std is not a field of symmetric noise"),
        (noise("instance", 0.2, norm_std=0.0), "mnist", "noise.norm_std=0.0 is not allowed"),
        (noise("symmetric", 0.2, seed=-1), "mnist", "noise.seed=-1 is not allowed"),
        (noise("symetric", 0.2), "mnist", "unknown noise 'symetric' .*registered: asymmetric, human, instance"),
    ],
)
def test_bad_noise_config_fails_with_one_line_naming_value_and_allowed(cfg, dataset, message):
    num_classes = 100 if dataset == "cifar100" else 10
    with pytest.raises(ConfigError, match=message) as caught:
        check_noise(cfg, dataset, num_classes)
    assert "\n" not in str(caught.value)


def test_allowed_edge_values_pass():
    check_noise(noise("random", 1.0), "mnist", 10)
    check_noise(noise("symmetric", 0.0), "digits", 10)
    check_noise(noise("symmetric", 0.999), "digits", 10)
    for dataset in ASYMMETRIC_MAPS:
        check_noise(noise("asymmetric", 0.4), dataset, 100 if dataset == "cifar100" else 10)
    check_noise(noise("human", 0.0, key="worst"), "cifar10", 10)  # the CIFAR-N command-line alias
    check_noise(noise("human", 0.0, key=None), "cifar100", 100)
