"""One description per widget, one procedure for all: run the notebook, move β, compare with the closed form.

A :class:`WidgetCheck` says where a widget is (CSS selectors of its slider, readout and figure) and what its
readout must say for a given β: a regular expression with named groups over the readout's text, and a
function β → {group: value} computed *independently* of the widget (from the closed form). The printed
numbers are compared with the expected ones to the precision they are printed with.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .lab_page import NotebookPage

NUMBER = re.compile(r"^[-+−]?(\d+)(?:\.(\d+))?(?:[eE]([-+−]?\d+))?$")


def printed_tolerance(text: str) -> float:
    """Half a unit in the last printed digit of ``text`` ("4.39" → 0.005, "1.2e-05" → 5e-07, "7" → 0.5)."""
    match = NUMBER.match(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a printed number")
    decimals = len(match.group(2) or "")
    exponent = int((match.group(3) or "0").replace("−", "-"))
    return 0.5 * 10.0 ** (exponent - decimals)


def parse_number(text: str) -> float:
    return float(text.strip().replace("−", "-"))


@dataclass(frozen=True)
class Action:
    """Something to do after β is set (e.g. press *Train*), and the readout check that follows it."""

    button: str
    readout: str
    pattern: str
    check: Callable[[float, dict[str, float]], None]
    timeout: float = 120.0


@dataclass(frozen=True)
class WidgetCheck:
    """Where a β widget is in its notebook and what it must show.

    Attributes:
        notebook: path relative to the JupyterLab root (``book/NN_slug.ipynb``).
        slider: CSS selector of the β slider (the class the widget adds with ``add_class``).
        readout: CSS selector of the element whose text shows the numbers.
        pattern: regex over the readout's text; each named group captures one printed number.
        expected: β → {group name: value from the closed form}.
        betas: values typed into the slider, in order; each must change the readout and the figure. They
            must lie on the slider's grid (min + k·step; for a log slider, base^(min + k·step), e.g. 0.1, 1, 10
            with base 10), because the slider snaps a typed value to its grid and the closed form is then
            evaluated at a β the widget did not use.
        figure: CSS selector inside the widget's cell whose images must change with β (None: no figure).
        actions: after the last β, buttons to press and what the readout must say afterwards.
    """

    notebook: str
    slider: str
    readout: str
    pattern: str
    expected: Callable[[float], dict[str, float]]
    betas: tuple[float, ...] = (2.0, 0.2)
    figure: str | None = None
    actions: tuple[Action, ...] = field(default=())

    @property
    def name(self) -> str:
        return Path(self.notebook).stem


def read_numbers(text: str, pattern: str, where: str) -> dict[str, str]:
    match = re.search(pattern, text, flags=re.S)
    assert match is not None, f"{where}: readout {text!r} does not match {pattern!r}"
    return match.groupdict()


def assert_readout(check: WidgetCheck, text: str, beta: float) -> None:
    printed = read_numbers(text, check.pattern, check.name)
    expected = check.expected(beta)
    for key, value in expected.items():
        shown = printed[key]
        tolerance = printed_tolerance(shown) * (1 + 1e-9) + 1e-12
        assert math.isclose(parse_number(shown), value, rel_tol=0, abs_tol=tolerance), (
            f"{check.name}: at β = {beta} the readout shows {key} = {shown}, the closed form gives {value:.6g} "
            f"(readout: {text!r})"
        )


def assert_clean(notebook: NotebookPage, when: str) -> None:
    report = notebook.report()
    assert not report.failures, f"{notebook.path}: {when}:\n" + "\n\n".join(report.failures)


def assert_figures_changed(
    notebook: NotebookPage, check: WidgetCheck, before: list[dict], beta: float
) -> list:
    if check.figure is None:
        return before
    after = notebook.figures(check.figure)
    assert after, f"{check.name}: no figure under {check.figure} after β = {beta}"
    assert all(item["width"] > 0 for item in after), f"{check.name}: a figure did not decode after β = {beta}"
    assert [i["hash"] for i in after] != [i["hash"] for i in before], (
        f"{check.name}: the figure did not change when β moved to {beta}"
    )
    return after


def exercise_widget(notebook: NotebookPage, check: WidgetCheck, screenshots: Path) -> dict[str, Path]:
    """Run all cells, then type each β into the slider, press an arrow key on its handle, press the buttons.

    After every step: no error message, no traceback on stderr, no page error; the readout shows what the
    closed form gives; the figure changed. Returns the screenshots taken (before / after).
    """
    assert_clean(notebook, "running all cells")
    shots = {
        "before": screenshots / f"{check.name}_before.png",
        "after": screenshots / f"{check.name}_after.png",
    }
    notebook.screenshot(check.slider, shots["before"])
    text = notebook.text(check.readout)
    figures = notebook.figures(check.figure) if check.figure else []
    if check.figure:
        assert figures and all(i["width"] > 0 for i in figures), (
            f"{check.name}: no decoded figure after run-all"
        )

    for beta in check.betas:
        notebook.type_slider_value(check.slider, beta)
        notebook.settle()
        assert_clean(notebook, f"after typing β = {beta} into the slider")
        shown_beta = parse_number(notebook.slider_value_text(check.slider))
        assert math.isclose(shown_beta, beta, rel_tol=1e-2), (
            f"{check.name}: slider shows {shown_beta}, typed {beta}"
        )
        new_text = notebook.text(check.readout)
        assert new_text != text, f"{check.name}: readout did not change when β moved to {beta}: {new_text!r}"
        assert_readout(check, new_text, beta)
        figures = assert_figures_changed(notebook, check, figures, beta)
        text = new_text
    notebook.screenshot(check.slider, shots["after"])

    # The handle itself: one step with the keyboard must also reach the kernel and redraw.
    before_key = notebook.slider_value_text(check.slider)
    notebook.press_slider_key(check.slider, "ArrowRight")
    notebook.settle()
    assert_clean(notebook, "after pressing ArrowRight on the slider handle")
    assert notebook.slider_value_text(check.slider) != before_key, f"{check.name}: ArrowRight did not move β"
    assert notebook.text(check.readout) != text, f"{check.name}: readout ignored the keyboard step"

    for action in check.actions:
        beta = parse_number(notebook.slider_value_text(check.slider))
        notebook.click_button(action.button)
        notebook.settle(timeout=action.timeout)
        assert_clean(notebook, f"after pressing {action.button}")
        action_text = notebook.text(action.readout)
        action.check(
            beta,
            {k: parse_number(v) for k, v in read_numbers(action_text, action.pattern, check.name).items()},
        )
    return shots
