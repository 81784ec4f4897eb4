"""Every registered loss against an independent float64 reference, values and gradients.

The references below are written from ../shared/reference/robust-losses.md (§1 and §10) the way
the official code computes each loss: plain torch autograd on softmax / log_softmax outputs,
``torch.clamp`` where the code clamps and ``.detach()`` where it uses ``.data``. The registered
losses are written independently of these (as close to each paper's ``loss.py`` as clarity
allows); comparing both, on logits where the clamps bite, checks the values, the clamps' zero
gradients and the detached terms at once.
"""
from __future__ import annotations

import math

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from helpers import HostReads, run_script

from noisybench.losses import LOSSES, TrainingSettings, build_loss, loss_options, resolve_loss
from noisybench.registry import ConfigError
from noisybench.trainer import cxx_compiler

K = 6
TOL = dict(rtol=1e-6, atol=1e-9)


def probs(z):
    return torch.softmax(z, dim=1)


def onehot(z, y):
    """e_y as float64 rows as wide as z."""
    return F.one_hot(y, z.shape[1]).to(torch.float64)


def at_label(x, y):
    return x.gather(1, y.unsqueeze(1)).squeeze(1)


# ----------------------------------------------------------------------------------------------
# References (per-sample values; autograd gives their gradients)
# ----------------------------------------------------------------------------------------------

def ref_ce(z, y):
    return -at_label(torch.log_softmax(z, 1), y)


def ref_focal(z, y, gamma):
    logpt = at_label(torch.log_softmax(z, 1), y)
    pt = logpt.detach().exp()  # Variable(logpt.data.exp())
    return -((1 - pt) ** gamma) * logpt


def ref_mae(z, y, scale=1.0):
    return scale * (1.0 - (onehot(z, y) * probs(z)).sum(1))


def ref_rce(z, y, eps, label_clamp):
    p = torch.clamp(probs(z), min=eps, max=1.0)
    q = torch.clamp(onehot(z, y), min=label_clamp, max=1.0)
    return -(p * torch.log(q)).sum(1)


def ref_gce(z, y, q, eps):
    p = torch.clamp(probs(z), min=eps, max=1.0)
    return (1.0 - (onehot(z, y) * p).sum(1) ** q) / q


def ref_truncated_gce(z, y, q, k):
    p_y = at_label(probs(z), y)
    lq_k = torch.full_like(p_y, (1 - k**q) / q)  # a constant: no gradient
    return torch.where(p_y <= k, lq_k, (1 - p_y**q) / q)


def ref_nce(z, y):
    logp = torch.log_softmax(z, 1)
    return -(onehot(z, y) * logp).sum(1) / (-logp.sum(1))


def ref_nfl(z, y, gamma):
    logp = torch.log_softmax(z, 1)
    normalizor = torch.sum(-1 * (1 - logp.detach().exp()) ** gamma * logp, dim=1)
    logpt = at_label(logp, y)
    pt = logpt.detach().exp()
    return -((1 - pt) ** gamma) * logpt / normalizor


def ref_ngce(z, y, q, eps):
    p = torch.clamp(probs(z), min=eps, max=1.0)
    numerators = 1.0 - (onehot(z, y) * p).sum(1) ** q
    denominators = z.shape[1] - p.pow(q).sum(1)
    return numerators / denominators


def ref_nnce(z, y, min_prob):
    a = -math.log(min_prob)
    v = a + torch.clamp(probs(z), min=min_prob, max=1).log()
    return 1 - (onehot(z, y) * v).sum(1) / v.sum(1)


def ref_nnfl(z, y, gamma, min_prob):
    logmp = math.log(min_prob)
    a = -((1 - min_prob) ** gamma) * logmp
    logp = torch.log_softmax(z, 1).clamp(min=logmp)
    normalizor = torch.sum(-1 * (1 - logp.detach().exp()) ** gamma * logp, dim=1)
    logpt = at_label(logp, y)
    pt = logpt.detach().exp()
    loss_y = -((1 - pt) ** gamma) * logpt
    return 1 - (a - loss_y) / (z.shape[1] * a - normalizor)


def ref_agce(z, y, a, q):
    return ((a + 1) ** q - (a + (onehot(z, y) * probs(z)).sum(1)) ** q) / q


def ref_aul(z, y, a, q):
    return ((a - (onehot(z, y) * probs(z)).sum(1)) ** q - (a - 1) ** q) / q


def ref_ael(z, y, a):
    return torch.exp(-(onehot(z, y) * probs(z)).sum(1) / a)


def ref_amse(z, y, a):
    return ((probs(z) - a * onehot(z, y)) ** 2).mean(1)  # JAL's loss.mean() over N*K, per sample


def eps_softmax(z, m, eps):
    p = probs(z).clone()
    p[torch.arange(len(p)), torch.argmax(p, dim=1)] += m
    return torch.clamp(p / (m + 1), min=eps)


def ref_ce_eps(z, y, m, eps):
    return -at_label(torch.log(eps_softmax(z, m, eps)), y)


def ref_fl_eps(z, y, m, gamma, eps):
    logpt = at_label(torch.log(eps_softmax(z, m, eps)), y)
    pt = logpt.detach().exp()
    return -((1 - pt) ** gamma) * logpt


def ref_logit_clip(z, y, delta, eps):
    norms = torch.norm(z, p=2, dim=-1, keepdim=True) + eps
    clipped = torch.where((norms > 1 / delta).expand(-1, z.shape[1]), z / norms * delta, z)
    p = torch.clamp(probs(clipped), min=eps, max=1.0)
    return -at_label(torch.log(p), y)


def ref_ldr_kl(z, y, threshold, lam):
    u = F.softplus(z)
    u = u / u.mean(1, keepdim=True)
    d = threshold * (1 - onehot(z, y)) + (u - (u * onehot(z, y)).sum(1, keepdim=True))
    d = d / lam
    top = d.max(1, keepdim=True).values.detach()
    return lam * (torch.log(torch.exp(d - top).mean(1)) + top.squeeze(1))


def ref_taylor_ce(z, y, order):
    rest = 1 - at_label(probs(z), y)
    return sum(rest**i / i for i in range(1, order + 1))


