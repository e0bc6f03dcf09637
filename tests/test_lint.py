"""`ruff` is configured (pyproject.toml) and the tree is clean: the same check as `make lint`, inside `make test`."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO

PATHS = ["dpo_teach", "tests", "benchmarks", "tools", "book", "docs"]


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["check", "format"])
def test_ruff_is_clean(command):
    result = subprocess.run(
        [sys.executable, "-m", "ruff", *command, *PATHS], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, (
        f"ruff {' '.join(command)} found problems (run `make lint`):\n{result.stdout}"
    )
