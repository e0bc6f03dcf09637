"""Shared by the whole suite: where the repository is, and a throwaway model cache."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BOOK = REPO / "book"


@pytest.fixture
def repo() -> Path:
    """The repository root (the folder holding the Makefile)."""
    return REPO


@pytest.fixture
def tmp_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point ``DPO_TEACH_CACHE`` at an empty temporary folder for the duration of one test."""
    cache = tmp_path / "dpo_teach_cache"
    cache.mkdir()
    monkeypatch.setenv("DPO_TEACH_CACHE", str(cache))
    return cache


def pytest_configure(config: pytest.Config) -> None:
    """Time every notebook nbval runs (tests/nbval_timing.py): printed at the end, written for the budget."""
    from nbval_timing import register

    register(config)
