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
    """``value`` as a float: a Python number or a one-element tensor, finite; else a ``TypeError`` naming ``name``.

    The one reading of a reader's numeric answer that every chapter's checkers share.
    """
    if (
        hasattr(value, "numel") and hasattr(value, "item") and value.numel() == 1
    ):  # a tensor, without importing torch
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise TypeError(f"{name} must be a finite number, got {value!r}; pass e.g. {name}=0.25.")
    return float(value)


__all__ = ["Verdict", "finite_number"]
