"""Every loss against an independent scalar formula (plain ``math`` loops), over shapes, β, signs and extremes.

The references below are written from the papers' equations, one example at a time, in float64 ``math`` -
not with the torch expressions of :mod:`dpo_teach.losses` - so a sign, a misplaced β or a missing factor
shows up as a mismatch.
"""

from __future__ import annotations

import inspect
import math

import pytest
import torch

from dpo_teach import losses
from dpo_teach.theory import dpo_gradient_weight

SHAPES = [(), (1,), (7,), (3, 4)]
BETAS = [1e-3, 0.1, 1.0, 10.0]


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def sigmoid(x: float) -> float:
    return math.exp(log_sigmoid(x))


def draws(shape, seed, scale=5.0, negative=False):
    gen = torch.Generator().manual_seed(seed)
    out = [scale * torch.randn(shape, generator=gen, dtype=torch.float64) for _ in range(4)]
    return [-(x.abs()) for x in out] if negative else out


def elementwise(fn, *tensors):
    flat = [t.reshape(-1).tolist() for t in tensors]
    return torch.tensor([fn(*vals) for vals in zip(*flat, strict=True)], dtype=torch.float64).reshape(
        tensors[0].shape
    )


def margin(pw, pl, rw, rl):
    return (pw - rw) - (pl - rl)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("beta", BETAS)
@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_dpo_matches_formula(shape, beta, eps):
    pw, pl, rw, rl = draws(shape, seed=len(shape) + int(beta * 100))
    got, chosen_rewards, rejected_rewards = losses.dpo_loss(pw, pl, rw, rl, beta=beta, label_smoothing=eps)
    want = elementwise(
        lambda a, b, c, d: (
            -(1 - eps) * log_sigmoid(beta * margin(a, b, c, d))
            - eps * log_sigmoid(-beta * margin(a, b, c, d))
        ),
        pw,
        pl,
        rw,
        rl,
    )
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(chosen_rewards, elementwise(lambda a, c: beta * (a - c), pw, rw))
    torch.testing.assert_close(rejected_rewards, elementwise(lambda b, d: beta * (b - d), pl, rl))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("beta", BETAS)
def test_ipo_summed_matches_formula(shape, beta):
    pw, pl, rw, rl = draws(shape, seed=11)
    got, cr, rr = losses.ipo_loss(pw, pl, rw, rl, beta=beta)
    want = elementwise(lambda a, b, c, d: (margin(a, b, c, d) - 1 / (2 * beta)) ** 2, pw, pl, rw, rl)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(cr, elementwise(lambda a, c: beta * (a - c), pw, rw))


@pytest.mark.parametrize("beta", BETAS)
def test_ipo_length_normalised_matches_formula(beta):
    pw, pl, rw, rl = draws((6,), seed=12)
    gen = torch.Generator().manual_seed(3)
    lw, ll = torch.randint(1, 20, (6,), generator=gen), torch.randint(1, 20, (6,), generator=gen)
    got, _, _ = losses.ipo_loss(pw, pl, rw, rl, beta=beta, chosen_lengths=lw, rejected_lengths=ll)
    want = [
        ((a - c) / n - (b - d) / m - 1 / (2 * beta)) ** 2
        for a, b, c, d, n, m in zip(*(t.tolist() for t in (pw, pl, rw, rl, lw, ll)), strict=True)
    ]
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("beta", BETAS)
def test_hinge_matches_formula(shape, beta):
    pw, pl, rw, rl = draws(shape, seed=13, scale=1 / beta)  # margins on both sides of the hinge at 1/β
    got, _, _ = losses.hinge_loss(pw, pl, rw, rl, beta=beta)
    want = elementwise(lambda a, b, c, d: max(0.0, 1 - beta * margin(a, b, c, d)), pw, pl, rw, rl)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert bool((got == 0).any()) or shape in [(), (1,)]  # some margins exceed 1/β: the hinge is flat there


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("beta", BETAS)
@pytest.mark.parametrize("eps", [0.0, 0.2, 0.45])
def test_robust_matches_formula(shape, beta, eps):
    pw, pl, rw, rl = draws(shape, seed=14)
    got, _, _ = losses.robust_loss(pw, pl, rw, rl, beta=beta, label_smoothing=eps)

    def robust(a, b, c, d):
        h = beta * margin(a, b, c, d)
        return ((1 - eps) * -log_sigmoid(h) - eps * -log_sigmoid(-h)) / (1 - 2 * eps)

    torch.testing.assert_close(got, elementwise(robust, pw, pl, rw, rl), rtol=1e-12, atol=1e-12)


