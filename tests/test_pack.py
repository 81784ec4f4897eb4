"""Packs: K cells trained at once as one stacked model write what each cell writes alone.

Equivalence tolerance (float32, trainer.amp=false): losses within 1e-4 relative, the accuracies
and memorisation shares within one sample of their denominators, the lr exactly. A pack runs each
cell's convolutions as one grouped convolution and its linear layers as one batched matmul; those
kernels may sum in another order than the single model's, so a step can differ by float32
rounding (~1e-7 relative per op). Over 2 epochs of these cells that grows to at most 1e-6 (the
largest relative loss difference measured here), so 1e-4 leaves a hundredfold margin while any
real error (a wrong label, data order or crop, BatchNorm statistics shared between cells, a
gradient leaking across cells, a wrong lr or weight decay) moves a loss by 1e-2 or more.
A rounding difference can flip a prediction that sits on an argmax tie: hence one sample for the
count-based columns. The SGD step, the per-cell clipping and the L1 term are checked bit for bit.
"""
from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import assert_same_metrics, compose_config, read_rows, run_cli
from omegaconf import OmegaConf

from noisybench.data.augment import AUGMENTATIONS, build_augment
from noisybench.models import MODELS, build_model
from noisybench.models.stacked import StackedModel, stack_models
from noisybench.pack import cell_footprint_bytes
from noisybench.registry import ConfigError
from noisybench.run import run, run_pack
from noisybench.trainer import CellRun, check_trainer, make_optimizer

# Each cell draws its own crops and flips; the digits are 8x8, cropped from a 16x16 padding. One
# intra-op thread: on a shared 2-core machine a second thread mostly waits for its core.
COMMON = ["trainer.epochs=2", "trainer.amp=false", "trainer.num_threads=1", "trainer.pack=8",
          "dataset.augment=crop_flip"]
CELLS = {
    "ce": ["loss=ce", "noise.rate=0.2", "seed=0"],
    # Its L1 term reads the cell's parameters, and it trains without weight decay.
    "anl_ce": ["loss=anl_ce", "noise.rate=0.4", "seed=1"],
    # A whole-batch loss whose second epoch runs at its own lr.
    "dmi": ["loss=dmi", "loss.warmup_epochs=1", "loss.lr=0.001", "noise.rate=0.4", "seed=2"],
    "sce": ["loss=sce", "loss.weight_decay=0.001", "noise=pairflip", "noise.rate=0.3", "seed=3"],
    # The same loss as "ce": one loss call evaluates both inside a pack.
    "ce_b": ["loss=ce", "noise.rate=0.6", "seed=4", "noise.seed=9"],
}
TIMING_KEYS = ("wall_time_s", "train_time_s", "pack_size")


@pytest.fixture(scope="module", autouse=True)
def restore_threads():
    """trainer.num_threads sets the process's thread count; other tests compare runs made in this
    process with runs of the CLI, whose numbers depend on it. (Module scope: set up before, and
    torn down after, the module's other fixtures.)"""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def cell_config(name, extra=()):
    return compose_config([*COMMON, *CELLS[name], *extra])


@pytest.fixture(scope="module")
def digits_test_counts():
    from noisybench.data import load_dataset
    from noisybench.run import data_root

    cfg = compose_config()
    return np.bincount(load_dataset(cfg.dataset, data_root(cfg)).test_y.numpy(), minlength=10)


@pytest.fixture(scope="module")
def alone(tmp_path_factory):
    """Every cell of CELLS run on its own: the reference each packed cell must reproduce."""
    root = tmp_path_factory.mktemp("alone")
    for name in CELLS:
        run(cell_config(name), root / name)
    return root


