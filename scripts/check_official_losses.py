"""Every registered loss that has official code, against that code run side by side on the same
logits: value and logit gradient.

The official repositories are not part of noisybench; clone them and name each checkout:

    git clone https://github.com/HanxunH/Active-Passive-Losses       # APL
    git clone https://github.com/Virusdoll/Active-Negative-Loss      # ANL
    git clone https://github.com/hitcszx/ALFs                        # ALFs
    git clone https://github.com/cswjl/joint-asymmetric-loss         # JAL
    git clone https://github.com/cswjl/eps-softmax                   # eps-softmax
    python scripts/check_official_losses.py --apl Active-Passive-Losses --anl Active-Negative-Loss \\
        --alfs ALFs --jal joint-asymmetric-loss --eps eps-softmax [--classes 10] [--batch 64]

Each repository's loss file is imported as it is (APL's ``mlconfig`` decorator is stubbed when
the package is missing; L_DMI's ``.cuda()`` is a no-op on the CPU). Two batches of logits: the
ordinary one spans near-uniform to one-hot-like rows, so the code's clamps bite; the sharp one
has large logits and near one-hot rows, where every clamp bites and float32 rounding shows most.
Every class is in each batch, so L_DMI's matrix is regular. Both sides run in float64 (tolerance
1e-6 relative; L_DMI's code runs in float32 only, and ANL's keeps a float32 constant, see
FLOAT32_CONSTANTS) and in float32, the dtype of training (1e-5 relative for the value, 1e-4 for
the gradient). Hyperparameters are set away from the defaults so that a parameter passed to the
wrong place shows. ANL-CE and ANL-FL include their L1 term on a small model. Exit status 1 when
a loss differs.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import sys
import types
from pathlib import Path

import torch

from noisybench.losses import LOSSES, resolve_loss
from noisybench.trainer import l1_norm

REPOS = {  # option: (repository, its loss file)
    "apl": ("HanxunH/Active-Passive-Losses", "loss.py"),
    "anl": ("Virusdoll/Active-Negative-Loss", "loss.py"),
    "alfs": ("hitcszx/ALFs", "lnl/losses.py"),
    "jal": ("cswjl/joint-asymmetric-loss", "losses.py"),
    "eps": ("cswjl/eps-softmax", "losses.py"),
}

# (our loss, its hyperparameters, repository, the official loss built from its module, K and them)
CASES = [
    ("ce", {}, "apl", lambda m, k, p: m.torch.nn.CrossEntropyLoss()),
    ("fl", dict(gamma=0.7), "apl", lambda m, k, p: m.FocalLoss(gamma=p["gamma"])),
    ("mae", dict(scale=2.0), "apl", lambda m, k, p: m.MeanAbsoluteError(k, scale=p["scale"])),
    ("rce", dict(scale=1.5), "apl", lambda m, k, p: m.ReverseCrossEntropy(k, scale=p["scale"])),
    ("gce", dict(q=0.6), "apl", lambda m, k, p: m.GeneralizedCrossEntropy(k, q=p["q"])),
    ("sce", dict(alpha=0.3, beta=2.0), "apl", lambda m, k, p: m.SCELoss(p["alpha"], p["beta"], k)),
    ("nce", dict(scale=2.0), "apl", lambda m, k, p: m.NormalizedCrossEntropy(k, scale=p["scale"])),
    ("nfl", dict(scale=2.0, gamma=0.7), "apl",
     lambda m, k, p: m.NormalizedFocalLoss(scale=p["scale"], gamma=p["gamma"], num_classes=k)),
    ("ngce", dict(scale=2.0, q=0.3), "apl",
     lambda m, k, p: m.NormalizedGeneralizedCrossEntropy(k, scale=p["scale"], q=p["q"])),
    ("nce_mae", dict(alpha=2.0, beta=10.0), "apl", lambda m, k, p: m.NCEandMAE(p["alpha"], p["beta"], k)),
    ("nce_rce", dict(alpha=2.0, beta=10.0), "apl", lambda m, k, p: m.NCEandRCE(p["alpha"], p["beta"], k)),
    ("nfl_mae", dict(alpha=2.0, beta=10.0, gamma=0.7), "apl",
     lambda m, k, p: m.NFLandMAE(p["alpha"], p["beta"], k, gamma=p["gamma"])),
    ("nfl_rce", dict(alpha=2.0, beta=10.0, gamma=0.7), "apl",
     lambda m, k, p: m.NFLandRCE(p["alpha"], p["beta"], k, gamma=p["gamma"])),
    ("ngce_mae", dict(alpha=2.0, beta=10.0, q=0.3), "apl",
     lambda m, k, p: m.NGCEandMAE(p["alpha"], p["beta"], k, q=p["q"])),
    ("ngce_rce", dict(alpha=2.0, beta=10.0, q=0.3), "apl",
     lambda m, k, p: m.NGCEandRCE(p["alpha"], p["beta"], k, q=p["q"])),
    ("dmi", {}, "apl", lambda m, k, p: m.DMILoss(k)),
    ("nnce", dict(min_prob=1e-6), "anl", lambda m, k, p: m.nnce(k, p)),
    ("nnfl", dict(gamma=0.7, min_prob=1e-6), "anl", lambda m, k, p: m.nnfl(k, p)),
    ("anl_ce", dict(alpha=5.0, beta=3.0, delta=5e-3, min_prob=1e-7), "anl", lambda m, k, p: m.anl_ce(k, p)),
    ("anl_fl", dict(alpha=5.0, beta=3.0, gamma=0.7, delta=5e-3, min_prob=1e-7), "anl",
     lambda m, k, p: m.anl_fl(k, p)),
    ("agce", dict(a=0.6, q=0.6, scale=2.0), "alfs", lambda m, k, p: m.AGCELoss(k, a=p["a"], q=p["q"], scale=p["scale"])),
    ("aul", dict(a=5.5, q=3.0, scale=2.0), "alfs", lambda m, k, p: m.AUELoss(k, a=p["a"], q=p["q"], scale=p["scale"])),
    ("ael", dict(a=2.5, scale=2.0), "alfs", lambda m, k, p: m.AExpLoss(k, a=p["a"], scale=p["scale"])),
    ("nce_agce", dict(alpha=2.0, beta=4.0, a=6.0, q=1.5), "alfs",
     lambda m, k, p: m.NCEandAGCE(p["alpha"], p["beta"], k, a=p["a"], q=p["q"])),
    ("nce_aul", dict(alpha=2.0, beta=4.0, a=6.3, q=1.5), "alfs",
     lambda m, k, p: m.NCEandAUE(p["alpha"], p["beta"], k, a=p["a"], q=p["q"])),
    ("nce_ael", dict(alpha=2.0, beta=4.0, a=5.0), "alfs",
     lambda m, k, p: m.NCEandAEL(p["alpha"], p["beta"], k, a=p["a"])),
    ("amse", dict(a=30.0, scale=2.0), "jal", lambda m, k, p: m.AMSELoss(a=p["a"], scale=p["scale"])),
    ("jal_ce", dict(alpha=2.0, beta=3.0, a=30.0, delta=0.0), "jal",
     lambda m, k, p: m.NCEandAMSE(alpha=p["alpha"], beta=p["beta"], a=p["a"])),
    ("jal_fl", dict(alpha=2.0, beta=3.0, a=30.0, gamma=0.7, delta=0.0), "jal",
     lambda m, k, p: m.NFLandAMSE(alpha=p["alpha"], beta=p["beta"], a=p["a"], gamma=p["gamma"])),
    # A large lam: LDR-KL's float32 rounding grows with lam * log K beside the loss.
    ("ldr_kl", dict(threshold=0.2, lam=30.0), "jal", lambda m, k, p: m.LDRLoss_V1(p["threshold"], Lambda=p["lam"])),
    ("ce_lc", dict(delta=0.5), "jal", lambda m, k, p: m.CEandLC(p["delta"])),
    ("ce_eps", dict(m=1e3, eps=1e-8), "eps", lambda m, k, p: m.ECELoss(p["m"], eps=p["eps"])),
    ("fl_eps", dict(m=1e3, gamma=0.3, eps=1e-8), "eps",
     lambda m, k, p: m.EFocalLoss(gamma=p["gamma"], m=p["m"], eps=p["eps"])),
    ("ce_eps_mae", dict(alpha=0.5, beta=5.0, m=1e3, eps=1e-8), "eps",
     lambda m, k, p: m.ECEandMAE(p["m"], alpha=p["alpha"], beta=p["beta"], eps=p["eps"])),
    ("fl_eps_mae", dict(alpha=0.5, beta=5.0, m=1e3, gamma=0.3, eps=1e-8), "eps",
     lambda m, k, p: m.EFLandMAE(p["m"], alpha=p["alpha"], beta=p["beta"], gamma=p["gamma"], eps=p["eps"])),
]
# Official code that runs in float32 only (L_DMI builds its one-hot matrix as a FloatTensor).
FLOAT32_ONLY = {"dmi"}
# ANL's code keeps -log(min_prob) as a float32 tensor: in float64 its gradients differ from the
# exact ones by that rounding (2e-6 to 8e-6 of the largest at 100 classes; its values up to 4e-6
# on the sharp logits), so these are held to the float32 tolerance in both dtypes.
FLOAT32_CONSTANTS = {"nnce", "nnfl", "anl_ce", "anl_fl"}
# Max relative difference, by dtype: (value, gradient). A float32 value, one batch mean, is held
# closer than the gradient, every entry of which is measured against the largest.
TOLERANCE = {torch.float64: (1e-6, 1e-6), torch.float32: (1e-5, 1e-4)}


def load_module(key: str, checkout: Path) -> types.ModuleType:
    path = checkout / REPOS[key][1]
    if not path.is_file():
        raise SystemExit(f"--{key} {checkout}: no {REPOS[key][1]} there; expected a checkout of {REPOS[key][0]}")
    if "mlconfig" not in sys.modules and importlib.util.find_spec("mlconfig") is None:
        stub = types.ModuleType("mlconfig")  # APL registers its classes for its own config files
        stub.register = lambda obj: obj
        sys.modules["mlconfig"] = stub
    spec = importlib.util.spec_from_file_location(f"official_{key}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def cuda_is_a_no_op():
    """L_DMI's official code moves its one-hot matrix to the GPU with ``.cuda()``."""
    original = torch.Tensor.cuda
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
    try:
        yield
    finally:
        torch.Tensor.cuda = original


