"""Paper-table experiment presets: each composes, sweeps its paper's grid, and gives its cells the
paper's protocol and loss hyperparameters (../shared/reference/robust-losses.md §2, §3, §5, §7).

Compose only: nothing here loads data or trains.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import pytest
from hydra import compose, initialize_config_module
from hydra._internal.callbacks import Callbacks
from hydra.core.global_hydra import GlobalHydra
from hydra.core.plugins import Plugins
from hydra.types import HydraContext
from omegaconf import DictConfig, OmegaConf

from helpers import REPO_ROOT
from noisybench.__main__ import CONFIG_PACKAGE, expose_hydra_plugins, group_options
from noisybench.data import DATASETS, check_dataset
from noisybench.leaderboard.board import load_paper_results
from noisybench.losses import LOSSES, build_loss
from noisybench.noise import check_noise
from noisybench.registry import ConfigError
from noisybench.trainer import check_trainer

expose_hydra_plugins()  # before Hydra scans its plugins, as the command line does
EXPERIMENTS = group_options("experiment")
PAPER_PRESETS = [name for name in EXPERIMENTS if name != "quickstart"]


@pytest.fixture(scope="module", autouse=True)
def hydra_session():
    """One Hydra initialisation for the module: composing is then ~0.1 s a config."""
    with initialize_config_module(config_module=CONFIG_PACKAGE, version_base="1.3"):
        yield


@lru_cache(maxsize=None)
def compose_experiment(name: str) -> DictConfig:
    """The experiment's config as ``--multirun experiment=<name>`` composes it (read only: cached)."""
    cfg = compose(config_name="config", overrides=[f"experiment={name}"], return_hydra_config=True)
    OmegaConf.set_readonly(cfg, True)
    return cfg


@lru_cache(maxsize=None)
def sweep_jobs(name: str, *command_line: str) -> tuple[dict[str, str], ...]:
    """The jobs ``python -m noisybench --multirun experiment=<name> <command_line>`` launches, each
    as key -> value: the sweeper is instantiated as Hydra's multirun does it, and expands them with
    its own ``job_overrides`` (nothing is launched)."""
    cfg = compose_experiment(name)
    context = HydraContext(config_loader=GlobalHydra.instance().config_loader(), callbacks=Callbacks())
    sweeper = Plugins.instance().instantiate_sweeper(hydra_context=context, task_function=lambda _: None,
                                                     config=cfg)
    jobs = sweeper.job_overrides([*cfg.hydra.overrides.task, *command_line])
    return tuple(dict(o.split("=", 1) for o in job) for job in jobs)


def setting(job: dict[str, str]) -> tuple[str, float]:
    return job["noise"], float(job["noise.rate"])


# The nine columns of the APL-style tables (APL script/*.slurm, ALFs exp.sh, eps-softmax Table 2).
PAPER_NOISE = ({("symmetric", r) for r in (0.0, 0.2, 0.4, 0.6, 0.8)}
               | {("asymmetric", r) for r in (0.1, 0.2, 0.3, 0.4)})

# Cells per preset: losses x noise settings x seeds (cifar_n: CIFAR-10N 4 losses x 5 label sets
# + CIFAR-100N 3 losses x 1, times 5 seeds).
CELL_COUNTS = {
    "apl_mnist": 10 * 9 * 3, "apl_cifar10": 10 * 9 * 3, "apl_cifar100": 10 * 9 * 3,
    "alfs_mnist": 10 * 9 * 3, "alfs_cifar10": 10 * 9 * 3, "alfs_cifar100": 10 * 9 * 3,
    "anl_mnist": 13 * 9 * 3, "anl_cifar10": 13 * 9 * 3, "anl_cifar100": 13 * 9 * 3,
    "jal_cifar10": 16 * 9 * 3, "jal_cifar100": 16 * 9 * 3,
    "eps_softmax_cifar10": 14 * 9 * 3, "eps_softmax_cifar100": 14 * 9 * 3,
    "cifar_n": (4 * 5 + 3 * 1) * 5,
    "mnist_apl": 7 * 2 * 3,
}
# Training seeds: APL's runs 0-2 (ALFs' 3 repetitions alike), ANL's default --seed 1 and the next
# two, JAL / eps-softmax seed_everything(123 + trial).
SEEDS = {name: {0, 1, 2} for name in CELL_COUNTS if name.startswith(("apl", "alfs", "mnist"))}
SEEDS.update({name: {1, 2, 3} for name in CELL_COUNTS if name.startswith("anl")})
SEEDS.update({name: {123, 124, 125} for name in CELL_COUNTS if name.startswith(("jal", "eps_softmax"))})
SEEDS.update(cifar_n={123, 124, 125, 126, 127})

