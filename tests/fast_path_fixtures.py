"""Tiny GPT-2, Llama and Qwen2 models from configs and a padded preference batch, for the fast-path tests."""

from __future__ import annotations

import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from dpo_teach.data import PreferenceCollator

VOCAB, PAD, EOS = 48, 0, 1
ALLOWED = list(range(2, 30))  # a world's alphabet: EOS is outside it, so its label becomes -100


def tiny_model(kind: str, attn: str = "sdpa", seed: int = 0):
    """A 2-layer, 32-wide causal LM of architecture ``kind``, float32, dropout off, in train mode."""
    torch.manual_seed(seed)
    common = {"vocab_size": VOCAB, "pad_token_id": PAD, "bos_token_id": 2, "eos_token_id": EOS}
    if kind == "gpt2":
        config = GPT2Config(n_layer=2, n_embd=32, n_head=4, n_positions=64, resid_pdrop=0.0, embd_pdrop=0.0,
                            attn_pdrop=0.0, **common)  # fmt: skip
        model = GPT2LMHeadModel._from_config(config, attn_implementation=attn)
    else:
        config_cls, model_cls = {
            "llama": (LlamaConfig, LlamaForCausalLM),
            "qwen2": (Qwen2Config, Qwen2ForCausalLM),
        }[kind]
        config = config_cls(num_hidden_layers=2, hidden_size=32, intermediate_size=64, num_attention_heads=4,
                            num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False, **common)  # fmt: skip
        model = model_cls._from_config(config, attn_implementation=attn)
    return model.float().train()


def preference_batch(seed: int = 0, n: int = 5, allowed=None) -> dict:
    """``n`` pairs with prompts of 2–7 tokens and completions of 1–9 tokens ending in EOS (right-padded).

    One pair has chosen == rejected's first tokens (a shared response prefix), one has equal completions.
    """
    gen = torch.Generator().manual_seed(seed)
    draw = lambda k: torch.randint(2, 30, (k,), generator=gen).tolist()  # noqa: E731
    examples = []
    for i in range(n):
        prompt = [2, *draw(int(torch.randint(1, 7, (1,), generator=gen)))]
        chosen = draw(int(torch.randint(1, 9, (1,), generator=gen))) + [EOS]
        rejected = draw(int(torch.randint(1, 9, (1,), generator=gen))) + [EOS]
        if i == 1:
            rejected = chosen[:-1] + draw(3) + [EOS]
        if i == 2:
            rejected = list(chosen)
        examples.append({"prompt_ids": prompt, "chosen_ids": chosen, "rejected_ids": rejected})
    return PreferenceCollator(PAD, allowed)(examples)


def grads(model) -> dict:
    """A copy of every parameter's gradient (zeros where none), then the gradients are cleared."""
    out = {
        n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p))
        for n, p in model.named_parameters()
    }
    model.zero_grad(set_to_none=True)
    return out