def test_robust_is_unbiased_under_label_flips():
    """E over a flip with probability ε of the robust loss = the clean DPO loss (Chowdhury et al., Lemma 3.1)."""
    pw, pl, rw, rl = draws((9,), seed=15)
    eps, beta = 0.3, 0.7
    kept, _, _ = losses.robust_loss(pw, pl, rw, rl, beta=beta, label_smoothing=eps)
    flipped, _, _ = losses.robust_loss(pl, pw, rl, rw, beta=beta, label_smoothing=eps)
    clean, _, _ = losses.dpo_loss(pw, pl, rw, rl, beta=beta)
    torch.testing.assert_close((1 - eps) * kept + eps * flipped, clean)


@pytest.mark.parametrize("beta", BETAS)
@pytest.mark.parametrize("weights", [(1.0, 1.0), (1.5, 0.5)])
@pytest.mark.parametrize("kl_sign", [1.0, -1.0])
def test_kto_matches_formula(beta, weights, kl_sign):
    gen = torch.Generator().manual_seed(16)
    policy, ref = (3 * torch.randn(8, generator=gen, dtype=torch.float64) for _ in range(2))
    labels = torch.tensor([True, False, True, True, False, False, True, False])
    kl_policy = torch.randn(8, generator=gen, dtype=torch.float64) + kl_sign
    kl_ref = torch.randn(8, generator=gen, dtype=torch.float64)
    lam_d, lam_u = weights
    got, chosen_rewards, rejected_rewards = losses.kto_loss(
        policy, ref, labels, kl_policy, kl_ref, beta=beta, desirable_weight=lam_d, undesirable_weight=lam_u
    )
    diffs = [a - b for a, b in zip(kl_policy.tolist(), kl_ref.tolist(), strict=True)]
    z = max(0.0, sum(diffs) / len(diffs))
    want, want_chosen, want_rejected = [], [], []
    for p, r, desirable in zip(policy.tolist(), ref.tolist(), labels.tolist(), strict=True):
        if desirable:
            want.append(lam_d * (1 - sigmoid(beta * ((p - r) - z))))
            want_chosen.append(beta * (p - r))
        else:
            want.append(lam_u * (1 - sigmoid(beta * (z - (p - r)))))
            want_rejected.append(beta * (p - r))
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(chosen_rewards, torch.tensor(want_chosen, dtype=torch.float64))
    torch.testing.assert_close(rejected_rewards, torch.tensor(want_rejected, dtype=torch.float64))