# Reference §5.2: train-time augmentation per dataset (identical in every repo).
AUGMENT = {"mnist": "none", "cifar10": "crop_flip", "cifar100": "crop_flip_rotate"}


@dataclass(frozen=True)
class Protocol:
    dataset: str
    model: str
    trainer: dict[str, Any]


def protocol(dataset: str, model: str, epochs: int, lr: float, weight_decay: float, eval_batch_size: int,
             nesterov: bool = False, eta_min: float = 0.0, **schedule) -> Protocol:
    """Reference §5.1: SGD momentum 0.9, batch 128, clip 5.0, cosine schedule, no trainer L1."""
    return Protocol(dataset, model, dict(epochs=epochs, lr=lr, weight_decay=weight_decay,
                                         eval_batch_size=eval_batch_size, nesterov=nesterov, eta_min=eta_min,
                                         batch_size=128, momentum=0.9, grad_clip=5.0, l1=0.0,
                                         **(schedule or {"schedule": "cosine"})))


# Reference §5.1 (APL: its current configs; ALFs lnl/main.py; ANL configs; JAL / eps-softmax
# main.py, eval batch = 2 x 128) and §5.3 (eps-softmax Appendix D.2 for CIFAR-N).
PROTOCOLS = {
    "apl_mnist": protocol("mnist", "cnn4", 50, 0.01, 1e-2, 512, nesterov=True, eta_min=0.001),
    "apl_cifar10": protocol("cifar10", "cnn8", 120, 0.01, 1e-4, 128),
    "apl_cifar100": protocol("cifar100", "resnet50", 200, 0.1, 1e-5, 256),
    "alfs_mnist": protocol("mnist", "cnn4", 50, 0.01, 1e-3, 256),
    "alfs_cifar10": protocol("cifar10", "cnn8", 120, 0.01, 1e-4, 256),
    "alfs_cifar100": protocol("cifar100", "resnet34", 200, 0.1, 1e-5, 256),
    "anl_mnist": protocol("mnist", "cnn4", 50, 0.01, 1e-3, 256),
    "anl_cifar10": protocol("cifar10", "cnn8", 120, 0.01, 1e-4, 256),
    "anl_cifar100": protocol("cifar100", "resnet34", 200, 0.1, 1e-5, 256),
    "jal_cifar10": protocol("cifar10", "cnn8", 120, 0.01, 1e-4, 256),
    "jal_cifar100": protocol("cifar100", "resnet34", 200, 0.1, 1e-5, 256),
    "eps_softmax_cifar10": protocol("cifar10", "cnn8", 120, 0.01, 1e-4, 256),
    "eps_softmax_cifar100": protocol("cifar100", "resnet34", 200, 0.1, 1e-5, 256),
    "cifar_n": protocol("cifar10", "resnet34", 100, 0.1, 5e-4, 256, schedule="multistep", milestones=[60],
                        gamma=0.1),
    "mnist_apl": protocol("mnist", "cnn4", 50, 0.01, 1e-2, 512, nesterov=True, eta_min=0.001),
}