@pytest.mark.slow
def test_a_pack_of_four_gives_the_metrics_of_its_cells_run_alone(tmp_path, alone, digits_test_counts):
    names = ["ce", "anl_ce", "dmi", "sce"]
    summaries = run_pack([(cell_config(name), tmp_path / name) for name in names])
    for name, summary in zip(names, summaries):
        assert_same_metrics(alone / name, tmp_path / name, digits_test_counts)
        reference = json.loads((alone / name / "summary.json").read_text())
        assert summary["pack_size"] == 4 and "pack_size" not in reference
        strip = lambda s: {k: v for k, v in s.items() if k not in TIMING_KEYS}  # noqa: E731
        assert set(strip(summary)) == set(strip(reference))
        for key in ("status", "noise", "loss", "loss_params", "seed", "noise_seed", "trainer", "epochs_completed",
                    "best_epoch", "precision"):
            assert summary[key] == reference[key], (name, key)
        for key, value in np.load(alone / name / "noisy_labels.npz").items():
            assert np.array_equal(np.load(tmp_path / name / "noisy_labels.npz")[key], value)
        # The checkpoint is a single run's: same keys, same model and optimiser layout.
        packed = torch.load(tmp_path / name / "checkpoint.pt", weights_only=False)
        single = torch.load(alone / name / "checkpoint.pt", weights_only=False)
        assert packed.keys() == single.keys() and packed["fingerprint"] == single["fingerprint"]
        assert {k: v.shape for k, v in packed["model"].items()} == {k: v.shape for k, v in single["model"].items()}
        assert packed["optimizer"]["param_groups"] == single["optimizer"]["param_groups"]
        assert packed["scheduler"] == single["scheduler"]


class Killed(Exception):
    pass


def killed_at_epoch(epoch):
    """CellRun.begin_epoch that dies when a cell would start ``epoch`` (0-based): every cell of the
    pack has written its checkpoint of the epoch before."""
    begin = CellRun.begin_epoch

    def begin_or_die(self):
        if self.state["epoch"] >= epoch:
            raise Killed(self.name)
        return begin(self)

    return begin_or_die


@pytest.mark.slow
def test_killed_cells_resume_in_a_pack_or_alone_and_finished_cells_are_skipped(
        tmp_path, alone, digits_test_counts, monkeypatch, caplog):
    cells = {name: (cell_config(name), tmp_path / name) for name in CELLS}
    with monkeypatch.context() as patch:
        patch.setattr(CellRun, "begin_epoch", killed_at_epoch(1))
        with pytest.raises(Killed):
            run_pack([cells["ce"], cells["anl_ce"], cells["sce"]])
        with pytest.raises(Killed):
            run(*cells["dmi"])
    for name in ("ce", "anl_ce", "sce", "dmi"):
        (tmp_path / name / "summary.json").unlink()  # a killed run leaves none
        assert len(read_rows(tmp_path / name)) == 1

    run(*cells["sce"])  # a pack's checkpoint resumes alone
    sce_summary = (tmp_path / "sce" / "summary.json").read_text()
    caplog.set_level(logging.INFO, logger="noisybench")
    summaries = run_pack(list(cells.values()))

    # sce was finished: skipped, untouched. ce and anl_ce resume from the pack's checkpoints, dmi
    # from a single run's, all at epoch 1, beside ce_b at epoch 0, which ends its second epoch alone.
    assert (tmp_path / "sce" / "summary.json").read_text() == sce_summary
    assert "skipping" in caplog.text and caplog.text.count("resuming from") == 3
    assert [s.get("pack_size") for s in summaries] == [4, 4, 4, None, 4]
    for name in CELLS:
        assert_same_metrics(alone / name, tmp_path / name, digits_test_counts)


def test_a_diverging_cell_leaves_the_pack_and_the_others_go_on_unchanged(tmp_path, digits_test_counts):
    # Batches of 24: the divergence check at step 50 removes the cell in the middle of epoch 1.
    extra = ["trainer.batch_size=24"]
    good = {"ce": cell_config("ce", extra), "ce_b": cell_config("ce_b", extra)}
    # alpha * CE overflows float32: the loss is infinite from the first step on.
    diverging = compose_config([*COMMON, *extra, "loss=sce", "loss.alpha=3e38", "noise.rate=0.4", "seed=5"])
    with_it = run_pack([(good["ce"], tmp_path / "with" / "ce"), (diverging, tmp_path / "with" / "bad"),
                        (good["ce_b"], tmp_path / "with" / "ce_b")])
    run_pack([(cfg, tmp_path / "without" / name) for name, cfg in good.items()])

    assert with_it[1]["status"] == "diverged" and with_it[1]["diverged_epoch"] == 1
    assert json.loads((tmp_path / "with" / "bad" / "summary.json").read_text())["status"] == "diverged"
    assert not (tmp_path / "with" / "bad" / "metrics.csv").exists()
    for name in good:
        assert json.loads((tmp_path / "with" / name / "summary.json").read_text())["status"] == "completed"
        assert_same_metrics(tmp_path / "without" / name, tmp_path / "with" / name, digits_test_counts)


