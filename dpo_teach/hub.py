"""Real Hugging Face formats, offline: Hub-style preference datasets, a locally trained BPE tokenizer, a tiny
model of a real architecture, and a guard that proves no network was used.

**Preference datasets on the Hub come in three shapes**, all turned into TRL's standard string rows
(``prompt``, ``chosen``, ``rejected``) by :func:`preference_rows`:

* *standard* — ``prompt``, ``chosen``, ``rejected`` strings: taken as they are;
* *raw dialogue* (Anthropic/hh-rlhf) — only ``chosen`` and ``rejected``, each a whole dialogue
  ``"\\n\\nHuman: …\\n\\nAssistant: …"``; the two share every turn but the last answer. The prompt is the shared
  text up to and including the last ``"\\n\\nAssistant:"`` marker that both dialogues contain at the same place
  (:func:`split_dialogue_pair`) — *not* simply their longest common prefix, which would cut into the answers
  whenever they begin with the same words;
* *conversational* (trl-lib/ultrafeedback_binarized) — ``chosen``/``rejected`` (and optionally ``prompt``) are
  lists of ``{"role", "content"}`` messages; they are rendered with the tokenizer's chat template when
  :func:`preference_rows` is given one, else as raw dialogue (:func:`render_messages`) and split.

**Stand-ins for downloads** (the book runs offline): :func:`train_bpe_tokenizer` trains a byte-level BPE — the
format of GPT-2's tokenizer — on the dataset's own text in well under a second; :func:`save_tiny_causal_lm`
writes a randomly initialised GPT-2 or Llama of a few layers with ``save_pretrained``, so that
:func:`dpo_teach.models.load_causal_lm` reads it exactly as it would read ``"gpt2"``. :func:`no_network` blocks
and counts every attempt to open an internet connection (DNS look-up or socket connect).
"""

from __future__ import annotations

import contextlib
import socket
import warnings
from pathlib import Path

import torch

from dpo_teach import chat
from dpo_teach._validate import is_int

HUMAN, ASSISTANT = "\n\nHuman:", "\n\nAssistant:"
EOT = "<|endoftext|>"  # GPT-2's one special token: BOS, EOS and unknown at once
_ROLES = {"user": HUMAN, "assistant": ASSISTANT, "system": "\n\nSystem:"}


def split_dialogue_pair(chosen: str, rejected: str) -> dict:
    """Two raw dialogues that differ only in their last answer → ``{"prompt", "chosen", "rejected"}``.

    ``prompt`` ends with the last ``"\\n\\nAssistant:"`` that lies inside the common prefix of both texts;
    ``chosen``/``rejected`` are the two answers after it (with their leading space, so ``prompt + chosen`` is the
    original dialogue). Raises ``ValueError`` if the texts share no Assistant marker or an answer is empty.
    """
    if not isinstance(chosen, str) or not isinstance(rejected, str):
        raise TypeError(
            f"chosen and rejected must be str dialogues, got {type(chosen).__name__} and {type(rejected).__name__}."
        )
    common = 0
    for a, b in zip(chosen, rejected, strict=False):
        if a != b:
            break
        common += 1
    cut = chosen.rfind(ASSISTANT, 0, common)  # the whole marker lies inside the shared text
    if cut < 0:
        raise ValueError(
            f"the two dialogues share no {ASSISTANT!r} marker before they differ (they differ from character "
            f"{common}); raw-dialogue rows must repeat the same conversation and differ in the last answer only."
        )
    end = cut + len(ASSISTANT)
    row = {"prompt": chosen[:end], "chosen": chosen[end:], "rejected": rejected[end:]}
    for name in ("chosen", "rejected"):
        if not row[name].strip():
            raise ValueError(f"the {name} dialogue has an empty last answer after {ASSISTANT!r}.")
    return row


def render_messages(messages) -> str:
    """``[{"role": "user" | "assistant" | "system", "content": str}, …]`` → ``"\\n\\nHuman: …\\n\\nAssistant: …"``."""
    if not isinstance(messages, (list, tuple)):
        raise TypeError(
            f"messages must be a list of {{'role', 'content'}} dicts, got {type(messages).__name__}."
        )
    parts = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise ValueError(f"message {i} must be a dict with 'role' and 'content', got {message!r}.")
        if message["role"] not in _ROLES:
            raise ValueError(f"message {i} has role {message['role']!r}; expected one of {sorted(_ROLES)}.")
        parts.append(f"{_ROLES[message['role']]} {str(message['content']).strip()}")
    return "".join(parts)


