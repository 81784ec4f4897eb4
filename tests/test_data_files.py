"""File-backed datasets: real MNIST and Fashion-MNIST, CIFAR pickle batches written here, and every
way the files can be missing or wrong."""
from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets

from helpers import run_script
from noisybench.data import load_dataset
from noisybench.data import cifar as cifar_module
from noisybench.data import idx as idx_module
from noisybench.registry import ConfigError

MNIST_FILES = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
               "t10k-labels-idx1-ubyte.gz"]
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
IMAGES_PER_BATCH = 20


def cfg(name, **fields):
    return {"name": name, "augment": "none", "train_size": None, "test_size": None, "verify": True, **fields}


def pixel_stats(x: torch.Tensor) -> tuple[float, float]:
    pixels = x.double() / 255
    return pixels.mean().item(), pixels.std(correction=0).item()


@pytest.fixture(scope="module")
def mnist(mnist_root):
    return load_dataset(cfg("mnist"), mnist_root)


def mnist_copy(tmp_path: Path, mnist_root: Path, replaced: dict[str, bytes]) -> Path:
    """A root whose MNIST/raw links to the real files except those in ``replaced`` (name -> bytes)."""
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in MNIST_FILES:
        if name not in replaced and name.removesuffix(".gz") not in replaced:
            (raw / name).symlink_to(mnist_root / "MNIST" / "raw" / name)
    for name, content in replaced.items():
        (raw / name).write_bytes(content)
    return tmp_path


def real_labels(mnist_root: Path) -> bytes:
    return gzip.decompress((mnist_root / "MNIST" / "raw" / "train-labels-idx1-ubyte.gz").read_bytes())


# --- MNIST ------------------------------------------------------------------------------------------------


def test_mnist_shapes_types_and_label_counts(mnist):
    assert (mnist.train_x.shape, mnist.test_x.shape) == ((60000, 1, 28, 28), (10000, 1, 28, 28))
    assert mnist.train_x.dtype == torch.uint8 and mnist.train_y.dtype == torch.int64
    assert mnist.train_x.is_contiguous() and mnist.test_x.is_contiguous()
    assert torch.bincount(mnist.train_y).tolist() == MNIST_TRAIN_COUNTS
    assert torch.bincount(mnist.test_y).tolist() == MNIST_TEST_COUNTS
    assert mnist.train_y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert mnist.test_y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert (mnist.classes, mnist.num_classes, mnist.input_shape) == ([str(d) for d in range(10)], 10, (1, 28, 28))


def test_mnist_pixels_land_in_the_right_place(mnist):
    # Row 5 of the first training image (a 5), as every MNIST tutorial prints it.
    row5 = [0] * 12 + [3, 18, 18, 18, 126, 136, 175, 26, 166, 255, 247, 127] + [0] * 4
    assert mnist.train_x[0, 0, 5].tolist() == row5


def test_mnist_constants_are_the_papers_and_match_the_pixels(mnist):
    assert (mnist.mean, mnist.std) == ((0.1307,), (0.3081,))
    mean, std = pixel_stats(mnist.train_x)
    assert abs(mean - 0.1307) < 5e-5 and abs(std - 0.3081) < 5e-5


def test_data_benchmark_times_the_mnist_load_against_reading_the_files(mnist_root):
    # The load's time against the 3 s target is the benchmark's to report, not this test's.
    run = run_script("bench_data.py", "--root", str(mnist_root), "--rounds", "1", "--limit", "1000")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith("MNIST from train-images-idx3-ubyte") and str(mnist_root) in lines[0]
    load, floor, ratio = (float(line.split()[-2 if line.endswith(" s") else -1]) for line in lines[1:4])
    assert 0 < floor and 0 < load and ratio == pytest.approx(load / floor, rel=0.02)
    assert lines[4] == "within the limit of 1000 s"
    slow = run_script("bench_data.py", "--root", str(mnist_root), "--rounds", "1", "--limit", "0.0001")
    assert slow.returncode == 1 and slow.stdout.splitlines()[-1] == "above the limit of 0.0001 s"


def test_data_benchmark_without_the_files_names_them_and_exits_2(tmp_path):
    run = run_script("bench_data.py", "--root", str(tmp_path))
    assert run.returncode == 2 and run.stdout == ""
    assert f"{tmp_path}/MNIST/raw/train-images-idx3-ubyte[.gz]" in run.stderr and "--root" in run.stderr


