"""Each paper preset's first steps reproduce the trajectory that was checked against the paper's
own training code (scripts/check_official_training.py --golden, results/official_training/).

tests/golden/<preset>.json holds noisybench's loss and gradient norm at each of the first 50 steps
of one cell, on a fixed class-stratified MNIST slice (or the synthetic CIFAR-10 files the check
writes), when those steps agreed with the paper's code; and per step the tolerance: how far one
float32 rounding of the initial weights had moved the trajectory by then, times 10. A change to
the data, noise, model, loss, optimiser, clipping or schedule path moves the trajectory further.
"""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from helpers import REPO_ROOT

GOLDEN = sorted((REPO_ROOT / "tests" / "golden").glob("*.json"))


def load_check_tool():
    if "check_official_training" in sys.modules:
        return sys.modules["check_official_training"]
    spec = importlib.util.spec_from_file_location("check_official_training",
                                                  REPO_ROOT / "scripts" / "check_official_training.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_every_paper_preset_has_a_golden_trajectory():
    presets = {json.loads(path.read_text())["preset"] for path in GOLDEN}
    assert presets == {"apl_mnist", "alfs_mnist", "anl_mnist", "jal_cifar10", "eps_softmax_cifar10"}


@pytest.mark.parametrize("path", GOLDEN, ids=[path.stem for path in GOLDEN])
def test_preset_reproduces_its_golden_trajectory(path: Path, tmp_path, request):
    golden = json.loads(path.read_text())
    tool = load_check_tool()
    extra = []
    if golden["synthetic_cifar"]:
        root = tmp_path / "cifar"
        tool.write_synthetic_cifar10(root, golden["synthetic_cifar"], seed=0)
        extra.append("dataset.verify=false")
    else:
        root = request.getfixturevalue("mnist_root")
    dataset = tool.PAPERS[golden["paper"]].datasets[0]
    cfg = tool.compose_cell(golden["paper"], dataset, golden["loss"], golden["noise"], golden["rate"],
                            golden["seed"], root, golden["train_size"], extra)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the check ran: one reduction order
    try:
        ours, _ = tool.run_noisybench(cfg, len(golden["steps"]["loss"]), tmp_path)
    finally:
        torch.set_num_threads(threads)
    for key in ("loss", "grad_norm"):
        for step, (value, expected, rtol) in enumerate(zip(ours.per_step()[key], golden["steps"][key],
                                                                golden["steps"][f"{key}_rtol"]), 1):
            assert abs(value - expected) <= rtol * abs(expected), (
                f"{path.name}: step {step} {key} {value!r}, golden {expected!r} (relative "
                f"{abs(value - expected) / abs(expected):.1e} > {rtol:.1e})")


@pytest.mark.parametrize("args, message", [
    (["--paper", "xyz", "--checkout", ".", "--loss", "ce"], "--paper 'xyz' has no preset here; allowed: apl, alfs, anl, jal, eps"),
    (["--paper", "anl", "--checkout", ".", "--loss", "anl_ce"],
     "is not a checkout of Virusdoll/Active-Negative-Loss"),
])
def test_check_tool_refuses_an_unknown_paper_or_a_wrong_checkout_in_one_line(args, message):
    from helpers import run_script

    result = run_script("check_official_training.py", *args)
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_check_tool_refuses_a_loss_the_papers_code_does_not_run(tmp_path):
    from helpers import run_script

    (tmp_path / "loss.py").write_text("class NormalizedNegativeCrossEntropy: ...\n")  # looks like ANL's checkout
    result = run_script("check_official_training.py", "--paper", "anl", "--checkout", str(tmp_path), "--loss", "jal_ce")
    assert result.returncode == 2 and "--loss 'jal_ce' is not one anl's code runs here; allowed:" in result.stderr
