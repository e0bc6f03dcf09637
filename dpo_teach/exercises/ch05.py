"""Checkers for chapter 05's exercises (the tiny language model and SFT).

* :func:`check_sequence_logps` — exercise 5.1: a reader's log π(y|x) from logits and labels.
* :func:`check_parameter_count` — exercise 5.2: the parameter count of a GPT-2 from its config, by hand.
"""

from __future__ import annotations

from numbers import Integral

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from dpo_teach.exercises import Verdict
from dpo_teach.logprobs import IGNORE_INDEX, sequence_logps


def _batch(seed: int = 0):
    """Random logits ``[6, 9, 11]`` and labels with prompts of 1–4 tokens, responses of 1–4 and right padding."""
    generator = torch.Generator().manual_seed(seed)
    prompt_lengths, response_lengths = [1, 2, 3, 4, 2, 3], [4, 1, 3, 2, 4, 4]
    batch, length, vocab = len(prompt_lengths), 9, 11
    logits = 3 * torch.randn(batch, length, vocab, generator=generator)
    ids = torch.randint(0, vocab, (batch, length), generator=generator)
    labels = torch.full_like(ids, IGNORE_INDEX)
    for b, (p, r) in enumerate(zip(prompt_lengths, response_lengths, strict=True)):
        labels[b, p : p + r] = ids[b, p : p + r]
    return logits, labels