def test_mnist_missing_files_name_the_paths_and_the_remedies(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_dataset(cfg("mnist"), tmp_path, download=False)
    message = str(err.value)
    for name in MNIST_FILES:
        assert f"{tmp_path}/MNIST/raw/{name.removesuffix('.gz')}[.gz]" in message
    assert "data.download=true" in message and "data.root=" in message and "NOISYBENCH_DATA" in message
    assert "\n" not in message


def test_mnist_one_missing_file_is_the_one_named(tmp_path, mnist_root):
    root = mnist_copy(tmp_path, mnist_root, {})
    (root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(ConfigError, match=r"missing: \S+/t10k-labels-idx1-ubyte\[\.gz\]; "):
        load_dataset(cfg("mnist"), root)


def test_mnist_failed_download_reports_why_and_the_paths(tmp_path, monkeypatch):
    class Offline:
        def __init__(self, root, train, download):
            raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried mirror, got: no network")

    monkeypatch.setattr(torchvision.datasets, "MNIST", Offline)
    with pytest.raises(ConfigError) as err:
        load_dataset(cfg("mnist"), tmp_path, download=True)
    message = str(err.value)
    assert "download into" in message and "no network" in message and "\n" not in message
    assert f"{tmp_path}/MNIST/raw/train-images-idx3-ubyte[.gz]" in message
    assert "data.download=true" not in message  # it was on already


def test_mnist_download_fills_the_torchvision_layout(tmp_path, monkeypatch, mnist_root):
    calls = []

    class FakeMNIST:
        def __init__(self, root, train, download):
            calls.append((root, download))
            mnist_copy(Path(root), mnist_root, {})

    monkeypatch.setattr(torchvision.datasets, "MNIST", FakeMNIST)
    data = load_dataset(cfg("mnist", test_size=100), tmp_path / "fresh", download=True)
    assert calls == [(str(tmp_path / "fresh"), True)]
    assert torch.bincount(data.test_y).tolist() == [10, 11, 10, 10, 10, 9, 10, 10, 10, 10]


def test_mnist_changed_label_fails_the_checksum_and_loads_unchecked(tmp_path, mnist_root):
    content = bytearray(real_labels(mnist_root))
    assert content[8] == 5  # the first training label, after the 8-byte header
    content[8] = 6
    root = mnist_copy(tmp_path, mnist_root, {"train-labels-idx1-ubyte.gz": gzip.compress(bytes(content))})
    with pytest.raises(ConfigError) as err:
        load_dataset(cfg("mnist"), root)
    message = str(err.value)
    assert "train-labels-idx1-ubyte.gz fails its checksum" in message
    assert "expected a25bea736e30d166cdddb491f175f624" in message and "data.download=true" in message
    assert load_dataset(cfg("mnist", verify=False), root).train_y[0] == 6


def test_mnist_flipped_byte_in_the_gzip_stream_is_reported_as_corrupt(tmp_path, mnist_root):
    content = bytearray((mnist_root / "MNIST" / "raw" / "train-labels-idx1-ubyte.gz").read_bytes())
    content[len(content) // 2] ^= 0xFF
    root = mnist_copy(tmp_path, mnist_root, {"train-labels-idx1-ubyte.gz": bytes(content)})
    for verify in (True, False):
        with pytest.raises(ConfigError, match="train-labels-idx1-ubyte.gz is corrupt.*checksum"):
            load_dataset(cfg("mnist", verify=verify), root)


def test_mnist_truncated_uncompressed_file_has_the_wrong_size(tmp_path, mnist_root):
    # An uncompressed file is read in place of the .gz one.
    root = mnist_copy(tmp_path, mnist_root, {"train-labels-idx1-ubyte": real_labels(mnist_root)[:-10]})
    with pytest.raises(ConfigError, match="train-labels-idx1-ubyte has the wrong size: 59998 bytes, expected 60008"):
        load_dataset(cfg("mnist"), root)
    with pytest.raises(ConfigError, match="59998 bytes where its header \\(60000,\\) needs 60008"):
        load_dataset(cfg("mnist", verify=False), root)


def test_mnist_wrong_magic_number_is_rejected(tmp_path, mnist_root):
    images_as_labels = real_labels(mnist_root)
    root = mnist_copy(tmp_path, mnist_root, {"train-images-idx3-ubyte": images_as_labels})
    with pytest.raises(ConfigError, match="magic number 0x00000801, expected 0x00000803"):
        load_dataset(cfg("mnist", verify=False), root)


# --- Fashion-MNIST ----------------------------------------------------------------------------------------


def test_fashion_mnist_from_the_debian_package(tmp_path):
    if not idx_module.FASHION_MNIST_SYSTEM_DIR.is_dir():
        pytest.skip(f"{idx_module.FASHION_MNIST_SYSTEM_DIR} not installed (apt-get install dataset-fashion-mnist)")
    # An empty data.root: the loader falls back to the Debian folder, and its files pass the md5 checks.
    data = load_dataset(cfg("fashion_mnist"), tmp_path)
    assert (data.train_x.shape, data.test_x.shape) == ((60000, 1, 28, 28), (10000, 1, 28, 28))
    assert torch.bincount(data.train_y).tolist() == [6000] * 10
    assert torch.bincount(data.test_y).tolist() == [1000] * 10
    assert data.test_y[:10].tolist() == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]
    assert data.classes == torchvision.datasets.FashionMNIST.classes
    mean, std = pixel_stats(data.train_x)
    assert (data.mean, data.std) == ((0.2860,), (0.3530,))
    assert abs(mean - 0.2860) < 5e-5 and abs(std - 0.3530) < 5e-5


def test_fashion_mnist_missing_files_mention_the_debian_package(tmp_path, monkeypatch):
    monkeypatch.setattr(idx_module, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "not-installed")
    with pytest.raises(ConfigError) as err:
        load_dataset(cfg("fashion_mnist"), tmp_path)
    message = str(err.value)
    assert f"{tmp_path}/FashionMNIST/raw/train-images-idx3-ubyte[.gz]" in message
    assert "apt-get install dataset-fashion-mnist" in message and "data.download=true" in message


# --- CIFAR ------------------------------------------------------------------------------------------------


def known_image() -> np.ndarray:
    """One CIFAR row: red plane 10, green 20, blue 30, except red (row 2, col 5) = 200 and blue
    (row 31, col 0) = 77. Row-major planes: index = channel * 1024 + row * 32 + col."""
    row = np.repeat(np.array([10, 20, 30], dtype=np.uint8), 1024)
    row[0 * 1024 + 2 * 32 + 5] = 200
    row[2 * 1024 + 31 * 32 + 0] = 77
    return row


def write_pickle(path: Path, entry: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(entry, f, protocol=2)


def write_cifar10(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """Five train batches and a test batch of 20 images each, with bytes keys as the originals
    have when read without decoding. Returns the train images [100, 3072] and labels."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(7)
    images, labels = [], []
    for name in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]:
        data = rng.integers(0, 256, size=(IMAGES_PER_BATCH, 3072), dtype=np.uint8)
        targets = [int(t) for t in np.arange(IMAGES_PER_BATCH) % 10]
        if name == "data_batch_1":
            data[0] = known_image()
        write_pickle(folder / name, {b"batch_label": name.encode(), b"labels": targets, b"data": data,
                                     b"filenames": [b"x.png"] * IMAGES_PER_BATCH})
        if name != "test_batch":
            images.append(data)
            labels += targets
    write_pickle(folder / "batches.meta", {b"label_names": [n.encode() for n in CIFAR10_NAMES],
                                           b"num_cases_per_batch": IMAGES_PER_BATCH, b"num_vis": 3072})
    return np.concatenate(images), np.array(labels)


@pytest.fixture
def cifar10_root(tmp_path):
    images, labels = write_cifar10(tmp_path)
    return tmp_path, images, labels


def test_cifar10_batches_round_trip_exactly(cifar10_root):
    root, images, labels = cifar10_root
    data = load_dataset(cfg("cifar10", verify=False), root)
    assert (data.train_x.shape, data.test_x.shape) == ((100, 3, 32, 32), (20, 3, 32, 32))
    assert data.train_x.dtype == torch.uint8 and data.train_x.is_contiguous()
    assert data.train_y.tolist() == labels.tolist() and data.train_y.dtype == torch.int64
    assert data.classes == CIFAR10_NAMES
    first = data.train_x[0]
    assert first.shape == (3, 32, 32)
    assert first[0, 2, 5] == 200 and first[0, 2, 6] == 10 and first[0, 3, 5] == 10
    assert first[2, 31, 0] == 77 and first[2, 0, 31] == 30
    assert torch.all(first[1] == 20)
    assert torch.equal(data.train_x[1:21].reshape(20, 3072), torch.from_numpy(images[1:21]))
    assert data.mean == (0.49139968, 0.48215827, 0.44653124)
    assert data.std == (0.24703233, 0.24348505, 0.26158768)


def test_cifar10_verify_names_the_file_its_md5_and_the_remedy(cifar10_root):
    root, _, _ = cifar10_root
    with pytest.raises(ConfigError) as err:
        load_dataset(cfg("cifar10"), root)
    message = str(err.value)
    assert f"{root}/cifar-10-batches-py/data_batch_1 fails its checksum" in message
    assert "expected c99cafc152244af753f735de768cd75f" in message
    assert "data.download=true" in message and "dataset.verify=false" in message and "\n" not in message


def test_cifar10_missing_files_name_the_paths_and_the_archive(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_dataset(cfg("cifar10"), tmp_path)
    message = str(err.value)
    for name in ["data_batch_1", "data_batch_5", "test_batch", "batches.meta"]:
        assert f"{tmp_path}/cifar-10-batches-py/{name}" in message
    assert "cifar-10-python.tar.gz" in message and "data.download=true" in message


def test_cifar10_malformed_batch_is_rejected(cifar10_root):
    root, _, _ = cifar10_root
    write_pickle(root / "cifar-10-batches-py" / "data_batch_3", {b"data": np.zeros((20, 1024), np.uint8),
                                                                 b"labels": [0] * 20})
    with pytest.raises(ConfigError, match=r"data_batch_3 is not a CIFAR batch.*\(20, 1024\)"):
        load_dataset(cfg("cifar10", verify=False), root)


def test_cifar_subset_is_stratified_and_bounded_by_the_files(cifar10_root):
    root, _, _ = cifar10_root
    data = load_dataset(cfg("cifar10", verify=False, train_size=50), root)
    assert torch.bincount(data.train_y).tolist() == [5] * 10
    with pytest.raises(ConfigError, match="train_size=200 exceeds the 100 train samples"):
        load_dataset(cfg("cifar10", verify=False, train_size=200), root)


def test_root_defaults_to_the_environment(cifar10_root, monkeypatch):
    root, _, _ = cifar10_root
    monkeypatch.setenv("NOISYBENCH_DATA", str(root))
    assert load_dataset(cfg("cifar10", verify=False), None).train_x.shape[0] == 100


def test_cifar100_fine_labels_and_names(tmp_path):
    # str keys, as the original Python 2 pickles read with latin1 decoding.
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(3)
    fine_names = [f"class_{i:02d}" for i in range(100)]
    batches = {}
    for name, n in [("train", 200), ("test", 100)]:
        batches[name] = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        write_pickle(folder / name, {"data": batches[name], "fine_labels": [i % 100 for i in range(n)],
                                     "coarse_labels": [i % 20 for i in range(n)]})
    write_pickle(folder / "meta", {"fine_label_names": fine_names, "coarse_label_names": ["c"] * 20})
    data = load_dataset(cfg("cifar100", verify=False), tmp_path)
    assert (data.train_x.shape, data.test_x.shape, data.num_classes) == ((200, 3, 32, 32), (100, 3, 32, 32), 100)
    assert data.classes == fine_names and data.train_y[:3].tolist() == [0, 1, 2] and data.train_y[150] == 50
    # Image 7, channel 1 (green), row 4, col 9 sits at 1024 + 4 * 32 + 9 of its row.
    assert data.test_x[7, 1, 4, 9] == batches["test"][7, 1024 + 4 * 32 + 9]
    assert (data.mean, data.std) == ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
    with pytest.raises(ConfigError, match="cifar-100-python/train fails its checksum: .* expected 16019d7e"):
        load_dataset(cfg("cifar100"), tmp_path)


def test_checksums_and_names_agree_with_torchvision():
    for spec, tv in [(cifar_module.CIFAR10, torchvision.datasets.CIFAR10),
                     (cifar_module.CIFAR100, torchvision.datasets.CIFAR100)]:
        assert [list(f) for f in spec.train_files] == tv.train_list
        assert [list(f) for f in spec.test_files] == tv.test_list
        assert spec.meta_file == (tv.meta["filename"], tv.meta["md5"]) and spec.names_key == tv.meta["key"]
        assert (spec.folder, spec.archive_url) == (tv.base_folder, tv.url)
    assert list(idx_module.FASHION_MNIST.classes) == torchvision.datasets.FashionMNIST.classes