@dataclass
class Cell:
    experiment: str
    overrides: dict[str, Any]
    variant: str | None  # the noise generator (reference §3), None for human noise
    noise_seed: int
    params: dict[str, float] = field(default_factory=dict)  # reference §2, resolved by build_loss

    @property
    def id(self) -> str:
        return f"{self.experiment}:" + ",".join(f"{k}={v}" for k, v in self.overrides.items())


def sym(rate: float) -> dict[str, Any]:
    return {"noise": "symmetric", "noise.rate": rate}


def asym(rate: float) -> dict[str, Any]:
    return {"noise": "asymmetric", "noise.rate": rate}


CELLS = [
    # APL (§2.1): MNIST NCE+RCE beta 10, CIFAR-10 NFL scale 10 (sym) / 1 (asym), CIFAR-100 RCE beta 0.1.
    Cell("apl_mnist", {"loss": "nce_rce", **sym(0.8), "seed": 2}, "exact", 2, dict(alpha=1.0, beta=10.0)),
    Cell("apl_mnist", {"loss": "sce", **asym(0.4), "seed": 0}, "apl_cascade", 0, dict(alpha=0.01, beta=1.0)),
    Cell("apl_cifar10", {"loss": "nfl", **sym(0.4), "seed": 1}, "exact", 1, dict(scale=10.0, gamma=0.5)),
    Cell("apl_cifar10", {"loss": "nfl", **asym(0.2), "seed": 1}, "apl_cascade", 1, dict(scale=1.0, gamma=0.5)),
    Cell("apl_cifar100", {"loss": "nce_rce", **sym(0.6), "seed": 0}, "exact", 0, dict(alpha=10.0, beta=0.1)),
    Cell("apl_cifar100", {"loss": "sce", **asym(0.3), "seed": 2}, "apl_cascade", 2, dict(alpha=6.0, beta=0.1)),
    # ALFs (§2.2, §3.4): one setting for both noise types; MNIST noise fixed by RandomState(0),
    # CIFAR noise by seed 123, whatever the run seed.
    Cell("alfs_mnist", {"loss": "agce", **sym(0.8), "seed": 2}, "sampled", 0, dict(a=4.0, q=0.2)),
    Cell("alfs_mnist", {"loss": "nce_rce", **asym(0.3), "seed": 1}, "apl_cascade", 0, dict(alpha=1.0, beta=100.0)),
    Cell("alfs_cifar10", {"loss": "nce_agce", **sym(0.6), "seed": 1}, "exact", 123,
         dict(alpha=1.0, beta=4.0, a=6.0, q=1.5)),
    Cell("alfs_cifar10", {"loss": "sce", **asym(0.1), "seed": 2}, "apl_cascade", 123, dict(alpha=1.0, beta=1.0)),
    Cell("alfs_cifar100", {"loss": "nce_aul", **asym(0.4), "seed": 0}, "apl_cascade", 123,
         dict(alpha=10.0, beta=0.015, a=6.0, q=3.0)),
    Cell("alfs_cifar100", {"loss": "nce_rce", **sym(0.2), "seed": 0}, "exact", 123, dict(alpha=10.0, beta=1.0)),
    # ANL (§2.3): ANL's own losses take weight decay 0 next to their L1 term delta.
    Cell("anl_mnist", {"loss": "anl_ce", **sym(0.8), "seed": 1}, "pair_counts", 1,
         dict(alpha=1.0, beta=1.0, delta=1e-6, min_prob=1e-7, weight_decay=0.0)),
    Cell("anl_mnist", {"loss": "sce", **asym(0.2), "seed": 3}, "clean_pool", 3, dict(alpha=0.01, beta=1.0)),
    Cell("anl_cifar10", {"loss": "anl_fl", **asym(0.4), "seed": 2}, "clean_pool", 2,
         dict(alpha=5.0, beta=5.0, delta=5e-5, gamma=0.5, weight_decay=0.0)),
    Cell("anl_cifar10", {"loss": "nce_ael", **sym(0.4), "seed": 2}, "pair_counts", 2, dict(alpha=1.0, beta=4.0, a=5.0)),
    Cell("anl_cifar10", {"loss": "mae", **sym(0.0), "seed": 1}, "pair_counts", 1, dict(scale=1.0)),  # 1 - p_y
    Cell("anl_cifar100", {"loss": "anl_ce", **sym(0.6), "seed": 3}, "pair_counts", 3,
         dict(alpha=10.0, beta=1.0, delta=5e-7, weight_decay=0.0)),
    Cell("anl_cifar100", {"loss": "nce_rce", **asym(0.1), "seed": 1}, "clean_pool", 1, dict(alpha=10.0, beta=0.1)),
    # JAL (§2.4, §1.4): eps 1e-8; L1 (delta) instead of L2 for AMSE / NNCE / NNFL.
    Cell("jal_cifar10", {"loss": "jal_ce", **sym(0.8), "seed": 123}, "pair_counts", 123,
         dict(alpha=1.0, beta=1.0, a=30.0, delta=5e-5, weight_decay=0.0)),
    Cell("jal_cifar10", {"loss": "anl_ce", **asym(0.2), "seed": 124}, "clean_pool", 124,
         dict(alpha=5.0, beta=5.0, delta=5e-5, min_prob=1e-8, weight_decay=0.0)),
    Cell("jal_cifar10", {"loss": "gce", **sym(0.4), "seed": 125}, "pair_counts", 125, dict(q=0.7, eps=1e-8)),
    Cell("jal_cifar10", {"loss": "ce_lc", **asym(0.3), "seed": 123}, "clean_pool", 123, dict(delta=2.5)),
    Cell("jal_cifar100", {"loss": "jal_fl", **asym(0.4), "seed": 124}, "clean_pool", 124,
         dict(alpha=5.0, beta=1.0, a=20.0, gamma=0.5, delta=5e-6, weight_decay=0.0)),
    Cell("jal_cifar100", {"loss": "anl_ce", **sym(0.6), "seed": 125}, "pair_counts", 125,
         dict(alpha=10.0, beta=1.0, delta=5e-7, weight_decay=0.0)),
    Cell("jal_cifar100", {"loss": "ldr_kl", **sym(0.2), "seed": 123}, "pair_counts", 123, dict(lam=1.0)),
    # eps-softmax (§2.5, the paper's Appendix D.1 values): per noise type on CIFAR-10, per rate on
    # CIFAR-100 (alpha 0.0125 at symmetric 0.6; GCE q 0.5 / 0.7 / 0.9 by rate).
    Cell("eps_softmax_cifar10", {"loss": "ce_eps_mae", **sym(0.8), "seed": 123}, "exact", 123,
         dict(alpha=0.01, beta=5.0, m=1e5)),
    Cell("eps_softmax_cifar10", {"loss": "fl_eps_mae", **asym(0.2), "seed": 124}, "apl_cascade", 124,
         dict(alpha=0.02, beta=5.0, m=1e3, gamma=0.1)),
    Cell("eps_softmax_cifar10", {"loss": "sce", **sym(0.4), "seed": 125}, "exact", 125, dict(alpha=0.1, beta=1.0)),
    Cell("eps_softmax_cifar100", {"loss": "ce_eps_mae", **sym(0.6), "seed": 124}, "exact", 124,
         dict(alpha=0.0125, beta=1.0, m=1e4)),
    Cell("eps_softmax_cifar100", {"loss": "ce_eps_mae", **sym(0.0), "seed": 123}, "exact", 123,
         dict(alpha=0.1, beta=1.0, m=1e4)),
    Cell("eps_softmax_cifar100", {"loss": "ce_eps_mae", **asym(0.3), "seed": 125}, "apl_cascade", 0,
         dict(alpha=0.005, beta=1.0, m=1e2)),
    Cell("eps_softmax_cifar100", {"loss": "nce_aul", **asym(0.1), "seed": 123}, "apl_cascade", 0,
         dict(alpha=10.0, beta=0.015, a=6.0, q=3.0)),
    Cell("eps_softmax_cifar100", {"loss": "gce", **sym(0.0), "seed": 124}, "exact", 124, dict(q=0.5, eps=1e-8)),
    Cell("eps_softmax_cifar100", {"loss": "gce", **sym(0.8), "seed": 124}, "exact", 124, dict(q=0.9)),
    Cell("eps_softmax_cifar100", {"loss": "gce", **asym(0.4), "seed": 124}, "apl_cascade", 0, dict(q=0.7)),
    # CIFAR-N (§2.5 Appendix D.2): CE_eps+MAE m 1e4, alpha 0.5, beta 1 on both datasets.
    Cell("cifar_n", {"dataset": "cifar10", "noise.key": "worse", "loss": "ce_eps_mae", "seed": 126}, None, 126,
         dict(alpha=0.5, beta=1.0, m=1e4)),
    Cell("cifar_n", {"dataset": "cifar100", "noise.key": "noisy", "loss": "ce_eps_mae", "seed": 123}, None, 123,
         dict(alpha=0.5, beta=1.0, m=1e4)),
    # The MNIST reproduction: APL's protocol, each loss with its own paper's MNIST values.
    Cell("mnist_apl", {"loss": "nce_rce", **sym(0.8), "seed": 1}, "exact", 1, dict(alpha=1.0, beta=10.0)),
    Cell("mnist_apl", {"loss": "nce_agce", **asym(0.4), "seed": 2}, "apl_cascade", 2,
         dict(alpha=0.0, beta=1.0, a=4.0, q=0.2)),
    Cell("mnist_apl", {"loss": "anl_ce", **sym(0.8), "seed": 0}, "exact", 0,
         dict(alpha=1.0, beta=1.0, delta=1e-6, weight_decay=0.0)),
    Cell("mnist_apl", {"loss": "gce", **asym(0.4), "seed": 0}, "apl_cascade", 0, dict(q=0.7)),
    # JAL has no MNIST setting: its CIFAR-10 row, L1 instead of L2.
    Cell("mnist_apl", {"loss": "jal_ce", **sym(0.8), "seed": 2}, "exact", 2,
         dict(alpha=1.0, beta=1.0, a=30.0, delta=5e-5, weight_decay=0.0)),
]