def ref_poly1(z, y, epsilon):
    return ref_ce(z, y) + epsilon * (1 - at_label(probs(z), y))


class _ReweightedMAE(torch.autograd.Function):
    """MAE's value sum_k |p_k - e_y,k| = 2 - 2 p_y; its logit gradient per sample rescaled by
    w_IMAE / w_MAE = exp(T p_y)(1 - p_y) / (4 p_y (1 - p_y)) (IMAE paper, reference §10), with
    the common factor (1 - p_y) cancelled (it rounds to 0 where p_y rounds to 1)."""

    @staticmethod
    def forward(ctx, z, y, T):
        with torch.enable_grad():
            z = z.detach().requires_grad_()
            p_y = at_label(probs(z), y)
            mae = 2 - 2 * p_y
            grad_mae = torch.autograd.grad(mae.sum(), z)[0]
        p_y = p_y.detach()
        ctx.save_for_backward(grad_mae * (torch.exp(T * p_y) / (4 * p_y))[:, None])
        return mae.detach()

    @staticmethod
    def backward(ctx, grad_value):
        (grad,) = ctx.saved_tensors
        return grad * grad_value[:, None], None, None


def ref_imae(z, y, T):
    return _ReweightedMAE.apply(z, y, T)


def ref_dmi(z, y, det_offset):
    mat = onehot(z, y).T @ probs(z)
    return -torch.log(torch.abs(torch.det(mat)) + det_offset)


# Test hyperparameters (not the defaults, so that a mix-up of weights shows) and the reference of
# each registered loss. Keys missing here make test_every_loss_has_a_reference fail.
A, B = 0.7, 2.5
REFERENCES = {
    "ce": ({}, ref_ce),
    "fl": ({"gamma": 0.7}, ref_focal),
    "gce": ({"q": 0.6, "eps": 1e-7}, ref_gce),
    "tgce": ({"q": 0.6, "k": 0.3}, ref_truncated_gce),
    "taylor_ce": ({"order": 3}, ref_taylor_ce),
    "poly1": ({"epsilon": 1.5}, ref_poly1),
    "ce_eps": ({"m": 1e3, "eps": 1e-8}, ref_ce_eps),
    "fl_eps": ({"m": 1e3, "gamma": 0.3, "eps": 1e-8}, ref_fl_eps),
    "ce_lc": ({"delta": 1.0, "eps": 1e-8}, ref_logit_clip),
    "ldr_kl": ({"threshold": 0.2, "lam": 2.0}, ref_ldr_kl),
    "mae": ({"scale": 2.0}, ref_mae),
    "rce": ({"scale": 1.5, "eps": 1e-7, "label_clamp": 1e-4},
            lambda z, y, scale, **c: scale * ref_rce(z, y, **c)),
    "nce": ({"scale": 1.5}, lambda z, y, scale: scale * ref_nce(z, y)),
    "nfl": ({"scale": 1.5, "gamma": 0.7}, lambda z, y, scale, gamma: scale * ref_nfl(z, y, gamma)),
    "ngce": ({"scale": 1.5, "q": 0.3, "eps": 1e-7}, lambda z, y, scale, **c: scale * ref_ngce(z, y, **c)),
    "nnce": ({"scale": 1.5, "min_prob": 1e-7, "delta": 0.0},
             lambda z, y, scale, min_prob, delta: scale * ref_nnce(z, y, min_prob)),
    "nnfl": ({"scale": 1.5, "gamma": 0.7, "min_prob": 1e-7, "delta": 0.0},
             lambda z, y, scale, gamma, min_prob, delta: scale * ref_nnfl(z, y, gamma, min_prob)),
    "imae": ({"T": 4.0}, ref_imae),
    "agce": ({"a": 0.6, "q": 1.5, "scale": 1.5}, lambda z, y, a, q, scale: scale * ref_agce(z, y, a, q)),
    "aul": ({"a": 2.5, "q": 0.4, "scale": 1.5}, lambda z, y, a, q, scale: scale * ref_aul(z, y, a, q)),
    "ael": ({"a": 2.5, "scale": 1.5}, lambda z, y, a, scale: scale * ref_ael(z, y, a)),
    "amse": ({"a": 3.0, "scale": 1.5, "class_reduction": "mean"},
             lambda z, y, a, scale, class_reduction: scale * ref_amse(z, y, a)),
    "sce": ({"alpha": A, "beta": B, "eps": 1e-7, "label_clamp": 1e-4},
            lambda z, y, alpha, beta, **c: alpha * ref_ce(z, y) + beta * ref_rce(z, y, **c)),
    "nce_mae": ({"alpha": A, "beta": B, "mae_scale": 1.0},
                lambda z, y, alpha, beta, mae_scale: alpha * ref_nce(z, y) + beta * ref_mae(z, y, mae_scale)),
    "nce_rce": ({"alpha": A, "beta": B, "eps": 1e-7, "label_clamp": 1e-4},
                lambda z, y, alpha, beta, **c: alpha * ref_nce(z, y) + beta * ref_rce(z, y, **c)),
    "nfl_mae": ({"alpha": A, "beta": B, "gamma": 0.7, "mae_scale": 1.0},
                lambda z, y, alpha, beta, gamma, mae_scale:
                alpha * ref_nfl(z, y, gamma) + beta * ref_mae(z, y, mae_scale)),
    "nfl_rce": ({"alpha": A, "beta": B, "gamma": 0.7, "eps": 1e-7, "label_clamp": 1e-4},
                lambda z, y, alpha, beta, gamma, **c: alpha * ref_nfl(z, y, gamma) + beta * ref_rce(z, y, **c)),
    "ngce_mae": ({"alpha": A, "beta": B, "q": 0.3, "eps": 1e-7, "mae_scale": 1.0},
                 lambda z, y, alpha, beta, q, eps, mae_scale:
                 alpha * ref_ngce(z, y, q, eps) + beta * ref_mae(z, y, mae_scale)),
    "ngce_rce": ({"alpha": A, "beta": B, "q": 0.3, "eps": 1e-7, "label_clamp": 1e-4},
                 lambda z, y, alpha, beta, q, eps, label_clamp:
                 alpha * ref_ngce(z, y, q, eps) + beta * ref_rce(z, y, eps, label_clamp)),
    "nce_agce": ({"alpha": A, "beta": B, "a": 0.6, "q": 1.5},
                 lambda z, y, alpha, beta, a, q: alpha * ref_nce(z, y) + beta * ref_agce(z, y, a, q)),
    "nce_aul": ({"alpha": A, "beta": B, "a": 2.5, "q": 0.4},
                lambda z, y, alpha, beta, a, q: alpha * ref_nce(z, y) + beta * ref_aul(z, y, a, q)),
    "nce_ael": ({"alpha": A, "beta": B, "a": 2.5},
                lambda z, y, alpha, beta, a: alpha * ref_nce(z, y) + beta * ref_ael(z, y, a)),
    "anl_ce": ({"alpha": A, "beta": B, "delta": 0.0, "min_prob": 1e-7},
               lambda z, y, alpha, beta, delta, min_prob: alpha * ref_nce(z, y) + beta * ref_nnce(z, y, min_prob)),
    "anl_fl": ({"alpha": A, "beta": B, "gamma": 0.7, "delta": 0.0, "min_prob": 1e-7},
               lambda z, y, alpha, beta, gamma, delta, min_prob:
               alpha * ref_nfl(z, y, gamma) + beta * ref_nnfl(z, y, gamma, min_prob)),
    "jal_ce": ({"alpha": A, "beta": B, "a": 3.0, "delta": 0.0, "class_reduction": "mean"},
               lambda z, y, alpha, beta, a, delta, class_reduction: alpha * ref_nce(z, y) + beta * ref_amse(z, y, a)),
    "jal_fl": ({"alpha": A, "beta": B, "a": 3.0, "gamma": 0.7, "delta": 0.0, "class_reduction": "mean"},
               lambda z, y, alpha, beta, a, gamma, delta, class_reduction:
               alpha * ref_nfl(z, y, gamma) + beta * ref_amse(z, y, a)),
    "ce_eps_mae": ({"alpha": A, "beta": B, "m": 1e3, "eps": 1e-8, "mae_scale": 2.0},
                   lambda z, y, alpha, beta, m, eps, mae_scale:
                   alpha * ref_ce_eps(z, y, m, eps) + beta * ref_mae(z, y, mae_scale)),
    "fl_eps_mae": ({"alpha": A, "beta": B, "m": 1e3, "gamma": 0.3, "eps": 1e-8, "mae_scale": 2.0},
                   lambda z, y, alpha, beta, m, gamma, eps, mae_scale:
                   alpha * ref_fl_eps(z, y, m, gamma, eps) + beta * ref_mae(z, y, mae_scale)),
    "dmi": ({"warmup_epochs": 0, "lr": 1e-6, "det_offset": 1e-3},
            lambda z, y, warmup_epochs, lr, det_offset: ref_dmi(z, y, det_offset)),
}