def test_a_pack_too_large_for_memory_fails_naming_k_and_auto_fits_it(tmp_path, monkeypatch):
    import noisybench.pack as pack_module

    settings = ["trainer.epochs=1", "trainer.amp=false", "trainer.num_threads=1"]
    model = build_model(compose_config().model, (1, 8, 8), 10)
    per_cell = cell_footprint_bytes(model, (1, 8, 8), 1347, 128, torch.device("cpu"), False, True)
    # Room for two cells and a half; the digits already live in host memory (no shared bytes).
    room = int(2.5 * per_cell / pack_module.USABLE_MEMORY_SHARE)
    monkeypatch.setattr(pack_module, "free_memory_bytes", lambda device: room)
    seeds = [compose_config([*settings, "trainer.pack=4", f"seed={s}"]) for s in range(4)]
    with pytest.raises(ConfigError, match=r"trainer\.pack=4: a pack of 4 cells needs about .* GiB .* at most 2 cells"):
        run_pack([(c, tmp_path / "fixed" / str(i)) for i, c in enumerate(seeds)])
    assert not (tmp_path / "fixed").exists()

    auto = [compose_config([*settings, "trainer.pack=auto", f"seed={s}"]) for s in range(3)]
    summaries = run_pack([(c, tmp_path / "auto" / str(i)) for i, c in enumerate(auto)])
    assert [s.get("pack_size") for s in summaries] == [2, 2, None]
    assert all(s["status"] == "completed" for s in summaries)


def test_cells_that_differ_in_model_or_protocol_cannot_share_a_pack(tmp_path):
    base = compose_config(["trainer.pack=2"])
    with pytest.raises(ConfigError, match="model.widths"):
        run_pack([(base, tmp_path / "a"), (compose_config(["trainer.pack=2", "model.widths=[16,32]"]), tmp_path / "b")])
    with pytest.raises(ConfigError, match="trainer.lr"):
        run_pack([(base, tmp_path / "a"), (compose_config(["trainer.pack=2", "trainer.lr=0.1"]), tmp_path / "b")])


@pytest.mark.parametrize("value", [0, -1, True, 1.5, "big"])
def test_a_bad_pack_setting_is_refused_naming_it(value):
    t = compose_config().trainer
    t.pack = value
    with pytest.raises(ConfigError, match=rf"trainer\.pack={value!r}.*positive integer.*auto"):
        check_trainer(t)


@pytest.mark.parametrize("value", [1, 16, "auto"])
def test_pack_accepts_a_positive_integer_or_auto(value):
    t = compose_config().trainer
    t.pack = value
    check_trainer(t)


def input_shape_of(name):
    return {"small_cnn": (1, 8, 8), "cnn4": (1, 28, 28)}.get(name, (3, 32, 32))