def test_cells_cover_every_paper_preset():
    assert set(PAPER_PRESETS) == set(PROTOCOLS) == set(CELL_COUNTS)
    assert {c.experiment for c in CELLS} == set(PAPER_PRESETS)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_with_its_own_sweep_dir(name):
    cfg = compose_experiment(name)
    assert cfg.hydra.sweep.dir == f"multirun/{name}"
    assert cfg.hydra.sweeper._target_ == "hydra_plugins.noisybench_sweeper.GridSweeper"
    # run.check_config less the model build (seconds for a ResNet on a loaded CPU): the models are
    # the reference's (the cell test) and tests/test_models.py builds them on these datasets.
    check_dataset(cfg.dataset)
    check_trainer(cfg.trainer)


@pytest.mark.parametrize("name", PAPER_PRESETS)
def test_grid_has_the_papers_cells(name):
    jobs = sweep_jobs(name)
    assert len(jobs) == CELL_COUNTS[name]
    assert len({tuple(sorted(job.items())) for job in jobs}) == len(jobs)
    assert {int(job["seed"]) for job in jobs} == SEEDS[name]
    # Each (loss, setting) is run once per seed.
    per_cell = Counter(tuple(sorted((k, v) for k, v in job.items() if k != "seed")) for job in jobs)
    assert set(per_cell.values()) == {len(SEEDS[name])}
    if name == "mnist_apl":
        assert {setting(job) for job in jobs} == {("symmetric", 0.8), ("asymmetric", 0.4)}
        assert {job["loss"] for job in jobs} == {"ce", "gce", "sce", "nce_rce", "nce_agce", "anl_ce", "jal_ce"}
    elif name != "cifar_n":
        assert {setting(job) for job in jobs} == PAPER_NOISE


