"""Train one cell with a paper's own code and with noisybench side by side, step by step.

    python scripts/check_official_training.py --paper anl --checkout Active-Negative-Loss \\
        --loss anl_ce --noise symmetric --rate 0.8 [--steps 500] [--train-size N] [--data-root DIR]

Both sides start from the same weights and see the same batches with the same noisy labels, in
float32 on the CPU, and each records every step's loss and gradient norm before and after
clipping; at the end the parameters (and BatchNorm buffers) are compared. Two pipelines that
compute the same thing agree to float rounding, which grows slowly over the steps; the report
names the first step and quantity where the relative difference passes ``--rtol``.

noisybench's side is its own trainer on the preset ``experiment=<paper>_<dataset>`` (with
``trainer.amp=false`` and ``trainer.channels_last=false``, the papers' layout: channels_last sums a
convolution's gradient in another order, 1e-4 relative on the first step), observed through
``Cell.on_step``. The paper's side is the repository's
own ``main.py``, run as a script (``runpy``) in a scratch folder, with these patches applied at
run time and nothing else changed:

* data order and labels: every ``DataLoader`` it builds reads with ``num_workers=0``; the one it
  shuffles instead replays noisybench's batches (the indices noisybench drew, in its order) and
  its dataset's labels are replaced by noisybench's noisy labels. The images are checked equal.
  For CIFAR, the train transform's ``RandomCrop`` and ``RandomHorizontalFlip`` take noisybench's
  per-sample offsets and flips instead of drawing their own.
* initial weights: ``torch.optim.SGD`` is built on parameters that are first overwritten with
  noisybench's initial parameters (the layer lists must match in order and shape).
* recording: ``Tensor.backward`` records the loss, ``torch.nn.utils.clip_grad_norm_`` the norms;
  ``SGD.step`` stops the run after ``--steps`` steps.
* device: ``.to('cuda')`` and ``.cuda()`` stay on the CPU (JAL and eps-softmax name CUDA).
* ALFs: ``lnl/main.py`` reads ``parser.loss`` and ``parser.dataset`` (an AttributeError as
  committed; its ``exp.py`` zips the MNIST loss names and modules the wrong way round), so the
  parser is given the parsed values as attributes.
* APL: two lines that current torch and numpy refuse are loaded mended (``SOURCE_MENDS``): the
  top-k accuracy its trainer logs (``.view`` of a non-contiguous tensor) and the MNIST asymmetric
  noise generator (a one-element array assigned to one label).
* files: MNIST is decompressed into the layout each repository reads (ALFs: its
  ``processed/*.pt``); CIFAR is written by ``--synthetic-cifar`` as random images in the real
  pickle format, whose md5 torchvision's integrity checks are told to accept.

The official code needs a few packages noisybench does not: ``pip install mlconfig`` (APL),
``seaborn`` (ALFs), ``tensorboard`` (ANL, JAL, eps-softmax).

Exit status: 0 when the pipelines agree over all steps, 1 when they part, 2 for bad input.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import gzip
import json
import os
import pickle
import runpy
import shutil
import struct
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data"


@dataclass(frozen=True)
class Paper:
    repository: str
    marker: tuple[str, str]  # (file, text it contains): how a checkout is recognised
    script: str  # the entry point, relative to the checkout
    datasets: tuple[str, ...]
    losses: dict[str, str]  # noisybench name -> the repository's name for it
    preset: str = ""  # experiment preset prefix, default the paper's key

    def preset_for(self, key: str, dataset: str) -> str:
        return f"{self.preset or key}_{dataset}"


PAPERS = {
    "apl": Paper("HanxunH/Active-Passive-Losses", ("README.md", "Active Passive Loss"), "main.py",
                 ("mnist",), {"ce": "ce", "fl": "focal", "gce": "gce", "sce": "sce", "mae": "mae", "rce": "rce",
                              "nce": "nce", "nfl": "nfl", "ngce": "ngce", "nce_mae": "nce+mae",
                              "nce_rce": "nce+rce", "nfl_mae": "nfl+mae", "nfl_rce": "nfl+rce",
                              "ngce_mae": "ngce+mae", "ngce_rce": "ngce+rce"}),
    "alfs": Paper("hitcszx/ALFs", ("lnl/losses.py", "class AGCELoss"), "lnl/main.py", ("mnist",),
                  {"ce": "CE", "fl": "FL", "mae": "MAE", "gce": "GCE", "sce": "SCE", "nfl": "NFL",
                   "ngce": "NGCE", "nce": "NCE", "ael": "AEL", "aul": "AUL", "agce": "AGCE",
                   "nfl_rce": "NFL+RCE", "nce_mae": "NCEandMAE", "nce_rce": "NCEandRCE",
                   "nce_agce": "NCEandAGCE", "nce_aul": "NCEandAUL", "nce_ael": "NCEandAEL"}),
    "anl": Paper("Virusdoll/Active-Negative-Loss", ("loss.py", "class NormalizedNegativeCrossEntropy"), "main.py",
                 ("mnist",), {name: name for name in ("ce", "fl", "gce", "sce", "nce_mae", "nce_rce", "nfl_rce",
                                                      "nce_agce", "nce_aul", "nce_ael", "anl_ce", "anl_fl")}),
    "jal": Paper("cswjl/joint-asymmetric-loss", ("README.md", "Joint Asymmetric Loss"), "main.py", ("cifar10",),
                 {"ce": "CE", "jal_ce": "NCEandAMSE", "jal_fl": "NFLandAMSE", "nce_rce": "NCEandRCE",
                  "gce": "GCE", "sce": "SCE", "anl_ce": "NCEandNNCE", "anl_fl": "NFLandNNFL"}),
    "eps": Paper("cswjl/eps-softmax", ("README.md", "Softmax: Approximating One-Hot"), "main.py", ("cifar10",),
                 {"ce": "CE", "ce_eps_mae": "ECEandMAE", "fl_eps_mae": "EFLandMAE", "nce_rce": "NCEandRCE",
                  "gce": "GCE", "sce": "SCE"}, preset="eps_softmax"),
}
NOISES = ("symmetric", "asymmetric")
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


class UsageError(Exception):
    """Bad input: one line, exit status 2."""


class StopAfterSteps(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# What one side records
# ---------------------------------------------------------------------------------------------

@dataclass
class Trajectory:
    loss: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    clipped_grad_norm: list[float] = field(default_factory=list)
    parameters: list[torch.Tensor] = field(default_factory=list)  # after the last step, in model order
    buffers: list[torch.Tensor] = field(default_factory=list)  # BatchNorm running statistics, same order

    def per_step(self) -> dict[str, list[float]]:
        return {"loss": self.loss, "grad_norm": self.grad_norm, "clipped_grad_norm": self.clipped_grad_norm}


@dataclass
class Plan:
    """What noisybench did, for the paper's side to replay."""

    batches: list[np.ndarray]  # per step, indices into the full training split
    epoch_of_step: list[int]
    noisy_full: np.ndarray  # noisy labels over the full split (entries outside the subset unused)
    train_images: np.ndarray  # uint8 [N, C, H, W], the subset noisybench trains on
    subset: np.ndarray | None  # indices of the subset in the full split (None: all of it)
    crops: list[tuple[int, int, bool]] | None  # per sample drawn, in order: (top, left, flip)
    initial_parameters: list[torch.Tensor]
    parameter_names: list[str]


