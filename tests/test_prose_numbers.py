"""Every number a chapter's prose quotes is one the chapter prints (or writes in its code).

A sentence such as "the error falls by a factor of 3 to 4" is a claim about the output below it; when the output
changes, the sentence must change too. This test reads each notebook's Markdown cells, extracts every quoted
number, and fails unless the same number appears among the numbers of the notebook's printed outputs or code cells.

What counts as a quoted number (``quoted_numbers``): integers, decimals, percentages, scientific notation
(``1e-8``), thousands written ``50 000``, ``50,000`` or ``50_000``, each end of a range (``0.073–0.141``) and
the number of a factor (``3×``). Not counted: references (chapter 02, section 4, Eq. 1, Lemma 2, Figure 2,
exercise 1.3), years of citations ("(1952)", "et al., 2023"), versions ("TRL 1.16", "Python 3.11"), list and heading numbers, digits that belong to a
name (GPT-2, bf16, L-BFGS, log2), inline code and link targets, and 0, 1, 2 inside formulas (the 1 of 1 − σ).

A quoted number matches a printed one (``matches``) when both have the same value (0.5 and 0.50), or when the
quote is the printed number rounded to the quote's decimals (0.25 quotes 0.251; an integer quotes only an
integer, so "3" does not quote 2.8). A percentage also matches its fraction (39% and 0.39). Signs are ignored
(prose says "falls by 0.3" of a printed −0.3).

A number that is a definition rather than a result ("β = 0.1 is typical") goes in ``ALLOWED`` for its chapter,
as a short, explicit list.
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from pathlib import Path

import nbformat
import pytest
from conftest import BOOK

NOTEBOOKS = sorted(BOOK.glob("*.ipynb")) + sorted((BOOK / "solutions").glob("*.ipynb"))

# Numbers that a chapter's prose may quote without printing them: definitions, not results. Keys are paths
# relative to book/. Keep each list short and say why in a comment.
ALLOWED: dict[str, set[str]] = {
    "00_preface.ipynb": set(),
    "01_rlhf_objective.ipynb": set(),
    "02_optimal_policy.ipynb": set(),
    "03_reward_in_disguise.ipynb": set(),
    "04_dpo_loss.ipynb": set(),
    # exercise 7.3 asks the reader to try a setting that no cell runs
    "07_beta.ipynb": {"0.15"},
    # the widths of a float format (16, 8 and 23 bits) and the 6 of MFU's 6·N FLOPs per token are definitions
    "14_glossary.ipynb": {"16", "23", "6"},
}

_SIGN = r"[−\-+]?"
_GROUPED = r"\d{1,3}(?:[ \u2009\u202f,_]\d{3})+(?!\d)"  # 50 000, 50,000, 50_000
_NUMBER = (
    r"(?<![\w.])(?<![A-Za-z]-)"  # not part of a name: GPT-2, bf16, x.5
    rf"({_SIGN})((?:{{grouped}}|\d+)(?:\.\d+)?(?:[eE][−\-+]?\d+)?)(%?)"
    r"(?![A-Za-z_\d])"  # 124M, 3rd: a unit or a name, not a quoted number
)
NUMBER = re.compile(_NUMBER.format(grouped=_GROUPED))
PLAIN_NUMBER = re.compile(_NUMBER.format(grouped=r"(?!)"))  # no grouping: "10 100" in a table is two numbers

_REFERENCE_WORDS = (
    r"chapters?|sections?|§|Eqs?\.|equations?|lemmas?|theorems?|figures?|fig\.|tables?|exercises?|parts?|"
    r"appendix|steps?|cells?|rows?|pages?|stages?|lines?|notebooks?"
)
_NUM_LIST = r"\d+(?:\.\d+)*(?:\s*(?:,|and|or|to|–|-)\s*\d+(?:\.\d+)*)*"
REFERENCE = re.compile(rf"\b(?:{_REFERENCE_WORDS})\s*\(?{_NUM_LIST}\)?", re.IGNORECASE)
# a citation's year: "(1952)", "et al., 2023", "Peters & Schaal 2007" (kept: the name before it)
YEAR = re.compile(r"(\(|, |al\. |[A-Z][A-Za-z]+ )(?:19[5-9]\d|20[0-3]\d)\b")
# a version: "TRL 1.16", "transformers 5.24", "Python 3.11"
VERSION = re.compile(
    r"\b(?:TRL|transformers|torch|PyTorch|Python|datasets|tokenizers|CUDA|accelerate|nbformat|version|v)"
    r"\s*(?:≥|>=)?\s*\d+(?:\.\d+)+",
    re.IGNORECASE,
)
EXERCISE_LABEL = re.compile(r"\*\*\d+\.\d+\b")
# "1. first", "## 3 · Title" and a table row that starts with a chapter number, "| 05 A tiny model |"
LIST_MARKER = re.compile(r"^\s*(?:\d+\.|#+\s*\d+\s*·|\|\s*\d+)\s", re.MULTILINE)
INLINE_CODE = re.compile(r"```.*?```|`[^`]*`", re.DOTALL)
LINK_TARGET = re.compile(r"\]\([^)]*\)|<[^>]+>")
MATH = re.compile(r"\$\$.*?\$\$|\$[^$]*\$", re.DOTALL)
MATH_NOISE = re.compile(r"[_^](?:\{[^{}]*\}|\\?\w)|\\t?frac\s*\d\d|\\[A-Za-z]+")
STRUCTURAL_IN_MATH = {"0", "1", "2"}


def _tokens(text: str, pattern: re.Pattern) -> list[str]:
    # "−0.049" → "0.049": signs are ignored (see the module docstring); thousands separators dropped
    return [re.sub(r"[ \u2009\u202f,_]", "", m.group(2)) + m.group(3) for m in pattern.finditer(text)]


def quoted_numbers(markdown: str) -> list[str]:
    """The numbers a Markdown cell quotes, as strings ("0.45", "39%", "50000"), in order of appearance."""
    text = LINK_TARGET.sub(" ", INLINE_CODE.sub(" ", markdown))
    text = YEAR.sub(r"\1 ", text)
    for pattern in (REFERENCE, VERSION, EXERCISE_LABEL, LIST_MARKER):
        text = pattern.sub(" ", text)
    numbers = []
    for formula in MATH.findall(text):
        inner = MATH_NOISE.sub(" ", formula.strip("$"))
        numbers += [n for n in _tokens(inner, NUMBER) if n not in STRUCTURAL_IN_MATH]
    return _tokens(MATH.sub(" ", text), NUMBER) + numbers


def _output_text(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out.output_type == "stream":
            parts.append(out.text)
        elif out.output_type in ("execute_result", "display_data"):
            data = out.get("data", {})
            parts += [data[k] for k in ("text/plain", "text/markdown", "text/latex") if k in data]
    return "\n".join(parts)


# the digits of an f-string format ({x:.3f}, {n:5d}) are not numbers of the chapter
FORMAT_SPEC = re.compile(r":[<>^+ ]?\d*(?:\.\d+)?[defgs%]?(?=})")


def printed_numbers(nb) -> set[str]:
    """Every number in the notebook's code cells and in their text outputs (grouped and ungrouped readings)."""
    text = "\n".join(
        FORMAT_SPEC.sub("", cell.source) + "\n" + _output_text(cell)
        for cell in nb.cells
        if cell.cell_type == "code"
    )
    return set(_tokens(text, NUMBER)) | set(_tokens(text, PLAIN_NUMBER))


