"""Rows → validated → tokenised → collated batches (the first arrows of the data flow).

Three row formats, as TRL reads them (a ``datasets.Dataset`` in these formats loads unchanged):

* preference: ``prompt``, ``chosen``, ``rejected`` (strings) — DPO and its paired variants;
* KTO (unpaired): ``prompt``, ``completion`` (strings), ``label`` (bool: desirable or not);
* SFT: ``prompt``, ``completion`` (strings).

Each text field may instead be a list of ``{"role", "content"}`` messages (TRL's conversational format, the
whole row alike); such rows are tokenised through the tokenizer's chat template as TRL does (:mod:`dpo_teach.chat`).

The text of a full sequence is ``prompt + completion``. Each completion gets the tokenizer's EOS appended once.
An empty prompt is encoded as the tokenizer's BOS (else EOS), so that the first response token is scored
(:func:`encode_prompt`). Files are ``.json`` (one list) or ``.jsonl`` (one object a line), UTF-8; a validation
error in a row read from a file names the file and the line.

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
``completion_ids``). The collators turn a list of them into right-padded tensors with ``labels`` equal to the
input ids on completion tokens and ``-100`` on prompt and padding positions (unshifted: ``labels[b, t]`` is the
token at position ``t``; :func:`dpo_teach.logprobs.sequence_logps` shifts).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dpo_teach import chat

FIELDS = {
    "preference": ("prompt", "chosen", "rejected"),
    "kto": ("prompt", "completion", "label"),
    "sft": ("prompt", "completion"),
}
TRUNCATION_MODES = ("keep_end", "keep_start")


def load_rows(source, kind: str = "preference") -> list[dict]:
    """Read and validate rows of ``kind`` ("preference", "kto" or "sft") from ``source``.

    ``source``: a list (or tuple) of dicts, a path to a ``.json`` (a list of objects) or ``.jsonl`` file, or a
    ``datasets.Dataset``. Returns plain dicts holding only the fields of ``kind``. Raises ``ValueError`` /
    ``TypeError`` naming the row index and field: missing field, non-string text, empty completion, non-bool KTO
    label, no rows at all. ``chosen == rejected`` is legal but carries no preference: a warning gives the count.
    """
    if kind not in FIELDS:
        raise ValueError(f"kind={kind!r} is not one of {tuple(FIELDS)}.")
    rows = read_rows(source)
    if len(rows) == 0:
        raise ValueError(f"the {kind} dataset is empty; pass at least one row with fields {FIELDS[kind]}.")
    where = getattr(rows, "where", [None] * len(rows))
    out = [_validate_row(i, row, kind, at) for i, (row, at) in enumerate(zip(rows, where, strict=True))]
    if kind == "preference":
        same = sum(r["chosen"] == r["rejected"] for r in out)
        if same:
            warnings.warn(
                f"{same} of {len(out)} preference rows have chosen identical to rejected; they carry no "
                "preference signal (their DPO gradient is zero).",
                stacklevel=2,
            )
    return out


def load_preference_rows(source) -> list[dict]:
    """:func:`load_rows` for ``prompt``/``chosen``/``rejected`` rows."""
    return load_rows(source, "preference")


def load_kto_rows(source) -> list[dict]:
    """:func:`load_rows` for KTO's ``prompt``/``completion``/``label`` rows."""
    return load_rows(source, "kto")


def unpair_preference_rows(source) -> list[dict]:
    """Preference rows → KTO rows: each pair gives ``(prompt, chosen, True)`` and ``(prompt, rejected, False)``."""
    pairs = load_preference_rows(source)
    return [
        {"prompt": r["prompt"], "completion": r[k], "label": k == "chosen"}
        for r in pairs
        for k in ("chosen", "rejected")
    ]


def load_sft_rows(source) -> list[dict]:
    """:func:`load_rows` for SFT's ``prompt``/``completion`` rows."""
    return load_rows(source, "sft")


class Rows(list):
    """The rows read from a file: a list that also knows where each row came from (for error messages)."""

    def __init__(self, rows, where):
        super().__init__(rows)
        self.where = where  # where[i]: e.g. "pairs.jsonl, line 3"


