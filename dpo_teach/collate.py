"""Tokenised examples → padded batches: the one padding function and the three collators.

:func:`pad_sequences` right-pads ``prompt + completion`` token lists into ``input_ids``, ``attention_mask`` and
``labels`` ``[B, T]`` (labels: the input ids on completion tokens, ``-100`` on prompt and padding; unshifted,
:func:`dpo_teach.logprobs.sequence_logps` shifts). Training batches (the collators below, on the examples of
:mod:`dpo_teach.data`) and the worlds' exact evaluation (every response of every prompt) both pad with it.
"""

from __future__ import annotations

import torch


def _eos_id(tokenizer) -> int:
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos_token; set tokenizer.eos_token so completions can end.")
    return tokenizer.eos_token_id


def pad_sequences(
    prompt_ids, completion_ids, pad_token_id: int, allowed_token_ids=None
) -> dict[str, torch.Tensor]:
    """Right-pad ``prompt + completion`` sequences into ``input_ids``, ``attention_mask``, ``labels`` [B, T].

    ``labels`` = input id on completion positions, -100 on prompt and padding positions. With
    ``allowed_token_ids`` (the world's alphabet, see :mod:`dpo_teach.logprobs`), a completion token outside the allowed set is
    also labelled -100: it is not a choice of the restricted policy (e.g. the EOS that ends every fixed-length
    response of the sequences world) and so carries no log-probability.
    """
    seqs = [p + c for p, c in zip(prompt_ids, completion_ids, strict=True)]
    width = max(len(s) for s in seqs)
    input_ids = torch.tensor([s + [pad_token_id] * (width - len(s)) for s in seqs], dtype=torch.long)
    ends = torch.tensor([len(s) for s in seqs])[:, None]
    starts = torch.tensor([len(p) for p in prompt_ids])[:, None]
    position = torch.arange(width)[None, :]
    attention_mask = (position < ends).long()
    labels = input_ids.masked_fill((position < starts) | (position >= ends), -100)
    if allowed_token_ids is not None:
        allowed = torch.as_tensor(allowed_token_ids, dtype=torch.long)
        labels[~torch.isin(labels, allowed)] = -100
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def pad_token_id(tokenizer) -> int:
    """The id to pad with: ``tokenizer.pad_token_id``, else EOS (GPT-2 has no pad token; padded positions are
    masked by the attention mask and labelled -100, so which id fills them does not matter)."""
    pad = tokenizer.pad_token_id
    return pad if pad is not None else _eos_id(tokenizer)


def _pad_id(tokenizer_or_id) -> int:
    return tokenizer_or_id if isinstance(tokenizer_or_id, int) else pad_token_id(tokenizer_or_id)


class _Collator:
    """What the three collators share: the pad id (a tokenizer or an int) and the world's alphabet."""

    def __init__(self, pad_token_id, allowed_token_ids=None):
        self.pad_token_id = _pad_id(pad_token_id)
        self.allowed_token_ids = allowed_token_ids

    def _pad(self, examples: list[dict], key: str, prefix: str) -> dict[str, torch.Tensor]:
        """Each example's prompt followed by its ``key`` ids, padded; keys ``{prefix}_input_ids`` etc."""
        prompts, completions = [e["prompt_ids"] for e in examples], [e[key] for e in examples]
        padded = pad_sequences(prompts, completions, self.pad_token_id, self.allowed_token_ids)
        return {f"{prefix}_{k}": v for k, v in padded.items()}


def _stored(examples: list[dict], keys) -> dict[str, torch.Tensor]:
    """The precomputed reference log-probs ``keys`` the examples carry, as float32 ``[B]`` tensors."""
    return {k: torch.tensor([e[k] for e in examples], dtype=torch.float32) for k in keys if k in examples[0]}


class PreferenceCollator(_Collator):
    """Examples from :func:`tokenize_preference` → ``chosen_*`` and ``rejected_*`` tensors [B, T].

    Keys: ``chosen_input_ids``, ``chosen_attention_mask``, ``chosen_labels`` and the same for ``rejected``
    (each side padded to its own longest sequence); ``ref_chosen_logps``/``ref_rejected_logps`` [B] pass through
    when the examples carry precomputed reference log-probs.
    """

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        batch = {
            **self._pad(examples, "chosen_ids", "chosen"),
            **self._pad(examples, "rejected_ids", "rejected"),
        }
        return {**batch, **_stored(examples, ("ref_chosen_logps", "ref_rejected_logps"))}


class SFTCollator(_Collator):
    """Examples from :func:`tokenize_sft` → ``input_ids``, ``attention_mask``, ``labels`` [B, T]."""

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        return {k.removeprefix("sft_"): v for k, v in self._pad(examples, "completion_ids", "sft").items()}


class KTOCollator(_Collator):
    """Examples from :func:`tokenize_kto` → ``completion_*`` and ``kl_*`` tensors [B, T], ``label`` [B] (bool).

    ``kl_*`` holds each prompt followed by its example's ``kl_completion_ids`` (a mismatched pair);
    ``ref_logps``/``ref_kl_logps`` [B] pass through when the examples carry precomputed reference log-probs.
    """

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        batch = {
            **self._pad(examples, "completion_ids", "completion"),
            **self._pad(examples, "kl_completion_ids", "kl"),
        }
        batch["label"] = torch.tensor([e["label"] for e in examples], dtype=torch.bool)
        return {**batch, **_stored(examples, ("ref_logps", "ref_kl_logps"))}
