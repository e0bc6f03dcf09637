"""SHA-256 checksums of the files in a folder: the one integrity check of the package.

Cached reference models (:mod:`dpo_teach.cache`) and training checkpoints
(:mod:`dpo_teach.trainers.checkpoints`) both store, next to their files, a manifest mapping each file's path
(relative to the folder, ``/``-separated) to the SHA-256 of its bytes, and verify every file against it before
anything is loaded. A checksum detects a torn write, a truncated copy or a flipped bit; it is not a signature
(whoever can rewrite a file can rewrite its manifest), which is why nothing read back is ever unpickled.
"""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path) -> str:
    """The SHA-256 of the file at ``path`` as 64 hex digits (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def folder_checksums(folder, exclude: tuple[str, ...] = ()) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``folder`` (recursively), except the names in
    ``exclude`` (e.g. the manifest itself)."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return {
        p.relative_to(folder).as_posix(): sha256_file(p)
        for p in files
        if p.relative_to(folder).as_posix() not in exclude
    }


def checksum_mismatches(folder, expected: dict, exclude: tuple[str, ...] = ()) -> list[str]:
    """What is wrong with ``folder`` against the manifest ``expected`` (``{relative path: sha256}``): one
    phrase per file that is missing, changed, or present but not listed; empty when everything matches."""
    folder = Path(folder)
    problems = []
    for name, digest in sorted(expected.items()):
        path = folder / name
        if not path.is_file():
            problems.append(f"{name} is missing")
        elif sha256_file(path) != digest:
            problems.append(f"{name} does not match its checksum")
    for p in sorted(folder.rglob("*")):
        name = p.relative_to(folder).as_posix()
        if p.is_file() and name not in expected and name not in exclude:
            problems.append(f"{name} is not in the manifest")
    return problems
