"""Checkers for the exercises at the end of each chapter.

A reader calls e.g. ``check_partition_function(my_answer)`` and gets a :class:`Verdict`: ``ok`` and a
message that says what is right or, when it is wrong, what to look at. A checker never raises on a wrong
answer; it raises ``TypeError``/``ValueError`` only when the answer has the wrong type or shape, saying so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real


@dataclass(frozen=True)
class Verdict:
    """The result of checking an exercise answer; prints as one line, truthy when correct."""

    ok: bool
    message: str

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        return ("✓ correct: " if self.ok else "✗ not yet: ") + self.message

    def _repr_pretty_(self, printer, cycle) -> None:  # IPython shows str(), not the dataclass repr
        printer.text(str(self))


def finite_number(name: str, value) -> float:
    """``value`` as a float: a Python number or a one-element tensor, finite. A ``TypeError`` naming ``name``
    when it is no number, a ``ValueError`` when it is NaN or ±inf.

    The one reading of a reader's numeric answer that every chapter's checkers share.
    """
    if hasattr(value, "numel") and hasattr(value, "item") and value.numel() == 1:  # a tensor, without torch
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a finite number, got {value!r}; pass e.g. {name}=0.25.")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}; pass e.g. {name}=0.25.")
    return float(value)


def first_slip(matches, slips, otherwise: str) -> Verdict:
    """The verdict on a wrong answer: the message of the first typical slip ``(value, message)`` whose value the
    answer ``matches`` (a predicate, e.g. "within the tolerance of"), else the hint ``otherwise``."""
    for value, message in slips:
        if matches(value):
            return Verdict(False, message)
    return Verdict(False, otherwise)


__all__ = ["Verdict", "finite_number", "first_slip"]