def test_every_loss_has_a_reference():
    assert sorted(REFERENCES) == LOSSES.names()


def test_every_reference_sets_every_hyperparameter():
    for name, (params, _) in REFERENCES.items():
        assert set(params) == set(LOSSES.meta(name)["params"]), name


def batch(scales=(14.0, 0.25, 2.0, 5.0), per_scale=4, seed=0, classes=K):
    """float64 logits whose rows span near-uniform to one-hot-like softmax outputs: in the
    steep rows p drops below 1e-8, so every clamp of the official code bites somewhere; a few
    rows have their label as the argmax (eps-softmax's bonus, TGCE's untruncated branch)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.cat([s * torch.randn(per_scale, classes, generator=g, dtype=torch.float64) for s in scales])
    y = torch.randint(0, classes, (len(z),), generator=g)
    y[:classes] = torch.arange(classes)  # every class appears (L_DMI's matrix is regular)
    rows = torch.arange(2, len(z), 3)
    z[rows, y[rows]] += 6.0
    return z, y


def sharp_batch(classes, per_scale, seed=0):
    """Logits of scale 10 to 100: near one-hot rows, every clamp floor undercut; the label is the
    argmax by a wide margin in half the rows (p_y rounds to 1 in float32)."""
    z, y = batch(scales=(10.0, 30.0, 100.0), per_scale=per_scale, seed=seed, classes=classes)
    rows = torch.arange(0, len(z), 2)
    z[rows, y[rows]] = z[rows].amax(1) + 30.0
    return z, y


def build(name, params=None):
    return build_loss({"name": name, **(params if params is not None else REFERENCES[name][0])}, K)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_value_and_gradient_match_the_reference(name):
    params, reference = REFERENCES[name]
    z, y = batch()
    # The clamps bite in this batch: on label entries (GCE, eps-softmax) and on others (RCE, NNCE).
    p_y = at_label(probs(z), y)
    assert (p_y < 1e-7).any() and (probs(z) < 1e-8).sum() > 2
    loss = build(name)

    z_ref = z.clone().requires_grad_()
    expected = reference(z_ref, y, **params)
    if loss.per_sample:
        torch.testing.assert_close(loss.values(z, y), expected.detach(), **TOL)
        expected = expected.mean()
    expected.backward()

    z_loss = z.clone().requires_grad_()
    value = loss(z_loss, y)
    value.backward()
    torch.testing.assert_close(value.detach(), expected.detach(), **TOL)
    torch.testing.assert_close(z_loss.grad, z_ref.grad, **TOL)


@pytest.mark.parametrize("name", sorted(n for n in REFERENCES if n != "dmi"))
def test_per_sample_values_backpropagate_like_their_mean(name):
    # values() is what per-sample tooling differentiates; its gradient must be the reference's too.
    params, reference = REFERENCES[name]
    z, y = batch(seed=1)
    weights = torch.linspace(0.5, 2.0, len(z), dtype=torch.float64)
    z_ref, z_loss = z.clone().requires_grad_(), z.clone().requires_grad_()
    (reference(z_ref, y, **params) * weights).sum().backward()
    (build(name).values(z_loss, y) * weights).sum().backward()
    torch.testing.assert_close(z_loss.grad, z_ref.grad, **TOL)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_value_without_gradient_is_the_same(name):
    # Evaluation runs under no_grad, where the losses skip their gradient work.
    z, y = batch(seed=2)
    loss = build(name)
    with torch.no_grad():
        plain = loss(z, y)
    torch.testing.assert_close(plain, loss(z.clone().requires_grad_(), y).detach(), rtol=1e-12, atol=0)


# Closed forms at uniform logits (p = 1/K everywhere), with the constants that matter spelled out.
LOG_1E4 = 9.210340371976184  # -ln(1e-4): RCE's "log 0"
UNIFORM = [
    ("ce", {}, math.log(K)),
    ("mae", {"scale": 1.0}, 1 - 1 / K),
    ("mae", {"scale": 2.0}, 2 * (1 - 1 / K)),  # ALFs / JAL / eps-softmax MAELoss()
    ("rce", {}, LOG_1E4 * (K - 1) / K),
    ("nce", {}, 1 / K),
    ("nfl", {"gamma": 0.5}, 1 / K),
    ("ngce", {"q": 0.7}, 1 / K),
    ("gce", {"q": 0.7}, (1 - K**-0.7) / 0.7),
    ("nnce", {}, 1 - 1 / K),
    ("agce", {"a": 0.6, "q": 0.6}, ((1.6) ** 0.6 - (0.6 + 1 / K) ** 0.6) / 0.6),
    ("aul", {"a": 5.5, "q": 3.0}, ((5.5 - 1 / K) ** 3 - 4.5**3) / 3),
    ("ael", {"a": 2.5}, math.exp(-1 / (2.5 * K))),
    ("amse", {"a": 30.0}, ((K - 1) / K**2 + (1 / K - 30) ** 2) / K),  # JAL's mean over K
    ("amse", {"a": 30.0, "class_reduction": "sum"}, (K - 1) / K**2 + (1 / K - 30) ** 2),
    ("sce", {"alpha": 0.1, "beta": 1.0}, 0.1 * math.log(K) + LOG_1E4 * (K - 1) / K),
    ("nce_mae", {"alpha": 1.0, "beta": 10.0}, 1 / K + 10 * (1 - 1 / K)),
    ("ce_eps_mae", {"alpha": 0.01, "beta": 5.0, "m": 1e5},  # argmax of a tie is class 0
     None),
    ("taylor_ce", {"order": 3}, sum((1 - 1 / K) ** i / i for i in (1, 2, 3))),
    ("poly1", {"epsilon": 2.0}, math.log(K) + 2 * (1 - 1 / K)),
    ("imae", {}, 2 * (1 - 1 / K)),
    ("ldr_kl", {"threshold": 0.1, "lam": 10.0}, 10 * math.log((1 + (K - 1) * math.exp(0.01)) / K)),
]


@pytest.mark.parametrize("name,params,expected", UNIFORM, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(UNIFORM)])
def test_closed_form_at_uniform_logits(name, params, expected):
    y = torch.arange(K)
    values = build_loss({"name": name, **params}, K).values(torch.zeros(K, K, dtype=torch.float64), y)
    if name == "ce_eps_mae":
        # eps-softmax: torch.argmax of a tie is the first class, so only label 0 gets the bonus m.
        hit = (1 / K + 1e5) / (1e5 + 1)
        miss = (1 / K) / (1e5 + 1)
        expected = [0.01 * -math.log(hit) + 5 * 2 * (1 - 1 / K)] + [0.01 * -math.log(miss) + 10 * (1 - 1 / K)] * (K - 1)
    np.testing.assert_allclose(values.numpy(), expected, rtol=1e-12)


def extreme_logits(dtype=torch.float32):
    """+-50 logits: softmax outputs of exactly 0 and 1 in float32, labels on both sides."""
    z = torch.full((8, K), -50.0, dtype=dtype)
    y = torch.tensor([0, 1, 2, 3, 4, 5, 0, 1])
    z[torch.arange(4), y[:4]] = 50.0  # confident and right
    z[torch.arange(4, 8), (y[4:] + 1) % K] = 50.0  # confident and wrong: p_y = 0 in float32
    z[6] = 50.0  # a tie over all classes
    return z, y


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_finite_value_and_gradient_at_extreme_logits(name):
    z, y = extreme_logits()
    z.requires_grad_()
    value = build(name)(z, y)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(z.grad).all()


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_float32_agrees_with_float64(name):
    z, y = batch(scales=(3.0,), per_scale=16, seed=3)
    loss = build(name)
    torch.testing.assert_close(loss(z.float(), y).double(), loss(z, y), rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("classes", [10, 100])
@pytest.mark.parametrize("sharp", [False, True], ids=["ordinary", "sharp"])
@pytest.mark.parametrize("name", sorted(n for n in REFERENCES if n != "dmi"))
def test_float32_value_is_within_1e_5_of_the_float64_reference(name, sharp, classes):
    # The batch mean in float32, the dtype of training, against the reference in float64 on the
    # same (float32) logits. L_DMI is left out: on near one-hot rows its det(Y^T P) nears
    # prod_c n_c, beyond float32's range at 100 classes.
    params, reference = REFERENCES[name]
    per_scale = -(-classes // 3)
    z, y = sharp_batch(classes, per_scale) if sharp else batch(per_scale=per_scale, classes=classes)
    z = z.float()
    expected = reference(z.double(), y, **params).mean().item()
    value = build_loss({"name": name, **params}, classes)(z, y).item()
    assert abs(value - expected) <= 1e-5 * abs(expected), (value, expected)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("classes", [10, 100])
def test_ldr_kl_float32_value_at_near_uniform_logits(classes, seed):
    # At initialisation the logits are near uniform and LDR-KL is about its threshold, small
    # beside lam * log K (46 at 100 classes; JAL's CIFAR-10 setting, lam 10).
    params = {"threshold": 0.1, "lam": 10.0}
    g = torch.Generator().manual_seed(seed)
    z = 0.1 * torch.randn(128, classes, generator=g)
    y = torch.randint(0, classes, (128,), generator=g)
    expected = ref_ldr_kl(z.double(), y, **params).mean().item()
    value = build_loss({"name": "ldr_kl", **params}, classes)(z, y).item()
    assert abs(value - expected) <= 1e-5 * abs(expected), (value, expected)


def test_half_precision_logits_are_upcast():
    z, y = batch(scales=(3.0,), per_scale=16, seed=3)
    loss = build("nce_rce")
    value = loss(z.to(torch.bfloat16), y)
    assert value.dtype == torch.float32
    torch.testing.assert_close(value.double(), loss(z.to(torch.bfloat16).double(), y))



# ----------------------------------------------------------------------------------------------
# Properties
# ----------------------------------------------------------------------------------------------

def risk_over_labels(loss, z):
    """sum_k L(f(x), k) for each row of z."""
    n = len(z)
    return sum(loss.values(z, torch.full((n,), k)) for k in range(z.shape[1]))


@pytest.mark.parametrize("name,params,constant", [
    ("mae", {}, K - 1.0), ("rce", {}, LOG_1E4 * (K - 1)), ("nce", {}, 1.0), ("nfl", {"gamma": 0.5}, 1.0),
    ("ngce", {"q": 0.7}, 1.0), ("ngce", {"q": 0.1}, 1.0), ("imae", {}, 2 * (K - 1.0)),
])
def test_symmetric_losses_sum_to_a_constant_over_labels(name, params, constant):
    g = torch.Generator().manual_seed(4)
    z = 2 * torch.randn(64, K, generator=g, dtype=torch.float64)
    total = risk_over_labels(build_loss({"name": name, **params}, K), z)
    torch.testing.assert_close(total, torch.full_like(total, constant), rtol=1e-12, atol=1e-12)


def test_ce_is_not_symmetric():
    # The property test above can fail: CE's sum over labels depends on the logits.
    g = torch.Generator().manual_seed(4)
    total = risk_over_labels(build_loss({"name": "ce"}, K), 2 * torch.randn(64, K, generator=g, dtype=torch.float64))
    assert total.max() - total.min() > 1.0


def simplex_points(t: int, n: int, seed: int = 5) -> torch.Tensor:
    """Random points of the probability simplex (Dirichlet) and points near the vertex e_t."""
    g = np.random.default_rng(seed)
    points = g.dirichlet(np.full(K, 0.5), size=n)
    near = np.zeros((200, K))
    near[:, t] = 1.0
    steps = np.linspace(1e-3, 0.5, 200)
    near[:, t] -= steps
    near[np.arange(200), (t + 1 + np.arange(200)) % K] += steps  # mass moved to one other class
    return torch.from_numpy(np.concatenate([points, near]))


def risk(loss, u: torch.Tensor, w: np.ndarray) -> torch.Tensor:
    """sum_k w_k L(u, k) for each row u (softmax(log u) = u)."""
    z = torch.log(u.clamp_min(1e-300))
    n = len(u)
    return sum(float(w[k]) * loss.values(z, torch.full((n,), k)) for k in range(K))


def vertex(t: int) -> torch.Tensor:
    u = torch.full((1, K), 1e-30, dtype=torch.float64)
    u[0, t] = 1.0
    return u


def is_minimised_at_the_top_vertex(name, params, w) -> bool:
    """ALFs' definition: sum_k w_k L(u, k) over the simplex is minimised by e_t, t = argmax w."""
    loss = build_loss({"name": name, **params}, K)
    t = int(np.argmax(w))
    best = risk(loss, vertex(t), w)
    return bool((risk(loss, simplex_points(t, 2000), w) >= best - 1e-12).all())


