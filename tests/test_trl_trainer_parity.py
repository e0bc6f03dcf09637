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
    # after one AdamW step the weights agree, except the attention *key* bias: the softmax over keys is invariant
    # to it, so its exact gradient is 0 and Adam's first step (≈ lr · g/|g|) turns float round-off into noise
    n_embd = policy.config.n_embd
    for (name, a), b in zip(policy.state_dict().items(), ours_policy.state_dict().values(), strict=True):
        if name.endswith("attn.c_attn.bias"):
            a, b = torch.cat([a[:n_embd], a[2 * n_embd :]]), torch.cat([b[:n_embd], b[2 * n_embd :]])
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)
