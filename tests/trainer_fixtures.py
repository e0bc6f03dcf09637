"""Tiny models and tokenizers for the trainer tests (built from configs: no download).

Uses :mod:`dpo_teach.models` when it provides ``build_word_tokenizer``/``tiny_gpt2``; the fallback builds the
same kind of objects directly with ``tokenizers`` and a ``GPT2Config``.
"""

from __future__ import annotations

import torch
from transformers import GPT2Config, GPT2LMHeadModel

WORDS = ["good", "bad", "great", "awful", "fine", "the", "film", "was", "a", "b", "c", "d", "q", ":"]


def word_tokenizer(words=WORDS):
    try:
        from dpo_teach.models import build_word_tokenizer

        return build_word_tokenizer(words)
    except ImportError:
        pass
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<bos>", "<eos>", "<unk>"]
    vocab = {w: i for i, w in enumerate(specials + list(words))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )


def tiny_model(tokenizer, seed: int = 0, n_layer: int = 2, n_embd: int = 32, n_positions: int = 64):
    """A tiny GPT-2 WITH dropout 0.1 (the trainers must switch it off), in train mode like a fresh model."""
    try:
        from dpo_teach.models import tiny_gpt2

        kw = {"n_layer": n_layer, "n_embd": n_embd, "n_head": 2, "n_positions": n_positions, "seed": seed}
        return tiny_gpt2(tokenizer, dropout=0.1, **kw).train()
    except ImportError:
        pass
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=n_positions,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=2,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return GPT2LMHeadModel(config)