# Noise-like weights: the clean class t = 0 has the largest weight w_t, the second largest w_n.
CLEAR = np.array([0.55, 0.30, 0.05, 0.04, 0.03, 0.03])  # w_t / w_n = 1.83, w_t - w_n = 0.25
CLOSE = np.array([0.40, 0.34, 0.08, 0.07, 0.06, 0.05])  # w_t / w_n = 1.18, w_t - w_n = 0.06


@pytest.mark.parametrize("name,params,ratio", [
    # Convex decreasing l(p_y): asymmetric iff w_t / w_n >= l'(0) / l'(1) (ALFs).
    ("agce", {"a": 0.6, "q": 0.6}, (1.6 / 0.6) ** 0.4),
    ("aul", {"a": 5.5, "q": 3.0}, (5.5 / 4.5) ** 2),
    ("ael", {"a": 2.5}, math.exp(1 / 2.5)),
])
def test_convex_asymmetric_losses_need_the_asymmetry_ratio(name, params, ratio):
    assert CLEAR[0] / CLEAR[1] >= ratio > CLOSE[0] / CLOSE[1]
    assert is_minimised_at_the_top_vertex(name, params, CLEAR)
    assert not is_minimised_at_the_top_vertex(name, params, CLOSE)


@pytest.mark.parametrize("name,params", [
    # Concave decreasing l(p_y) (AGCE with q > 1, AUL with q < 1): asymmetric for any weights
    # with a unique largest one.
    ("agce", {"a": 6.0, "q": 1.5}), ("aul", {"a": 3.0, "q": 0.1}),
])
def test_concave_asymmetric_losses_are_completely_asymmetric(name, params):
    assert is_minimised_at_the_top_vertex(name, params, CLOSE)


