"""The training loop's pieces, each checked against a direct computation."""
from __future__ import annotations

import csv
import math

import pytest
import torch
import torch.nn.functional as F
from helpers import HostReads, compose_config

from noisybench.run import run, run_pack
from noisybench.trainer import DIVERGENCE_CHECK_STEPS, EpochStats, evaluate, l1_norm, make_optimizer, seeds_for


def test_memorisation_counts_on_a_hand_built_batch():
    # 6 samples; samples 2..5 are flipped (noisy != clean).
    clean = torch.tensor([0, 1, 2, 0, 1, 2])
    noisy = torch.tensor([0, 1, 0, 1, 2, 1])
    pred = torch.tensor([0, 2, 0, 0, 2, 0])  # flipped ones: 2 -> noisy, 3 -> clean, 4 -> noisy, 5 -> neither
    logits = F.one_hot(pred, 3).float()
    stats = EpochStats(torch.device("cpu"))
    stats.add(torch.tensor(0.5), logits, noisy, clean)
    r = stats.result()
    assert r["memorised"] == pytest.approx(2 / 4)
    assert r["corrected"] == pytest.approx(1 / 4)
    assert r["train_acc_noisy"] == pytest.approx(3 / 6)   # samples 0, 2, 4
    assert r["train_acc_clean"] == pytest.approx(2 / 6)   # samples 0, 3
    assert r["train_loss"] == pytest.approx(0.5)


def test_per_class_accuracy_agrees_with_a_direct_computation():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 4))
    x = torch.randint(0, 256, (103, 1, 4, 4), dtype=torch.uint8)
    y = torch.randint(0, 4, (103,))
    ev = evaluate(model, x, y, (0.5,), (0.25,), 4, batch_size=10, autocast=torch.no_grad,
                  channels_last=False)
    with torch.no_grad():
        logits = model((x.float() / 255 - 0.5) / 0.25)
    pred = logits.argmax(1)
    for k in range(4):
        assert ev["per_class"][k] == pytest.approx((pred[y == k] == k).float().mean().item())
    assert ev["test_acc"] == pytest.approx((pred == y).float().mean().item())
    assert ev["test_loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)


def _metrics(run_dir):
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def _untimed(rows):
    return [{k: v for k, v in r.items() if k != "epoch_time_s"} for r in rows]


def test_l1_term_raises_the_training_loss_by_l1_times_sum_abs_theta(tmp_path):
    # A vanishing lr keeps the parameters at their initial values for the whole epoch.
    base = ["trainer.epochs=1", "trainer.lr=1e-12", "trainer.checkpoint_every=0"]
    run(compose_config(base), tmp_path / "plain")
    run(compose_config([*base, "trainer.l1=0.001"]), tmp_path / "l1")
    from noisybench.models import build_model
    init = torch.Generator().manual_seed(seeds_for(0)["init"])
    theta = l1_norm(build_model(compose_config().model, (1, 8, 8), 10, generator=init)).item()
    plain = float(_metrics(tmp_path / "plain")[0]["train_loss"])
    with_l1 = float(_metrics(tmp_path / "l1")[0]["train_loss"])
    assert with_l1 - plain == pytest.approx(0.001 * theta, rel=1e-4)


@pytest.mark.parametrize("losses", [["sce"], ["anl_ce"], ["sce", "anl_ce"]], ids=["sce", "anl_ce", "pack"])
def test_an_epoch_reads_back_from_the_device_as_often_however_many_steps_it_takes(tmp_path, losses):
    """Metrics stay on the device until the epoch ends: a step that read one back (``.item()``,
    ``bool(t)``) would make a GPU wait for it every step."""
    reads = {}
    for batch_size in (256, 64):  # 6 and 22 steps of the 1,347 training digits
        assert math.ceil(1347 / batch_size) < DIVERGENCE_CHECK_STEPS
        common = ["trainer.epochs=1", f"trainer.batch_size={batch_size}", "trainer.checkpoint_every=0",
                  f"trainer.pack={len(losses)}"]
        cells = [(compose_config([*common, f"loss={loss}", f"seed={i}"]), tmp_path / str(batch_size) / loss)
                 for i, loss in enumerate(losses)]
        with HostReads() as host:
            run_pack(cells)
        reads[batch_size] = len(host.reads)
        assert all(len(_metrics(run_dir)) == 1 for _, run_dir in cells)
    assert reads[256] == reads[64] > 0


def test_cosine_schedule_is_stepped_per_epoch(tmp_path):
    run(compose_config(["trainer.epochs=4", "trainer.lr=0.1", "trainer.eta_min=0.01"]), tmp_path)
    lrs = [float(r["lr"]) for r in _metrics(tmp_path)]
    expected = [0.01 + 0.09 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(4)]
    assert lrs == pytest.approx(expected)


def test_multistep_schedule_decays_at_its_milestones(tmp_path):
    run(compose_config(["trainer.epochs=5", "trainer.lr=0.1", "trainer.schedule=multistep",
                        "trainer.milestones=[2,4]", "trainer.gamma=0.5"]), tmp_path)
    assert [float(r["lr"]) for r in _metrics(tmp_path)] == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025])


