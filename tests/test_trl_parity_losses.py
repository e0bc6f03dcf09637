"""Our losses equal TRL 1.16's on the same tiny GPT-2 and the same collated batch (to 1e-5).

TRL builds the batch (its tokenisation, its collator); we convert it to our six-key format with the same token
ids, run :func:`dpo_teach.logprobs.concatenated_forward` for the policy and the reference, apply our loss, and
compare the batch mean with TRL's ``compute_loss`` - and the metrics TRL logs with ours.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from trl_reference import (
    build_cpo_trainer,
    build_dpo_trainer,
    build_orpo_trainer,
    policy_and_reference,
    tiny_tokenizer,
    trl_batch_to_ours,
    trl_collate,
    trl_dpo_loss,
    trl_pairwise_loss,
)

from dpo_teach import losses
from dpo_teach.logprobs import concatenated_forward

pytestmark = pytest.mark.filterwarnings("ignore")  # TRL's experimental-API and deprecation warnings

TOL = {"rtol": 0, "atol": 1e-5}


@pytest.fixture(scope="module")
def setup():
    tokenizer = tiny_tokenizer()
    policy, reference = policy_and_reference(tokenizer, seed=0, perturb=0.2)
    return tokenizer, policy, reference


def forward(model, batch, average=False):
    with torch.no_grad():
        return concatenated_forward(model, batch, average=average)


@pytest.mark.parametrize(
    ("loss_type", "config", "kwargs"),
    [
        ("sigmoid", {"beta": 0.1}, {}),
        ("sigmoid", {"beta": 2.0}, {}),
        ("hinge", {"beta": 0.5}, {}),
        ("ipo", {"beta": 0.3}, {}),
        ("robust", {"beta": 0.2, "label_smoothing": 0.2}, {"label_smoothing": 0.2}),
    ],
)
def test_dpo_family_matches_trl(setup, tmp_path, loss_type, config, kwargs):
    tokenizer, policy, reference = setup
    trainer = build_dpo_trainer(policy, reference, tokenizer, tmp_path, loss_type=[loss_type], **config)
    trl_batch = trl_collate(trainer)
    trl_loss, metrics = trl_dpo_loss(trainer, trl_batch)

    batch = trl_batch_to_ours(trl_batch)
    pol, ref = forward(policy, batch), forward(reference, batch)
    if loss_type == "ipo":  # TRL length-normalises IPO's log-ratios
        kwargs = {"chosen_lengths": pol.chosen_lengths, "rejected_lengths": pol.rejected_lengths}
    ours, chosen_rewards, rejected_rewards = losses.get_loss(loss_type)(
        pol.chosen_logps,
        pol.rejected_logps,
        ref.chosen_logps,
        ref.rejected_logps,
        beta=config["beta"],
        **kwargs,
    )
    torch.testing.assert_close(ours.mean(), torch.tensor(trl_loss), **TOL)
    assert abs(trl_loss - 0.0) > 1e-3  # a non-trivial value (policy ≠ reference)
    torch.testing.assert_close(chosen_rewards.mean().item(), metrics["rewards/chosen"], **TOL)
    torch.testing.assert_close(rejected_rewards.mean().item(), metrics["rewards/rejected"], **TOL)
    torch.testing.assert_close(
        (chosen_rewards - rejected_rewards).mean().item(), metrics["rewards/margins"], **TOL
    )
    torch.testing.assert_close(
        (chosen_rewards > rejected_rewards).float().mean().item(), metrics["rewards/accuracies"], **TOL
    )
    torch.testing.assert_close(pol.chosen_logps.mean().item(), metrics["logps/chosen"], **TOL)
    torch.testing.assert_close(pol.rejected_logps.mean().item(), metrics["logps/rejected"], **TOL)
    for side in ("chosen", "rejected"):  # TRL's batch value: a token-weighted mean of the per-row means
        lengths = getattr(pol, f"{side}_lengths")
        batch_mean = (getattr(pol, f"mean_{side}_logits") * lengths).sum() / lengths.sum()
        torch.testing.assert_close(batch_mean.item(), metrics[f"logits/{side}"], **TOL)


def test_trl_sigmoid_ignores_label_smoothing(setup, tmp_path):
    """TRL 1.16's "sigmoid" with label_smoothing = 0.2 is plain DPO, not cDPO: cDPO is ours with ε > 0 only."""
    tokenizer, policy, reference = setup
    trainer = build_dpo_trainer(
        policy, reference, tokenizer, tmp_path, loss_type=["sigmoid"], beta=0.5, label_smoothing=0.2
    )
    trl_batch = trl_collate(trainer)
    trl_loss, _ = trl_dpo_loss(trainer, trl_batch)
    batch = trl_batch_to_ours(trl_batch)
    pol, ref = forward(policy, batch), forward(reference, batch)
    logps = (pol.chosen_logps, pol.rejected_logps, ref.chosen_logps, ref.rejected_logps)
    plain = losses.dpo_loss(*logps, beta=0.5)[0].mean()
    cdpo = losses.dpo_loss(*logps, beta=0.5, label_smoothing=0.2)[0].mean()
    torch.testing.assert_close(plain, torch.tensor(trl_loss), **TOL)
    assert abs(cdpo.item() - trl_loss) > 1e-3  # the smoothing would have changed the value


