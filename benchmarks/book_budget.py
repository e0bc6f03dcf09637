"""The book's time budget: each chapter runs cold in ≤ 120 s, the whole book in ≤ 15 min (2-core CPU).

Reads the per-chapter cold execution times that ``make test`` wrote (``_build/timings/nbval.json``, by the
pytest plugin ``tests/nbval_timing.py``), or measures them itself with ``--execute`` (each chapter in a fresh
kernel with nbclient, outputs discarded), and prints each time against its budget as a ratio (< 1 is within).

    python benchmarks/book_budget.py                 # the timings of the last `make test`
    python benchmarks/book_budget.py --execute       # run the book now (takes as long as the book)
    python benchmarks/book_budget.py --strict        # exit 1 when a ratio exceeds 1

Times measured while other work loads the machine are inflated; the ``load`` column says how busy it was.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BOOK = REPO / "book"
TIMINGS = REPO / "_build" / "timings" / "nbval.json"
CHAPTER_BUDGET_S = 120.0
BOOK_BUDGET_S = 15 * 60.0


def execute_book(paths: list[Path], timeout: int) -> dict[str, float]:
    """Run each notebook top to bottom in a new kernel of this environment, as `make execute` does, but keep
    the outputs in memory (the stored notebooks are not rewritten); seconds per notebook."""
    import nbformat
    from nbclient import NotebookClient

    sys.path.insert(0, str(REPO / "tools"))
    from execute_book import KERNEL_NAME, CurrentEnvKernelManager

    seconds = {}
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        client = NotebookClient(
            nb,
            timeout=timeout,
            kernel_name=KERNEL_NAME,
            kernel_manager_class=CurrentEnvKernelManager,
            resources={"metadata": {"path": str(path.parent)}},
        )
        start = time.perf_counter()
        client.execute()
        name = str(path.relative_to(REPO))
        seconds[name] = time.perf_counter() - start
        print(f"  ran {name} in {seconds[name]:.1f} s", file=sys.stderr)
    return seconds


def read_timings(path: Path) -> dict[str, float]:
    if not path.exists():
        raise SystemExit(
            f"{path} does not exist: run `make test` first, or pass --execute to run the book now"
        )
    record = json.loads(path.read_text())
    return {name: entry["seconds"] for name, entry in record["notebooks"].items() if name.startswith("book/")}


def report(seconds: dict[str, float]) -> bool:
    """Print the table; True when every chapter and the total are within budget."""
    print(f"{'chapter':<40} {'seconds':>8} {'budget':>7} {'ratio':>6}")
    within = True
    for name in sorted(seconds):
        ratio = seconds[name] / CHAPTER_BUDGET_S
        within &= ratio <= 1
        flag = "" if ratio <= 1 else "  OVER"
        print(f"{name:<40} {seconds[name]:8.1f} {CHAPTER_BUDGET_S:7.0f} {ratio:6.2f}{flag}")
    total = sum(seconds.values())
    ratio = total / BOOK_BUDGET_S
    within &= ratio <= 1
    print(
        f"{'whole book (' + str(len(seconds)) + ' chapters)':<40} {total:8.1f} {BOOK_BUDGET_S:7.0f} {ratio:6.2f}"
        + ("" if ratio <= 1 else "  OVER")
    )
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"cpus {os.cpu_count()}, load average now {load:.2f} (times measured under load are inflated)")
    return within


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timings", type=Path, default=TIMINGS, help="JSON written by tests/nbval_timing.py")
    parser.add_argument(
        "--execute", action="store_true", help="run the chapters now instead of reading timings"
    )
    parser.add_argument("--timeout", type=int, default=600, help="per-cell timeout in seconds for --execute")
    parser.add_argument("--strict", action="store_true", help="exit with status 1 when over budget")
    parser.add_argument(
        "notebooks", nargs="*", type=Path, help="chapters to run with --execute (default: all)"
    )
    args = parser.parse_args(argv)
    if args.execute:
        paths = [p.resolve() for p in args.notebooks] or sorted(BOOK.glob("[0-9][0-9]_*.ipynb"))
        seconds = execute_book(paths, args.timeout)
    else:
        seconds = read_timings(args.timings)
    if not seconds:
        raise SystemExit("no chapter timings found (no book/NN_*.ipynb was run)")
    within = report(seconds)
    return 1 if args.strict and not within else 0


if __name__ == "__main__":
    sys.exit(main())
