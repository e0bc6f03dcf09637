"""Checkpoints a run can be resumed from, and the output folder they are written into.

A checkpoint is a folder ``checkpoint-N`` (N = optimizer steps done) under ``output_dir`` holding

* the model by ``save_pretrained`` (safetensors, loads in plain transformers),
* ``optimizer.pt``: the optimizer and scheduler state dicts by ``torch.save``, read back with
  ``torch.load(weights_only=True)``, which accepts tensors and plain containers only — a file that holds any
  other object (a pickle that would run code when loaded) is refused, never executed;
* ``trainer_state.json``: step, data position, metrics history, RNG states, the run's config and a fingerprint
  of the tokenised training data (:func:`data_fingerprint`);
* ``manifest.json``, written last: the SHA-256 of every other file (:mod:`dpo_teach.checksums`).

It is written into a temporary sibling folder and renamed into place in one step, so ``checkpoint-N`` is
either complete or absent. Before anything is loaded, every file is checked against the manifest. Resuming
the latest checkpoint skips one that fails (with a warning) and falls back to the one before; a checkpoint
named explicitly must be intact.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import pickle
import random
import re
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from dpo_teach.checksums import checksum_mismatches, folder_checksums

STATE_FILE = "trainer_state.json"
OPTIM_FILE = "optimizer.pt"
MANIFEST = "manifest.json"
CHECKPOINT_FORMAT = 1
_NAME = re.compile(r"checkpoint-(\d+)")
_STATE_KEYS = ("step", "position", "history", "config", "data", "rng")
_WEIGHTS = ("*.safetensors", "*.bin", "*.pt")  # files that mean a folder already holds a trained model


class CorruptCheckpoint(ValueError):
    """A checkpoint folder that exists but cannot be trusted: incomplete, modified or unreadable."""


# ---------------------------------------------------------------------------------------------- RNG states
def _encode_tensor(t: torch.Tensor) -> str:
    buf = io.BytesIO()
    torch.save(t, buf)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _decode_tensor(s: str) -> torch.Tensor:
    return torch.load(io.BytesIO(base64.b64decode(s)), weights_only=True)


def rng_state(generator: torch.Generator | None = None) -> dict:
    """The RNG states (Python, NumPy, torch CPU/CUDA, and ``generator``) as a JSON-serialisable dict."""
    np_state = np.random.get_state()  # noqa: NPY002 (seed_everything seeds the legacy global state)
    state = {
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "torch": _encode_tensor(torch.get_rng_state()),
        "cuda": [_encode_tensor(s) for s in torch.cuda.get_rng_state_all()]
        if torch.cuda.is_available()
        else [],
    }
    if generator is not None:
        state["generator"] = _encode_tensor(generator.get_state())
    return state


def set_rng_state(state: dict, generator: torch.Generator | None = None) -> None:
    """Restore what :func:`rng_state` captured."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    np.random.set_state(  # noqa: NPY002
        (state["numpy"][0], np.array(state["numpy"][1], dtype=np.uint32), *state["numpy"][2:])
    )
    torch.set_rng_state(_decode_tensor(state["torch"]))
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_decode_tensor(s) for s in state["cuda"]])
    if generator is not None and "generator" in state:
        generator.set_state(_decode_tensor(state["generator"]))


# ---------------------------------------------------------------------------------------------- the data
def data_fingerprint(examples) -> str:
    """SHA-256 of the tokenised training examples, in order: every ``*_ids`` token list and KTO's ``label``.

    Values added later (precomputed reference log-probs) are left out, so the fingerprint depends only on the
    rows, the tokenizer and the truncation settings.
    """
    digest = hashlib.sha256()
    for example in examples:
        kept = {k: example[k] for k in sorted(example) if k.endswith("_ids") or k == "label"}
        digest.update(json.dumps(kept).encode())
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------- the output folder
def numbered_checkpoints(output_dir) -> list[Path]:
    """The ``checkpoint-N`` folders under ``output_dir``, newest (largest N) first; other names
    (``checkpoint-best``, temporary folders) are not checkpoints of a run and are left out."""
    found = []
    if Path(output_dir).is_dir():
        for p in Path(output_dir).iterdir():
            match = _NAME.fullmatch(p.name)
            if match and p.is_dir():
                found.append((int(match.group(1)), p))
    return [p for _, p in sorted(found, reverse=True)]


