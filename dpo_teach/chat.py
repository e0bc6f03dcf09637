"""TRL's conversational rows: lists of ``{"role", "content"}`` messages, tokenised through the chat template.

A conversational row holds message lists where a standard row holds strings: ``prompt`` (the conversation so
far, ending with a user turn) and ``chosen``/``rejected`` or ``completion`` (the assistant's answer). The text
the model sees is the tokenizer's chat template applied to ``prompt + answer``; TRL 1.16's trainers tokenise it
in three steps, and :func:`encode_conversation` repeats them:

1. ``prompt_ids`` = the template of ``prompt`` alone with ``add_generation_prompt=True`` (so it ends with the
   header that opens the assistant's turn, e.g. ``<|im_start|>assistant\\n``);
2. ``full_ids`` = the template of ``prompt + answer`` for each answer (no generation prompt: the answer's own
   header is already in it);
3. the boundary ``n`` = the shortest common prefix of ``prompt_ids`` with every ``full_ids``; the prompt is
   ``prompt_ids[:n]`` and each answer is ``full_ids[n:]``.

Step 3 keeps the prompt/response boundary exact even for a template that renders the prompt alone differently
from the prompt inside the whole conversation: the prompt is the same token ids for every answer, and each
answer's ids are exactly what follows them in the full conversation. The template's own end-of-turn token ends
each answer, so no EOS is appended (TRL appends EOS to standard rows only).
"""

from __future__ import annotations

from itertools import takewhile

ANSWER_FIELDS = ("chosen", "rejected", "completion")


def is_conversation(value) -> bool:
    """True when ``value`` is a list of messages: a list or tuple whose items are dicts with a ``"role"``."""
    return isinstance(value, (list, tuple)) and any(isinstance(m, dict) and "role" in m for m in value)


def check_messages(at: str, name: str, value) -> list[dict]:
    """``value`` as a list of ``{"role": str, "content": str}`` dicts; ``TypeError``/``ValueError`` naming
    ``at`` (the row), ``name`` (the field) and the message index otherwise."""
    if not isinstance(value, (list, tuple)) or not value:
        raise TypeError(
            f"{at}, field {name!r} must be a non-empty list of {{'role', 'content'}} messages, as the row's other "
            f"fields are; got {value!r}. Give every text field of a row the same format (all strings or all "
            "message lists)."
        )
    for k, message in enumerate(value):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise TypeError(
                f"{at}, field {name!r}, message {k} must be a dict with a str 'role', got {message!r}."
            )
        if not isinstance(message.get("content"), str):
            raise TypeError(
                f"{at}, field {name!r}, message {k} must have a str 'content', got {message.get('content')!r}."
            )
    return list(value)


def extract_prompt(row: dict, at: str = "the row") -> dict:
    """A conversational pair with an implicit prompt (``chosen``/``rejected`` whole conversations) → ``prompt``,
    ``chosen``, ``rejected``, as TRL's ``extract_prompt``: the prompt is the messages before the first one in which
    the two differ (before the last message when they never differ)."""
    chosen, rejected = list(row["chosen"]), list(row["rejected"])
    shared = min(len(chosen), len(rejected)) - 1
    shared = next((k for k in range(shared + 1) if chosen[k] != rejected[k]), shared)
    if shared <= 0:
        raise ValueError(
            f"{at}: chosen and rejected share no leading messages to use as the prompt; add a 'prompt' field (the "
            "messages before the answer) or repeat the conversation in both."
        )
    return {"prompt": chosen[:shared], "chosen": chosen[shared:], "rejected": rejected[shared:]}


def require_chat_template(tokenizer) -> None:
    """``ValueError`` saying the fix when ``tokenizer`` has no chat template (conversational rows need one)."""
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError(
            "the rows are conversational (lists of {'role', 'content'} messages) but the tokenizer has no "
            "chat_template; set tokenizer.chat_template to the model's Jinja template (instruct models ship one), "
            "or pass standard rows with prompt/chosen/rejected strings."
        )


def _template_ids(tokenizer, messages, **options) -> list[int]:
    out = tokenizer.apply_chat_template(list(messages), tokenize=True, return_dict=True, **options)
    return list(out["input_ids"])


def _common_prefix(a, b) -> int:
    return sum(1 for _ in takewhile(lambda pair: pair[0] == pair[1], zip(a, b, strict=False)))


def encode_conversation(tokenizer, prompt, answers) -> tuple[list[int], list[list[int]]]:
    """Message lists → ``(prompt_ids, [answer_ids, …])`` exactly as TRL 1.16's DPO/SFT trainers tokenise them.

    ``prompt``: the messages before the answer; ``answers``: one message list per answer (chosen and rejected,
    or the one completion). With ``n = min_a |common prefix(template(prompt, generation prompt),
    template(prompt + a))|``: ``prompt_ids = template(prompt)[:n]`` and ``answer_ids[a] = template(prompt + a)[n:]``,
    so ``prompt_ids + answer_ids[a]`` is the template of the whole conversation, token for token.
    """
    require_chat_template(tokenizer)
    prompt_ids = _template_ids(tokenizer, prompt, add_generation_prompt=True)
    full = [_template_ids(tokenizer, [*prompt, *answer]) for answer in answers]
    n = min(_common_prefix(prompt_ids, ids) for ids in full)
    return prompt_ids[:n], [ids[n:] for ids in full]


def apply_template(row: dict, tokenizer) -> dict:
    """A conversational row → the same row as strings, as TRL's ``apply_chat_template`` renders it.

    ``prompt`` becomes the template of the prompt messages (with the generation prompt after a user turn, or
    continuing a final assistant message), cut to its longest common prefix with each rendered ``prompt +
    answer``; each answer field becomes the rest of its rendered conversation. Other fields (e.g. ``label``)
    pass through.
    """
    require_chat_template(tokenizer)
    prompt = list(row["prompt"])
    last = prompt[-1]["role"]
    if last not in ("user", "tool", "assistant"):
        raise ValueError(
            f"the prompt's last message has role {last!r}; it must end with a 'user' (or 'tool') turn to be "
            "answered, or an 'assistant' turn to be continued."
        )
    opens_turn = last != "assistant"
    text = tokenizer.apply_chat_template(
        prompt, tokenize=False, add_generation_prompt=opens_turn, continue_final_message=not opens_turn
    )
    fields = [f for f in ANSWER_FIELDS if f in row]
    full = {f: tokenizer.apply_chat_template([*prompt, *row[f]], tokenize=False) for f in fields}
    for rendered in full.values():
        text = text[: _common_prefix(text, rendered)]
    out = {k: v for k, v in row.items() if k not in ("prompt", *fields)}
    return {"prompt": text, **{f: full[f][len(text) :] for f in fields}, **out}
