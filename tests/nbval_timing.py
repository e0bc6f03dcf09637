"""A pytest plugin that times each notebook nbval runs, cold (kernel start to kernel shutdown).

nbval starts a fresh kernel in the notebook's setup and stops it in its teardown, so the sum of the setup,
call and teardown durations of a notebook's cells is its cold execution time. The plugin prints one line
per notebook at the end of the run and writes them to ``_build/timings/nbval.json`` (or to the path in
``DPO_TEACH_TIMINGS``); ``benchmarks/book_budget.py`` compares them with the book's time budget.

Registered by ``tests/conftest.py`` (its ``pytest_configure`` calls :func:`register`) or with
``-p nbval_timing`` when tests/ is on the path: a plain conftest hook would only see the reports of items
under tests/, not those of book/.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections import defaultdict
from pathlib import Path

DEFAULT_PATH = Path("_build") / "timings" / "nbval.json"


def timings_path(rootpath: Path) -> Path:
    """Where the timings are written: ``$DPO_TEACH_TIMINGS`` or ``<root>/_build/timings/nbval.json``."""
    override = os.environ.get("DPO_TEACH_TIMINGS")
    return Path(override) if override else Path(rootpath) / DEFAULT_PATH


class NbvalTiming:
    """Sums report durations per notebook (``path.ipynb::Cell N`` node ids) and counts failed cells."""

    def __init__(self, config):
        self.config = config
        self.seconds: dict[str, float] = defaultdict(float)
        self.cells: dict[str, int] = defaultdict(int)
        self.failed: dict[str, int] = defaultdict(int)

    def pytest_runtest_logreport(self, report) -> None:
        path = report.nodeid.split("::", 1)[0]
        if not path.endswith(".ipynb"):
            return
        self.seconds[path] += report.duration
        if report.when == "call":
            self.cells[path] += 1
        if report.failed:
            self.failed[path] += 1

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if not self.seconds or hasattr(self.config, "workerinput"):
            return
        terminalreporter.section("notebook execution times (nbval, cold kernel)")
        for path in sorted(self.seconds):
            note = f", {self.failed[path]} failed" if self.failed[path] else ""
            terminalreporter.write_line(
                f"{self.seconds[path]:8.1f} s  {path}  ({self.cells[path]} cells{note})"
            )
        total = sum(self.seconds.values())
        terminalreporter.write_line(f"{total:8.1f} s  total over {len(self.seconds)} notebooks")
        target = timings_path(self.config.rootpath)
        target.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "source": "nbval",
            "written": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "notebooks": {
                path: {
                    "seconds": round(self.seconds[path], 3),
                    "cells": self.cells[path],
                    "failed": self.failed[path],
                }
                for path in sorted(self.seconds)
            },
        }
        target.write_text(json.dumps(record, indent=2) + "\n")
        terminalreporter.write_line(
            f"written to {target}; compare with the budget: python benchmarks/book_budget.py"
        )


def register(config) -> None:
    """Register the timer once (from a conftest's ``pytest_configure``, or by ``-p nbval_timing``)."""
    if not config.pluginmanager.has_plugin("nbval-timing"):
        config.pluginmanager.register(NbvalTiming(config), "nbval-timing")


def pytest_configure(config) -> None:
    register(config)
