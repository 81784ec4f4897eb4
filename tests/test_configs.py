"""Every config group option composes, its name matches its registry, and checks run before data."""
from __future__ import annotations

import pytest
from helpers import compose_config

from noisybench.__main__ import check_group_choices, group_options
from noisybench.data import DATASETS
from noisybench.logger import LOGGERS
from noisybench.losses import LOSSES
from noisybench.models import MODELS
from noisybench.noise import NOISE
from noisybench.registry import ConfigError
from noisybench.run import check_config

REGISTRY_OF_GROUP = {"dataset": DATASETS, "noise": NOISE, "model": MODELS, "loss": LOSSES, "logger": LOGGERS}
GROUP_OPTIONS = [(g, o) for g in ["dataset", "noise", "model", "loss", "trainer", "logger"] for o in group_options(g)]


def test_every_group_has_options():
    for group in REGISTRY_OF_GROUP:
        assert group_options(group), f"conf/{group}/ has no options"


@pytest.mark.parametrize("group,option", GROUP_OPTIONS, ids=[f"{g}={o}" for g, o in GROUP_OPTIONS])
def test_every_option_composes(group, option):
    cfg = compose_config([f"{group}={option}"])
    if group in REGISTRY_OF_GROUP:
        assert cfg[group].name == option


@pytest.mark.parametrize("group", list(REGISTRY_OF_GROUP))
def test_yaml_options_match_registry(group):
    # Registered names without a YAML would be unreachable from the command line, and vice versa
    # (loss=custom runs a user's own function, which no registry holds).
    extra = {"custom"} if group == "loss" else set()
    assert set(group_options(group)) == set(REGISTRY_OF_GROUP[group].names()) | extra


def test_default_config_is_the_embedded_digits_run():
    cfg = compose_config()
    assert (cfg.dataset.name, cfg.noise.name, cfg.noise.rate, cfg.loss.name) == ("digits", "symmetric", 0.0, "ce")
    check_config(cfg)


def test_users_example_composes_to_sce_under_40_percent_symmetric_noise():
    cfg = compose_config(["loss=sce", "noise.rate=0.4"])
    assert (cfg.loss.name, cfg.noise.name, cfg.noise.rate) == ("sce", "symmetric", 0.4)
    check_config(cfg)


def test_noise_seed_follows_training_seed_unless_set():
    assert compose_config(["seed=3"]).noise.seed == 3
    cfg = compose_config(["seed=3", "noise.seed=123"])
    assert (cfg.seed, cfg.noise.seed) == (3, 123)


BAD_VALUES = [
    (["noise.rate=1.0"], "noise.rate"),
    (["noise.rate=-0.1"], "noise.rate"),
    (["noise=random", "noise.rate=1.5"], "noise.rate"),
    (["noise=asymmetric", "noise.rate=0.2"], "digits"),  # digits has no asymmetric class map
    (["dataset=mnist", "noise=human"], "human"),
    (["dataset=cifar10", "model=cnn8", "noise=human", "noise.key=best"], "best"),
    (["dataset=mnist", "model=cnn8"], "cnn8"),
    (["trainer.epochs=0"], "trainer.epochs"),
    (["trainer.batch_size=-4"], "trainer.batch_size"),
    (["trainer.lr=0"], "trainer.lr"),
    (["trainer.schedule=step"], "trainer.schedule"),
    (["trainer.schedule=multistep", "trainer.milestones=[60,30]"], "trainer.milestones"),
    (["trainer.device=tpu"], "trainer.device"),
    (["trainer.optimizer=rmsprop"], "trainer.optimizer='rmsprop' is not allowed; choose one of sgd, adam"),
    (["trainer.betas=[0.9]"], "trainer.betas"),
    (["trainer.betas=[0.9,1.0]"], "two numbers in [0, 1)"),
    (["trainer.adam_eps=0"], "trainer.adam_eps"),
    (["loss=gce", "loss.q=1.5"], "q"),
    (["seed=-1"], "seed"),
]


@pytest.mark.parametrize("overrides,named", BAD_VALUES, ids=[" ".join(o) for o, _ in BAD_VALUES])
def test_bad_values_fail_before_training_with_one_line(overrides, named):
    cfg = compose_config(overrides)
    with pytest.raises(ConfigError) as err:
        check_config(cfg)
    message = str(err.value)
    assert named in message and "\n" not in message


@pytest.mark.parametrize("arg", ["loss=nope", "dataset=imagenet", "noise=gaussian", "model=vgg"])
def test_unknown_group_choice_lists_the_options(arg):
    group, choice = arg.split("=")
    with pytest.raises(ConfigError) as err:
        check_group_choices([arg])
    message = str(err.value)
    assert choice in message and group_options(group)[0] in message


def test_sweep_lists_are_checked_choice_by_choice():
    check_group_choices(["loss=ce,gce", "noise.rate=0.2,0.4"])
    with pytest.raises(ConfigError, match="'gcee'"):
        check_group_choices(["loss=ce,gcee"])


@pytest.mark.parametrize("flag", ["--config-dir={}", "-cd {}"])
def test_a_preset_in_the_users_config_dir_is_a_choice(tmp_path, flag):
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "my_table.yaml").write_text("# @package _global_\nseed: 3\n")
    dir_args = flag.format(tmp_path).split()
    check_group_choices([*dir_args, "experiment=my_table"])
    with pytest.raises(ConfigError, match="'my_tabel'.*my_table"):
        check_group_choices([*dir_args, "experiment=my_tabel"])
    with pytest.raises(ConfigError, match="'my_table'"):  # without the folder it is unknown
        check_group_choices(["experiment=my_table"])
    check_group_choices(["hydra.searchpath=[file://elsewhere]", "experiment=my_table"])  # Hydra's to judge


def test_registry_suggests_close_names():
    with pytest.raises(ConfigError, match="did you mean 'mnist'"):
        DATASETS.get("mnsit")
