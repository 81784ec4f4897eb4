"""A user's own loss from their own file, outside the package: ``loss=custom loss.fn=module:function``
runs it through a single run, a sweep, a pack and the leaderboard; whatever does not fit fails in
one line before any training."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import run_cli

from noisybench.losses import build_loss
from noisybench.registry import ConfigError

MY_LOSSES = '''
import math

import torch
import torch.nn.functional as F


def poly2(logits, labels, eps1=1.0, eps2=0.0):
    pt = torch.softmax(logits, dim=1).gather(1, labels[:, None]).squeeze(1)
    return F.cross_entropy(logits, labels, reduction="none") + eps1 * (1 - pt) + eps2 * (1 - pt) ** 2


def needs_q(logits, labels, q):
    return F.cross_entropy(logits, labels, reduction="none") * q


def one_argument(logits):
    return logits.sum(1)


def catch_all(logits, labels, *args):
    return logits.sum(1)


def batch_mean(logits, labels):
    return F.cross_entropy(logits, labels)


def log_of_zero(logits, labels):
    return torch.log(torch.zeros(len(labels))) + logits.sum(1)


def detached(logits, labels):
    return F.cross_entropy(logits.detach(), labels, reduction="none")


def flat(logits, labels):
    return (logits * 0).sum(1) + 1.0


def raises(logits, labels):
    raise RuntimeError("shapes do not match")


NOT_A_FUNCTION = 3
'''

QUICK = ["trainer.epochs=3", "trainer.lr=0.5"]


@pytest.fixture
def user_dir(tmp_path, monkeypatch):
    """A folder outside the package holding the user's module; the command runs there."""
    (tmp_path / "mylosses.py").write_text(MY_LOSSES)
    (tmp_path / "broken.py").write_text("import torch\nraise ImportError('no module named cuda_ext')\n")
    monkeypatch.chdir(tmp_path)
    yield tmp_path


def reference_poly2(z, y, eps1, eps2):
    pt = torch.softmax(z, 1)[torch.arange(len(y)), y]
    return (F.cross_entropy(z, y, reduction="none") + eps1 * (1 - pt) + eps2 * (1 - pt) ** 2).mean()


def test_a_users_function_builds_with_its_hyperparameters_and_autograd_gradient(user_dir):
    loss = build_loss({"name": "custom", "fn": "mylosses:poly2", "eps1": 2.0}, 10)
    assert loss.name == "poly2"
    assert loss.params == {"fn": "mylosses:poly2", "eps1": 2.0, "eps2": 0.0, "weight_decay": None}
    z = torch.randn(6, 10, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 3, 9, 3, 1, 2])
    value = loss(z, y)
    torch.testing.assert_close(value, reference_poly2(z, y, 2.0, 0.0))
    torch.autograd.gradcheck(lambda logits: loss(logits, y), (z,))
    # A file path works as well as a module, and so does a required hyperparameter once given.
    assert build_loss({"name": "custom", "fn": "mylosses.py:poly2"}, 10).params["eps1"] == 1.0
    assert build_loss({"name": "custom", "fn": "mylosses:needs_q", "q": 0.5}, 10).params["q"] == 0.5


BAD = [
    ({"fn": None}, "loss.fn=None is not allowed; name your function as module:function or path/to/file.py:function"),
    ({"fn": "mylosses"}, "name your function as module:function"),
    ({"fn": "broken:poly2"}, "loss.fn='broken:poly2': module 'broken' does not import (ImportError: no module named cuda_ext)"),
    ({"fn": "nowhere:poly2"}, "module 'nowhere' does not import (ModuleNotFoundError: No module named 'nowhere')"),
    ({"fn": "missing.py:poly2"}, "there is no file"),
    ({"fn": "mylosses:poly3"}, "mylosses defines no 'poly3'; its functions: batch_mean, catch_all"),
    ({"fn": "mylosses:NOT_A_FUNCTION"}, "mylosses.NOT_A_FUNCTION is a int, not a function"),
    ({"fn": "mylosses:one_argument"}, "must take (logits, labels, **hyperparameters) as its first two arguments"),
    ({"fn": "mylosses:catch_all"}, "its hyperparameter 'args' must be a named keyword argument"),
    ({"fn": "mylosses:poly2", "eps3": 1.0}, "loss.eps3 is not a hyperparameter of mylosses:poly2; it takes: eps1, eps2"),
    ({"fn": "mylosses:needs_q"}, "mylosses:needs_q needs loss.q (it has no default): add +loss.q=<value>"),
    ({"fn": "mylosses:batch_mean"}, "returns () for a batch of 8; it must return the per-sample values, shape (8,)"),
    ({"fn": "mylosses:log_of_zero"}, "returns a non-finite value on a probe batch"),
    ({"fn": "mylosses:detached"}, "has no gradient with respect to the logits"),
    ({"fn": "mylosses:flat"}, "has a zero gradient with respect to the logits"),
    ({"fn": "mylosses:raises"}, "fails on a probe batch of 8 x 10 logits (RuntimeError: shapes do not match)"),
    ({"fn": "mylosses:poly2", "weight_decay": -1}, "loss.weight_decay=-1 is not allowed"),
]


@pytest.mark.parametrize("options, message", BAD, ids=[str(o) for o, _ in BAD])
def test_a_loss_that_does_not_fit_fails_in_one_line(user_dir, options, message):
    with pytest.raises(ConfigError) as e:
        build_loss({"name": "custom", **options}, 10)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_loss_fn_belongs_to_loss_custom():
    with pytest.raises(ConfigError, match=r"loss ce has no option 'fn' \(loss.fn is for loss=custom\)"):
        build_loss({"name": "ce", "fn": "mylosses:poly2"}, 10)


def leaderboard(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_a_users_loss_trains_through_the_cli_a_packed_sweep_and_the_leaderboard(user_dir):
    single = run_cli(["loss=custom", "loss.fn=mylosses:poly2", "+loss.eps1=2.0", *QUICK,
                      "hydra.run.dir=single"], cwd=user_dir)
    assert single.returncode == 0, single.stderr[-3000:]
    summary = json.loads((user_dir / "single" / "summary.json").read_text())
    assert summary["loss"] == "poly2" and summary["loss_params"]["eps1"] == 2.0
    assert summary["test_acc_last"] > 0.8  # it learns: the digits at 3 epochs

    # loss.fn goes to the custom cells only; the two cells train as one pack.
    sweep = run_cli(["--multirun", "loss=ce,custom", "loss.fn=mylosses:poly2", "trainer.pack=2", *QUICK,
                     "hydra.sweep.dir=sweep"], cwd=user_dir)
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    summaries = [json.loads(path.read_text()) for path in (user_dir / "sweep").glob("*/summary.json")]
    assert sorted(s["loss"] for s in summaries) == ["ce", "poly2"]
    assert all(s["numerics"]["pack"] == 2 for s in summaries)
    rows = {row["loss"]: row for row in leaderboard(user_dir / "sweep" / "leaderboard.csv")}
    assert sorted(rows) == ["ce", "poly2"]
    assert "eps1=1" in rows["poly2"]["loss_params"] and "fn=mylosses:poly2" in rows["poly2"]["loss_params"]
    assert float(rows["poly2"]["last_mean"]) > 80


def test_a_bad_users_loss_stops_the_cli_before_training_and_leaves_no_run_folder(user_dir):
    run = run_cli(["loss=custom", "loss.fn=mylosses:detached", "hydra.run.dir=bad"], cwd=user_dir)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1].startswith("error: loss.fn='mylosses:detached' has no gradient")
    assert not (user_dir / "bad").exists()