def test_amse_is_asymmetric_for_a_at_least_one_over_the_weight_gap():
    # JAL: sum_k w_k AMSE(u, k) = |u - a w|^2 / K + const, minimised on the simplex by the
    # projection of a w, which is e_t iff a (w_t - w_n) >= 1.
    assert is_minimised_at_the_top_vertex("amse", {"a": 30.0}, CLOSE)  # 30 * 0.06 >= 1
    assert is_minimised_at_the_top_vertex("amse", {"a": 4.0}, CLEAR)  # 4 * 0.25 = 1
    assert not is_minimised_at_the_top_vertex("amse", {"a": 3.0}, CLEAR)
    assert not is_minimised_at_the_top_vertex("amse", {"a": 10.0}, CLOSE)


def test_gce_tends_to_ce_as_q_tends_to_0_and_is_one_minus_p_y_at_q_1():
    z, y = batch(scales=(2.0,), per_scale=32, seed=6)
    ce = ref_ce(z, y)
    gaps = [(build_loss({"name": "gce", "q": q}, K).values(z, y) - ce).abs().max().item() for q in (1e-1, 1e-2, 1e-4)]
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 1e-3 * ce.max().item()
    torch.testing.assert_close(build_loss({"name": "gce", "q": 1.0}, K).values(z, y), 1 - at_label(probs(z), y),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("focal,plain", [("fl", "ce"), ("nfl", "nce"), ("fl_eps", "ce_eps")])
def test_focal_losses_with_gamma_0_are_their_plain_losses(focal, plain):
    z, y = batch(seed=7)
    torch.testing.assert_close(build_loss({"name": focal, "gamma": 0.0}, K).values(z, y),
                               build_loss({"name": plain}, K).values(z, y), rtol=1e-12, atol=1e-12)


def test_taylor_ce_approaches_ce_as_its_order_grows():
    z, y = batch(scales=(2.0,), per_scale=32, seed=8)
    ce = ref_ce(z, y)
    # Taylor-CE approaches CE from below as the order grows.
    t = [build_loss({"name": "taylor_ce", "order": o}, K).values(z, y) for o in (1, 2, 8, 64)]
    assert all((a <= b + 1e-12).all() for a, b in zip(t, t[1:])) and (t[-1] <= ce + 1e-12).all()
    torch.testing.assert_close(t[0], 1 - at_label(probs(z), y))


# ----------------------------------------------------------------------------------------------
# Configuration errors, the model's L1 term, L_DMI's stages
# ----------------------------------------------------------------------------------------------

BAD = [
    ({"name": "gce", "q": 1.5}, "q=1.5"),
    ({"name": "gce", "q": 0.0}, "q=0.0"),
    ({"name": "ngce", "q": -0.2}, "q=-0.2"),
    ({"name": "nce_rce", "alpha": -1.0}, "alpha=-1.0"),
    ({"name": "sce", "beta": -0.1}, "beta=-0.1"),
    ({"name": "aul", "a": 1.0}, "a=1.0"),
    ({"name": "nce_aul", "a": 0.5}, "a=0.5"),
    ({"name": "fl", "gamma": -0.5}, "gamma=-0.5"),
    ({"name": "nfl_rce", "gamma": -1.0}, "gamma=-1.0"),
    ({"name": "rce", "label_clamp": 0.0}, "label_clamp=0.0"),
    ({"name": "nnce", "min_prob": 0.0}, "min_prob=0.0"),
    ({"name": "tgce", "k": 1.0}, "k=1.0"),
    ({"name": "taylor_ce", "order": 0}, "order=0"),
    ({"name": "taylor_ce", "order": 2.5}, "order=2.5"),
    ({"name": "ce_lc", "delta": 0.0}, "delta=0.0"),
    ({"name": "amse", "class_reduction": "max"}, "class_reduction='max'"),
    ({"name": "gce", "q": "0.7"}, "q='0.7'"),
    ({"name": "gce", "q": True}, "q=True"),
    ({"name": "gce", "q": float("nan")}, "q=nan"),
    ({"name": "anl_ce", "weight_decay": -1.0}, "weight_decay=-1.0"),
    ({"name": "ce", "q": 0.7}, "'q'"),
    ({"name": "cee"}, "'cee'"),
    ({}, "name"),
    ({"name": "ce", "preset": "nope"}, "'nope'"),
]


@pytest.mark.parametrize("cfg,named", BAD, ids=[str(c) for c, _ in BAD])
def test_bad_hyperparameters_fail_at_config_time_with_one_line(cfg, named):
    with pytest.raises(ConfigError) as err:
        build_loss(cfg, K)
    message = str(err.value)
    assert named in message and "\n" not in message


def test_bad_num_classes_fails():
    with pytest.raises(ConfigError, match="num_classes"):
        build_loss({"name": "ce"}, 1)


L1_LOSSES = ["anl_ce", "anl_fl", "jal_ce", "jal_fl", "nnce", "nnfl"]


@pytest.mark.parametrize("name", L1_LOSSES)
def test_an_l1_losss_delta_is_a_training_setting_the_function_never_sees(name):
    z, y = batch(seed=9)
    params = REFERENCES[name][0]
    plain, plain_settings = resolve_loss({"name": name, **params, "delta": 0.0}, K)
    loss, settings = resolve_loss({"name": name, **params, "delta": 1e-3}, K)
    assert (settings.l1, plain_settings.l1) == (1e-3, 0.0) and "delta" not in loss.hyperparameters
    assert loss.params["delta"] == 1e-3  # recorded with the run
    assert loss(z, y).item() == plain(z, y).item()


def test_anl_and_jal_replace_weight_decay_by_their_l1_term():
    settings = {name: resolve_loss({"name": name}, K)[1] for name in ("anl_ce", "jal_ce", "nce_rce")}
    assert (settings["anl_ce"].weight_decay, settings["anl_ce"].l1) == (0.0, 5e-5)
    assert settings["jal_ce"].weight_decay == 0.0 and settings["nce_rce"] == TrainingSettings()
    assert resolve_loss({"name": "jal_ce", "weight_decay": 1e-4}, K)[1].weight_decay == 1e-4


def test_dmi_comes_with_a_ce_warm_up_and_its_own_lr_for_the_trainer():
    z, y = batch()
    loss, settings = resolve_loss({"name": "dmi", "warmup_epochs": 2, "lr": 1e-6}, K)
    assert not loss.per_sample
    with pytest.raises(TypeError):
        loss.values(z, y)
    assert [settings.in_warmup(e) for e in (0, 1, 2, 30)] == [True, True, False, False]
    assert [settings.fixed_lr(e) for e in (0, 1, 2, 30)] == [None, None, 1e-6, 1e-6]
    torch.testing.assert_close(loss(z, y), ref_dmi(z, y, 1e-3))  # the loss itself is always DMI
    assert not TrainingSettings().staged and TrainingSettings().fixed_lr(5) is None


def test_dmi_without_a_class_in_the_batch_has_det_0_and_no_gradient():
    z, y = batch()
    y = y % (K - 1)  # class K - 1 is missing: Y^T P has a zero row
    assert torch.det(onehot(z, y).T @ probs(z)) == 0
    loss = build_loss({"name": "dmi", "warmup_epochs": 0}, K)
    z.requires_grad_()
    value = loss(z, y)
    value.backward()
    assert value.item() == pytest.approx(-math.log(1e-3))
    assert (z.grad == 0).all()


def test_probability_that_a_batch_holds_every_class():
    from fractions import Fraction

    from noisybench.losses.dmi import probability_of_every_class

    def inclusion_exclusion(n, k):
        return float(sum((-1) ** j * math.comb(k, j) * Fraction(k - j, k) ** n for j in range(k + 1)))

    assert probability_of_every_class(10, 10) == pytest.approx(math.factorial(10) / 10**10, rel=1e-12)
    assert probability_of_every_class(9, 10) == 0 and probability_of_every_class(3, 1) == 1
    for n, k in ((128, 100), (128, 10), (40, 10), (256, 100)):
        assert probability_of_every_class(n, k) == pytest.approx(inclusion_exclusion(n, k), rel=1e-9)
    assert probability_of_every_class(128, 100) == pytest.approx(1.5036e-22, rel=1e-4)


def test_dmi_warns_when_batches_are_too_small_to_hold_every_class():
    many = build_loss({"name": "dmi"}, 100).batch_size_warning(128)
    assert "a batch of 128 holds all 100 classes with probability 1.5e-22" in many
    assert "no gradient" in many
    assert build_loss({"name": "dmi"}, 10).batch_size_warning(128) is None  # 1 - 1.4e-5
    assert "probability 0.07 " in build_loss({"name": "dmi"}, 10).batch_size_warning(16)
    assert "cannot hold all 10 classes" in build_loss({"name": "dmi"}, 10).batch_size_warning(9)
    assert all(build_loss({"name": name}, 100).batch_size_warning(2) is None for name in LOSSES.names() if name != "dmi")


def default_loss_value(name, z, y):
    """``name`` with its defaults on ``z``, ``y``."""
    return build(name)(z, y)


@pytest.mark.parametrize("name", LOSSES.names())
def test_no_loss_reads_a_tensor_back_to_the_host(name):
    """The trainer never waits for the device within an epoch; a loss must not either."""
    z, y = batch()
    z.requires_grad_()
    default_loss_value(name, z, y).backward()  # a first call: lazily built state is not counted
    with HostReads() as host:
        default_loss_value(name, z, y).backward()
    assert host.reads == []


@pytest.mark.parametrize("name", LOSSES.names())
def test_every_loss_runs_where_its_logits_are(name):
    """On the meta device, which refuses a CPU operand as a GPU does (but for 0-dim ones): a
    loss that left a tensor of its own on the CPU would fail here as it would on a GPU."""
    z = torch.empty(16, K, device="meta", requires_grad=True)
    y = torch.empty(16, dtype=torch.long, device="meta")
    value = default_loss_value(name, z, y)
    value.backward()
    assert value.device.type == z.grad.device.type == "meta" and z.grad.shape == z.shape


def test_dmi_gradient_is_autograds_of_the_codes_formula():
    loss = build_loss({"name": "dmi", "warmup_epochs": 0}, K)
    z, y = batch()
    z.requires_grad_()
    torch.autograd.gradcheck(lambda logits: loss(logits, y), (z,))
    value = loss(z, y)
    torch.testing.assert_close(value, ref_dmi(z, y, 1e-3))
    grad, = torch.autograd.grad(value, z)
    want, = torch.autograd.grad(ref_dmi(z, y, 1e-3), z)
    torch.testing.assert_close(grad, want)


# ----------------------------------------------------------------------------------------------
# trainer.compile=true: the loss function through torch.compile
# ----------------------------------------------------------------------------------------------

def test_every_loss_traces_as_one_graph_with_the_same_values_and_gradients():
    """dynamo's tracing alone (a backend that counts the graphs and runs them as traced;
    ``fullgraph``: a graph break fails): what inductor fuses is the whole loss function."""
    graphs = []

    def counting(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    z, y = batch()
    for name in LOSSES.names():
        loss = build(name)
        traced = torch.compile(loss.function, backend=counting, fullgraph=True, dynamic=False)
        results = []
        for fn in (loss.function, traced):
            logits = z.clone().requires_grad_()
            value = fn(logits, y, **loss.hyperparameters)
            value.sum().backward()
            results.append((value.detach(), logits.grad))
        (value, grad), (traced_value, traced_grad) = results
        torch.testing.assert_close(traced_value, value, rtol=1e-12, atol=0, msg=name)
        torch.testing.assert_close(traced_grad, grad, rtol=1e-12, atol=1e-15, msg=name)
    assert len(graphs) == len(LOSSES.names())


@pytest.mark.skipif(cxx_compiler() is None, reason="inductor needs a C++ compiler on the CPU")
# LDR-KL's per-sample value is lam * (log mean_k exp(d_k / lam) + max), a difference near 0 of
# two numbers near log K = 2.3, where a float32 rounding is 2.4e-7: two of them, times lam = 10.
@pytest.mark.parametrize("name, value_atol", [("nnfl", 1e-6), ("ldr_kl", 2 * 2.4e-7 * 10)])
def test_compiled_loss_matches_eager_in_float32(name, value_atol):
    g = torch.Generator().manual_seed(1)
    z, y = 3 * torch.randn(32, 10, generator=g), torch.arange(32) % 10
    eager, compiled = build_loss({"name": name}, 10), build_loss({"name": name}, 10)
    compiled.compile()
    assert compiled.fn is not compiled.function
    for reduce in (True, False):
        grads = []
        for loss in (eager, compiled):
            logits = z.clone().requires_grad_()
            value = loss(logits, y) if reduce else loss.values(logits, y)
            value.sum().backward()
            grads.append((value.detach(), logits.grad))
        (v0, g0), (v1, g1) = grads
        torch.testing.assert_close(v1, v0, rtol=1e-5, atol=value_atol)
        torch.testing.assert_close(g1, g0, rtol=1e-4, atol=1e-7)


# ----------------------------------------------------------------------------------------------
# The registry table and the YAMLs
# ----------------------------------------------------------------------------------------------

def test_registry_table_lists_every_loss(capsys):
    from noisybench.losses.__main__ import main

    assert main([]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert sorted(rows) == LOSSES.names()
    assert "symmetric" in rows["nce"] and "q=0.7" in rows["gce"] and "ALFs" in rows["nce_agce"]
    assert rows["ce"].split()[2] == "no" and rows["mae"].split()[2] == "yes"


def test_registry_table_runs_as_a_module():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "noisybench.losses", "--presets"], capture_output=True, text=True,
                         check=True).stdout
    from noisybench.losses import preset_names

    assert all(f"\n{name}" in "\n" + out for name in preset_names())


def test_step_benchmark_prints_each_losss_ratio_to_the_ce_step_and_flags_those_above_the_limit():
    run = run_script("bench_loss_steps.py", "--only", "ce", "anl_ce", "--rounds", "2", "--repeats", "1",
                     "--limit", "0.01")
    lines = run.stdout.splitlines()
    assert lines[0].startswith("cnn4 training step, batch 128 of 1 x 28 x 28, 10 classes"), run.stderr
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:4]}
    assert sorted(rows) == ["anl_ce", "ce"] and all(row[4:] == [">", "0.01x"] for row in rows.values())
    assert run.returncode == 1 and lines[-1] == "above 0.01x the CE step: ce, anl_ce"
    bad = run_script("bench_loss_steps.py", "--only", "cee")
    assert bad.returncode == 2 and "unknown loss 'cee' (did you mean 'ce'?)" in bad.stderr


