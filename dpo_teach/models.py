"""The tokenizer, the tiny GPT-2, loading real causal LMs, and sampling from a model.

* :func:`build_word_tokenizer` — a word-level tokenizer built with 🤗 ``tokenizers`` (one token per
  whitespace/punctuation-separated word, BOS added by a post-processor) and wrapped as a ``transformers``
  ``PreTrainedTokenizerFast``, so it saves and loads like any Hub tokenizer.
* :func:`tiny_gpt2` — a ``GPT2LMHeadModel`` from a ``GPT2Config`` sized for a world (dropout off).
* :func:`load_causal_lm` — any causal LM and its tokenizer by local path or Hub name
  (``trust_remote_code=False``; offline unless ``local_files_only=False``), with errors that say what is missing.
* :func:`sample_token_ids` — ancestral sampling from a model, optionally restricted to a world's
  ``allowed_token_ids`` (the world's policy, :mod:`dpo_teach.logprobs`), seeded by a ``torch.Generator``.
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from pathlib import Path

import torch
from tokenizers import Tokenizer, pre_tokenizers, processors
from tokenizers.models import WordLevel
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedTokenizerFast,
)

from dpo_teach._validate import is_int
from dpo_teach.device import get_device

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)  # ids 0, 1, 2, 3 in every word tokenizer


def build_word_tokenizer(words, *, model_max_length: int = 64) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over ``words`` with ``<pad>``=0, ``<bos>``=1, ``<eos>``=2, ``<unk>``=3.

    Text is split on whitespace and punctuation (``"dull."`` → ``dull``, ``.``); each piece is one token,
    unknown pieces become ``<unk>``. Encoding with special tokens prepends ``<bos>`` (as GPT-2-style models
    expect a start token); EOS is *not* added here — :mod:`dpo_teach.data` appends it to completions.
    Decoding joins words with single spaces.
    """
    words = list(words)
    if not words or not all(isinstance(w, str) and w and not w.isspace() for w in words):
        raise ValueError(
            "words must be a non-empty list of non-empty strings (the vocabulary, one word each)."
        )
    counts = Counter(words)  # linear in the vocabulary (GPT-2-sized vocabularies have 50k words)
    dupes = sorted({w for w, n in counts.items() if n > 1} | {w for w in counts if w in SPECIAL_TOKENS})
    if dupes:
        raise ValueError(
            f"words contains repeated or reserved entries {dupes}; list each word once, without "
            f"the special tokens {SPECIAL_TOKENS}."
        )
    bad = [w for w in words if pre_tokenizers.Whitespace().pre_tokenize_str(w) != [(w, (0, len(w)))]]
    if bad:
        raise ValueError(
            f"words {bad} would be split by the pre-tokenizer; use words of letters/digits or one "
            "punctuation run each, without spaces."
        )
    vocab = {token: i for i, token in enumerate([*SPECIAL_TOKENS, *words])}
    backend = Tokenizer(WordLevel(vocab=vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        model_max_length=model_max_length,
    )


def tiny_gpt2(
    tokenizer_or_vocab_size,
    *,
    n_layer: int = 2,
    n_embd: int = 64,
    n_head: int = 4,
    n_positions: int = 32,
    seed: int = 0,
    dropout: float = 0.0,
) -> GPT2LMHeadModel:
    """A randomly initialised ``GPT2LMHeadModel`` (float32, CPU) from a ``GPT2Config``.

    ``tokenizer_or_vocab_size``: a tokenizer (its ``len`` is the vocabulary and its pad/bos/eos ids go into the
    config) or an int. Dropout (embedding, attention, residual) is ``dropout`` — 0 by default, so that training
    and evaluation forwards agree, as the DPO loss assumes. The initialisation is fixed by ``seed``.
    Parameters: about 12·n_layer·n_embd² + (vocab + n_positions)·n_embd (≈ 0.1 M at the defaults).
    """
    if not is_int(tokenizer_or_vocab_size):
        if not hasattr(tokenizer_or_vocab_size, "convert_tokens_to_ids"):
            raise TypeError(
                "tokenizer_or_vocab_size must be a tokenizer or an int vocabulary size, got "
                f"{type(tokenizer_or_vocab_size).__name__}."
            )
        tok = tokenizer_or_vocab_size
        vocab_size, ids = len(tok), (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id)
    else:
        vocab_size, ids = tokenizer_or_vocab_size, (None, None, None)
    sizes = {"n_positions": n_positions, "n_embd": n_embd, "n_layer": n_layer, "n_head": n_head}
    for name, value in {"vocab_size": vocab_size, **sizes}.items():
        if not is_int(value) or value < 1:
            raise ValueError(f"{name}={value!r} must be a positive int.")
    if n_embd % n_head:
        raise ValueError(
            f"n_embd={n_embd} must be divisible by n_head={n_head} (each head gets n_embd/n_head dims)."
        )
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"dropout={dropout!r} must be in [0, 1); 0 turns it off (the default).")
    dropouts = {f"{part}_pdrop": dropout for part in ("resid", "embd", "attn")}
    special = dict(zip(("pad_token_id", "bos_token_id", "eos_token_id"), ids, strict=True))
    config = GPT2Config(vocab_size=vocab_size, **sizes, **dropouts, **special)
    with torch.random.fork_rng(devices=[]):  # seed the initialisation without touching the caller's RNG
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(config)
    return model.eval()