def make_batch(batch: int, classes: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows from near-uniform to one-hot-like; every class present; some rows argmax = label."""
    generator = torch.Generator().manual_seed(0)
    scales = torch.tensor([0.3, 2.0, 8.0, 20.0]).repeat_interleave(-(-batch // 4))[:batch]
    logits = scales[:, None] * torch.randn(batch, classes, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, classes, (batch,), generator=generator)
    labels[:classes] = torch.arange(classes)
    rows = torch.arange(1, batch, 3)
    logits[rows, labels[rows]] += 4.0
    return logits.to(dtype), labels


def sharp_batch(batch: int, classes: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of scale 10 to 100: near one-hot rows, every clamp floor undercut; the label is the
    argmax by a wide margin in half the rows (p_y rounds to 1) and anywhere in the others."""
    generator = torch.Generator().manual_seed(2)
    scales = torch.tensor([10.0, 30.0, 100.0]).repeat_interleave(-(-batch // 3))[:batch]
    logits = scales[:, None] * torch.randn(batch, classes, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, classes, (batch,), generator=generator)
    labels[:classes] = torch.arange(classes)
    rows = torch.arange(0, batch, 2)
    logits[rows, labels[rows]] = logits[rows].amax(1) + scales[rows]
    return logits.to(dtype), labels


def dmi_batch(batch: int, classes: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Confident, mostly right rows: det(Y^T P) well inside float32's range."""
    generator = torch.Generator().manual_seed(1)
    labels = torch.arange(batch) % classes
    logits = torch.randn(batch, classes, generator=generator, dtype=torch.float64)
    logits[torch.arange(batch), labels] += 5.0
    return logits.to(dtype), labels


def small_model(dtype: torch.dtype) -> torch.nn.Module:
    """ANL's L1 term: the same parameters for both sides."""
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.BatchNorm1d(4)).to(dtype)


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


# The logit batches, by column group. L_DMI has no clamps and is checked on its own batch only:
# on near one-hot rows det(Y^T P) nears prod_c n_c, beyond float32's range at 100 classes.
BATCHES = {"ordinary": make_batch, "sharp": sharp_batch}


def compare(name, params, official, classes, batch, dtype, kind) -> tuple[float, float]:
    logits, labels = (dmi_batch if name == "dmi" else BATCHES[kind])(batch, classes, dtype)
    ours, settings = resolve_loss({"name": name, **params}, classes)
    model = small_model(dtype) if settings.l1 else None
    results = []
    for loss in (ours, official):
        z = logits.clone().requires_grad_()
        with cuda_is_a_no_op():
            if model is None:
                value = loss(z, labels)
            elif loss is ours:  # the L1 term, as the trainer adds it
                value = loss(z, labels) + settings.l1 * l1_norm(model)
            else:
                value = loss(z, labels, model)
        value.backward()
        results.append((value.detach(), z.grad))
    (ours_value, ours_grad), (value, grad) = results
    return relative(ours_value, value), relative(ours_grad, grad)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for key, (repo, file) in REPOS.items():
        parser.add_argument(f"--{key}", type=Path, help=f"a checkout of {repo} (reads {file})")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    if args.classes < 2:
        parser.error(f"--classes {args.classes} must be at least 2")
    if args.batch < args.classes:
        parser.error(f"--batch {args.batch} must be at least --classes {args.classes} (every class in the batch)")
    modules = {key: load_module(key, getattr(args, key)) for key in REPOS if getattr(args, key) is not None}
    if not modules:
        parser.error("name at least one official checkout (--apl, --anl, --alfs, --jal, --eps)")

    print(f"batch {args.batch} x {args.classes} classes; max |ours - official| / max |official|; "
          f"logits: {', then '.join(BATCHES)}")
    columns = ("value f64", "grad f64", "value f32", "grad f32") * len(BATCHES)
    print(f"{'loss':<11} {'official':<58} {' '.join(f'{c:>10}' for c in columns)}")
    differing, checked = [], set()
    for name, params, key, build in CASES:
        if key not in modules:
            continue
        try:
            official = build(modules[key], args.classes, params)
        except AttributeError as e:  # another version of the repository
            print(f"{name:<11} not in this checkout of {REPOS[key][0]}: {e}")
            continue
        cells, ok = [], True
        for kind in BATCHES:
            for dtype in (torch.float64, torch.float32):
                if (dtype != torch.float32 and name in FLOAT32_ONLY) or (kind != "ordinary" and name == "dmi"):
                    cells += [f"{'-':>10}"] * 2
                    continue
                errors = compare(name, params, official.to(dtype), args.classes, args.batch, dtype, kind)
                tolerances = TOLERANCE[torch.float32 if name in FLOAT32_CONSTANTS else dtype]
                ok &= all(e <= t for e, t in zip(errors, tolerances))
                cells += [f"{e:>10.1e}" for e in errors]
        source = f"{REPOS[key][0].split('/')[1]}: {type(official).__name__}"
        print(f"{name:<11} {source:<58} {' '.join(cells)}{'' if ok else '  DIFFERS'}")
        checked.add(name)
        if not ok:
            differing.append(name)
    unchecked = [name for name in LOSSES.names() if name not in checked]
    if unchecked:
        print(f"not checked here (no official code among the checkouts given): {', '.join(unchecked)}")
    if differing:
        print(f"differ from the official code: {', '.join(differing)}")
        return 1
    (value64, _), (value32, grad32) = TOLERANCE[torch.float64], TOLERANCE[torch.float32]
    print(f"all {len(checked)} checked losses equal the official code (tolerance {value64:g} in float64; "
          f"in float32, and for {', '.join(sorted(FLOAT32_CONSTANTS))}, {value32:g} for the value and "
          f"{grad32:g} for the gradient)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