def _convert(row, tokenizer=None) -> dict:
    if not isinstance(row, dict) or "chosen" not in row or "rejected" not in row:
        raise ValueError(
            "a preference row needs 'chosen' and 'rejected' (and, in the standard format, 'prompt')."
        )
    chosen, rejected, prompt = row["chosen"], row["rejected"], row.get("prompt")
    if isinstance(chosen, str) and isinstance(rejected, str):
        if isinstance(prompt, str):
            return {"prompt": prompt, "chosen": chosen, "rejected": rejected}
        return split_dialogue_pair(chosen, rejected)
    if isinstance(chosen, (list, tuple)) and isinstance(rejected, (list, tuple)):
        head = list(prompt) if isinstance(prompt, (list, tuple)) else []
        if tokenizer is not None:
            return _apply_template(head, list(chosen), list(rejected), tokenizer)
        return split_dialogue_pair(
            render_messages(head + list(chosen)), render_messages(head + list(rejected))
        )
    raise TypeError(
        "chosen/rejected must both be strings or both be lists of messages, got "
        f"{type(chosen).__name__} and {type(rejected).__name__}."
    )


def _apply_template(head, chosen, rejected, tokenizer) -> dict:
    """Conversational pair → strings through ``tokenizer``'s chat template (an implicit prompt is extracted)."""
    row = {"prompt": head, "chosen": chosen, "rejected": rejected}
    if not head:
        row = chat.extract_prompt(row)
    for name, messages in row.items():
        chat.check_messages("the row", name, messages)
    return chat.apply_template(row, tokenizer)


def preference_rows(dataset, *, skip_invalid: bool = False, tokenizer=None) -> list[dict]:
    """Rows of any of the three Hub shapes (a ``datasets.Dataset`` or a list of dicts) → standard string rows.

    ``tokenizer``: when given, conversational rows are rendered with its chat template exactly as TRL's
    ``apply_chat_template`` renders them (:func:`dpo_teach.chat.apply_template`), so the strings are what the model
    was trained to read; without it they are rendered as raw ``"\\n\\nHuman: …"`` dialogue
    (:func:`render_messages`). A tokenizer without a chat template raises ``ValueError``. String rows are the same
    either way. (To train on conversational rows, pass them to the trainers directly: they tokenise them through
    the template, see :mod:`dpo_teach.chat`.)

    ``skip_invalid=True`` drops rows that cannot be split (e.g. an empty last answer, which a few hh-rlhf rows
    have) with one warning giving the count; by default such a row raises ``ValueError`` naming its index.
    """
    if tokenizer is not None:
        chat.require_chat_template(tokenizer)
    out, skipped = [], 0
    for i in range(len(dataset)):
        try:
            out.append(_convert(dataset[i], tokenizer))
        except (ValueError, TypeError) as err:
            if not skip_invalid:
                raise type(err)(f"row {i}: {err} (pass skip_invalid=True to drop such rows)") from None
            skipped += 1
    if skipped:
        warnings.warn(
            f"preference_rows skipped {skipped} of {len(dataset)} rows that could not be split.", stacklevel=2
        )
    if not out:
        raise ValueError("no usable preference rows; check the dataset's columns (prompt/chosen/rejected).")
    return out


def review_dialogues(rows) -> list[dict]:
    """Preference rows of :class:`dpo_teach.worlds.ReviewsWorld` (``"review : the plot"`` + ``" was dull …"``)
    written as raw hh-rlhf dialogues (``chosen``/``rejected`` only): a two-turn conversation whose last
    answer is the review. :func:`split_dialogue_pair` recovers the prompt and the two answers."""
    out = []
    for row in rows:
        subject = row["prompt"].split(" the ", 1)[1]
        head = (
            f"{HUMAN} I saw a film last night. Can you write a one-line review of it?"
            f"{ASSISTANT} Sure. Which part of the film should it be about?{HUMAN} The {subject}.{ASSISTANT}"
        )
        out.append({k: f"{head} the {subject}{row[k]}" for k in ("chosen", "rejected")})
    return out