def test_orpo_matches_trl(setup, tmp_path):
    tokenizer, policy, _ = setup
    beta = 0.25
    trainer = build_orpo_trainer(policy, tokenizer, tmp_path, beta=beta)
    batch = {k: v for k, v in trl_collate(trainer).items() if isinstance(v, torch.Tensor)}
    trl_loss, metrics = trl_pairwise_loss(trainer, batch)

    pol = forward(policy, batch, average=True)
    # TRL's NLL term: one token-mean cross-entropy over prompt AND response tokens of the chosen rows
    with torch.no_grad():
        logits = policy(
            input_ids=batch["chosen_input_ids"], attention_mask=batch["chosen_attention_mask"]
        ).logits
    targets = batch["chosen_input_ids"].masked_fill(batch["chosen_attention_mask"] == 0, -100)[:, 1:]
    nll = F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100
    )
    ours, chosen_rewards, rejected_rewards = losses.orpo_loss(
        pol.chosen_logps, pol.rejected_logps, beta=beta, chosen_nll=nll
    )
    torch.testing.assert_close(ours.mean(), torch.tensor(trl_loss), **TOL)
    torch.testing.assert_close(nll.item(), metrics["nll_loss"], **TOL)
    torch.testing.assert_close(chosen_rewards.mean().item(), metrics["rewards/chosen"], **TOL)
    torch.testing.assert_close(rejected_rewards.mean().item(), metrics["rewards/rejected"], **TOL)
    # and the odds-ratio term alone, with our default (response-only) NLL removed
    default, _, _ = losses.orpo_loss(pol.chosen_logps, pol.rejected_logps, beta=beta)
    torch.testing.assert_close(
        ((default + pol.chosen_logps) / beta).mean().item(), -metrics["log_odds_ratio"], **TOL
    )


@pytest.mark.parametrize(("beta", "gamma"), [(2.0, 1.0), (0.5, 0.0)])
def test_simpo_matches_trl_cpo(setup, tmp_path, beta, gamma):
    tokenizer, policy, _ = setup
    trainer = build_cpo_trainer(
        policy, tokenizer, tmp_path, loss_type="simpo", cpo_alpha=0.0, beta=beta, simpo_gamma=gamma
    )
    batch = {k: v for k, v in trl_collate(trainer).items() if isinstance(v, torch.Tensor)}
    trl_loss, metrics = trl_pairwise_loss(trainer, batch)

    pol = forward(policy, batch, average=True)
    ours, chosen_rewards, rejected_rewards = losses.simpo_loss(
        pol.chosen_logps, pol.rejected_logps, beta=beta, gamma=gamma
    )
    torch.testing.assert_close(ours.mean(), torch.tensor(trl_loss), **TOL)
    torch.testing.assert_close(chosen_rewards.mean().item(), metrics["rewards/chosen"], **TOL)
    torch.testing.assert_close(rejected_rewards.mean().item(), metrics["rewards/rejected"], **TOL)
