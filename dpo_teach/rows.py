"""Rows in, validated: TRL's three row formats read from a list, a ``.json``/``.jsonl`` file or a Dataset.

* preference: ``prompt``, ``chosen``, ``rejected`` (strings) — DPO and its paired variants;
* KTO (unpaired): ``prompt``, ``completion`` (strings), ``label`` (bool: desirable or not);
* SFT: ``prompt``, ``completion`` (strings).

Each text field may instead be a list of ``{"role", "content"}`` messages (TRL's conversational format, the
whole row alike; :mod:`dpo_teach.chat`). Files are ``.json`` (one list) or ``.jsonl`` (one object a line),
UTF-8; a validation error in a row read from a file names the file and the line. :func:`unpair_preference_rows`
is the one way pairs become KTO rows (the trainer's and the worlds' ``kto_dataset``). Tokenisation and
collation are :mod:`dpo_teach.data`.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from dpo_teach import chat

FIELDS = {
    "preference": ("prompt", "chosen", "rejected"),
    "kto": ("prompt", "completion", "label"),
    "sft": ("prompt", "completion"),
}


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


def unpair(pairs) -> list[dict]:
    """Preference pairs → KTO rows, in order: each pair gives ``{"prompt", "completion": chosen, "label": True}``
    and then ``{"prompt", "completion": rejected, "label": False}`` (no validation: see
    :func:`unpair_preference_rows`)."""
    return [
        {"prompt": r["prompt"], "completion": r[k], "label": k == "chosen"}
        for r in pairs
        for k in ("chosen", "rejected")
    ]


def unpair_preference_rows(source) -> list[dict]:
    """Preference rows read and validated (:func:`load_preference_rows`), then :func:`unpair` ed into KTO rows."""
    return unpair(load_preference_rows(source))


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