CONF = Path(__file__).resolve().parents[1] / "conf" / "loss"
# Constants that silently change results: set explicitly in the YAMLs, not left to a default.
EXPLICIT_CONSTANTS = {"label_clamp", "mae_scale", "class_reduction", "det_offset"}


def number(value) -> str:
    return f"{value:g}".replace("e-0", "e-").replace("e+0", "e+") if isinstance(value, float) else str(value)


@pytest.mark.parametrize("name", LOSSES.names())
def test_yaml_names_every_option_and_builds(name):
    text = (CONF / f"{name}.yaml").read_text()
    cfg = yaml.safe_load(text)
    assert cfg["name"] == name
    assert set(cfg) == {"name", *loss_options(name)}
    assert cfg["preset"] is None and cfg["weight_decay"] is None
    meta = LOSSES.meta(name)
    lines = text.splitlines()
    comment = ""
    for line in lines:
        if line.startswith("#"):
            comment += line
            continue
        key = line.split(":")[0]
        assert comment, f"{name}.yaml: '{key}' has no comment"
        if key in meta["params"] and cfg[key] is None:  # the comment states the default
            assert f"null: {number(meta['defaults'][key])}" in comment, f"{name}.yaml: {key}"
        comment = ""
    for key in EXPLICIT_CONSTANTS & set(meta["params"]):
        assert cfg[key] == meta["defaults"][key], f"{name}.yaml: {key}"
    loss = build_loss(cfg, K)
    assert loss.params == {"preset": None, **meta["defaults"], "weight_decay": meta["weight_decay"]}


