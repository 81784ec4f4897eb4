"""Every config group rejects keys its YAML files do not define, with the closest known key."""
from __future__ import annotations

import pytest
from helpers import compose_config, run_cli

from noisybench.config_keys import check_known_keys, group_keys
from noisybench.registry import ConfigError
from noisybench.run import check_config


@pytest.mark.parametrize("override, message", [
    ("+trainer.epoch=3", "unknown key 'trainer.epoch' (did you mean 'trainer.epochs'?)"),
    ("+data.rooot=x", "unknown key 'data.rooot' (did you mean 'data.root'?)"),
    ("+dataset.train_szie=100", "unknown key 'dataset.train_szie' (did you mean 'dataset.train_size'?)"),
    ("+logger.projet=x", "unknown key 'logger.projet' (did you mean 'logger.project'?)"),
    ("+seeed=1", "unknown key 'seeed' (did you mean 'seed'?)"),
    ("+noise.rat=0.3", "noise.rat is not a field of symmetric noise"),
    ("+model.widht=3", "unknown option(s) widht for model"),
])
def test_a_typo_in_any_group_is_rejected_naming_the_closest_key(override, message):
    with pytest.raises(ConfigError) as e:
        check_config(compose_config([override]))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_the_keys_of_every_option_and_preset_are_known():
    # the defaults, a logger with its own keys, and every paper preset pass
    for overrides in ([], ["logger=wandb"], ["dataset=cifar10", "noise=human"], ["experiment=apl_mnist"],
                      ["experiment=eps_softmax_cifar100"]):
        check_known_keys(compose_config(overrides))
    assert {"epochs", "lr", "num_threads"} <= group_keys("trainer")


def test_a_typo_fails_the_command_before_training(tmp_path):
    result = run_cli(["+trainer.epoch=3", f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    assert result.returncode == 2
    assert "unknown key 'trainer.epoch' (did you mean 'trainer.epochs'?)" in result.stderr
    assert not (tmp_path / "run" / "metrics.csv").exists()