# ---------------------------------------------------------------------------------------------
# noisybench's side
# ---------------------------------------------------------------------------------------------

def compose_cell(paper_key: str, dataset: str, loss: str, noise: str, rate: float, seed: int, root: Path,
                 train_size: int | None, extra: list[str]):
    from hydra import compose, initialize_config_module

    from noisybench.__main__ import CONFIG_PACKAGE

    overrides = [f"experiment={PAPERS[paper_key].preset_for(paper_key, dataset)}", f"loss={loss}",
                 f"noise={noise}", f"noise.rate={rate}", f"seed={seed}", f"data.root={root}",
                 "trainer.amp=false", "trainer.channels_last=false", "trainer.progress=false",
                 "trainer.checkpoint_every=0", *extra]
    if train_size:
        overrides.append(f"dataset.train_size={train_size}")
    with initialize_config_module(config_module=CONFIG_PACKAGE, version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def one_rounding(t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``t`` with each entry scaled by 1 ± 2**-23, the sign drawn per entry: one float32 rounding."""
    signs = torch.randint(0, 2, t.shape, generator=generator).to(t.dtype).mul_(2).sub_(1)
    return t * signs.mul_(2.0 ** -23).add_(1)


def run_noisybench(cfg, steps: int, workdir: Path, nudge: bool = False) -> tuple[Trajectory, Plan]:
    """Train ``steps`` steps and record them. ``nudge``: the control run, which measures how far
    rounding alone moves a trajectory. Two codes that compute the same gradient round it
    differently (1e-7 relative in float32: scripts/check_official_losses.py) at every step, so
    the control's initial weights and every gradient it computes are one rounding off."""
    from noisybench.data import load_dataset
    from noisybench.data.base import SUBSET_SEED, stratified_subset
    from noisybench.losses import resolve_loss
    from noisybench.models import build_model
    from noisybench.noise import make_noisy_labels
    from noisybench.run import check_config, data_root
    from noisybench.trainer import Cell, TrainData, seeds_for, train_pack

    check_config(cfg)
    root = data_root(cfg)
    dataset = load_dataset(cfg.dataset, root, False)
    full_size = None
    subset = None
    if cfg.dataset.train_size is not None:
        full = load_dataset({**cfg.dataset, "train_size": None, "test_size": None}, root, False)
        full_size = len(full.train_y)
        subset = stratified_subset(full.train_y.numpy(), cfg.dataset.train_size,
                                   np.random.default_rng([SUBSET_SEED, 0]))
    noisy = make_noisy_labels(cfg.noise, dataset.train_y.numpy(), dataset.num_classes, dataset.name,
                              images=dataset.train_x, root=root)
    init = torch.Generator().manual_seed(seeds_for(cfg.seed)["init"])
    model = build_model(cfg.model, dataset.input_shape, dataset.num_classes, generator=init)
    if nudge:
        rounding = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(one_rounding(p, rounding))
                p.register_hook(lambda grad: one_rounding(grad, rounding))
    names = [name for name, _ in model.named_parameters()]
    initial = [p.detach().clone() for p in model.parameters()]
    loss_fn, settings = resolve_loss(cfg.loss, dataset.num_classes, dataset=dataset.name, noise=cfg.noise.name,
                                     rate=cfg.noise.rate)

    ours, batches, epochs = Trajectory(), [], []

    def on_step(info: dict[str, Any]) -> None:
        ours.loss.append(info["loss"])
        ours.grad_norm.append(info["grad_norm"])
        ours.clipped_grad_norm.append(info["clipped_grad_norm"])
        batches.append(info["indices"].numpy())
        epochs.append(info["epoch"])
        if len(ours.loss) == steps:
            ours.parameters = [p.detach().clone() for p in model.parameters()]
            ours.buffers = [b.detach().clone() for name, b in model.named_buffers() if "running" in name]
            raise StopAfterSteps

    run_dir = workdir / ("noisybench-nudged" if nudge else "noisybench")
    run_dir.mkdir(parents=True, exist_ok=True)
    cell = Cell(cfg, model, loss_fn, torch.from_numpy(noisy.noisy), run_dir, _Quiet(), on_step=on_step,
                settings=settings)
    data = TrainData(dataset.train_x, cell.noisy_y, dataset.train_y, dataset.test_x, dataset.test_y,
                     dataset.num_classes, dataset.mean, dataset.std, cfg.dataset.augment)
    with contextlib.suppress(StopAfterSteps):
        train_pack([cell], data)
    if len(ours.loss) < steps:
        raise UsageError(f"--steps {steps} is more than the {len(ours.loss)} steps of the whole run")

    to_full = (lambda idx: idx) if subset is None else (lambda idx: subset[idx])  # noqa: E731
    noisy_full = noisy.noisy.copy() if subset is None else np.zeros(full_size, dtype=np.int64)
    if subset is not None:
        noisy_full[subset] = noisy.noisy
    crops = _crop_draws(cfg, [len(b) for b in batches]) if cfg.dataset.augment != "none" else None
    plan = Plan([to_full(b) for b in batches], epochs, noisy_full, dataset.train_x.numpy(), subset, crops,
                initial, names)
    return ours, plan


def _crop_draws(cfg, batch_sizes: list[int]) -> list[tuple[int, int, bool]]:
    """The crop offsets and flips noisybench's trainer drew, in its order: per step, the batch's
    tops, then lefts, then flips, from the cell's augmentation generator (data/augment.py)."""
    from noisybench.data.augment import draw_crop_flip
    from noisybench.trainer import seeds_for

    if cfg.dataset.augment != "crop_flip":
        raise UsageError(f"dataset.augment={cfg.dataset.augment} cannot be replayed; only crop_flip (CIFAR-10)")
    gen = torch.Generator().manual_seed(seeds_for(cfg.seed)["augment"])
    draws = []
    for size in batch_sizes:
        top, left, flip = draw_crop_flip(size, gen)
        draws += list(zip(top.tolist(), left.tolist(), flip.tolist()))
    return draws


class _Quiet:
    def log(self, *args, **kwargs):
        pass

    def finish(self, *args, **kwargs):
        pass


# ---------------------------------------------------------------------------------------------
# The paper's side: its own main.py, patched at run time
# ---------------------------------------------------------------------------------------------

def official_argv(paper_key: str, dataset: str, loss: str, noise: str, rate: float, seed: int) -> list[str]:
    name = PAPERS[paper_key].losses[loss]
    if paper_key == "apl":
        return ["--config_path", "configs", "--version", name, "--exp_name", "exp", "--seed", str(seed),
                "--noise_rate", str(rate)] + (["--asym"] if noise == "asymmetric" else [])
    if paper_key == "anl":
        return ["--config", f"{dataset}_{name}", "--noise_type", "sym" if noise == "symmetric" else "asym",
                "--noise_rate", str(rate), "--gpu", "0", "--seed", str(seed)]
    if paper_key == "alfs":
        return ["--dataset", dataset.upper(), "--root", "data", "--noise_type", noise, "--noise_rate", str(rate),
                "--loss", name, "--times", "1", "--num_workers", "0", "--seed", str(seed)]
    return ["--dataset", dataset, "--root", "data", "--noise_type", noise, "--noise_rate", str(rate),
            "--loss", name, "--trials", "1", "--seed", str(seed)]


def prepare_workdir(paper_key: str, checkout: Path, dataset: str, noise: str, data_root: Path, workdir: Path) -> None:
    """The files each main.py reads, where it reads them, inside a scratch folder."""
    data = workdir / "data"
    data.mkdir(parents=True)
    if paper_key == "apl":
        config = workdir / "configs"
        config.mkdir()
        sub = "sym" if noise == "symmetric" else "asym"
        for path in (checkout / "configs" / dataset / sub).glob("*.yaml"):
            text = path.read_text().replace("data_path: ../datasets", f"data_path: {data}")
            (config / path.name).write_text(text.replace("num_of_workers: 8", "num_of_workers: 0"))
    if paper_key == "anl":
        (workdir / "config").symlink_to(checkout / "config")
    if paper_key == "alfs":
        (workdir / "results" / dataset.upper() / noise).mkdir(parents=True)
    if dataset == "mnist":
        raw = [gzip.decompress((data_root / "MNIST" / "raw" / f"{name}.gz").read_bytes()) for name in MNIST_FILES]
        if paper_key == "alfs":  # ALFs reads the old torchvision processed/ tensors under MNIST/MNIST
            processed = data / "MNIST" / "MNIST" / "processed"
            processed.mkdir(parents=True)
            arrays = [_idx_tensor(b) for b in raw]
            torch.save((arrays[0], arrays[1]), processed / "training.pt")
            torch.save((arrays[2], arrays[3]), processed / "test.pt")
        else:
            folder = data / "MNIST" / "raw"
            folder.mkdir(parents=True)
            for name, content in zip(MNIST_FILES, raw):
                (folder / name).write_bytes(content)
            # torchvision looks in <root>/<class name>/raw: the repositories subclass MNIST
            for subclass in ("MyMNIST", "MNISTNoisy"):
                (data / subclass).symlink_to(data / "MNIST")
    else:  # CIFAR: JAL and eps-softmax read <root>/<dataset>/cifar-10-batches-py
        (data / dataset).mkdir()
        (data / dataset / "cifar-10-batches-py").symlink_to(data_root / "cifar-10-batches-py")


def _idx_tensor(content: bytes) -> torch.Tensor:
    ndim = content[3]
    shape = tuple(int.from_bytes(content[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    array = np.frombuffer(content, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)
    return torch.from_numpy(array.astype(np.int64) if ndim == 1 else array.copy())


def _images_of(dataset) -> np.ndarray:
    for name in ("data", "train_data"):
        if hasattr(dataset, name):
            images = getattr(dataset, name)
            return images.numpy() if torch.is_tensor(images) else np.asarray(images)
    raise RuntimeError(f"cannot find the images of {type(dataset).__name__}")


def _set_labels(dataset, labels: np.ndarray) -> None:
    # (torchvision's MNIST has read-only train_labels aliases of targets; only stored ones are set)
    names = [n for n in ("targets", "train_noisy_labels", "train_labels") if n in vars(dataset)]
    if not names:
        raise RuntimeError(f"cannot find the labels of {type(dataset).__name__}")
    for name in names:
        current = getattr(dataset, name)
        value = labels.tolist() if isinstance(current, list) else \
            torch.from_numpy(labels.copy()) if torch.is_tensor(current) else labels.copy()
        setattr(dataset, name, value)


class _ReplayCropFlip:
    """RandomCrop(32, padding=4) then RandomHorizontalFlip, with the offsets and flips given."""

    def __init__(self, draws, size, padding):
        self.draws, self.size, self.padding = iter(draws), size, padding

    def __call__(self, img):
        import torchvision.transforms.functional as TF

        top, left, flip = next(self.draws)
        img = TF.crop(TF.pad(img, self.padding, fill=0), top, left, self.size, self.size)
        return TF.hflip(img) if flip else img


def _replay_transform(transform, draws) -> None:
    import torchvision.transforms as T

    steps = transform.transforms
    kinds = [type(t) for t in steps]
    if T.RandomCrop not in kinds or T.RandomHorizontalFlip not in kinds:
        raise RuntimeError(f"the official train transform {steps} has no RandomCrop + RandomHorizontalFlip to replay")
    crop = steps[kinds.index(T.RandomCrop)]
    replay = _ReplayCropFlip(draws, crop.size[0], crop.padding)
    transform.transforms = [replay if isinstance(t, T.RandomCrop) else t for t in steps
                            if not isinstance(t, T.RandomHorizontalFlip)]


def _to_cpu(args, kwargs):
    def fix(value):
        if isinstance(value, str) and value.startswith("cuda"):
            return "cpu"
        if isinstance(value, torch.device) and value.type == "cuda":
            return torch.device("cpu")
        return value

    return [fix(a) for a in args], {k: fix(v) for k, v in kwargs.items()}


@contextlib.contextmanager
def _patched(obj, name: str, value):
    saved = obj.__dict__[name] if name in obj.__dict__ else getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, saved)


def run_official(paper_key: str, checkout: Path, argv: list[str], workdir: Path, plan: Plan | None,
                 steps: int) -> Trajectory:
    """Run the paper's main.py. With a ``plan``, replay noisybench's start and batches and stop after
    ``steps`` steps; without one (``--full``), train its whole protocol from its own weights,
    noise and data order, only on the CPU with the files it reads and ``num_workers=0``."""
    import torch.utils.data as tud
    import torchvision

    theirs = Trajectory()
    state: dict[str, Any] = {"loaders": 0, "params": None}
    real_loader = tud.DataLoader

    class ReplayLoader(real_loader):
        def __init__(self, dataset, batch_size=1, shuffle=False, *args, **kwargs):
            for key in ("num_workers", "persistent_workers", "worker_init_fn", "pin_memory", "sampler"):
                kwargs.pop(key, None)
            if not shuffle or plan is None:
                super().__init__(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=0, *args, **kwargs)
                state["loaders"] += bool(shuffle)
                return
            state["loaders"] += 1
            images = _images_of(dataset)
            ours = plan.train_images.transpose(0, 2, 3, 1) if images.ndim == 4 else plan.train_images[:, 0]
            mine = images if plan.subset is None else images[plan.subset]
            if mine.shape != ours.shape or not np.array_equal(mine, ours):
                raise RuntimeError("the official training images differ from noisybench's (order or content)")
            _set_labels(dataset, plan.noisy_full)
            if plan.crops is not None:
                _replay_transform(dataset.transform, plan.crops)
            epochs = sorted(set(plan.epoch_of_step))
            per_epoch = [[b.tolist() for b, e in zip(plan.batches, plan.epoch_of_step) if e == epoch]
                         for epoch in epochs]
            super().__init__(dataset, batch_sampler=_EpochBatches(per_epoch), num_workers=0, **kwargs)

    real_init, real_step = torch.optim.SGD.__init__, torch.optim.SGD.step
    real_clip = torch.nn.utils.clip_grad_norm_
    real_backward = torch.Tensor.backward

    def sgd_init(self, params, *args, **kwargs):
        params = list(params)
        shapes = [tuple(p.shape) for p in params]
        wanted = [tuple(p.shape) for p in plan.initial_parameters]
        if shapes != wanted:
            raise RuntimeError(f"the official model's parameters {shapes} differ from noisybench's {wanted}")
        with torch.no_grad():
            for p, q in zip(params, plan.initial_parameters):
                p.copy_(q)
        state["params"] = params
        real_init(self, params, *args, **kwargs)

    def sgd_step(self, *args, **kwargs):
        out = real_step(self, *args, **kwargs)
        if len(theirs.loss) >= steps:
            theirs.parameters = [p.detach().clone() for p in state["params"]]
            model = _model_of(state["params"])
            theirs.buffers = [] if model is None else \
                [b.detach().clone() for name, b in model.named_buffers() if "running" in name]
            raise StopAfterSteps
        return out

    def clip(parameters, max_norm, *args, **kwargs):
        parameters = list(parameters)
        norm = real_clip(parameters, max_norm, *args, **kwargs)
        theirs.grad_norm.append(float(norm))
        # per tensor, then over the tensors, as clip_grad_norm_ and noisybench compute it (one float32
        # reduction over a million entries would be 1e-4 off)
        norms = [torch.linalg.vector_norm(p.grad.detach()) for p in parameters if p.grad is not None]
        theirs.clipped_grad_norm.append(float(torch.linalg.vector_norm(torch.stack(norms))))
        return norm

    def backward(self, *args, **kwargs):
        if self.dim() == 0:
            theirs.loss.append(float(self.detach()))
        return real_backward(self, *args, **kwargs)

    def tensor_to(self, *args, **kwargs):
        args, kwargs = _to_cpu(args, kwargs)
        return real_tensor_to(self, *args, **kwargs)

    def module_to(self, *args, **kwargs):
        args, kwargs = _to_cpu(args, kwargs)
        return real_module_to(self, *args, **kwargs)

    real_tensor_to, real_module_to = torch.Tensor.to, torch.nn.Module.to
    real_parse = argparse.ArgumentParser.parse_args

    def parse_args(self, *args, **kwargs):
        parsed = real_parse(self, *args, **kwargs)
        for key, value in vars(parsed).items():
            if not hasattr(self, key):
                setattr(self, key, value)
        return parsed
    script = checkout / PAPERS[paper_key].script
    old_cwd, old_argv, old_path = os.getcwd(), sys.argv, list(sys.path)
    before = set(sys.modules)
    with contextlib.ExitStack() as stack:
        replay = [] if plan is None else [
            (torch.optim.SGD, "__init__", sgd_init), (torch.optim.SGD, "step", sgd_step),
            (torch.nn.utils, "clip_grad_norm_", clip), (torch.Tensor, "backward", backward)]
        for obj, name, value in replay + [
            (tud, "DataLoader", ReplayLoader), (torch.Tensor, "to", tensor_to),
            (torch.nn.Module, "to", module_to), (torch.Tensor, "cuda", lambda self, *a, **k: self),
            (torch.nn.Module, "cuda", lambda self, *a, **k: self),
            (torchvision.datasets.CIFAR10, "_check_integrity", lambda self: True),
            (torchvision.datasets.cifar, "check_integrity", lambda *args, **kwargs: True),
            (argparse.ArgumentParser, "parse_args", parse_args),
        ]:
            stack.enter_context(_patched(obj, name, value))
        try:
            os.chdir(workdir)
            sys.argv = [str(script), *argv]
            sys.path[:0] = [str(script.parent)]
            _load_mended(paper_key, checkout)
            with contextlib.suppress(StopAfterSteps):
                runpy.run_path(str(script), run_name="__main__")
        finally:
            os.chdir(old_cwd)
            sys.argv, sys.path[:] = old_argv, old_path
            for name in set(sys.modules) - before:  # the repository's modules (utils, loss, ...)
                module = sys.modules[name]
                if str(getattr(module, "__file__", "") or "").startswith(str(checkout)):
                    del sys.modules[name]
    if state["loaders"] != 1:
        raise RuntimeError(f"the official code built {state['loaders']} shuffled loaders; expected 1")
    return theirs


# Lines of a repository's modules that current torch or numpy refuse, and the same computation
# written so that they accept it; the module is loaded with the line replaced before main.py imports it.
SOURCE_MENDS = {
    "apl": [
        # util.accuracy, the top-k accuracy its trainer logs: .view of a non-contiguous tensor
        ("util", "correct_k = correct[:k].view(-1)", "correct_k = correct[:k].reshape(-1)"),
        # multiclass_noisify (MNIST and CIFAR-100 asymmetric noise): a one-element array into one
        # label, which numpy 2 no longer unpacks
        ("dataset", "new_y[idx] = np.where(flipped == 1)[0]", "new_y[idx] = np.where(flipped == 1)[0][0]"),
    ],
}


def _load_mended(paper_key: str, checkout: Path) -> None:
    import importlib.util

    for module_name, old, new in SOURCE_MENDS.get(paper_key, []):
        path = checkout / f"{module_name}.py"
        source = path.read_text()
        if old not in source:
            raise RuntimeError(f"{path} no longer holds the line {old!r}; update SOURCE_MENDS")
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        exec(compile(source.replace(old, new), str(path), "exec"), module.__dict__)


class _EpochBatches:
    """A batch sampler that gives epoch e's recorded batches on its e-th pass."""

    def __init__(self, per_epoch: list[list[list[int]]]):
        self.per_epoch, self.pass_ = per_epoch, 0

    def __iter__(self):
        batches = self.per_epoch[self.pass_] if self.pass_ < len(self.per_epoch) else []
        self.pass_ += 1
        return iter(batches)

    def __len__(self):
        return len(self.per_epoch[min(self.pass_, len(self.per_epoch) - 1)])


def _model_of(params: list[torch.Tensor]) -> torch.nn.Module | None:
    """The module whose parameters are exactly the optimiser's (for its BatchNorm buffers)."""
    ids = [id(p) for p in params]
    for obj in gc.get_objects():
        if isinstance(obj, torch.nn.Module) and [id(p) for p in obj.parameters()] == ids:
            return obj
    return None


# ---------------------------------------------------------------------------------------------
# Comparison and report
# ---------------------------------------------------------------------------------------------

def relative(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


def relative_steps(a: list[float], b: list[float]) -> list[float]:
    return [relative(x, y) for x, y in zip(a, b)]


def compare(ours: Trajectory, theirs: Trajectory, control: Trajectory, initial: list[torch.Tensor],
            names: list[str], rtol: float, factor: float) -> dict[str, Any]:
    """Per step and quantity, ours against theirs, within the larger of ``rtol`` and ``factor`` times
    the largest difference rounding alone has made by that step (``control``: noisybench again,
    its initial weights one float32 rounding away)."""
    steps = min(len(ours.loss), len(theirs.loss))
    worst: dict[str, float] = {}
    envelope: dict[str, float] = {}
    first_part = None
    for key, a_values in ours.per_step().items():
        diffs = relative_steps(a_values[:steps], theirs.per_step()[key][:steps])
        rounding = np.maximum.accumulate(relative_steps(control.per_step()[key][:steps], a_values[:steps]))
        worst[key] = max(diffs, default=0.0)
        envelope[key] = float(rounding[-1]) if len(rounding) else 0.0
        for step, (d, r) in enumerate(zip(diffs, rounding), 1):
            if d > max(rtol, factor * r):
                if first_part is None or step < first_part["step"]:
                    first_part = {"step": step, "quantity": key, "ours": a_values[step - 1],
                                  "theirs": theirs.per_step()[key][step - 1], "relative": d,
                                  "allowed": max(rtol, factor * float(r))}
                break

    def update_share(a_params, b_params):
        """Each parameter's difference as a share of the update the paper's code made to it."""
        return [float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b - p0).clamp(min=1e-30))
                for a, b, p0 in zip(a_params, b_params, initial)]

    def buffer_share(a_buffers, b_buffers):
        return [float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b).clamp(min=1e-30))
                for a, b in zip(a_buffers, b_buffers)]

    params, buffers = update_share(ours.parameters, theirs.parameters), buffer_share(ours.buffers, theirs.buffers)
    worst["parameters"], worst["buffers"] = max(params, default=0.0), max(buffers, default=0.0)
    envelope["parameters"] = max(update_share(control.parameters, ours.parameters), default=0.0)
    envelope["buffers"] = max(buffer_share(control.buffers, ours.buffers), default=0.0)
    end_ok = all(worst[k] <= max(rtol, factor * envelope[k]) for k in ("parameters", "buffers"))
    agree = first_part is None and end_ok and len(ours.loss) == len(theirs.loss)
    return {"steps": steps, "steps_ours": len(ours.loss), "steps_theirs": len(theirs.loss), "agree": agree,
            "first_parting": first_part, "max_relative": worst, "rounding_envelope": envelope,
            "factor": factor, "worst_parameter": names[int(np.argmax(params))] if params else ""}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--paper", help=f"one of {', '.join(PAPERS)}")
    parser.add_argument("--checkout", type=Path, help="a checkout of the paper's official repository")
    parser.add_argument("--loss")
    parser.add_argument("--noise", default="symmetric", help=f"one of {', '.join(NOISES)}")
    parser.add_argument("--rate", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--train-size", type=int, default=None, help="a class-stratified subset (dataset.train_size)")
    parser.add_argument("--data-root", type=Path, default=None,
                        help=f"MNIST/raw for MNIST papers (default {DEFAULT_DATA}); for CIFAR papers a folder "
                             "holding cifar-10-batches-py (default: synthetic files written by --synthetic-cifar)")
    parser.add_argument("--synthetic-cifar", type=int, default=5000, metavar="N",
                        help="CIFAR papers without --data-root: N random training images (and N/5 test images) "
                             "written in the real pickle format")
    parser.add_argument("--rtol", type=float, default=1e-4,
                        help="relative difference always allowed: a loss written in other ops than the paper's "
                             "rounds differently (1e-7 of a gradient entry), which a few dozen steps grow to 1e-5")
    parser.add_argument("--factor", type=float, default=10.0,
                        help="allowed: this many times the rounding envelope of the control run")
    parser.add_argument("--out", type=Path, default=None, help="write the report (JSON) here")
    parser.add_argument("--golden", type=Path, default=None,
                        help="when the two agree, write noisybench's per-step trajectory here (tests/golden/)")
    parser.add_argument("--override", action="append", default=[], help="an extra noisybench override")
    parser.add_argument("--full", type=Path, default=None, metavar="DIR",
                        help="instead of the step check: run the paper's whole protocol with its own code "
                             "(its noise, initialisation and data order) in DIR/work, and write its test "
                             "accuracy per epoch, read from its logs, to DIR/curve.csv")
    parser.add_argument("--table", type=Path, default=None, metavar="DIR",
                        help="print the reports (*.json) in DIR as one markdown table, and exit")
    args = parser.parse_args(argv)
    if args.table:
        print(summary_table(args.table))
        return 0
    if not (args.paper and args.checkout and args.loss):
        parser.error("--paper, --checkout and --loss are required")
    try:
        if args.full:
            return run_full(args)
        report = check(args)
    except UsageError as e:
        print(f"check_official_training.py: {e}", file=sys.stderr)
        return 2
    print(format_report(report))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    return 0 if report["comparison"]["agree"] else 1


def validate(args) -> tuple[Paper, str]:
    if args.paper not in PAPERS:
        raise UsageError(f"--paper {args.paper!r} has no preset here; allowed: {', '.join(PAPERS)}")
    paper = PAPERS[args.paper]
    marker_file, marker_text = paper.marker
    marker = args.checkout / marker_file
    if not marker.is_file() or marker_text not in marker.read_text(errors="replace"):
        raise UsageError(f"--checkout {args.checkout} is not a checkout of {paper.repository} (no "
                         f"{marker_file} containing {marker_text!r}); clone https://github.com/{paper.repository}")
    if args.loss not in paper.losses:
        raise UsageError(f"--loss {args.loss!r} is not one {args.paper}'s code runs here; allowed: "
                         f"{', '.join(paper.losses)}")
    if args.noise not in NOISES:
        raise UsageError(f"--noise {args.noise!r} is not allowed; allowed: {', '.join(NOISES)}")
    if not 0 <= args.rate < 1:
        raise UsageError(f"--rate {args.rate} is not allowed; it must be in [0, 1)")
    if args.steps < 1:
        raise UsageError(f"--steps {args.steps} is not allowed; it must be a positive integer")
    return paper, paper.datasets[0]


def check(args) -> dict[str, Any]:
    paper, dataset = validate(args)
    torch.set_num_threads(1)  # one thread on both sides: the reductions run in one order
    with tempfile.TemporaryDirectory(prefix="official-training-") as tmp:
        tmp = Path(tmp)
        root = args.data_root
        if dataset == "mnist":
            root = root or DEFAULT_DATA
            if not all((root / "MNIST" / "raw" / f"{n}.gz").is_file() for n in MNIST_FILES):
                raise UsageError(f"--data-root {root} has no MNIST/raw/*.gz (torchvision's layout)")
        elif root is None:
            root = tmp / "cifar"
            write_synthetic_cifar10(root, args.synthetic_cifar, seed=0)
        extra = list(args.override)
        if dataset != "mnist" and args.data_root is None:
            extra.append("dataset.verify=false")
        cfg = compose_cell(args.paper, dataset, args.loss, args.noise, args.rate, args.seed, root,
                           args.train_size, extra)
        ours, plan = run_noisybench(cfg, args.steps, tmp)
        control, _ = run_noisybench(cfg, args.steps, tmp, nudge=True)
        workdir = tmp / "official"
        workdir.mkdir()
        prepare_workdir(args.paper, args.checkout.resolve(), dataset, args.noise, root.resolve(), workdir)
        argv = official_argv(args.paper, dataset, args.loss, args.noise, args.rate, args.seed)
        theirs = run_official(args.paper, args.checkout.resolve(), argv, workdir, plan, args.steps)
    comparison = compare(ours, theirs, control, plan.initial_parameters, plan.parameter_names, args.rtol,
                         args.factor)
    report = {
        "paper": args.paper, "repository": PAPERS[args.paper].repository, "commit": _commit(args.checkout),
        "preset": paper.preset_for(args.paper, dataset), "loss": args.loss, "noise": args.noise,
        "rate": args.rate, "seed": args.seed, "train_size": args.train_size, "rtol": args.rtol,
        "synthetic_cifar": None if dataset == "mnist" or args.data_root else args.synthetic_cifar,
        "official_argv": argv, "comparison": comparison,
        "ours": ours.per_step(), "theirs": theirs.per_step(), "control": control.per_step(),
    }
    if args.golden and comparison["agree"]:
        write_golden(args.golden, report, cfg, GOLDEN_RTOL, args.factor)
    return report


# How each repository logs its test accuracy per epoch (in its own log files), and its scale.
ACCURACY_PATTERNS = {
    "apl": (r"Eval acc: ([0-9.]+)", 100.0),
    "anl": (r"'eval_acc': ([0-9.]+)", 1.0),
    "alfs": (r"test_acc=([0-9.]+)", 1.0),
    "jal": (r"test_acc=([0-9.]+)", 1.0),
    "eps": (r"test_acc=([0-9.]+)", 1.0),
}


def run_full(args) -> int:
    import re

    _, dataset = validate(args)
    out = args.full
    workdir = out / "work"
    if workdir.exists():  # a run that did not finish starts again: the official code cannot resume
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    root = args.data_root or DEFAULT_DATA
    if dataset != "mnist" and args.data_root is None:
        raise UsageError("--full on a CIFAR paper needs --data-root with the real cifar-10-batches-py")
    prepare_workdir(args.paper, args.checkout.resolve(), dataset, args.noise, root.resolve(), workdir)
    argv = official_argv(args.paper, dataset, args.loss, args.noise, args.rate, args.seed)
    run_official(args.paper, args.checkout.resolve(), argv, workdir, None, 0)
    pattern, scale = ACCURACY_PATTERNS[args.paper]
    accuracies = [float(m) / scale for path in sorted(workdir.rglob("*.log"))
                  for m in re.findall(pattern, path.read_text(errors="replace"))]
    lines = ["epoch,test_acc"] + [f"{epoch},{acc:.6f}" for epoch, acc in enumerate(accuracies, 1)]
    (out / "curve.csv").write_text("\n".join(lines) + "\n")
    (out / "official.json").write_text(json.dumps({
        "paper": args.paper, "repository": PAPERS[args.paper].repository, "commit": _commit(args.checkout),
        "argv": argv, "epochs": len(accuracies)}, indent=1) + "\n")
    print(f"{len(accuracies)} epochs; last test accuracy {accuracies[-1] if accuracies else float('nan'):.4f}")
    return 0


# The goldens compare noisybench with itself: only rounding differs, so the floor is tighter than
# --rtol (a 1% change of the learning rate shows by step 16 of anl_mnist's golden).
GOLDEN_RTOL = 1e-5


def write_golden(path: Path, report: dict[str, Any], cfg, rtol: float, factor: float) -> None:
    """noisybench's per-step loss and gradient norm, for tests/test_golden_trajectories.py, with the
    tolerance of each step: the larger of ``rtol`` and ``factor`` times how far rounding alone had
    taken the control run by then."""
    golden = {key: report[key] for key in ("paper", "repository", "commit", "preset", "loss", "noise", "rate",
                                           "seed", "train_size", "synthetic_cifar")}
    golden["official_max_relative"] = report["comparison"]["max_relative"]
    golden["steps"] = {}
    for key in ("loss", "grad_norm"):
        ours, control = report["ours"][key], report["control"][key]
        envelope = np.maximum.accumulate(relative_steps(control, ours))
        golden["steps"][key] = ours
        golden["steps"][f"{key}_rtol"] = [max(rtol, factor * float(e)) for e in envelope]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(golden, indent=1) + "\n")


def _commit(checkout: Path) -> str | None:
    head = checkout / ".git" / "HEAD"
    with contextlib.suppress(OSError):
        ref = head.read_text().strip()
        if ref.startswith("ref: "):
            return (checkout / ".git" / ref[5:]).read_text().strip()[:12]
        return ref[:12]
    return None


def summary_table(folder: Path) -> str:
    """The reports of a folder, one row each: how far ours and the paper's code are apart after
    each step, and how far rounding alone takes two runs apart."""
    rows = ["| paper | commit | preset | loss | noise | steps | loss: ours vs code | rounding | "
            "grad norm: ours vs code | rounding | parameters: ours vs code | rounding | result |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for path in sorted(folder.glob("*.json")):
        r = json.loads(path.read_text())
        c = r["comparison"]
        worst, env = c["max_relative"], c["rounding_envelope"]
        part = c["first_parting"]
        verdict = "agree" if c["agree"] else \
            f"part at step {part['step']} ({part['quantity']})" if part else "differ at the end"
        rows.append(f"| {r['paper']} | {r['commit']} | {r['preset']} | {r['loss']} | {r['noise']} {r['rate']} | "
                    f"{c['steps']} | {worst['loss']:.1e} | {env['loss']:.1e} | {worst['grad_norm']:.1e} | "
                    f"{env['grad_norm']:.1e} | {worst['parameters']:.1e} | {env['parameters']:.1e} | {verdict} |")
    return "\n".join(rows)


def format_report(report: dict[str, Any]) -> str:
    c = report["comparison"]
    lines = [f"{report['paper']} ({report['repository']} @ {report['commit']}), {report['preset']}: "
             f"{report['loss']}, {report['noise']} {report['rate']}, seed {report['seed']}, "
             f"{c['steps']} steps (ours {c['steps_ours']}, theirs {c['steps_theirs']})",
             "max relative difference, ours vs the paper's code: "
             + ", ".join(f"{k} {v:.1e}" for k, v in c["max_relative"].items())
             + (f" (worst parameter {c['worst_parameter']})" if c["worst_parameter"] else ""),
             "rounding alone (control run, weights and every gradient 1 rounding apart):   "
             + ", ".join(f"{k} {v:.1e}" for k, v in c["rounding_envelope"].items())]
    part = c["first_parting"]
    if part:
        lines.append(f"parted at step {part['step']}: {part['quantity']} ours {part['ours']:.7g} theirs "
                     f"{part['theirs']:.7g} (relative {part['relative']:.1e} > allowed {part['allowed']:.1e})")
    lines.append("agree" if c["agree"] else "DIFFER")
    return "\n".join(lines)


class _Python2Pickler(pickle._Pickler):
    """Protocol 2 with bytes written as Python 2 strings, as the original CIFAR batches hold their
    keys, names and image bytes: Python 3 reads them as str with encoding="latin1" (torchvision,
    noisybench) and as bytes with encoding="bytes"."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_python2_str(self, obj: bytes) -> None:
        size = len(obj)
        head = pickle.SHORT_BINSTRING + bytes([size]) if size < 256 else pickle.BINSTRING + struct.pack("<i", size)
        self.write(head + obj)
        self.memoize(obj)

    dispatch[bytes] = save_python2_str


def write_synthetic_cifar10(root: Path, train: int, seed: int) -> None:
    """CIFAR-10's python batches (5 train batches of train/5 images, one test batch of train/5)
    filled with random images and balanced labels, in the original files' format and layout."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    per_batch = train // 5

    def dump(name: str, entry: dict) -> None:
        with (folder / name).open("wb") as f:
            _Python2Pickler(f, protocol=2).dump(entry)

    def batch(name: str, count: int) -> None:
        labels = rng.permutation(np.arange(count) % 10).tolist()
        data = rng.integers(0, 256, size=(count, 3072), dtype=np.uint8)
        dump(name, {b"batch_label": name.encode(), b"labels": labels, b"data": data,
                    b"filenames": [f"{name}_{i}.png".encode() for i in range(count)]})

    for i in range(1, 6):
        batch(f"data_batch_{i}", per_batch)
    batch("test_batch", per_batch)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    dump("batches.meta", {b"label_names": [n.encode() for n in names], b"num_cases_per_batch": per_batch,
                          b"num_vis": 3072})


if __name__ == "__main__":
    sys.exit(main())