class OfflineModelError(OSError):
    """A Hub model or tokenizer could not be fetched because the machine is (or is set to be) offline."""


def _is_offline_failure(err: BaseException) -> bool:
    """True if ``err`` (or anything it was raised from) says the Hub could not be reached."""
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, (LocalEntryNotFoundError, OfflineModeIsEnabled, ConnectionError, TimeoutError)):
            return True
        if type(err).__name__ in {"ConnectError", "ConnectTimeout", "ConnectionError"}:  # httpx / requests
            return True
        err = err.__cause__ or err.__context__
    return False


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model", "vocab.txt")
_WEIGHT_FILES = (
    "*.safetensors",
    "pytorch_model*.bin",
    "*.safetensors.index.json",
    "pytorch_model.bin.index.json",
)


def _check_model_dir(path: Path) -> None:
    """Raise ``ValueError`` if ``path`` lacks what ``from_pretrained`` needs: config.json, weights, tokenizer."""
    if not (path / "config.json").is_file():
        raise ValueError(
            f"model directory {str(path)!r} has no config.json; pass a directory written by "
            "model.save_pretrained(dir) and tokenizer.save_pretrained(dir)."
        )
    if not any(any(path.glob(pattern)) for pattern in _WEIGHT_FILES):
        raise ValueError(
            f"model directory {str(path)!r} has a config.json but no weights (model.safetensors); save the "
            "model there with model.save_pretrained(dir)."
        )
    # without these, transformers builds an *empty* tokenizer (one token) instead of failing
    if not any((path / name).is_file() for name in _TOKENIZER_FILES):
        raise ValueError(
            f"model directory {str(path)!r} has no loadable tokenizer (none of {list(_TOKENIZER_FILES)}); save "
            "it there with tokenizer.save_pretrained(dir)."
        )


def load_causal_lm(name_or_path, *, device=None, dtype=None, local_files_only: bool = True):
    """Load ``(model, tokenizer)`` from a local directory or a Hub name, with ``trust_remote_code=False``.

    The model is float32 unless ``dtype`` says otherwise (the book keeps weights in float32 and runs the
    forward under bf16 autocast on CUDA), moved to ``device`` (default :func:`dpo_teach.device.get_device`) and
    put in eval mode. A tokenizer without a pad token gets ``pad_token = eos_token`` (GPT-2's case): padding
    positions are masked anyway.

    Offline by default: a Hub name is read from the local Hugging Face cache only (``local_files_only=True``),
    so a mistyped name fails at once instead of waiting on the network; pass ``local_files_only=False`` (the
    CLI's ``--allow-download``) to download. Raises :class:`OfflineModelError` when a Hub name is not cached
    (or, when downloading is allowed, the Hub cannot be reached), and ``ValueError`` for a local directory
    without a config, weights or tokenizer.
    """
    if not isinstance(name_or_path, (str, os.PathLike)) or not str(name_or_path).strip():
        raise TypeError(
            f"name_or_path must be a local directory or a Hub name such as 'gpt2', got {name_or_path!r}."
        )
    if not isinstance(local_files_only, bool):
        raise TypeError(f"local_files_only must be True or False, got {local_files_only!r}.")
    path = Path(name_or_path).expanduser()
    local = path.is_dir()
    if not local and (
        str(name_or_path).startswith((".", "/", "~"))
        or path.suffix in {".json", ".safetensors"}
        or path.exists()
    ):
        raise ValueError(
            f"name_or_path={str(name_or_path)!r} looks like a local path but is not a directory; pass "
            "a directory written by save_pretrained (config.json, model.safetensors, tokenizer files)."
        )
    if local:
        _check_model_dir(path)
    source = str(path) if local else str(name_or_path)
    offline = local or local_files_only
    kwargs = {"trust_remote_code": False, "local_files_only": offline}
    with _hub_offline(offline):
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        except (OSError, ValueError) as err:
            if local:
                raise ValueError(
                    f"model directory {source!r} has no loadable tokenizer ({type(err).__name__}); save it "
                    "there with tokenizer.save_pretrained(dir)."
                ) from err
            _raise_hub_error(source, err, local_files_only)
        try:
            model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype or torch.float32, **kwargs)
        except OSError as err:
            if local:
                raise
            _raise_hub_error(source, err, local_files_only)
    if tokenizer.pad_token_id is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(get_device(device)).eval(), tokenizer