def test_protocol_options_reach_the_optimiser():
    cfg = compose_config(["trainer.nesterov=true", "trainer.momentum=0.9", "trainer.weight_decay=0.01"])
    opt = make_optimizer(torch.nn.Linear(2, 2), cfg.trainer, cfg.trainer.weight_decay)
    group = opt.param_groups[0]
    assert (group["nesterov"], group["momentum"], group["weight_decay"]) == (True, 0.9, 0.01)


def test_gradient_clipping_bounds_the_update(tmp_path):
    # One full-batch step with lr 1, no momentum and no weight decay moves the parameters by
    # exactly the clipped gradient, whose norm is grad_clip.
    run(compose_config(["trainer.epochs=1", "trainer.batch_size=2000", "trainer.lr=1.0", "trainer.momentum=0",
                        "trainer.weight_decay=0", "trainer.grad_clip=0.001"]), tmp_path)
    from noisybench.models import build_model
    init = torch.Generator().manual_seed(seeds_for(0)["init"])
    model = build_model(compose_config().model, (1, 8, 8), 10, generator=init)
    trained = torch.load(tmp_path / "checkpoint.pt", weights_only=False)["model"]
    step = torch.sqrt(sum(((trained[name] - p.detach()) ** 2).sum() for name, p in model.named_parameters()))
    assert step.item() == pytest.approx(0.001, rel=1e-4)


def test_same_seed_same_metrics_different_seed_different(tmp_path):
    args = ["trainer.epochs=2", "noise.rate=0.2"]
    a = run(compose_config([*args, "seed=1"]), tmp_path / "a")
    b = run(compose_config([*args, "seed=1"]), tmp_path / "b")
    c = run(compose_config([*args, "seed=2"]), tmp_path / "c")
    assert _untimed(_metrics(tmp_path / "a")) == _untimed(_metrics(tmp_path / "b"))
    assert _untimed(_metrics(tmp_path / "a")) != _untimed(_metrics(tmp_path / "c"))
    assert a["noise_seed"] == 1 and c["noise_seed"] == 2 and b["test_acc_last"] == a["test_acc_last"]


def test_compile_option_compiles_the_model_and_the_loss_function(tmp_path, monkeypatch):
    # torch.compile itself is tested on the losses in test_losses.py (inductor takes ~30 s for a
    # model here); this checks what trainer.compile=true hands to it, and that nothing else changes.
    compiled = []

    def record(fn, **kwargs):
        compiled.append(getattr(fn, "__name__", type(fn).__name__))
        return fn

    args = ["trainer.epochs=1", "loss=nnfl", "noise.rate=0.2"]
    run(compose_config(args), tmp_path / "eager")
    monkeypatch.setattr(torch, "compile", record)
    monkeypatch.setattr("noisybench.trainer.cxx_compiler", lambda: "g++")  # nothing is built here
    run(compose_config([*args, "trainer.compile=true"]), tmp_path / "compiled")
    assert sorted(compiled) == ["StackedModel", "nnfl"]  # the (pack of one) model, the loss function
    assert _untimed(_metrics(tmp_path / "compiled")) == _untimed(_metrics(tmp_path / "eager"))


def test_compile_without_a_cxx_compiler_fails_at_config_time(monkeypatch):
    from noisybench.registry import ConfigError
    from noisybench.trainer import check_trainer, cxx_compiler

    cfg = compose_config(["trainer.compile=true", "trainer.device=cpu"])
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr("shutil.which", lambda name: "/usr/bin/g++" if name == "g++" else None)
    assert cxx_compiler() == "/usr/bin/g++"
    check_trainer(cfg.trainer)
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(ConfigError, match="trainer.compile=true needs a C\\+\\+ compiler"):
        check_trainer(cfg.trainer)
    check_trainer(compose_config(["trainer.compile=false", "trainer.device=cpu"]).trainer)


def test_adam_is_a_config_choice_and_learns(tmp_path):
    summary = run(compose_config(["trainer.optimizer=adam", "trainer.lr=0.003", "trainer.epochs=3"]), tmp_path)
    assert summary["status"] == "completed" and summary["test_acc_last"] > 0.8
    opt = torch.load(tmp_path / "checkpoint.pt", weights_only=False)["optimizer"]
    assert {"exp_avg", "exp_avg_sq"} <= set(next(iter(opt["state"].values())))  # Adam's own state
    # SGD, the default, keeps the fingerprint of runs recorded before the optimizer key existed.
    from noisybench.artifacts import fingerprint

    assert "optimizer" not in fingerprint(compose_config())["trainer"]
    assert fingerprint(compose_config(["trainer.optimizer=adam"]))["trainer"]["optimizer"] == "adam"