def _readings(number: str) -> list[Decimal]:
    # a percentage also reads as its fraction: 39% ~ 0.39, 33.5% ~ 0.335
    if number.endswith("%"):
        value = Decimal(number[:-1])
        return [value, value.scaleb(-2)]
    return [Decimal(number)]


def _decimals(value: Decimal) -> int:
    return max(0, -value.as_tuple().exponent)


def matches(quoted: str, printed: str) -> bool:
    """True if ``quoted`` is ``printed``: equal in value, or ``printed`` rounded to ``quoted``'s decimals."""
    for q in _readings(quoted):
        for p in _readings(printed):
            if q == p:
                return True
            places = _decimals(q)
            exact_integer = places == 0 and not quoted.endswith("%")
            if exact_integer or _decimals(p) <= places:
                continue
            step = Decimal(1).scaleb(-places)
            if q in (p.quantize(step, ROUND_HALF_UP), p.quantize(step, ROUND_HALF_EVEN)):
                return True
    return False


def unprinted_numbers(nb, allowed: set[str] = frozenset()) -> list[tuple[int, str]]:
    """(cell index, number) for every number the prose quotes that the notebook neither prints nor allows."""
    pool = printed_numbers(nb)
    missing = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "markdown":
            continue
        for number in quoted_numbers(cell.source):
            if number in allowed or any(matches(number, printed) for printed in pool):
                continue
            missing.append((index, number))
    return missing


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(BOOK)))
def test_every_quoted_number_is_printed(path: Path):
    key = str(path.relative_to(BOOK))
    missing = unprinted_numbers(nbformat.read(path, as_version=4), ALLOWED.get(key, set()))
    assert not missing, (
        f"{key}: the prose quotes numbers that no output or code cell shows (cell index, number): {missing}; "
        "print the number, correct the sentence, or, for a definition, add it to ALLOWED in this file"
    )