def settings(jobs: tuple[dict[str, str], ...]) -> set[tuple[str, str, float]]:
    return {(job["noise"], job["noise.variant"], float(job["noise.rate"])) for job in jobs}


def test_command_line_noise_selects_the_sub_grid_with_its_generator():
    # The symmetric sub-grid would otherwise become asymmetric with its own variant, 'sampled',
    # which the asymmetric noise does not have.
    jobs = sweep_jobs("alfs_mnist", "noise=asymmetric", "noise.rate=0.4")
    assert settings(jobs) == {("asymmetric", "apl_cascade", 0.4)}
    assert len(jobs) == 10 * 3
    jobs = sweep_jobs("alfs_mnist", "noise=asymmetric")
    assert settings(jobs) == {("asymmetric", "apl_cascade", r) for r in (0.1, 0.2, 0.3, 0.4)}
    cell = [f"{key}={value}" for key, value in jobs[0].items()]
    cfg = compose(config_name="config", overrides=["experiment=alfs_mnist", *cell])
    check_noise(cfg.noise, "mnist", 10)


def test_command_line_value_narrows_the_sub_grids_that_hold_it_else_all():
    assert settings(sweep_jobs("mnist_apl", "noise.rate=0.8")) == {("symmetric", "exact", 0.8)}
    assert settings(sweep_jobs("apl_mnist", "noise.rate=0.2,0.4")) == {
        (noise, variant, rate) for noise, variant in (("symmetric", "exact"), ("asymmetric", "apl_cascade"))
        for rate in (0.2, 0.4)}
    # A rate that no sub-grid sweeps: every sub-grid runs it.
    assert settings(sweep_jobs("mnist_apl", "noise.rate=0.5")) == {
        ("symmetric", "exact", 0.5), ("asymmetric", "apl_cascade", 0.5)}
    # Named with its generator, as before; an asymmetric rate past the sub-grid's replaces it.
    assert settings(sweep_jobs("alfs_mnist", "noise=asymmetric", "noise.variant=apl_cascade",
                               "noise.rate=0.45")) == {("asymmetric", "apl_cascade", 0.45)}
    assert len(sweep_jobs("mnist_apl", "noise.rate=0.8", "loss=ce,gce", "seed=0")) == 2