def _unshifted(logits, labels):
    token = torch.log_softmax(logits, -1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (token * (labels != IGNORE_INDEX)).sum(-1)


def _raw_logits(logits, labels):
    logits, labels = logits[:, :-1], labels[:, 1:]
    token = logits.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (token * (labels != IGNORE_INDEX)).sum(-1)


def check_sequence_logps(fn) -> Verdict:
    """Exercise 5.1: does ``fn(logits, labels)`` return log π(y|x) ``[B]``, summed over response tokens?

    ``fn`` receives float32 logits ``[B, T, V]`` and labels ``[B, T]`` (token ids on the response, -100 on
    prompt and padding, unshifted) and is compared with :func:`dpo_teach.logprobs.sequence_logps` on two random
    batches. The usual mistakes are recognised: no shift by one, the mean instead of the sum, raw logits
    instead of log-softmax, probabilities instead of log-probabilities.
    """
    if not callable(fn):
        raise TypeError(f"fn must be a function fn(logits, labels) -> Tensor[B], got {type(fn).__name__}.")
    for seed in (0, 1):
        logits, labels = _batch(seed)
        try:
            answer = fn(logits.clone(), labels.clone())
        except Exception as err:  # a reader's bug is a wrong answer, reported, not raised
            return Verdict(False, f"fn raised {type(err).__name__}: {err}")
        if not isinstance(answer, torch.Tensor) or tuple(answer.shape) != (labels.shape[0],):
            shape = list(answer.shape) if isinstance(answer, torch.Tensor) else type(answer).__name__
            return Verdict(False, f"fn must return one log-prob per row, a tensor of shape [{labels.shape[0]}]; "
                           f"got {shape}. Sum over the token dimension.")  # fmt: skip
        answer = answer.detach().double()
        truth = sequence_logps(logits, labels).double()
        close = lambda value, answer=answer: bool(
            torch.allclose(answer, value.double(), atol=1e-4, rtol=1e-4)
        )  # noqa: E731
        if close(truth):
            continue
        lengths = (labels[:, 1:] != IGNORE_INDEX).sum(-1)
        if close(_unshifted(logits, labels)):
            return Verdict(False, "no shift: the logits at position t predict the token at t + 1, so compare "
                           "logits[:, :-1] with labels[:, 1:].")  # fmt: skip
        if close(truth / lengths):
            return Verdict(False, "this is the mean over response tokens (the per-token score ORPO and SimPO use); "
                           "log π(y|x) is the sum.")  # fmt: skip
        if close(_raw_logits(logits, labels)):
            return Verdict(False, "these are raw logits; take torch.log_softmax(logits, -1) before picking the "
                           "label's entry.")  # fmt: skip
        if close(truth.exp()):
            return Verdict(False, "this is π(y|x), a probability; the exercise asks for its log (sum the "
                           "token log-probs, do not exponentiate).")  # fmt: skip
        worst = (answer - truth).abs().argmax().item()
        return Verdict(False, f"row {worst}: got {answer[worst].item():.4f}, expected {truth[worst].item():.4f}. "
                       "Shift by one, skip positions labelled -100 (prompt and padding), sum the log-softmax "
                       "entries of the labels.")  # fmt: skip
    return Verdict(
        True, "log π(y|x): shifted by one, prompt and padding skipped, summed over response tokens."
    )


def gpt2_parameter_count(*, vocab_size: int, n_positions: int, n_embd: int, n_layer: int) -> int:
    """The number of distinct parameters of ``GPT2LMHeadModel(GPT2Config(...))``, counted on the meta device
    (no memory is allocated; the tied output layer is counted once, as ``model.parameters()`` lists it)."""
    for name, value in (("vocab_size", vocab_size), ("n_positions", n_positions), ("n_embd", n_embd),
                        ("n_layer", n_layer)):  # fmt: skip
        if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
            raise ValueError(f"{name}={value!r} must be a positive int.")
    config = GPT2Config(
        vocab_size=vocab_size, n_positions=n_positions, n_embd=n_embd, n_layer=n_layer, n_head=1
    )
    with torch.device("meta"):
        model = GPT2LMHeadModel(config)
    return sum(p.numel() for p in model.parameters())


def check_parameter_count(answer, *, vocab_size: int, n_positions: int, n_embd: int, n_layer: int) -> Verdict:
    """Exercise 5.2: is ``answer`` the parameter count of a GPT-2 with this config (tied output layer)?

    The truth is counted from a model built by ``transformers`` (:func:`gpt2_parameter_count`), not from a
    formula; the common slips (untied output layer, no position table, no biases, no layer norms) are named.
    """
    if isinstance(answer, torch.Tensor) and answer.numel() == 1:
        answer = answer.item()
    if isinstance(answer, float) and answer.is_integer():
        answer = int(answer)
    if isinstance(answer, bool) or not isinstance(answer, Integral):
        raise TypeError(f"answer must be an int (a number of parameters), got {type(answer).__name__}.")
    truth = gpt2_parameter_count(
        vocab_size=vocab_size, n_positions=n_positions, n_embd=n_embd, n_layer=n_layer
    )
    V, T, d, L = vocab_size, n_positions, n_embd, n_layer
    if answer == truth:
        return Verdict(True, f"{truth:,} parameters: embeddings (V + T)·d = {(V + T) * d:,}, "
                       f"{L} blocks of 12d² + 13d = {12 * d * d + 13 * d:,}, final layer norm 2d.")  # fmt: skip
    slips = {
        truth
        + V * d: "the output layer shares the token embedding matrix (tied weights): it adds no parameters.",
        truth - T * d: "the position embeddings (n_positions × n_embd) are missing.",
        truth - L * 9 * d: "the biases are missing: 3d (q, k, v) + d + 4d + d per block.",
        truth - L * 4 * d - 2 * d: "the layer norms are missing: two per block and one at the end, 2d each.",
        12
        * L
        * d
        * d: "12·L·d² is only the blocks' weight matrices; add the embeddings, biases and layer norms.",
    }
    if answer in slips:
        return Verdict(False, slips[answer])
    return Verdict(False, f"{answer:,} is off by {answer - truth:+,}. Count the token and position tables, per "
                   "block two layer norms, the q/k/v and output projections and the two MLP layers (with "
                   "biases), and the final layer norm.")  # fmt: skip


__all__ = ["check_parameter_count", "check_sequence_logps", "gpt2_parameter_count"]