@contextlib.contextmanager
def _hub_offline(offline: bool):
    """Hugging Face Hub offline mode for the block when ``offline``: even with ``local_files_only=True``,
    ``huggingface_hub`` otherwise contacts the Hub once (it fetches a registry to build its user-agent)."""
    import huggingface_hub.constants as hub_constants

    was = hub_constants.HF_HUB_OFFLINE
    hub_constants.HF_HUB_OFFLINE = was or offline
    try:
        yield
    finally:
        hub_constants.HF_HUB_OFFLINE = was


def _raise_hub_error(source: str, err: BaseException, local_files_only: bool):
    """Raise :class:`OfflineModelError` for a Hub name that is not cached (or, when downloading is allowed,
    that the Hub could not serve because the machine is offline); re-raise ``err`` for anything else."""
    if local_files_only:
        raise OfflineModelError(
            f"Could not load {source!r}: it is not a local directory and not in the local Hugging Face cache, "
            "and dpo_teach works offline unless asked (as if HF_HUB_OFFLINE=1), so nothing was downloaded. "
            "Check the spelling; pass a directory written by save_pretrained; or allow a download with "
            "load_causal_lm(..., local_files_only=False) (on the command line: --allow-download)."
        ) from err
    if not _is_offline_failure(err):
        raise err
    raise OfflineModelError(
        f"Could not load {source!r}: it is not in the local Hugging Face cache and the Hub cannot be reached "
        "- this machine appears to be offline (or HF_HUB_OFFLINE=1 is set). Either run this once with an "
        "internet connection (and HF_HUB_OFFLINE unset) so that the files are downloaded and cached, or save "
        "the model and tokenizer with save_pretrained(dir) on a machine that has them and pass that local "
        "directory as name_or_path."
    ) from err


@torch.no_grad()
def sample_token_ids(
    model,
    prompt_ids: list[list[int]],
    *,
    max_new_tokens: int,
    eos_token_id: int | None,
    allowed_token_ids=None,
    temperature: float = 1.0,
    seed: int = 0,
) -> list[list[int]]:
    """Sample a continuation of every prompt (token-id lists) from ``model``; returns the new ids per prompt.

    At each step the next token is drawn from softmax(logits[allowed] / temperature) — the full vocabulary
    when ``allowed_token_ids`` is None — with a ``torch.Generator`` seeded by ``seed`` (``temperature=0``:
    greedy). A continuation stops with ``eos_token_id`` (included, so a caller can tell a finished response from
    one cut at ``max_new_tokens``) or after ``max_new_tokens`` tokens.
    Prompts are grouped by length and never padded, so no attention-mask or position subtleties arise.
    """
    if not is_int(max_new_tokens) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens!r} must be a positive int.")
    if temperature < 0:
        raise ValueError(f"temperature={temperature!r} must be ≥ 0 (0 = greedy).")
    device = next(model.parameters()).device
    generator = torch.Generator(device="cpu").manual_seed(seed)
    allowed = None if allowed_token_ids is None else torch.as_tensor(allowed_token_ids, dtype=torch.long)
    out: list[list[int] | None] = [None] * len(prompt_ids)
    by_length: dict[int, list[int]] = {}
    for i, ids in enumerate(prompt_ids):
        by_length.setdefault(len(ids), []).append(i)
    for length in sorted(by_length):
        rows = by_length[length]
        seqs = torch.tensor([prompt_ids[i] for i in rows], dtype=torch.long, device=device)
        for _ in range(max_new_tokens):
            logits = model(input_ids=seqs, attention_mask=torch.ones_like(seqs), use_cache=False).logits[
                :, -1
            ]
            logits = logits.float().cpu()
            if allowed is not None:
                logits = torch.full_like(logits, float("-inf")).index_copy_(1, allowed, logits[:, allowed])
            if temperature == 0:
                nxt = logits.argmax(-1)
            else:
                nxt = torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=generator)[:, 0]
            seqs = torch.cat([seqs, nxt[:, None].to(device)], dim=1)
            if eos_token_id is not None and bool((seqs[:, length:] == eos_token_id).any(1).all()):
                break
        for row, seq in zip(rows, seqs[:, length:].tolist(), strict=True):
            out[row] = seq[: seq.index(eos_token_id) + 1] if eos_token_id in seq else seq
    return out