def test_header_states_the_cell_count_and_the_command():
    for name in PAPER_PRESETS:
        header = (REPO_ROOT / "conf" / "experiment" / f"{name}.yaml").read_text()
        counts = re.findall(r"= (\d+) runs", header)
        assert counts == [str(CELL_COUNTS[name])], name
        assert f"--multirun experiment={name}" in header


def published_losses(table: str, dataset: str) -> set[str]:
    papers = load_paper_results()
    rows = papers[(papers["paper"] == "eps-softmax (NeurIPS 2024)") & (papers["table"] == table)
                  & (papers["dataset"] == dataset)]
    return {loss for loss in rows["loss"] if loss in LOSSES}


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_eps_softmax_presets_run_every_loss_of_table_2(dataset):
    jobs = sweep_jobs(f"eps_softmax_{dataset}")
    expected = published_losses("Table 2", dataset)
    assert len(expected) == 14  # the 15 rows less NLNL, which is copied from ALFs
    assert {job["loss"] for job in jobs} == expected


def test_cifar_n_runs_every_label_set_and_loss_of_table_4():
    jobs = sweep_jobs("cifar_n")
    papers = load_paper_results()
    table = papers[(papers["table"] == "Table 4") & papers["loss"].isin(list(LOSSES.names()))]
    expected = {(r.dataset, r.variant, r.loss) for r in table.itertuples()}
    assert {(job["dataset"], job["noise.key"], job["loss"]) for job in jobs} == expected
    assert compose_experiment("cifar_n").noise.name == "human"