# ---- the test of the test: a notebook built here, with planted mismatches ------------------------------------


def _notebook(markdown: str, output: str, code: str = "print(result)"):
    cell = nbformat.v4.new_code_cell(code, execution_count=1)
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=output)]
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(markdown), cell])


@pytest.mark.parametrize(
    ("markdown", "output", "missing"),
    [
        (
            "cuts the error by a factor of 3 to 4",
            "ratios: [4.2, 2.8]",
            ["3", "4"],
        ),  # an integer is not rounded
        ("the loss falls to 0.45", "loss 0.46", ["0.45"]),
        ("it ends 0.044 lower", "lower by 0.0446", ["0.044"]),  # 0.0446 rounds to 0.045
        ("wins 39% of the time", "P = 0.41", ["39%"]),
        ("about 2 000 comparisons", "2041 comparisons", ["2000"]),
        ("offsets from −0.009 to +0.076", "offsets -0.009 0.081", ["0.076"]),
        ("$\\sqrt{10} \\approx 3.2$", "sqrt(10): 3.3", ["3.2"]),
        ("1.3× faster", "ratio 1.2", ["1.3"]),
    ],
    ids=["integer-vs-decimal", "decimal", "rounding", "percent", "thousands", "range", "math", "factor"],
)
def test_planted_mismatch_is_found(markdown, output, missing):
    assert [number for _, number in unprinted_numbers(_notebook(markdown, output))] == missing


@pytest.mark.parametrize(
    ("markdown", "output"),
    [
        ("the mean is 0.50", "mean 0.5"),
        ("the mean is 0.5", "mean 0.500"),
        ("peaks at β ≈ 0.25", "β = 0.251"),
        ("wins 39% of the time", "P = 0.393"),
        ("33.5% of the datasets", "share 0.335"),
        ("in 56% of the datasets", "wrong: 56%"),
        ("about 2 000 comparisons and 50,000 in all", "2000 of 50000"),
        ("the true rewards have mean −0.049", "mean -0.049"),
        ("below 1e-8", "grad < 1e-8"),
        ("$K = 6$ responses and $\\lambda = 0.01$, so $1 - \\sigma$ and $x_1^2$", "K = 6, ridge 0.01"),
        ("see chapter 02, sections 3–4, Eq. 7 and Lemma 1", ""),
        ("Bradley and Terry (1952); Rafailov et al., 2023; Peters & Schaal 2007", ""),
        ("TRL 1.16's trainer, transformers 5.24 and Python ≥ 3.11", ""),
        ("GPT-2 in bf16 with L-BFGS and `seed=17` ([link](05_x.ipynb))", ""),
        ("**2.1 (checked).** Do this.\n\n1. first\n2. second", ""),
        ("## 3 · A section\n\n| chapter | what |\n|---|---|\n| 05 A tiny model | SFT |", ""),
    ],
    ids=[
        "0.50-vs-0.5",
        "0.5-vs-0.500",
        "rounded",
        "percent-rounded",
        "percent-fraction",
        "percent-percent",
        "thousands",
        "sign",
        "scientific",
        "math",
        "references",
        "years",
        "versions",
        "names-code-links",
        "labels-lists",
        "heading",
    ],
)
def test_correct_quote_passes(markdown, output):
    assert unprinted_numbers(_notebook(markdown, output)) == []


def test_number_in_code_counts_and_allow_list_works():
    nb = _notebook(
        "we use β = 0.1 and 4096 pairs, to 3 digits", "done", code='beta = 0.1; print(f"{beta:.3f}")'
    )
    assert unprinted_numbers(nb) == [(0, "4096"), (0, "3")]  # a format's digits are not a printed number
    assert unprinted_numbers(nb, {"4096", "3"}) == []
