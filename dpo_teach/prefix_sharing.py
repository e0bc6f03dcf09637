"""The shared prompt once: chosen and rejected packed into one row with a block attention mask.

A preference pair is x ⊕ y_w and x ⊕ y_l. A causal model's hidden state at position t depends only on tokens
0..t, so the hidden states over the prompt x (more generally, over the longest common prefix of the two
sequences) are the same in both. The plain path computes them twice; here each pair is one packed row

    [ shared prefix (s tokens) | rest of chosen (|x⊕y_w| − s) | rest of rejected (|x⊕y_l| − s) | padding ]

with position ids 0..s−1 | s..|x⊕y_w|−1 | s..|x⊕y_l|−1 (the rejected continuation restarts at s) and a 4-D
attention mask in which a query attends to an earlier-or-equal position of its own segment or of the shared
prefix — never across from rejected to chosen. Every hidden state then equals the one the unshared forward
computes, so the log-probs, the loss and the gradients are those of the plain path to float rounding
(``tests/test_prefix_sharing.py``), with ``B × (|x| + |y_w| + |y_l|)`` tokens instead of ``2B × max length``.

The head is applied at response positions only (:mod:`dpo_teach.fast_logps`). Supported: the architectures of
:data:`dpo_teach.fast_logps.FAST_HEAD_MODEL_TYPES` with ``sdpa`` or ``eager`` attention (both accept a
ready 4-D mask: boolean for sdpa, additive float for eager) and position embeddings driven by ``position_ids``.
:func:`preference_forward` falls back to the unshared path for any other model.
"""

from __future__ import annotations

import torch

from dpo_teach.fast_logps import (
    hidden_states,
    logps_from_hidden,
    response_logits_forward,
    supports_fast_head,
    unwrap,
)
from dpo_teach.logprobs import ConcatenatedOutput, _check_batch, concatenated_forward

FORWARD_MODES = ("auto", "plain", "response_logits", "shared_prompt")
_MASKED_ATTENTION = ("sdpa", "eager")


def supports_prefix_sharing(model) -> bool:
    """True when ``model`` takes a 4-D attention mask and ``position_ids`` as this module builds them."""
    model = unwrap(model)
    return (
        supports_fast_head(model) and getattr(model.config, "_attn_implementation", None) in _MASKED_ATTENTION
    )


def pack_shared_prompt(batch: dict) -> dict:
    """Pack each pair into one row; all outputs are on the batch's device.

    Returns ``input_ids`` ``[B, L]``, ``attention_mask`` bool ``[B, 1, L, L]`` (True = may attend),
    ``position_ids`` ``[B, L]``, ``rejected_index`` ``[B, T_l]`` (the packed position of each rejected
    position; chosen positions keep their index, since chosen is laid out first) and ``shared`` ``[B]``, the
    prefix length s = number of leading tokens common to both sequences (at most the shorter one's length).
    L = max_b(|x⊕y_w| + |x⊕y_l| − s).
    """
    c_ids, r_ids = batch["chosen_input_ids"], batch["rejected_input_ids"]
    len_c = batch["chosen_attention_mask"].sum(-1).long()  # right padding: the mask counts the tokens
    len_r = batch["rejected_attention_mask"].sum(-1).long()
    common = min(c_ids.shape[1], r_ids.shape[1])
    same = c_ids[:, :common] == r_ids[:, :common]
    shared = torch.minimum(same.long().cumprod(-1).sum(-1), torch.minimum(len_c, len_r))  # [B]
    s, lc, total = shared[:, None], len_c[:, None], (len_c + len_r - shared)[:, None]
    j = torch.arange(int(total.max()), device=c_ids.device)[None, :]  # packed position [1, L]
    # segment: 0 shared prefix, 1 chosen continuation, 2 rejected continuation, 3 padding
    segment = (j >= s).long() + (j >= lc).long() + (j >= total).long()
    position = torch.where(segment == 2, j - lc + s, j).masked_fill(segment == 3, 0)
    from_chosen = c_ids.gather(1, position.clamp(max=c_ids.shape[1] - 1))
    from_rejected = r_ids.gather(1, position.clamp(max=r_ids.shape[1] - 1))
    input_ids = torch.where(segment == 2, from_rejected, from_chosen).masked_fill(segment == 3, 0)
    q_seg, k_seg = segment[:, :, None], segment[:, None, :]
    visible = (
        ((k_seg == 0) | (k_seg == q_seg)) & (q_seg != 3) & (position[:, None, :] <= position[:, :, None])
    )
    visible |= torch.eye(j.shape[1], dtype=torch.bool, device=j.device)  # padding sees itself: no empty row
    t = torch.arange(r_ids.shape[1], device=r_ids.device)[None, :]
    rejected_index = torch.where(t < s, t, t - s + lc).clamp(max=j.shape[1] - 1)
    return {"input_ids": input_ids, "attention_mask": visible[:, None], "position_ids": position,
            "rejected_index": rejected_index, "shared": shared}  # fmt: skip


