"""Cached reference models: a world's π_ref is trained by SFT once, then loaded from disk.

:func:`reference_model` trains π_ref deterministically from the world's seed the first time (a tiny GPT-2 from
``world.model_config``, SFT with ``world.sft_config`` on ``world.sft_rows``, always on the CPU so that every
reader gets the same π_ref whatever their device), and afterwards loads it from the cache directory:
``$DPO_TEACH_CACHE`` if set, else ``~/.cache/dpo_teach``. Training runs on one CPU thread: a model this small
gains nothing from more (its matrices are 64 wide), a fixed thread count removes one source of differences
between machines, and on a busy machine two spinning OpenMP threads were measured ~15× slower than one.

**The key** of an entry is a hash of the world's config, the model size, the SFT settings, the training
function, the package version and a fingerprint of the source files that decide what π_ref becomes (models,
data, log-probs, worlds, SFT): change any of them and a new π_ref is trained; nothing stale is reused — a
reader who edits the SFT loop can never load a model the old loop trained.

**Atomic writes.** An entry is written into a temporary directory next to its final place, every file is
fsync'ed, a ``manifest.json`` with the SHA-256 of every file is written last, and the complete directory is
moved into place with one ``os.replace``. A crash mid-write leaves at most a ``.tmp-*`` directory that is never
read. On load the manifest and every checksum are verified; an entry that fails (missing manifest, checksum
mismatch, unreadable weights) is reported with a warning, deleted and rebuilt.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM
from transformers.utils import logging as hf_logging

from dpo_teach import __version__
from dpo_teach._validate import check_writable
from dpo_teach.checksums import sha256_file as _sha256
from dpo_teach.device import get_device, single_thread
from dpo_teach.models import tiny_gpt2

CACHE_FORMAT = 1
MANIFEST = "manifest.json"


class CorruptCacheEntry(Exception):
    """A cache entry that exists but cannot be trusted (partial, modified or unreadable)."""


def cache_root(cache_dir=None) -> Path:
    """The cache directory: ``cache_dir``, else ``$DPO_TEACH_CACHE``, else ``~/.cache/dpo_teach``."""
    chosen = cache_dir if cache_dir is not None else os.environ.get("DPO_TEACH_CACHE") or "~/.cache/dpo_teach"
    return Path(chosen).expanduser()


def _default_train_fn():
    from dpo_teach.trainers.sft import train_sft

    return train_sft


# The modules whose code determines the trained π_ref (relative to the package root).
_SOURCES = (
    "models.py",
    "data.py",
    "logprobs.py",
    "seed.py",
    "worlds",
    "trainers/sft.py",
    "trainers/common.py",
)


@functools.lru_cache(maxsize=1)
def source_fingerprint() -> str:
    """SHA-256 (first 16 hex digits) of the package sources that decide what a cached π_ref is."""
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for name in _SOURCES:
        path = root / name
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(file.relative_to(root).as_posix().encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def key_material(world, train_fn=None) -> dict:
    """Everything the cached π_ref depends on, as a JSON-serialisable dict."""
    for attr in ("name", "config", "model_config", "sft_config", "sft_rows", "tokenizer", "seed"):
        if not hasattr(world, attr):
            raise TypeError(
                f"world must be a dpo_teach world (SequenceWorld, ReviewsWorld); it has no {attr!r}."
            )
    train_fn = train_fn or _default_train_fn()
    return {
        "format": CACHE_FORMAT,
        "dpo_teach": __version__,
        "source": source_fingerprint(),
        "world": world.config(),
        "model": world.model_config,
        "sft": world.sft_config,
        "train_fn": _recipe_name(train_fn),
    }


def _recipe_name(fn) -> str:
    """``module.qualname`` of a training function (of its class for a callable object); a ``functools.partial``
    adds its bound arguments, which change what is trained."""
    if isinstance(fn, functools.partial):
        bound = [repr(a) for a in fn.args] + [f"{k}={v!r}" for k, v in sorted(fn.keywords.items())]
        return f"{_recipe_name(fn.func)}({', '.join(bound)})"
    owner = fn if hasattr(fn, "__qualname__") else type(fn)
    return f"{owner.__module__}.{owner.__qualname__}"


def cache_path(world, cache_dir=None, train_fn=None) -> Path:
    """The directory of ``world``'s π_ref in the cache (it may not exist yet)."""
    material = json.dumps(key_material(world, train_fn), sort_keys=True)
    return cache_root(cache_dir) / f"{world.name}-{hashlib.sha256(material.encode()).hexdigest()[:16]}"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _quiet():
    """Silence transformers' own progress bars (weights loading/saving) so a notebook's output stays stable."""
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _load(entry: Path, material: dict):
    """Verify ``entry`` against its manifest and load the model (CPU, eval mode); raise CorruptCacheEntry."""
    try:
        manifest = json.loads((entry / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CorruptCacheEntry(f"its {MANIFEST} is missing or unreadable ({err})") from err
    expected = json.loads(json.dumps(material))  # as it reads back from JSON (tuples become lists)
    if (
        not isinstance(manifest, dict)
        or manifest.get("key") != expected
        or not isinstance(manifest.get("files"), dict)
    ):
        raise CorruptCacheEntry(f"its {MANIFEST} does not describe this world and these settings")
    for name, digest in manifest["files"].items():
        if not (entry / name).is_file() or _sha256(entry / name) != digest:
            raise CorruptCacheEntry(f"{name} is missing or its checksum does not match the manifest")
    try:
        with _quiet():
            model = AutoModelForCausalLM.from_pretrained(
                entry, local_files_only=True, trust_remote_code=False
            )
    except Exception as err:  # safetensors, JSON and config errors all mean the same thing here
        raise CorruptCacheEntry(f"the checkpoint cannot be loaded ({type(err).__name__}: {err})") from err
    # from_pretrained memory-maps the weights file; copy them so that the model never changes with the file
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            tensor.data = tensor.data.clone()
    return model.eval()


def _write(entry: Path, model, tokenizer, material: dict, info: dict) -> None:
    """Write the entry atomically: temp dir → fsync → manifest → fsync → os.replace into place."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{entry.name}-", dir=entry.parent))
    try:
        with _quiet():
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        files = {p.name: _sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        manifest = {"key": material, "files": files, "sft": info}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")
        for p in tmp.iterdir():
            _fsync(p)
        _fsync(tmp)
        try:
            os.replace(tmp, entry)
        except OSError:
            if not entry.exists():  # anything but "another process finished first" is a real error
                raise
        _fsync(entry.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _train(world, train_fn, progress: bool):
    """A fresh tiny GPT-2 trained by ``train_fn`` on the world's demonstrations (CPU, seeded by the world)."""
    sft = dict(world.sft_config)
    n_rows = sft.pop("n_rows")
    model = tiny_gpt2(world.tokenizer, seed=world.seed, **world.model_config)
    rows = world.sft_rows(n_rows, seed=world.seed)
    with single_thread():  # see the module docstring
        start = time.perf_counter()
        history = train_fn(
            model,
            world.tokenizer,
            rows,
            allowed_token_ids=world.allowed_token_ids,
            seed=world.seed,
            device="cpu",
            progress=progress,
            **sft,
        )
    seconds = time.perf_counter() - start
    losses = [h["loss"] for h in (history or []) if "loss" in h][-20:]
    info = {
        "seconds": round(seconds, 2),
        "steps": len(history or []),
        "final_loss": sum(losses) / len(losses) if losses else None,
    }
    return model, info


def reference_model(world, *, device=None, cache_dir=None, progress: bool = False, train_fn=None):
    """π_ref of ``world``: ``(model, tokenizer)``, the model in eval mode on ``device``.

    The first call trains it (``train_fn``, default :func:`dpo_teach.trainers.sft.train_sft`, called as
    ``train_fn(model, tokenizer, rows, allowed_token_ids=…, seed=…, device="cpu", progress=…, **sft_config)``)
    and caches it under :func:`cache_path`; later calls load it. A corrupt or partial entry is rebuilt with a
    warning. ``cache_dir`` overrides ``$DPO_TEACH_CACHE`` / ``~/.cache/dpo_teach``.

    ``progress`` is off by default: a bar that appears only when the cache is cold would make a chapter's
    stored output depend on what ran before it (nbval compares outputs strictly). Chapter 05 shows SFT
    with its progress bar by calling :func:`dpo_teach.trainers.sft.train_sft` itself.
    """
    if train_fn is not None and not callable(train_fn):
        raise TypeError(
            f"train_fn must be callable like dpo_teach.trainers.sft.train_sft, got {type(train_fn).__name__}."
        )
    material = key_material(world, train_fn)
    entry = cache_path(world, cache_dir, train_fn)
    target = get_device(device)
    if entry.exists() and not entry.is_dir():
        raise ValueError(
            f"the cache entry {str(entry)!r} is a file, not a directory; delete that file or choose another "
            "cache folder (cache_dir=... or $DPO_TEACH_CACHE)."
        )
    if entry.exists():
        try:
            return _load(entry, material).to(target), world.tokenizer
        except CorruptCacheEntry as err:
            warnings.warn(
                f"The cached reference model at {entry} is corrupt: {err}. Deleting it and training a "
                "new one.",
                RuntimeWarning,
                stacklevel=2,
            )
            shutil.rmtree(entry, ignore_errors=True)
    # before the minutes of SFT, not after
    check_writable(
        "cache folder",
        entry.parent,
        "set $DPO_TEACH_CACHE (or pass cache_dir=...) to a folder you can write to",
    )
    model, info = _train(world, train_fn or _default_train_fn(), progress)
    _write(entry, model, world.tokenizer, material, info)
    return _load(entry, material).to(target), world.tokenizer
