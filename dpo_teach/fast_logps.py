"""Logits only where they are scored: the LM head applied at response positions, not at every position.

The plain path (:func:`dpo_teach.logprobs.concatenated_forward`) asks the model for ``logits [B, T, V]`` and
then reads only the positions whose next token is a response token. With GPT-2's 50,257-word vocabulary the
head ``h_t ↦ W h_t`` is the largest matmul of a small model, and prompt and padding positions are most of
``T``. Here the model's body runs once to the final hidden states ``h [B, T, H]``; the positions ``(b, t)``
with ``labels[b, t + 1] != -100`` are gathered into ``h_R [N, H]`` (N = number of response tokens), and

    log π(y_{t+1} | x, y_≤t) = (W h_t)[y_{t+1}] − logsumexp_v (W h_t)[v]        (float32, per scored position)

is computed for those N rows only — the quantity :func:`dpo_teach.logprobs.sequence_logps` computes from the
full logits, with the same ``allowed_token_ids`` restriction (the softmax over the world's alphabet only).
``tests/test_fast_logps.py`` proves the sequence log-probs and the parameter gradients equal to the plain path.

Supported models: a causal LM whose logits are exactly ``get_output_embeddings()(base_model(...)[0])`` —
no logit scaling or soft-capping. :data:`FAST_HEAD_MODEL_TYPES` lists the architectures checked against their
modelling code; any other model falls back to the plain path (:func:`supports_fast_head`).
"""

from __future__ import annotations

import torch

from dpo_teach.device import autocast
from dpo_teach.logprobs import (
    IGNORE_INDEX,
    ConcatenatedOutput,
    _allowed_tensor,
    _check_batch,
    _pad_right,
    _TokenLogps,
    response_mask,
)

#: ``config.model_type`` values whose forward is ``lm_head(base_model(...).last_hidden_state)`` and nothing more
FAST_HEAD_MODEL_TYPES = frozenset({"gpt2", "llama", "qwen2", "qwen3", "mistral"})


def unwrap(model):
    """The model inside a ``DistributedDataParallel``/``torch.compile`` wrapper (the module itself otherwise)."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return model


def supports_fast_head(model) -> bool:
    """True when ``model``'s logits are its output embedding applied to its base model's last hidden state."""
    model = unwrap(model)
    config = getattr(model, "config", None)
    return (
        getattr(config, "model_type", None) in FAST_HEAD_MODEL_TYPES
        and isinstance(model.get_output_embeddings(), torch.nn.Linear)
        and getattr(model, "base_model", model) is not model
    )


def hidden_states(model, input_ids, attention_mask, position_ids=None) -> torch.Tensor:
    """Final hidden states ``[B, T, H]`` of the model's body (after its last layer norm), bf16 autocast on CUDA.

    ``attention_mask``: ``[B, T]`` padding mask, or a 4-D ``[B, 1, T, T]`` mask used as is (prefix sharing).
    """
    body = unwrap(model).base_model
    device = next(body.parameters()).device
    kwargs = {} if position_ids is None else {"position_ids": position_ids.to(device)}
    with autocast(device):
        out = body(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            use_cache=False,
            **kwargs,
        )
    return out.last_hidden_state


def logps_from_hidden(model, hidden, labels, *, average=False, allowed_token_ids=None):
    """Sequence log-probs from hidden states, the head applied at the N scored positions only.

    ``hidden`` ``[B, T, H]``, ``labels`` ``[B, T]`` (unshifted, -100 on prompt and padding). Returns
    ``(logps [B], lengths [B], mean_logits [B])``: Σ_t log π(y_{t+1}|·) over scored positions (the mean if
    ``average``), |y|, and the detached mean over the full vocabulary and the scored positions of the logits
    (TRL's ``logits/*``). Float32 (float64 for a float64 model).
    """
    head = unwrap(model).get_output_embeddings()
    # the alphabet first, as in logprobs.per_token_logps: a bad one empties the labels, and the check below
    # would then blame the data
    ids = (
        None
        if allowed_token_ids is None
        else _allowed_tensor(allowed_token_ids, head.out_features, hidden.device)
    )
    mask = response_mask(labels)  # [B, T-1]: hidden[:, t] predicts labels[:, t + 1]
    lengths = mask.sum(-1)
    if bool((lengths == 0).any()):
        raise ValueError(
            f"rows {(lengths == 0).nonzero().flatten().tolist()} of labels have no response token after the "
            "shift (all -100); every sequence needs at least one completion token."
        )
    rows = mask.nonzero()[:, 0]  # [N]: the row of each scored position, in row-major order
    with autocast(hidden.device):  # the head in bf16 on CUDA, as in the full forward; log-softmax in float32
        logits = head(hidden[:, :-1][mask])  # [N, V]
    targets = labels[:, 1:][mask]  # [N]
    with torch.no_grad():
        vocab_mean = logits.mean(-1, dtype=torch.float32)
    if ids is not None:
        position = torch.full((logits.shape[-1],), -1, dtype=torch.long, device=logits.device)
        position[ids] = torch.arange(ids.numel(), device=logits.device)
        targets = position[targets]
        if bool((targets < 0).any()):
            raise ValueError(
                "a response label is not in allowed_token_ids; the world's alphabet must contain every response "
                "token (and EOS for variable-length responses)."
            )
        logits = logits.index_select(-1, ids)  # [N, K]
    every = torch.ones(1, targets.numel(), dtype=torch.bool, device=logits.device)
    token_logps = _TokenLogps.apply(logits[None], targets[None], every)[0]  # [N], blocked over N × V
    if not bool(torch.isfinite(token_logps).all()):
        raise ValueError(
            "the model produced a non-finite log-prob at a response position; check it for NaN/inf."
        )
    batch = labels.shape[0]
    logps = token_logps.new_zeros(batch).index_add(0, rows, token_logps)
    mean_logits = vocab_mean.new_zeros(batch).index_add(0, rows, vocab_mean) / lengths
    return (logps / lengths if average else logps), lengths, mean_logits


def response_logits_forward(
    model, batch: dict, *, average: bool = False, allowed_token_ids=None
) -> ConcatenatedOutput:
    """:func:`dpo_teach.logprobs.concatenated_forward` with the head applied at response positions only.

    Same batch (chosen and rejected stacked ``[2B, T]``, right-padded), same outputs to float rounding.
    """
    _check_batch(batch)
    length = max(batch["chosen_input_ids"].shape[1], batch["rejected_input_ids"].shape[1])
    cat = {
        key: torch.cat([_pad_right(batch[f"{side}_{key}"], length, pad) for side in ("chosen", "rejected")])
        for key, pad in (("input_ids", 0), ("attention_mask", 0), ("labels", IGNORE_INDEX))
    }
    hidden = hidden_states(model, cat["input_ids"], cat["attention_mask"])
    labels = cat["labels"].to(hidden.device)
    logps, lengths, mean_logits = logps_from_hidden(
        model, hidden, labels, average=average, allowed_token_ids=allowed_token_ids
    )
    n = batch["chosen_input_ids"].shape[0]
    return ConcatenatedOutput(
        logps[:n], logps[n:], lengths[:n], lengths[n:], mean_logits[:n], mean_logits[n:]
    )
