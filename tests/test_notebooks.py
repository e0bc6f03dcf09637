"""Every chapter in book/ is stored the way the book promises: executed top to bottom, no errors, with a title.

nbval (in ``make test``) re-runs the notebooks and compares outputs; these checks catch what nbval cannot:
a notebook committed unexecuted, half-run, run out of order, or with a stored error.
"""

from __future__ import annotations

import re

import nbformat
import pytest
from conftest import BOOK, REPO

NAME = re.compile(r"^(\d\d)_[a-z0-9]+(?:_[a-z0-9]+)*\.ipynb$")
NOTEBOOKS = sorted(BOOK.glob("*.ipynb"))
SOLUTIONS = BOOK / "solutions"  # worked solutions, one notebook per part (partN.ipynb), also under nbval
SOLUTION_NAME = re.compile(r"^part\d+\.ipynb$")
STORED = NOTEBOOKS + sorted(SOLUTIONS.glob("*.ipynb"))


def _read(path):
    return nbformat.read(path, as_version=4)


def test_book_has_chapters():
    assert NOTEBOOKS, f"no notebooks in {BOOK}; the book starts with 00_preface.ipynb"


def test_chapter_numbers_are_unique():
    numbers = [path.name[:2] for path in NOTEBOOKS]
    assert len(numbers) == len(set(numbers)), f"two chapters share a number: {numbers}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_file_name_is_nn_slug(path):
    assert NAME.match(path.name), f"{path.name}: rename to NN_slug.ipynb (two digits, lower-case slug)"


@pytest.mark.parametrize("path", STORED, ids=lambda p: p.name)
def test_valid_nbformat_with_python3_kernel(path):
    nb = _read(path)
    nbformat.validate(nb)
    name = nb.metadata.get("kernelspec", {}).get("name")
    assert name == "python3", f"{path.name}: kernelspec name is {name!r}; set it to 'python3'"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_first_cell_is_the_title(path):
    nb = _read(path)
    first = nb.cells[0] if nb.cells else None
    assert first is not None and first.cell_type == "markdown", f"{path.name}: first cell must be Markdown"
    number = path.name[:2]
    assert first.source.startswith(f"# {number} · "), (
        f"{path.name}: first cell must start with the title line '# {number} · Title', got {first.source[:40]!r}"
    )


@pytest.mark.parametrize("path", STORED, ids=lambda p: p.name)
def test_executed_top_to_bottom(path):
    nb = _read(path)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code, f"{path.name} has no code cell"
    counts = [cell.execution_count for cell in code]
    unexecuted = [i for i, count in enumerate(counts) if count is None]
    assert not unexecuted, (
        f"{path.name}: code cells {unexecuted} (0-based among code cells) were never run; "
        "remove empty cells and re-run with `make execute NB=...`"
    )
    assert counts == list(range(1, len(code) + 1)), (
        f"{path.name}: execution counts {counts} are not 1..{len(code)} in order; "
        "restart the kernel and run all (`make execute NB=...`)"
    )


@pytest.mark.parametrize("path", STORED, ids=lambda p: p.name)
def test_no_stored_errors(path):
    nb = _read(path)
    errors = [
        (i, out.get("ename"))
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code"
        for out in cell.outputs
        if out.output_type == "error"
    ]
    assert not errors, f"{path.name}: error outputs in cells {errors}"


def test_book_holds_only_chapters():
    """A notebook runs with book/ as its working directory: a file it writes there would appear here, and a
    later chapter could silently depend on it. Chapters write to a temporary folder or the model cache."""
    strays = [
        path.name
        for path in BOOK.iterdir()
        if not path.name.startswith(".")
        and path.name not in ("__pycache__", SOLUTIONS.name)
        and not NAME.match(path.name)
    ]
    assert not strays, f"book/ holds files that are not chapters: {strays}; write them elsewhere"


def test_solutions_are_one_notebook_per_part():
    """book/solutions/ holds only partN.ipynb: anything else there would be run by nbval as if it were a solution."""
    strays = [
        p.name
        for p in (SOLUTIONS.iterdir() if SOLUTIONS.exists() else [])
        if not p.name.startswith(".") and p.name != "__pycache__" and not SOLUTION_NAME.match(p.name)
    ]
    assert not strays, f"book/solutions/ holds files that are not partN.ipynb: {strays}; write them elsewhere"


def test_no_notebooks_under_tests():
    """`make test` passes --nbval to the whole run: a notebook under tests/ would be re-executed as a chapter."""
    stray = [str(p.relative_to(REPO)) for p in (REPO / "tests").rglob("*.ipynb")]
    assert not stray, f"notebooks under tests/ would be collected by nbval: {stray}; build them in tmp_path"
