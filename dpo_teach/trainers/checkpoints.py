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

import hashlib
import json
import os
import pickle
import re
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file

from dpo_teach._validate import check_writable
from dpo_teach.checksums import checksum_mismatches, folder_checksums
from dpo_teach.seed import rng_state, set_rng_state

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
    check_writable("output_dir", path, "pass a folder you can write to (it is created if missing)")
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


# ---------------------------------------------------------------------------------------------- writing
def save_checkpoint(path, *, model, optimizer, scheduler, state: dict) -> Path:
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
        (tmp / STATE_FILE).write_text(json.dumps({**state, "rng": rng_state()}), encoding="utf-8")
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


def prepare_output_dir(output_dir, resume_from_checkpoint, *, overwrite: bool) -> Path | None:
    """``output_dir`` checked and writable (:func:`check_output_dir`) before anything trains; None without one.

    A run may write into a folder that holds checkpoints only when it continues one of them
    (``resume_from_checkpoint`` True, or a ``checkpoint-N`` folder inside ``output_dir``)."""
    if resume_from_checkpoint is True and output_dir is None:
        raise ValueError(
            "resume_from_checkpoint=True resumes the latest checkpoint under output_dir, but output_dir is "
            "None; pass output_dir=... or the path of a checkpoint-N folder."
        )
    if output_dir is None:
        return None
    into = resume_from_checkpoint is True or (
        bool(resume_from_checkpoint)
        and Path(resume_from_checkpoint).expanduser().resolve().parent
        == Path(output_dir).expanduser().resolve()
    )
    return check_output_dir(output_dir, overwrite=overwrite, resuming=into)


def checkpoint_to_resume(
    resume_from_checkpoint, output_dir, config: dict, data: str
) -> tuple[Path, dict] | None:
    """The checkpoint to resume, verified and compared with this run's ``config`` (the fields that must not
    change) and ``data`` (:func:`data_fingerprint`): ``(path, state)``, or None for a fresh run."""
    if not resume_from_checkpoint:
        return None
    if resume_from_checkpoint is True:
        path, state = find_checkpoint(output_dir)
    else:
        path, state = Path(resume_from_checkpoint), read_checkpoint(resume_from_checkpoint)
    if state["config"] != config:
        changed = sorted(k for k in {*state["config"], *config} if state["config"].get(k) != config.get(k))
        raise ValueError(
            f"the checkpoint was written with different settings {changed}; resume with the same config."
        )
    if state["data"] != data:
        raise ValueError(
            f"checkpoint {str(path)!r} was trained on other data (the tokenised train_rows differ); resume "
            "with the same train_rows, tokenizer and truncation settings, or start a new run."
        )
    return path, state


def load_checkpoint(path, *, model, optimizer, scheduler, state: dict | None = None) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` into the given objects (in place) and restore the
    RNG states; returns the state dict. ``state``: what :func:`read_checkpoint` already returned for ``path``
    (it is verified here otherwise)."""
    path = Path(path)
    state = dict(state if state is not None else read_checkpoint(path))
    device = next(model.parameters()).device
    saved = _refuse_pickles(
        path / OPTIM_FILE, torch.load, path / OPTIM_FILE, weights_only=True, map_location=device
    )
    _refuse_pickles(path / STATE_FILE, set_rng_state, state.pop("rng"))
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