def check_output_dir(output_dir, *, overwrite: bool = False, resuming: bool = False) -> Path:
    """Make sure a run can write into ``output_dir`` before it trains; returns it as a ``Path``.

    Raises ``ValueError`` if ``output_dir`` is a file or lies under one, if it cannot be written (the folder is
    created and a probe file written and removed), or if it already holds another run (``checkpoint-N``
    folders or model weights) while this run neither resumes from it nor was given ``overwrite=True``. With
    ``overwrite=True`` the earlier run's checkpoints are deleted, so that resuming "the latest checkpoint" can
    never pick one of them up.
    """
    if not isinstance(output_dir, (str, os.PathLike)):
        raise TypeError(f"output_dir must be a folder path (str), got {type(output_dir).__name__}.")
    path = Path(output_dir).expanduser()
    _check_writable(path)
    earlier = [p.name for p in numbered_checkpoints(path)]
    earlier += sorted(p.name for pattern in _WEIGHTS for p in path.glob(pattern))
    if earlier and not resuming:
        if not overwrite:
            raise ValueError(
                f"output_dir={str(path)!r} already holds another run ({', '.join(earlier[:4])}); pass "
                "overwrite_output_dir=True to replace it, resume_from_checkpoint=True to continue it, "
                "or a new output_dir."
            )
        for old in numbered_checkpoints(path):
            shutil.rmtree(old)
    return path


def _check_writable(path: Path) -> None:
    """Create the folder ``path`` and write a probe file into it; ``ValueError`` naming the cause if not."""
    for place in (path, *path.parents):  # the nearest part of the path that exists must be a folder
        if place.exists():
            if not place.is_dir():
                where = "is an existing file" if place == path else f"lies under {str(place)!r}, a file"
                raise ValueError(
                    f"output_dir={str(path)!r} {where}; pass a folder path (it is created if missing)."
                )
            break
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as err:
        raise ValueError(
            f"output_dir={str(path)!r} cannot be written ({type(err).__name__}: {err.strerror or err}); "
            "pass a folder you can write to."
        ) from err