@pytest.mark.parametrize("name", MODELS.names())
def test_every_zoo_model_stacks_into_one_module_equal_to_its_cells(name):
    torch.manual_seed(0)
    shape = input_shape_of(name)
    # The single trainer's layout: a deep net's gradients differ by ~1% between NCHW and
    # channels_last on a CPU (oneDNN's kernels), so each cell is compared in its own layout.
    models = [build_model(OmegaConf.create({"name": name}), shape, 10, generator=torch.Generator().manual_seed(k))
              .to(memory_format=torch.channels_last) for k in range(2)]
    cells = [copy.deepcopy(m) for m in models]
    packed = StackedModel(models, channels_last=True)
    # The pack's parameters are the cells' own: their optimisers step them as in a run alone.
    assert [id(p) for p in packed.parameters()] == [id(p) for m in models for p in m.parameters()]
    # Each cell its own images: 4 where a BatchNorm1d normalises over the batch alone, else 2.
    images = 4 if any(isinstance(m, torch.nn.BatchNorm1d) for m in cells[0].modules()) else 2
    x = torch.randn(2, images, *shape)
    weights = torch.randn(2, images, 10)  # a loss that is a random projection of the logits
    out = packed(x)
    expected = [cell(x[k].contiguous(memory_format=torch.channels_last)) for k, cell in enumerate(cells)]
    (out * weights).sum().backward()
    sum((e * weights[k]).sum() for k, e in enumerate(expected)).backward()
    for k, cell in enumerate(cells):
        torch.testing.assert_close(out[k], expected[k], rtol=1e-4, atol=1e-5)
        for (key, own), (cell_key, alone) in zip(models[k].state_dict().items(), cell.state_dict().items()):
            assert key == cell_key
            torch.testing.assert_close(own, alone, rtol=1e-4, atol=1e-5)  # BatchNorm statistics too
        # Rounding is relative to the model's gradients (a conv bias before BatchNorm has a zero one).
        scale = max(float(p.grad.abs().max()) for p in cell.parameters())
        for own, alone in zip(models[k].parameters(), cell.parameters()):
            torch.testing.assert_close(own.grad, alone.grad, rtol=1e-3, atol=1e-4 * scale)
    packed.eval()
    with torch.no_grad():
        evaluated = packed(x)
        for k, cell in enumerate(cells):
            single = cell.eval()(x[k].contiguous(memory_format=torch.channels_last))
            torch.testing.assert_close(evaluated[k], single, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_pack_of_one_trains_as_its_model_alone(optimizer):
    """No special case for one cell: through the stacked model, its own torch.optim optimiser,
    clipping and schedule, three steps give the parameters of the model trained alone, up to the
    float32 rounding of the batched matmul (bit for bit on CPUs where it sums as the single one;
    not on every CPU). A step left out or changed would move them by far more: without weight
    decay, SGD's parameters here would differ by 17% of how far training moved them."""
    t = compose_config([f"trainer.optimizer={optimizer}", "trainer.nesterov=true"]).trainer
    model = build_model(OmegaConf.create({"name": "cnn4"}), (1, 28, 28), 10,
                        generator=torch.Generator().manual_seed(0)).to(memory_format=torch.channels_last)
    alone, initial = copy.deepcopy(model), copy.deepcopy(model)
    x, y = torch.randn(3, 16, 1, 28, 28, generator=torch.Generator().manual_seed(1)), torch.arange(16) % 10
    for net, forward in ((alone, lambda b: alone(b.contiguous(memory_format=torch.channels_last))),
                         (model, lambda b, packed=StackedModel([model], True): packed(b[None])[0])):
        opt = make_optimizer(net, t, weight_decay=1e-3)
        for batch in x:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(forward(batch), y).backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 0.5)
            opt.step()
    with torch.no_grad():
        moved = max(float((q - p0).abs().max()) for q, p0 in zip(alone.parameters(), initial.parameters()))
        for p, q in zip(model.parameters(), alone.parameters()):
            assert float((p - q).abs().max()) <= 1e-3 * moved  # rounding: at most 1.2e-4 of it measured
    for a, b in zip(model.buffers(), alone.buffers()):  # BatchNorm statistics and batch counts
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_a_layer_a_pack_cannot_stack_is_named():
    models = [torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.GroupNorm(2, 4)) for _ in range(2)]
    with pytest.raises(ConfigError, match="GroupNorm layer '1'"):
        stack_models(models)


