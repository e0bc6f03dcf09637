"""Checkers for the exercises at the end of each chapter.

A reader calls e.g. ``check_partition_function(my_answer)`` and gets a :class:`Verdict`: ``ok`` and a
message that says what is right or, when it is wrong, what to look at. A checker never raises on a wrong
answer; it raises ``TypeError``/``ValueError`` only when the answer has the wrong type or shape, saying so.
"""

from __future__ import annotations

from dataclasses import dataclass


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


__all__ = ["Verdict"]