def read_rows(source) -> list:
    """The raw rows of ``source`` (list, .json/.jsonl path or Dataset) as a list, not yet validated.

    A file is read as UTF-8 (a leading byte-order mark is allowed); a ``.jsonl`` file holds one JSON object per
    line (blank lines are skipped) and a ``.json`` file one JSON list. Rows read from a file carry their file and
    line number, which the validation errors of :func:`load_rows` then quote.
    """
    if isinstance(source, (str, Path)):
        return _read_file(Path(source))
    if isinstance(source, (list, tuple)):
        return Rows(source, source.where) if isinstance(source, Rows) else list(source)
    if hasattr(source, "column_names") and hasattr(source, "__getitem__") and hasattr(source, "__len__"):
        return source.to_list() if hasattr(source, "to_list") else [source[i] for i in range(len(source))]
    raise TypeError(
        f"rows must be a list of dicts, a .json/.jsonl path or a datasets.Dataset, got {type(source).__name__}."
    )


def _read_file(path: Path) -> Rows:
    name = str(path)
    if path.is_dir():
        raise ValueError(f"data path {name!r} is a directory; pass one .json or .jsonl file inside it.")
    if not path.exists():
        raise ValueError(f"no file at {name!r}; pass an existing .json/.jsonl path or a list of dicts.")
    if path.suffix not in (".json", ".jsonl"):
        raise ValueError(
            f"data file {name!r} has suffix {path.suffix!r}; only .json (a list of objects) and .jsonl (one "
            "object per line) are read. Convert it, e.g. datasets.load_dataset('csv', data_files=path)"
            "['train'].to_json('rows.jsonl'), or pass the datasets.Dataset itself."
        )
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: tolerate the BOM some editors write
    except UnicodeDecodeError as err:
        raise ValueError(
            f"data file {name!r} is not UTF-8 text ({err.reason} at byte {err.start}); re-save it as UTF-8."
        ) from None
    if path.suffix == ".jsonl":
        return _parse_jsonl(name, text)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        if err.msg == "Extra data" and _is_json_lines(text):
            raise ValueError(
                f"data file {name!r} holds JSON Lines (one object per line), not one JSON list; rename it to "
                f"{path.with_suffix('.jsonl').name!r}."
            ) from None
        raise ValueError(
            f"{name}, line {err.lineno}, column {err.colno}: not valid JSON ({err.msg}); fix the file there "
            "(a .json file holds one list [{...}, ...])."
        ) from None
    if not isinstance(data, list):
        raise TypeError(
            f"{name!r} must hold a JSON list of objects, got {type(data).__name__}; write [{{...}}, {{...}}] "
            "or one object per line in a .jsonl file."
        )
    return Rows(data, [f"{name}, item {i}" for i in range(len(data))])


def _parse_jsonl(name: str, text: str) -> Rows:
    rows, where = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise ValueError(
                f"{name}, line {number}, column {err.colno}: not valid JSON ({err.msg}); each line of a .jsonl "
                "file must be one complete JSON object."
            ) from None
        where.append(f"{name}, line {number}")
    return Rows(rows, where)


def _is_json_lines(text: str) -> bool:
    try:
        return all(isinstance(json.loads(line), dict) for line in text.splitlines() if line.strip())
    except json.JSONDecodeError:
        return False


def _validate_row(i: int, row, kind: str, where: str | None = None) -> dict:
    at = f"row {i}" if where is None else f"row {i} ({where})"
    if not isinstance(row, dict):
        raise TypeError(f"{at} must be a dict with fields {FIELDS[kind]}, got {type(row).__name__}.")
    if "prompt" not in row and "rejected" in row and chat.is_conversation(row.get("chosen")):
        row = chat.extract_prompt(row, at)  # TRL's implicit prompt: the messages chosen and rejected share
    for name in FIELDS[kind]:
        if name not in row:
            raise ValueError(f"{at} is missing field {name!r}; {kind} rows need {FIELDS[kind]}.")
    for name in FIELDS[kind]:
        value = row[name]
        if name == "label":
            if not isinstance(value, bool):
                raise TypeError(f"{at}, field 'label' must be a bool (True = desirable), got {value!r}.")
            continue
        if chat.is_conversation(row["prompt"]):  # TRL's conversational row: every text field is messages
            chat.check_messages(at, name, value)
            continue
        if not isinstance(value, str):
            raise TypeError(f"{at}, field {name!r} must be a str, got {type(value).__name__}.")
        if name != "prompt" and not value.strip():
            raise ValueError(f"{at}, field {name!r} is empty; every response needs at least one token.")
    return {name: row[name] for name in FIELDS[kind]}


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