# ---------------------------------------------------------------------------------------------- writing
def save_checkpoint(path, *, model, optimizer, scheduler, state: dict, generator=None) -> Path:
    """Write a resumable checkpoint folder at ``path``, atomically (temporary sibling folder, then rename).

    ``state`` must be JSON-serialisable; by convention it holds ``step``, ``position`` (micro-batches
    consumed), ``history``, ``config`` and ``data`` (:func:`data_fingerprint`). The RNG states are added.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{path.name}-", dir=path.parent))
    try:
        model.save_pretrained(tmp)
        torch.save(
            {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp / OPTIM_FILE
        )
        (tmp / STATE_FILE).write_text(json.dumps({**state, "rng": rng_state(generator)}), encoding="utf-8")
        manifest = {"format": CHECKPOINT_FORMAT, "files": folder_checksums(tmp)}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")
        _replace_folder(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def _replace_folder(new: Path, target: Path) -> None:
    """Move ``new`` to ``target``; an existing ``target`` (a checkpoint being rewritten after a resume) is
    first renamed aside, so that at every moment ``target`` is either the old folder or the new one."""
    if not target.exists():
        os.replace(new, target)
        return
    aside = target.with_name(f".old-{target.name}-{os.getpid()}-{time.time_ns()}")
    os.replace(target, aside)
    os.replace(new, target)
    shutil.rmtree(aside, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- reading
def read_checkpoint(path) -> dict:
    """Verify the checkpoint folder ``path`` against its manifest and return its ``trainer_state.json``;
    nothing is loaded into a model. Raises :class:`CorruptCheckpoint` (a ``ValueError``) saying what is wrong."""
    path = Path(path)
    if not path.is_dir():
        raise ValueError(
            f"resume_from_checkpoint={str(path)!r} is not a folder; pass a checkpoint-N folder or True."
        )
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
        files = manifest["files"]
        if not isinstance(files, dict):
            raise TypeError("files is not a dict")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CorruptCheckpoint(
            f"checkpoint {str(path)!r} has no valid {MANIFEST} ({type(err).__name__}): it is incomplete or "
            "was not written by this version of dpo_teach."
        ) from err
    problems = checksum_mismatches(path, files, exclude=(MANIFEST,))
    if problems:
        raise CorruptCheckpoint(f"checkpoint {str(path)!r} is corrupt: {'; '.join(problems)}.")
    try:
        state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CorruptCheckpoint(f"{str(path / STATE_FILE)!r} cannot be read ({err}).") from err
    if not isinstance(state, dict) or not all(k in state for k in _STATE_KEYS):
        raise CorruptCheckpoint(f"{str(path / STATE_FILE)!r} lacks some of the fields {list(_STATE_KEYS)}.")
    return state


def find_checkpoint(output_dir) -> tuple[Path, dict]:
    """The newest intact ``checkpoint-N`` under ``output_dir`` and its state; each newer one that fails
    :func:`read_checkpoint` is skipped with a ``RuntimeWarning``. ``ValueError`` if none is intact."""
    failures = []
    for path in numbered_checkpoints(output_dir):
        try:
            state = read_checkpoint(path)
        except CorruptCheckpoint as err:
            failures.append(str(err))
            warnings.warn(f"{err} Falling back to an earlier checkpoint.", RuntimeWarning, stacklevel=2)
            continue
        return path, state
    found = f": {' '.join(failures)}" if failures else ""
    raise ValueError(
        f"resume_from_checkpoint=True but output_dir={str(output_dir)!r} holds no intact checkpoint-N folder"
        f"{found}; start a new run or pass the path of a checkpoint."
    )


def load_checkpoint(path, *, model, optimizer, scheduler, generator=None, state: dict | None = None) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` into the given objects (in place) and restore the
    RNG states; returns the state dict. ``state``: what :func:`read_checkpoint` already returned for ``path``
    (it is verified here otherwise)."""
    path = Path(path)
    state = dict(state if state is not None else read_checkpoint(path))
    device = next(model.parameters()).device
    saved = _refuse_pickles(
        path / OPTIM_FILE, torch.load, path / OPTIM_FILE, weights_only=True, map_location=device
    )
    _refuse_pickles(path / STATE_FILE, set_rng_state, state.pop("rng"), generator)
    weights = {}
    for shard in sorted(path.glob("model*.safetensors")):  # one file, or shards of a large model
        weights.update(load_file(shard, device=str(device)))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    # save_pretrained drops tied weights (e.g. lm_head tied to the embeddings); only those may be missing
    if unexpected or not _only_tied(model, missing):
        raise ValueError(
            f"checkpoint {str(path)!r} does not match the model: missing {missing}, unexpected {unexpected}."
        )
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    return state


def _refuse_pickles(file: Path, load, *args, **kwargs):
    """``load(*args, **kwargs)``, where ``load`` reads ``file`` with ``torch.load(weights_only=True)``: a file
    holding any object besides tensors and plain containers is refused with a ``CorruptCheckpoint``."""
    try:
        return load(*args, **kwargs)
    except pickle.UnpicklingError as err:
        raise CorruptCheckpoint(
            f"{str(file)!r} holds objects other than tensors and plain containers; it was refused, since "
            "unpickling them could run code. Resume only from checkpoints this package wrote."
        ) from err


def _only_tied(model, missing) -> bool:
    """True when every missing key is a parameter that shares storage with a loaded one (tied weights)."""
    params = dict(model.named_parameters(remove_duplicate=False))
    loaded = {params[k].data_ptr() for k in params if k not in missing}
    return all(k in params and params[k].data_ptr() in loaded for k in missing)


def latest_checkpoint(output_dir) -> Path | None:
    """The ``checkpoint-N`` folder with the largest N under ``output_dir`` (None if there is none); it is not
    verified (:func:`find_checkpoint` returns the newest *intact* one)."""
    found = numbered_checkpoints(output_dir)
    return found[0] if found else None
