"""Validated rows → tokenised → collated batches (the first arrows of the data flow).

Rows (TRL's preference, KTO and SFT formats) are read and validated by :mod:`dpo_teach.rows`; its names are
importable from here too. Conversational rows (message lists) are tokenised through the tokenizer's chat
template as TRL does (:mod:`dpo_teach.chat`).

The text of a full sequence is ``prompt + completion``. Each completion gets the tokenizer's EOS appended once.
An empty prompt is encoded as the tokenizer's BOS (else EOS), so that the first response token is scored
(:func:`encode_prompt`).

**Why the prompt and the completion are tokenised separately.** A BPE tokenizer merges characters across the
prompt/completion boundary when it sees them together: with a prompt ending in ``"Answer: "`` and a completion
``"Yes"``, the joint text ``"Answer: Yes"`` tokenises the space and ``Yes`` into one token ``" Yes"``, so the
prompt's last token disappears and the first completion token is one the prompt alone never produced. Then the
tokenised prompt is no longer a prefix of the tokenised prompt+completion ("mismatch between tokenized prompt and
prompt+completion"), the prompt tokens differ between ``chosen`` and ``rejected``, and the -100 mask lands on
the wrong token. Here the prompt is tokenised once (with the tokenizer's special tokens, so BOS appears exactly
when the tokenizer adds one) and each completion alone (without special tokens); the ids are concatenated. The
prompt ids are then identical for ``chosen`` and ``rejected`` by construction, and the label boundary is exactly
``len(prompt_ids)``. (Prompts should end on a natural boundary — the book's worlds end prompts with a separator
and start completions with a space — so the concatenation is also what the model sees at generation time.)

A tokenised example is a dict of lists: ``prompt_ids`` and ``chosen_ids``/``rejected_ids`` (or
``completion_ids``). The collators (:mod:`dpo_teach.collate`) turn a list of them into right-padded tensors with ``labels`` equal to the
input ids on completion tokens and ``-100`` on prompt and padding positions (unshifted: ``labels[b, t]`` is the
token at position ``t``; :func:`dpo_teach.logprobs.sequence_logps` shifts).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

from dpo_teach import chat
from dpo_teach.collate import (  # noqa: F401 (padding and collation, importable from here too)
    KTOCollator,
    PreferenceCollator,
    SFTCollator,
    _eos_id,
    pad_sequences,
    pad_token_id,
)
from dpo_teach.rows import (  # noqa: F401 (the rows' reading and validation, importable from here too)
    FIELDS,
    Rows,
    load_kto_rows,
    load_preference_rows,
    load_rows,
    load_sft_rows,
    read_rows,
    unpair_preference_rows,
)

TRUNCATION_MODES = ("keep_end", "keep_start")


@dataclass
class Tokenized:
    """Tokenised examples and what truncation did to them (counts of rows)."""

    examples: list[dict] = field(default_factory=list)
    prompts_truncated: int = 0
    completions_truncated: int = 0
    identical_pairs: int = 0  # preference pairs with equal token ids but different text (tokenize_preference)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict:
        return self.examples[i]


def _check_lengths(max_length, max_prompt_length, truncation_mode):
    if truncation_mode not in TRUNCATION_MODES:
        raise ValueError(f"truncation_mode={truncation_mode!r} must be one of {TRUNCATION_MODES}.")
    if max_length is not None and (not isinstance(max_length, int) or max_length < 2):
        raise ValueError(
            f"max_length={max_length!r} must be an int ≥ 2 (a prompt token and a response token)."
        )
    if max_prompt_length is not None:
        if not isinstance(max_prompt_length, int) or max_prompt_length < 1:
            raise ValueError(
                f"max_prompt_length={max_prompt_length!r} must be a positive int; pass e.g. max_prompt_length=32 "
                "or None (max_length // 2)."
            )
        if max_length is not None and max_prompt_length >= max_length:
            raise ValueError(
                f"max_prompt_length={max_prompt_length} must be < max_length={max_length} to leave room for "
                "the response."
            )


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    """Prompt ids with the tokenizer's own special tokens (so BOS appears exactly when the tokenizer adds one).

    An empty prompt with a tokenizer that adds no BOS (GPT-2's, or :func:`dpo_teach.hub.train_bpe_tokenizer`'s)
    would encode to no token at all; then nothing precedes the first response token, no logit predicts it, and
    log π(y|x) would silently leave it out. Such a prompt becomes ``[bos_token_id]``, or ``[eos_token_id]`` when
    the tokenizer has no BOS (GPT-2's BOS and EOS are one token), so every response token is scored. A
    non-empty prompt is never changed.
    """
    ids = list(tokenizer(prompt)["input_ids"])
    if ids:
        return ids
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if start is None:
        raise ValueError(
            f"prompt {prompt!r} encodes to no token and the tokenizer has neither a bos_token nor an eos_token, "
            "so the first response token could not be scored; set tokenizer.bos_token (or eos_token) or give "
            "every row a non-empty prompt."
        )
    return [start]


def encode_completion(tokenizer, completion: str) -> list[int]:
    """Completion ids without special tokens, then EOS appended once (not again if the text already ends in it)."""
    ids = list(tokenizer(completion, add_special_tokens=False)["input_ids"])
    eos = _eos_id(tokenizer)
    return ids if ids and ids[-1] == eos else [*ids, eos]


def _truncate_prompt(prompt_ids, keep, mode, bos_id):
    if len(prompt_ids) <= keep:
        return prompt_ids
    if mode == "keep_start":
        return prompt_ids[:keep]
    # keep_end keeps the prompt's last tokens (nearest the response) and its BOS if it has one
    if bos_id is not None and prompt_ids[0] == bos_id and keep > 1:
        return [bos_id, *prompt_ids[len(prompt_ids) - keep + 1 :]]
    return prompt_ids[len(prompt_ids) - keep :]


def _tokenize(rows, tokenizer, completion_fields, max_length, max_prompt_length, truncation_mode, extra=()):
    """Shared by the three formats: one prompt encoding, one encoding per completion field, then truncation.

    Truncation, when ``len(prompt) + len(longest completion) > max_length``: first the prompt is cut to
    ``max_prompt_length`` (default ``max_length // 2``) by ``truncation_mode``; if still too long the
    completions are cut to ``max_length - len(prompt)`` tokens (keeping their start).
    """
    _check_lengths(max_length, max_prompt_length, truncation_mode)
    if max_length is not None and max_prompt_length is None:
        max_prompt_length = max_length // 2
    bos_id = getattr(tokenizer, "bos_token_id", None)
    out = Tokenized()
    for row in rows:
        if chat.is_conversation(row["prompt"]):
            prompt_ids, ids = chat.encode_conversation(
                tokenizer, row["prompt"], [row[f] for f in completion_fields]
            )
            comps = dict(zip(completion_fields, ids, strict=True))
        else:
            prompt_ids = encode_prompt(tokenizer, row["prompt"])
            comps = {f: encode_completion(tokenizer, row[f]) for f in completion_fields}
        longest = max(len(c) for c in comps.values())
        if max_length is not None and len(prompt_ids) + longest > max_length:
            cut = _truncate_prompt(prompt_ids, max_prompt_length, truncation_mode, bos_id)
            out.prompts_truncated += len(cut) < len(prompt_ids)
            prompt_ids = cut
            room = max_length - len(prompt_ids)
            if longest > room:
                out.completions_truncated += 1
                comps = {f: c[:room] for f, c in comps.items()}
        example = {"prompt_ids": prompt_ids, **{f"{f}_ids": c for f, c in comps.items()}}
        example.update({k: row[k] for k in extra})
        out.examples.append(example)
    return out


def tokenize_preference(
    rows, tokenizer, *, max_length=None, max_prompt_length=None, truncation_mode="keep_end"
):
    """Preference rows → :class:`Tokenized` with ``prompt_ids``, ``chosen_ids``, ``rejected_ids`` per example.

    Pairs whose chosen and rejected *strings* differ but whose token ids are identical (after truncation to
    ``max_length``, or because the tokenizer maps both to the same tokens, e.g. unknown words) carry no preference
    signal either; one warning gives their count (``identical_pairs``).
    """
    out = _tokenize(rows, tokenizer, ("chosen", "rejected"), max_length, max_prompt_length, truncation_mode)
    out.identical_pairs = sum(
        e["chosen_ids"] == e["rejected_ids"] and r["chosen"] != r["rejected"]
        for e, r in zip(out.examples, rows, strict=True)
    )
    if out.identical_pairs:
        warnings.warn(
            f"{out.identical_pairs} of {len(out)} preference pairs have different chosen and rejected text but "
            "identical token ids after tokenisation and truncation (max_length="
            f"{max_length}); they carry no preference signal. Raise max_length or check that the tokenizer "
            "knows their words.",
            stacklevel=2,
        )
    return out


def mismatched_index(prompts: list) -> list[int]:
    """For each row i, the row j whose completion KTO pairs with prompt i: the nearest earlier row (cyclically)
    with a *different* prompt and an even distance i − j; if none has an even distance, the nearest with a
    different prompt; i − 1 when every row has the same prompt.

    Why both conditions: unpaired preference data lay rows out as chosen, rejected, chosen, … . The neighbour
    of a row is then usually its own pair's other response (z_ref would measure the pair itself), and the
    nearest row with another prompt is always a *rejected* one (z_ref would be measured on losers only). An even
    distance pairs a chosen row with another pair's chosen response and a rejected row with another's rejected,
    so the mismatched completions are half chosen, half rejected: the two responses the pairs were drawn from,
    i.e. draws of the policy that sampled the pairs, for other prompts.
    """
    n = len(prompts)
    out = []
    for i in range(n):
        differs = (k for k in range(1, n) if prompts[(i - k) % n] != prompts[i])  # lazily: usually k ≤ 4
        first = next(differs, None)
        back = first if first is None or first % 2 == 0 else next((k for k in differs if k % 2 == 0), first)
        out.append((i - (back or 1)) % n)
    return out


def tokenize_kto(rows, tokenizer, *, max_length=None, max_prompt_length=None, truncation_mode="keep_end"):
    """KTO rows → :class:`Tokenized` with ``prompt_ids``, ``completion_ids``, the bool ``label`` and
    ``kl_completion_ids``: the completion of row :func:`mismatched_index` (an earlier row with another prompt and
    the same place in its pair), a mismatched pair (x_i, y_j) that KTO uses to estimate its reference point KL(π_θ‖π_ref). Fixed
    per example (not per batch), so that reference log-probs of the mismatched pairs can be precomputed.
    """
    out = _tokenize(
        rows, tokenizer, ("completion",), max_length, max_prompt_length, truncation_mode, ("label",)
    )
    partner = mismatched_index([tuple(e["prompt_ids"]) for e in out.examples])
    for i, example in enumerate(out.examples):
        mismatched = out.examples[partner[i]]["completion_ids"]
        room = len(mismatched) if max_length is None else max_length - len(example["prompt_ids"])
        example["kl_completion_ids"] = mismatched[:room]
    return out


def tokenize_sft(rows, tokenizer, *, max_length=None, max_prompt_length=None, truncation_mode="keep_end"):
    """SFT rows → :class:`Tokenized` with ``prompt_ids`` and ``completion_ids`` per example."""
    return _tokenize(rows, tokenizer, ("completion",), max_length, max_prompt_length, truncation_mode)
