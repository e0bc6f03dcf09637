"""One training step of this DPOTrainer and of TRL's DPOTrainer (imported as a reference) on the same tiny
GPT-2, rows, batch, β and optimizer: the same loss (to 1e-5), the same metrics, the same updated weights."""

from __future__ import annotations

import copy

import pytest
import torch
from trl_reference import PREFERENCE_ROWS, build_dpo_trainer, policy_and_reference, tiny_tokenizer

from dpo_teach.trainers import train_dpo

pytest.importorskip("trl")


@pytest.mark.parametrize(("loss_type", "beta"), [("sigmoid", 0.3), ("ipo", 0.5), ("hinge", 0.2)])
def test_one_step_matches_trl(tmp_path, loss_type, beta):
    tok = tiny_tokenizer()
    policy, reference = policy_and_reference(tok)
    ours_policy, ours_ref = copy.deepcopy(policy), copy.deepcopy(reference)
    trl = build_dpo_trainer(
        policy, reference, tok, tmp_path, loss_type=[loss_type], beta=beta, learning_rate=1e-3,
        max_steps=1, logging_steps=1, lr_scheduler_type="constant", max_grad_norm=1.0, weight_decay=0.0,
    )  # fmt: skip
    trl.train()
    theirs = trl.state.log_history[0]
    ours = train_dpo(
        ours_policy, tok, PREFERENCE_ROWS, ref_model=ours_ref, loss_type=loss_type, beta=beta, lr=1e-3,
        batch_size=len(PREFERENCE_ROWS), max_grad_norm=1.0, progress=False,
    )[0]  # fmt: skip
    assert ours["loss"] == pytest.approx(theirs["loss"], abs=1e-5)
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen",
                "logps/rejected", "logits/chosen", "logits/rejected", "grad_norm"):  # fmt: skip
        assert ours[key] == pytest.approx(theirs[key], rel=1e-4, abs=1e-5), key
    # After one AdamW step the weights agree. Adam's first step is lr · g/(|g| + ε) per element: ≈ ±lr wherever
    # |g| ≫ ε = 1e-8, but for the rare element whose gradient is within a few ε of 0 the two trainers' float
    # round-off in g changes the step by a fraction of lr (measured: one element of 4096 off by 1.2e-5 = 1.2 % of
    # lr for IPO). So the tolerance is 5 % of lr: a wrong gradient moves a weight by up to 2·lr the other way.
    # The attention *key* bias is left out: the softmax over keys is invariant to it, its exact gradient is 0,
    # and its step is pure round-off.
    n_embd, lr = policy.config.n_embd, 1e-3
    for (name, a), b in zip(policy.state_dict().items(), ours_policy.state_dict().values(), strict=True):
        if name.endswith("attn.c_attn.bias"):
            a, b = torch.cat([a[:n_embd], a[2 * n_embd :]]), torch.cat([b[:n_embd], b[2 * n_embd :]])
        torch.testing.assert_close(a, b, rtol=1e-4, atol=0.05 * lr, msg=name)
        assert (a - b).abs().gt(1e-6).float().mean() < 0.01, f"{name}: over 1 % of the elements differ"