def train_bpe_tokenizer(texts, *, vocab_size: int = 512, model_max_length: int = 1024):
    """A byte-level BPE tokenizer (GPT-2's format) trained on ``texts``, as a ``PreTrainedTokenizerFast``.

    ``<|endoftext|>`` is its only special token and serves as BOS, EOS and unknown, as in GPT-2; no BOS is
    added when encoding (GPT-2 adds none). Deterministic for the same texts. Saves and loads like ``"gpt2"``'s.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = list(texts)
    if not texts or not all(isinstance(t, str) for t in texts):
        raise TypeError(
            "texts must be a non-empty list of strings (the corpus the BPE merges are learned on)."
        )
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if not is_int(vocab_size) or vocab_size <= len(alphabet):
        raise ValueError(
            f"vocab_size={vocab_size!r} must be an int > {len(alphabet)} (the 256 bytes + merges)."
        )
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOT], initial_alphabet=alphabet, show_progress=False
    )
    backend.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=EOT,
        eos_token=EOT,
        unk_token=EOT,
        model_max_length=model_max_length,
    )


CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def train_chat_tokenizer(texts, *, vocab_size: int = 400):
    """A Qwen2-style tokenizer: byte-level BPE on ``texts`` plus ChatML's ``<|im_start|>``/``<|im_end|>`` and
    the ChatML chat template (each message ``<|im_start|>{role}\\n{content}<|im_end|>\\n``; the generation
    prompt ``<|im_start|>assistant\\n``). EOS is ``<|im_end|>`` (it ends each turn), padding ``<|endoftext|>``,
    and no BOS is added, as in Qwen2. For conversational rows offline; saves and loads with ``save_pretrained``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    texts = list(texts)
    if not texts or not all(isinstance(t, str) for t in texts):
        raise TypeError(
            "texts must be a non-empty list of strings (the corpus the BPE merges are learned on)."
        )
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if not is_int(vocab_size) or vocab_size <= len(alphabet) + 3:
        raise ValueError(
            f"vocab_size={vocab_size!r} must be an int > {len(alphabet) + 3} (bytes + 3 specials)."
        )
    special = [EOT, "<|im_start|>", "<|im_end|>"]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special, initial_alphabet=alphabet, show_progress=False
    )
    backend.train_from_iterator(texts, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token=EOT)
    tok.chat_template = CHATML_TEMPLATE
    return tok


def save_tiny_causal_lm(
    tokenizer, path, *, architecture: str = "gpt2", n_layer=2, n_embd=64, n_head=4, n_positions=128, seed=0
) -> Path:
    """Write a randomly initialised causal LM of ``architecture`` ("gpt2" or "llama") and ``tokenizer`` to
    ``path`` with ``save_pretrained`` (safetensors); returns the path. Read it back with
    :func:`dpo_teach.models.load_causal_lm`, the function that also loads ``"gpt2"`` from the Hub."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from dpo_teach.models import tiny_gpt2

    if architecture == "gpt2":
        model = tiny_gpt2(
            tokenizer, n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_positions=n_positions, seed=seed
        )
    elif architecture == "llama":
        config = LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=n_embd, intermediate_size=4 * n_embd, num_hidden_layers=n_layer,
            num_attention_heads=n_head, num_key_value_heads=n_head, max_position_embeddings=n_positions,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False,
        )  # fmt: skip
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = LlamaForCausalLM(config)
    else:
        raise ValueError(f"architecture={architecture!r} must be 'gpt2' or 'llama'.")
    path = Path(path)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


class _Blocked(OSError):
    pass


@contextlib.contextmanager
def no_network():
    """Inside the block every DNS look-up of a non-local host and every inet socket connect raises ``OSError``
    and is recorded; yields the list of attempts, so a caller can ``assert not attempts`` afterwards."""
    attempts: list[str] = []
    real_getaddrinfo, real_connect, real_connect_ex = (
        socket.getaddrinfo,
        socket.socket.connect,
        socket.socket.connect_ex,
    )
    local = {"localhost", "127.0.0.1", "::1", None}

    def getaddrinfo(host, *args, **kwargs):
        if host not in local:
            attempts.append(f"getaddrinfo({host!r})")
            raise _Blocked(f"network access blocked by dpo_teach.hub.no_network: getaddrinfo({host!r})")
        return real_getaddrinfo(host, *args, **kwargs)

    def guard(real):
        def connect(sock, address):
            if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in local:
                attempts.append(f"connect({address!r})")
                raise _Blocked(f"network access blocked by dpo_teach.hub.no_network: connect({address!r})")
            return real(sock, address)

        return connect

    socket.getaddrinfo = getaddrinfo
    socket.socket.connect, socket.socket.connect_ex = guard(real_connect), guard(real_connect_ex)
    try:
        yield attempts
    finally:
        socket.getaddrinfo = real_getaddrinfo
        socket.socket.connect, socket.socket.connect_ex = real_connect, real_connect_ex
