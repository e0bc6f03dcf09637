"""Dropout is off in every form a transformers model has it: ``nn.Dropout`` modules, the float
``attention_dropout`` that Llama/Qwen2 attention passes to its kernel in train mode, and config values.

The check that matters: with the reference an exact copy of the policy, every implicit reward is 0, so the first
DPO loss is −log σ(0) = ln 2 exactly — any dropout left on makes the policy's train-mode forward differ from the
reference's and moves the loss (0.692 instead of 0.6931 for Llama with ``attention_dropout=0.5``).
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from trainer_fixtures import word_tokenizer
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from dpo_teach.trainers.common import disable_dropout
from dpo_teach.trainers.dpo import DPOTrainer

P = 0.5  # far from 0, so that a dropout left on changes the loss by much more than 1e-6
PAIRS = [
    {"prompt": "q :", "chosen": " good film", "rejected": " bad film"},
    {"prompt": "q a :", "chosen": " great", "rejected": " awful film was bad"},
    {"prompt": "the film was", "chosen": " fine", "rejected": " awful"},
    {"prompt": "q b :", "chosen": " a b c", "rejected": " d"},
]


def dropout_model(kind: str, tokenizer, attn: str = "sdpa"):
    """A 2-layer causal LM of ``kind`` from a config with every dropout probability at P, in train mode."""
    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    ids["pad_token_id"] = tokenizer.pad_token_id
    torch.manual_seed(0)
    if kind == "gpt2":
        config = GPT2Config(vocab_size=len(tokenizer), n_layer=2, n_embd=32, n_head=4, n_positions=64,
                            resid_pdrop=P, embd_pdrop=P, attn_pdrop=P, **ids)  # fmt: skip
        return GPT2LMHeadModel._from_config(config, attn_implementation=attn).train()
    config_cls, model_cls = {
        "llama": (LlamaConfig, LlamaForCausalLM),
        "qwen2": (Qwen2Config, Qwen2ForCausalLM),
    }[kind]
    config = config_cls(vocab_size=len(tokenizer), num_hidden_layers=2, hidden_size=32, intermediate_size=64,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                        attention_dropout=P, tie_word_embeddings=False, **ids)  # fmt: skip
    return model_cls._from_config(config, attn_implementation=attn).train()


def first_loss(model, tokenizer, ref_model) -> float:
    trainer = DPOTrainer(model, tokenizer, PAIRS, ref_model=ref_model, batch_size=len(PAIRS), progress=False)
    return float(trainer.compute_loss(trainer._batch(trainer.train_data, range(len(PAIRS))))[0].detach())


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("kind", ["gpt2", "llama", "qwen2"])
def test_first_dpo_loss_is_ln2_when_the_reference_is_a_copy(kind, attn):
    tok = word_tokenizer()
    policy = dropout_model(kind, tok, attn)
    assert abs(first_loss(policy, tok, copy.deepcopy(policy)) - math.log(2)) < 1e-6


@pytest.mark.parametrize("kind", ["gpt2", "llama", "qwen2"])
def test_first_dpo_loss_is_ln2_with_the_default_reference(kind):
    tok = word_tokenizer()
    assert abs(first_loss(dropout_model(kind, tok), tok, None) - math.log(2)) < 1e-6


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_zeroing_only_dropout_modules_leaves_attention_dropout_on(kind):
    """The fault the fix removes, reproduced: the old rule (``p = 0`` in ``nn.Dropout`` only) is not enough for
    Llama/Qwen2, whose attention dropout is a float attribute — so the ln 2 test above can fail."""
    tok = word_tokenizer()
    model = dropout_model(kind, tok, "eager")
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    ids = torch.tensor([tok("q : good film was fine")["input_ids"]])
    torch.manual_seed(1)
    train_logits = model(input_ids=ids).logits
    assert not torch.allclose(train_logits, model.eval()(input_ids=ids).logits, atol=1e-4)


@pytest.mark.parametrize("kind", ["gpt2", "llama", "qwen2"])
def test_after_disable_dropout_train_and_eval_forwards_agree(kind):
    tok = word_tokenizer()
    model = disable_dropout(dropout_model(kind, tok, "eager"))
    ids = torch.tensor([tok("q : good film was fine")["input_ids"]])
    torch.testing.assert_close(model.train()(input_ids=ids).logits, model.eval()(input_ids=ids).logits)
    floats = {
        f"{name}.{attr}": value
        for name, module in [("config", model.config), *model.named_modules()]
        for attr, value in vars(module).items()
        if "drop" in attr and isinstance(value, float)
    }
    assert floats and all(v == 0.0 for v in floats.values()), floats
    assert all(m.p == 0.0 for m in model.modules() if isinstance(m, torch.nn.Dropout))