@pytest.mark.parametrize("name", [a for a in AUGMENTATIONS if a != "none"])
def test_pack_augmentation_draws_for_each_cell_what_it_draws_alone(name):
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    x = torch.randint(0, 256, (3 * 5, 3, 12, 12), dtype=torch.uint8)
    generators = [torch.Generator().manual_seed(s) for s in (7, 8, 9)]
    alone = [build_augment(name, mean, std)(x[5 * k:5 * (k + 1)], torch.Generator().set_state(g.get_state()))
             for k, g in enumerate(generators)]
    packed = build_augment(name, mean, std)(x, generators)
    assert torch.equal(packed, torch.cat(alone))


# A sweep of 6 digits cells, one of them with ANL's L1 term, in the settings of COMMON for which
# the equivalence tolerance is justified.
SWEEP = ["--multirun", *(a for a in COMMON if not a.startswith("trainer.pack=")), "loss=ce,anl_ce,sce",
         "noise.rate=0.2,0.4", "seed=0"]


def sweep_summaries(sweep_dir):
    return {p.parent.name: json.loads(p.read_text()) for p in sweep_dir.glob("*/summary.json")}


def pack_manifests(sweep_dir):
    """The cells of each pack job of a sweep, by run directory name."""
    return sorted(sorted(Path(c).name for c in json.loads(m.read_text())["cells"])
                  for m in (sweep_dir / ".packs").glob("*/pack.json"))


@pytest.mark.slow
def test_a_sweep_packs_its_unfinished_cells_one_job_per_pack(tmp_path, digits_test_counts):
    alone, packed = tmp_path / "alone", tmp_path / "packed"
    proc = run_cli([*SWEEP, f"hydra.sweep.dir={alone}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = sweep_summaries(alone)
    assert len(expected) == 6
    # Two cells finished before packing is switched on: they keep their directories (trainer.pack
    # is not part of a cell's name) and are not trained again.
    proc = run_cli([*SWEEP, "loss=ce", f"hydra.sweep.dir={packed}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    done = {name: (packed / name / "summary.json").read_text() for name in sweep_summaries(packed)}
    assert len(done) == 2

    proc = run_cli([*SWEEP, "trainer.pack=3", "hydra/launcher=submitit_local", f"hydra.sweep.dir={packed}"],
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # 4 unfinished cells, ceil(4 / 3) = 2 jobs: a pack of 3 and a cell of its own, each a submitit job.
    assert "4 of them to train, as 2 jobs" in proc.stdout + proc.stderr
    assert len([p for p in (packed / ".submitit").iterdir() if p.is_dir() and p.name.isdigit()]) == 2
    assert [len(cells) for cells in pack_manifests(packed)] == [3]
    found = sweep_summaries(packed)
    assert sorted(found) == sorted(expected)
    assert {name: (packed / name / "summary.json").read_text() for name in done} == done
    assert sorted(s.get("pack_size", 1) for s in found.values()) == [1, 1, 1, 3, 3, 3]
    for name in expected:
        assert found[name]["status"] == "completed"
        assert (packed / name / ".hydra" / "config.yaml").is_file()
        assert_same_metrics(alone / name, packed / name, digits_test_counts)
    board = pd.read_csv(packed / "leaderboard.csv")
    assert len(board) == 6 and set(board["n_seeds"]) == {1} and set(board["n_incomplete"]) == {0}


def test_sweep_cells_are_grouped_by_what_they_share_up_to_k_in_sweep_order():
    from noisybench.pack import group_packs

    keys = ["a", "b", "a", "a", "b", "a", "c"]
    assert group_packs(keys, [2] * 7) == [[0, 2], [1, 4], [3, 5], [6]]
    assert group_packs(keys, ["auto"] * 7) == [[0, 2, 3, 5], [1, 4], [6]]
    assert group_packs(keys, [1] * 7) == [[i] for i in range(7)]


def test_a_sweep_that_would_pack_wandb_cells_fails_before_any_cell_trains(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli([*SWEEP, "loss=ce", "trainer.pack=2", "logger=wandb", "logger.mode=offline",
                    f"hydra.sweep.dir={sweep}"], cwd=tmp_path, timeout=120)
    assert proc.returncode != 0
    assert "logger=wandb" in proc.stderr and "trainer.pack=1" in proc.stderr
    assert not list(sweep.glob("*/metrics.csv"))
