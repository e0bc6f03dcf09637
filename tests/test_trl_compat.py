"""dpo_teach.trl_compat on a byte-level BPE GPT-2 (chapter 13's setting): TRL tokenises the rows into the same
ids as dpo_teach, and TRL's DPO loss equals this trainer's on that batch (to 1e-5)."""

from __future__ import annotations

import copy

import pytest
import torch

from dpo_teach import hub
from dpo_teach.logprobs import IGNORE_INDEX
from dpo_teach.models import tiny_gpt2
from dpo_teach.trainers import DPOTrainer
from dpo_teach.trl_compat import (
    trl_batch_to_ours,
    trl_collate,
    trl_dpo_loss,
    trl_dpo_trainer,
    trl_training_args,
)
from dpo_teach.worlds import ReviewsWorld

pytest.importorskip("trl")
pytestmark = pytest.mark.filterwarnings("ignore")


def test_trl_batch_to_ours_splits_halves_and_masks_the_prompt():
    ids = torch.arange(12).reshape(4, 3)
    completion = torch.tensor([[0, 1, 1], [0, 0, 1], [0, 1, 0], [0, 1, 1]])
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "completion_mask": completion}
    ours = trl_batch_to_ours(batch)
    assert torch.equal(ours["chosen_input_ids"], ids[:2]) and torch.equal(ours["rejected_input_ids"], ids[2:])
    assert ours["chosen_labels"].tolist() == [[IGNORE_INDEX, 1, 2], [IGNORE_INDEX, IGNORE_INDEX, 5]]
    assert ours["rejected_labels"].tolist() == [[IGNORE_INDEX, 7, IGNORE_INDEX], [IGNORE_INDEX, 10, 11]]


def test_trl_training_args_override():
    args = trl_training_args("out", seed=3, per_device_train_batch_size=2)
    assert args["seed"] == 3 and args["use_cpu"] and args["report_to"] == [] and args["output_dir"] == "out"


def _unpadded(batch, side, i, key):
    return batch[f"{side}_{key}"][i][batch[f"{side}_attention_mask"][i] == 1].tolist()


def test_same_ids_and_same_loss_as_trl_on_a_bpe_gpt2(tmp_path):
    rows = hub.preference_rows(hub.review_dialogues(ReviewsWorld().preference_pairs(None, n=6, seed=0)))
    tok = hub.train_bpe_tokenizer(
        [r["prompt"] + r[k] for r in rows for k in ("chosen", "rejected")], vocab_size=300
    )
    reference = tiny_gpt2(tok, n_embd=32, n_positions=256, seed=0)
    policy = copy.deepcopy(reference)
    with torch.no_grad():  # a policy away from the reference, so that the loss is not ln 2
        for p in policy.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    trl = trl_dpo_trainer(copy.deepcopy(policy), copy.deepcopy(reference), tok, rows, tmp_path, beta=0.2)
    trl_batch = trl_collate(trl)
    theirs, metrics = trl_dpo_loss(trl, trl_batch)

    ours = DPOTrainer(policy, tok, rows, ref_model=reference, beta=0.2, progress=False, device="cpu")
    our_batch = ours.collate(ours.train_data.examples)
    converted = trl_batch_to_ours(trl_batch)
    for side in ("chosen", "rejected"):
        for i in range(len(rows)):
            for key in ("input_ids", "labels"):
                assert _unpadded(our_batch, side, i, key) == _unpadded(converted, side, i, key), (
                    side,
                    i,
                    key,
                )
    with torch.no_grad():
        loss, our_metrics = ours.compute_loss(our_batch)
    assert abs(theirs - 0.6931) > 1e-3
    assert float(loss) == pytest.approx(theirs, abs=1e-5)
    assert float(our_metrics["rewards/margins"].mean()) == pytest.approx(metrics["rewards/margins"], abs=1e-5)