def test_presets_set_only_the_loss_preset():
    # The grid check below builds each loss from its YAML plus the preset, which holds only if the
    # experiments set nothing else under loss.
    for name in PAPER_PRESETS:
        raw = OmegaConf.load(REPO_ROOT / "conf" / "experiment" / f"{name}.yaml")
        assert set(raw.loss) == {"preset"}, name


def test_every_cell_of_every_grid_resolves_its_loss():
    settings = set()  # (preset, loss, dataset, noise, rate): the seeds share them
    for name in PAPER_PRESETS:
        base = compose_experiment(name)
        for job in sweep_jobs(name):
            settings.add((base.loss.preset, job["loss"], job.get("dataset", base.dataset.name),
                          job.get("noise", base.noise.name), float(job.get("noise.rate", base.noise.rate))))
    losses = {loss for _, loss, *_ in settings}
    loss_yaml = {loss: OmegaConf.to_container(compose(config_name=f"loss/{loss}").loss) for loss in losses}
    failures = []
    for preset, loss, dataset, noise, rate in sorted(settings):
        cfg_loss = {**loss_yaml[loss], "preset": preset}
        try:
            build_loss(cfg_loss, DATASETS.meta(dataset)["num_classes"], dataset=dataset, noise=noise, rate=rate)
        except ConfigError as e:  # collect them all: one report names every gap
            failures.append(f"{preset} {loss} {dataset} {noise} {rate}: {e}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("cell", CELLS, ids=lambda c: c.id)
def test_cell_has_the_papers_protocol_and_hyperparameters(cell):
    wanted = {k: str(v) for k, v in cell.overrides.items()}
    [job] = [job for job in sweep_jobs(cell.experiment) if wanted.items() <= job.items()]
    cfg = compose(config_name="config", overrides=[f"{k}={v}" for k, v in job.items()])
    expected = PROTOCOLS[cell.experiment]
    dataset = cell.overrides.get("dataset", expected.dataset)
    num_classes = DATASETS.meta(dataset)["num_classes"]
    check_noise(cfg.noise, dataset, num_classes)  # the rest of check_config: see the compose test
    assert (cfg.dataset.name, cfg.dataset.augment) == (dataset, AUGMENT[dataset])
    assert cfg.model.name == expected.model
    assert {k: cfg.trainer[k] for k in expected.trainer} == expected.trainer
    assert cfg.seed == cell.overrides["seed"] and cfg.noise.seed == cell.noise_seed
    if cell.variant is not None:
        assert cfg.noise.variant == cell.variant

    loss = build_loss(cfg.loss, num_classes, dataset=dataset, noise=cfg.noise.name, rate=cfg.noise.rate)
    assert loss.params["preset"] == cfg.loss.preset
    for key, value in cell.params.items():
        assert math.isclose(loss.params[key], value, rel_tol=1e-12), (key, loss.params[key], value)


@pytest.mark.parametrize("name", PAPER_PRESETS)
def test_a_single_run_of_a_preset_uses_the_noise_generators_of_its_grid(name):
    """``python -m noisybench experiment=<name> noise=<type> ...`` without --multirun draws its
    labels with the generator the preset's grid names for that noise type, not the group default."""
    grid_variants = {job["noise"]: job["noise.variant"] for job in sweep_jobs(name) if "noise.variant" in job}
    for noise_type, variant in grid_variants.items():
        cfg = compose(config_name="config", overrides=[f"experiment={name}", f"noise={noise_type}"])
        assert cfg.noise.variant == variant, (name, noise_type)


@pytest.mark.parametrize("name", PAPER_PRESETS)
def test_paper_presets_train_in_float32_as_the_papers_code(name):
    assert compose_experiment(name).trainer.amp is False