def _eos_id(tokenizer) -> int:
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos_token; set tokenizer.eos_token so completions can end.")
    return tokenizer.eos_token_id


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
    with a *different* prompt, or i − 1 when every row has the same prompt.

    A different prompt matters: unpaired preference data lay rows out as chosen, rejected, chosen, …, so the
    neighbour of a row is usually its own pair's other response, and z_ref would then measure the pair itself.
    """
    n = len(prompts)
    out = []
    for i in range(n):
        back = next((k for k in range(1, n) if prompts[(i - k) % n] != prompts[i]), 1)
        out.append((i - back) % n)
    return out


def tokenize_kto(rows, tokenizer, *, max_length=None, max_prompt_length=None, truncation_mode="keep_end"):
    """KTO rows → :class:`Tokenized` with ``prompt_ids``, ``completion_ids``, the bool ``label`` and
    ``kl_completion_ids``: the completion of row :func:`mismatched_index` (the nearest earlier row with another
    prompt), a mismatched pair (x_i, y_j) that KTO uses to estimate its reference point KL(π_θ‖π_ref). Fixed
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


class PreferenceCollator:
    """Examples from :func:`tokenize_preference` → ``chosen_*`` and ``rejected_*`` tensors [B, T].

    Keys: ``chosen_input_ids``, ``chosen_attention_mask``, ``chosen_labels`` and the same for ``rejected``
    (each side padded to its own longest sequence); ``ref_chosen_logps``/``ref_rejected_logps`` [B] pass through
    when the examples carry precomputed reference log-probs.
    """

    def __init__(self, pad_token_id, allowed_token_ids=None):
        self.pad_token_id = _pad_id(pad_token_id)
        self.allowed_token_ids = allowed_token_ids

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        prompts = [e["prompt_ids"] for e in examples]
        batch = {}
        for side in ("chosen", "rejected"):
            padded = pad_sequences(
                prompts, [e[f"{side}_ids"] for e in examples], self.pad_token_id, self.allowed_token_ids
            )
            batch.update({f"{side}_{k}": v for k, v in padded.items()})
        for key in ("ref_chosen_logps", "ref_rejected_logps"):
            if key in examples[0]:
                batch[key] = torch.tensor([e[key] for e in examples], dtype=torch.float32)
        return batch


class SFTCollator:
    """Examples from :func:`tokenize_sft` → ``input_ids``, ``attention_mask``, ``labels`` [B, T]."""

    def __init__(self, pad_token_id, allowed_token_ids=None):
        self.pad_token_id = _pad_id(pad_token_id)
        self.allowed_token_ids = allowed_token_ids

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        return pad_sequences(
            [e["prompt_ids"] for e in examples],
            [e["completion_ids"] for e in examples],
            self.pad_token_id,
            self.allowed_token_ids,
        )


class KTOCollator:
    """Examples from :func:`tokenize_kto` → ``completion_*`` and ``kl_*`` tensors [B, T], ``label`` [B] (bool).

    ``kl_*`` holds each prompt followed by its example's ``kl_completion_ids`` (a mismatched pair);
    ``ref_logps``/``ref_kl_logps`` [B] pass through when the examples carry precomputed reference log-probs.
    """

    def __init__(self, pad_token_id, allowed_token_ids=None):
        self.pad_token_id = _pad_id(pad_token_id)
        self.allowed_token_ids = allowed_token_ids

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        prompts = [e["prompt_ids"] for e in examples]
        batch = {}
        for prefix, key in (("completion", "completion_ids"), ("kl", "kl_completion_ids")):
            padded = pad_sequences(
                prompts, [e[key] for e in examples], self.pad_token_id, self.allowed_token_ids
            )
            batch.update({f"{prefix}_{k}": v for k, v in padded.items()})
        batch["label"] = torch.tensor([e["label"] for e in examples], dtype=torch.bool)
        for key in ("ref_logps", "ref_kl_logps"):
            if key in examples[0]:
                batch[key] = torch.tensor([e[key] for e in examples], dtype=torch.float32)
        return batch