def test_kto_reference_point_is_detached_and_clamped():
    kl_policy = torch.tensor([-3.0, -1.0], requires_grad=True)
    z = losses.kto_reference_point(kl_policy, torch.zeros(2))
    assert float(z) == 0.0 and not z.requires_grad
    z = losses.kto_reference_point(kl_policy + 5, torch.zeros(2))
    assert float(z) == pytest.approx(3.0) and not z.requires_grad


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("beta", [0.05, 0.1, 1.0])
def test_orpo_matches_formula(shape, beta):
    _, _, aw, al = draws(shape, seed=17, scale=2.0, negative=True)
    aw, al = aw - 1e-3, al - 1e-3
    got, cr, rr = losses.orpo_loss(aw, al, beta=beta)

    def orpo(a_w, a_l):
        odds_w = math.exp(a_w) / (1 - math.exp(a_w))
        odds_l = math.exp(a_l) / (1 - math.exp(a_l))
        return -a_w - beta * math.log(odds_w / (odds_w + odds_l))  # log σ(log(o_w/o_l)) = log(o_w/(o_w+o_l))

    torch.testing.assert_close(got, elementwise(orpo, aw, al), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(cr, beta * aw)
    torch.testing.assert_close(rr, beta * al)


def test_orpo_custom_nll_and_certain_response_stays_finite():
    aw, al = torch.tensor([0.0, -0.5]), torch.tensor([-2.0, 0.0])
    got, _, _ = losses.orpo_loss(aw, al, beta=0.1, chosen_nll=torch.tensor(1.5))
    assert bool(torch.isfinite(got).all())
    base, _, _ = losses.orpo_loss(aw, al, beta=0.1)
    torch.testing.assert_close(got - base, 1.5 + aw)  # only the NLL term changed: 1.5 instead of −aw


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("beta", [0.5, 2.0, 10.0])
@pytest.mark.parametrize("gamma", [0.0, 1.0, 3.0])
def test_simpo_matches_formula(shape, beta, gamma):
    _, _, aw, al = draws(shape, seed=18, scale=2.0, negative=True)
    got, cr, _ = losses.simpo_loss(aw, al, beta=beta, gamma=gamma)
    want = elementwise(lambda a, b: -log_sigmoid(beta * a - beta * b - gamma), aw, al)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(cr, beta * aw)


@pytest.mark.parametrize("name", ["sigmoid", "robust", "ipo", "hinge"])
def test_extreme_margins_stay_finite(name):
    big = torch.tensor([1e3, -1e3, 0.0], dtype=torch.float32)
    zero = torch.zeros(3)
    out, _, _ = losses.get_loss(name)(big, zero, zero, zero, beta=10.0)
    assert bool(torch.isfinite(out).all())
    if name == "sigmoid":
        torch.testing.assert_close(out, torch.tensor([0.0, 1e4, math.log(2)]))


@pytest.mark.parametrize("beta", [0.01, 0.1, 2.0])
def test_dpo_gradient_is_minus_beta_sigma(beta):
    """∂L/∂log π(y_w) = −β σ(r̂_l − r̂_w), ∂L/∂log π(y_l) = +β σ(r̂_l − r̂_w) (DPO paper, Sec. 4)."""
    pw, pl, rw, rl = draws((10,), seed=19)
    pw, pl = pw.requires_grad_(), pl.requires_grad_()
    loss, _, _ = losses.dpo_loss(pw, pl, rw, rl, beta=beta)
    grad_w, grad_l = torch.autograd.grad(loss.sum(), (pw, pl))
    weight = elementwise(
        lambda a, b, c, d: sigmoid(beta * (b - d) - beta * (a - c)), pw.detach(), pl.detach(), rw, rl
    )
    torch.testing.assert_close(grad_w, -beta * weight, rtol=0, atol=1e-6)
    torch.testing.assert_close(grad_l, beta * weight, rtol=0, atol=1e-6)
    torch.testing.assert_close(
        weight, dpo_gradient_weight(pw.detach(), pl.detach(), rw, rl, beta), rtol=0, atol=1e-12
    )


def test_registry_metadata_and_calls():
    assert set(losses.LOSSES) == {"sigmoid", "ipo", "hinge", "robust", "kto", "orpo", "simpo"}
    assert [n for n, s in losses.LOSSES.items() if not s.needs_reference] == ["orpo", "simpo"]
    assert [n for n, s in losses.LOSSES.items() if s.length_normalized] == ["orpo", "simpo"]
    assert [n for n, s in losses.LOSSES.items() if not s.paired] == ["kto"]
    pw, pl, rw, rl = draws((4,), seed=20)
    torch.testing.assert_close(
        losses.get_loss("sigmoid")(pw, pl, rw, rl)[0], losses.dpo_loss(pw, pl, rw, rl)[0]
    )


def test_only_ipo_divides_by_the_lengths_itself():
    assert [n for n, s in losses.LOSSES.items() if s.takes_lengths] == ["ipo"]


def test_robust_is_unbounded_below_on_one_pair():
    """On a pair that always wins the robust loss falls like −βεh/(1 − 2ε): no minimum, a constant pull."""
    beta, eps = 0.5, 0.1
    h = torch.tensor([50.0, 100.0, 200.0], dtype=torch.float64, requires_grad=True)
    zeros = torch.zeros_like(h)
    loss, _, _ = losses.robust_loss(h, zeros, zeros, zeros, beta=beta, label_smoothing=eps)
    (grad,) = torch.autograd.grad(loss.sum(), h)
    slope = -beta * eps / (1 - 2 * eps)
    assert loss[2] < loss[1] < loss[0] < 0
    torch.testing.assert_close(grad, torch.full_like(h, slope))  # the pull never decays
    assert abs((loss[2] - loss[1]).item() / 100 - slope) < 1e-12


def test_orpo_cap_zeroes_only_the_odds_gradient_above_it():
    """Below ORPO_MAX_LOGP the loss has the uncapped formula's gradient; above it only the NLL term's."""
    cap = losses.ORPO_MAX_LOGP
    aw = torch.tensor([-0.5, cap / 10], dtype=torch.float64, requires_grad=True)  # below, above the cap
    al = torch.tensor([-2.0, -2.0], dtype=torch.float64)
    loss, _, _ = losses.orpo_loss(aw, al, beta=0.3)
    (grad,) = torch.autograd.grad(loss.sum(), aw)
    # uncapped: d/da [−a − λ log σ(a − log(1 − e^a) − c)] = −1 − λ σ(−z) (1 + e^a/(1 − e^a))
    a = aw[0].item()
    z = a - math.log1p(-math.exp(a)) - (-2.0 - math.log1p(-math.exp(-2.0)))
    uncapped = -1 - 0.3 * sigmoid(-z) * (1 + math.exp(a) / (1 - math.exp(a)))
    assert grad[0].item() == pytest.approx(uncapped, rel=1e-9)
    assert grad[1].item() == -1.0  # only the NLL term −a is left


# --- bad inputs: one clear error per case ----------------------------------------------------------------------

GOOD = torch.tensor([-1.0, -2.0])


def call_dpo(**overrides):
    kwargs = dict(
        policy_chosen_logps=GOOD, policy_rejected_logps=GOOD, ref_chosen_logps=GOOD, ref_rejected_logps=GOOD
    )
    kwargs.update(overrides)
    return losses.dpo_loss(**kwargs)


@pytest.mark.parametrize(
    ("overrides", "error", "pattern"),
    [
        ({"policy_chosen_logps": [-1.0, -2.0]}, TypeError, "policy_chosen_logps must be a torch.Tensor"),
        (
            {"ref_rejected_logps": torch.tensor([1, 2])},
            TypeError,
            "ref_rejected_logps must have a floating dtype",
        ),
        ({"policy_rejected_logps": torch.zeros(3)}, ValueError, "shapes differ"),
        (
            {"ref_chosen_logps": torch.tensor([float("nan"), 0.0])},
            ValueError,
            "ref_chosen_logps contains NaN",
        ),
        (
            {"policy_chosen_logps": torch.tensor([-float("inf"), 0.0])},
            ValueError,
            "policy_chosen_logps contains inf",
        ),
        ({"beta": 0.0}, ValueError, "beta must be a finite number > 0"),
        ({"beta": -0.1}, ValueError, "beta must be a finite number > 0"),
        ({"beta": float("nan")}, ValueError, "beta must be a finite number > 0"),
        ({"beta": "0.1"}, TypeError, "beta must be a positive number"),
        ({"label_smoothing": 0.5}, ValueError, r"label_smoothing must be in \[0, 0.5\)"),
        ({"label_smoothing": -0.1}, ValueError, r"label_smoothing must be in \[0, 0.5\)"),
    ],
)
def test_dpo_bad_input(overrides, error, pattern):
    with pytest.raises(error, match=pattern):
        call_dpo(**overrides)


def test_robust_label_smoothing_half_is_rejected():
    with pytest.raises(ValueError, match="label_smoothing"):
        losses.robust_loss(GOOD, GOOD, GOOD, GOOD, label_smoothing=0.5)


def test_ipo_needs_both_lengths():
    with pytest.raises(ValueError, match="both chosen_lengths and rejected_lengths"):
        losses.ipo_loss(GOOD, GOOD, GOOD, GOOD, chosen_lengths=torch.tensor([1, 2]))


def test_ipo_zero_length_is_rejected():
    with pytest.raises(ValueError, match="chosen_lengths must have shape"):
        losses.ipo_loss(
            GOOD, GOOD, GOOD, GOOD, chosen_lengths=torch.tensor([0, 2]), rejected_lengths=torch.tensor([1, 1])
        )


def test_ipo_float_lengths_are_rejected():
    with pytest.raises(TypeError, match="rejected_lengths must be a torch.Tensor"):
        losses.ipo_loss(GOOD, GOOD, GOOD, GOOD, chosen_lengths=torch.tensor([1, 2]), rejected_lengths=[1, 1])


def test_kto_labels_must_be_bool():
    with pytest.raises(TypeError, match="labels must be a bool torch.Tensor"):
        losses.kto_loss(GOOD, GOOD, torch.tensor([1, 0]), GOOD, GOOD)


def test_kto_labels_shape_must_match():
    with pytest.raises(ValueError, match="labels shape"):
        losses.kto_loss(GOOD, GOOD, torch.tensor([True]), GOOD, GOOD)


def test_kto_needs_mismatched_pairs():
    with pytest.raises(ValueError, match="kl_policy_logps is empty"):
        losses.kto_loss(GOOD, GOOD, torch.tensor([True, False]), torch.zeros(0), torch.zeros(0))


def test_kto_weights_must_be_positive():
    with pytest.raises(ValueError, match="undesirable_weight must be a finite number > 0"):
        losses.kto_loss(GOOD, GOOD, torch.tensor([True, False]), GOOD, GOOD, undesirable_weight=0.0)


def test_orpo_positive_logps_are_rejected():
    with pytest.raises(ValueError, match="policy_rejected_logps has positive entries"):
        losses.orpo_loss(GOOD, torch.tensor([0.5, -1.0]))


def test_simpo_negative_gamma_is_rejected():
    with pytest.raises(ValueError, match="gamma must be a finite number >= 0"):
        losses.simpo_loss(GOOD, GOOD, gamma=-1.0)


def test_get_loss_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError, match=r"unknown loss 'dpo\+\+'; choose one of \['hinge', 'ipo', 'kto'"):
        losses.get_loss("dpo++")


def test_dpo_is_an_alias_of_sigmoid():
    assert losses.get_loss("dpo") is losses.LOSSES["sigmoid"]
    assert "dpo" not in losses.LOSSES  # an alias, not a second entry (tables list each loss once)


def test_declared_options_are_arguments_of_the_loss_function():
    """The registry declares what the step may pass; every declared name must be a parameter of the function."""
    for spec in losses.LOSSES.values():
        params = set(inspect.signature(spec.fn).parameters)
        assert set(spec.options) <= params, spec.name
        assert spec.label_smoothing == ("label_smoothing" in params), spec.name
        assert spec.takes_lengths == ("chosen_lengths" in params and "rejected_lengths" in params), spec.name