def test_yaml_constants_match_the_official_code():
    load = lambda n: yaml.safe_load((CONF / f"{n}.yaml").read_text())  # noqa: E731
    for name in ("rce", "sce", "nce_rce", "nfl_rce", "ngce_rce"):
        assert -math.log(load(name)["label_clamp"]) == pytest.approx(LOG_1E4)  # not 4 (log10)
    for name in ("nce_mae", "nfl_mae", "ngce_mae"):
        assert load(name)["mae_scale"] == 1.0  # MAELoss(scale=beta)
    for name in ("ce_eps_mae", "fl_eps_mae"):
        assert load(name)["mae_scale"] == 2.0  # MAELoss() inside ECEandMAE / EFLandMAE
    for name in ("amse", "jal_ce", "jal_fl"):
        assert load(name)["class_reduction"] == "mean"


FAKE_APL = '''
import mlconfig
import torch
import torch.nn.functional as F


@mlconfig.register
class NormalizedCrossEntropy(torch.nn.Module):
    def __init__(self, num_classes, scale=1.0):
        super().__init__()
        self.scale = scale

    def forward(self, pred, labels):
        logp = F.log_softmax(pred, dim=1)
        return self.scale * (logp.gather(1, labels[:, None]).squeeze(1) / logp.sum(dim=1)).mean()


@mlconfig.register
class ReverseCrossEntropy(torch.nn.Module):
    """With the papers' text's log 0 = -4 instead of the code's log 1e-4."""
    def __init__(self, num_classes, scale=1.0):
        super().__init__()
        self.scale = scale

    def forward(self, pred, labels):
        p = F.softmax(pred, dim=1).clamp(min=1e-7, max=1.0)
        return self.scale * (4.0 * (1 - p.gather(1, labels[:, None]).squeeze(1))).mean()
'''


def test_official_code_check_runs_the_given_code_and_flags_a_different_loss(tmp_path):
    """scripts/check_official_losses.py against a stand-in for APL's loss.py: its NCE is APL's,
    its RCE uses the papers' -4 for log 0; the other APL classes are missing from it."""
    (tmp_path / "loss.py").write_text(FAKE_APL)
    run = run_script("check_official_losses.py", "--apl", str(tmp_path))
    assert run.returncode == 1, run.stderr
    rows = {line.split()[0]: line for line in run.stdout.splitlines()[2:]}
    nce_errors = [float(v) for v in rows["nce"].split()[-4:]]
    assert max(nce_errors) < 1e-6 and "DIFFERS" not in rows["nce"]
    assert rows["rce"].endswith("DIFFERS") and "not in this checkout" in rows["sce"]
    assert "differ from the official code: rce" in run.stdout
    assert "not checked here" in run.stdout and "agce" in run.stdout.splitlines()[-2]