def _attention_bias(visible: torch.Tensor, model) -> torch.Tensor:
    """The mask in the form the model's attention takes: boolean for sdpa, additive 0 / −max for eager."""
    if unwrap(model).config._attn_implementation == "sdpa":
        return visible
    dtype = next(model.parameters()).dtype
    return torch.zeros(visible.shape, dtype=dtype, device=visible.device).masked_fill_(
        ~visible, torch.finfo(dtype).min
    )


def shared_prompt_forward(
    model, batch: dict, *, average: bool = False, allowed_token_ids=None
) -> ConcatenatedOutput:
    """Chosen and rejected log-probs from ONE packed forward per pair (the shared prefix computed once).

    Same batch and outputs as :func:`dpo_teach.logprobs.concatenated_forward` (to float rounding).
    """
    _check_batch(batch)
    packed = pack_shared_prompt(batch)
    mask = _attention_bias(packed["attention_mask"], model)
    hidden = hidden_states(model, packed["input_ids"], mask, packed["position_ids"])  # [B, L, H]
    c_labels = batch["chosen_labels"].to(hidden.device)
    r_labels = batch["rejected_labels"].to(hidden.device)
    index = packed["rejected_index"].to(hidden.device)
    h_w = hidden[:, : c_labels.shape[1]]  # chosen positions are packed first, at their own index
    h_l = hidden.gather(1, index[:, :, None].expand(-1, -1, hidden.shape[-1]))  # [B, T_l, H]
    kw = {"average": average, "allowed_token_ids": allowed_token_ids}
    logps_w, n_w, mean_w = logps_from_hidden(model, h_w, c_labels, **kw)
    logps_l, n_l, mean_l = logps_from_hidden(model, h_l, r_labels, **kw)
    return ConcatenatedOutput(logps_w, logps_l, n_w, n_l, mean_w, mean_l)


def preference_forward(
    model, batch: dict, *, average: bool = False, allowed_token_ids=None, mode: str = "auto"
) -> ConcatenatedOutput:
    """Chosen and rejected log-probs by the path ``mode`` names (all equal to float rounding).

    ``"plain"``: :func:`dpo_teach.logprobs.concatenated_forward` (full logits). ``"response_logits"``: the
    head at response positions only. ``"shared_prompt"``: prefix sharing plus response-only head.
    ``"auto"``: the fastest the model supports, else plain. An explicit mode the model does not support
    raises ``ValueError``.
    """
    if mode not in FORWARD_MODES:
        raise ValueError(f"forward mode {mode!r} must be one of {FORWARD_MODES}.")
    if mode == "auto":
        mode = "shared_prompt" if supports_prefix_sharing(model) else "plain"
        mode = "response_logits" if mode == "plain" and supports_fast_head(model) else mode
    supported = {"shared_prompt": supports_prefix_sharing, "response_logits": supports_fast_head}
    if mode in supported and not supported[mode](model):
        raise ValueError(
            f"forward mode {mode!r} does not support {type(unwrap(model)).__name__} "
            f"({getattr(unwrap(model).config, 'model_type', '?')}); use mode='plain' (or 'auto')."
        )
    forward = {"plain": concatenated_forward, "response_logits": response_logits_forward,
               "shared_prompt": shared_prompt_forward}[mode]  # fmt: skip
    return forward(model, batch, average=average, allowed_token_ids=allowed_token_ids)
