"""The harness itself, on notebooks generated here: it reads a working widget right, and it catches failures.

The planted-failure tests pass only because the harness reports the failure: if the kernel-message listener
stopped seeing exceptions raised in widget callbacks, ``exercise_widget`` would pass and these tests fail.
"""

from __future__ import annotations

import math

import nbformat
import pytest

from .toy_notebooks import (
    PLANTED_MESSAGE,
    TOY_BUTTON,
    TOY_READOUT,
    TOY_SLIDER,
    TOY_TRAINED,
    slider_notebook,
    toy_readout_value,
)
from .widget_checks import Action, WidgetCheck, exercise_widget


def _check_cube(value: float, shown: dict[str, float]) -> None:
    assert math.isclose(shown["cube"], value**3, abs_tol=5e-5), (value, shown)


pytestmark = pytest.mark.browser


def toy_check(path: str) -> WidgetCheck:
    return WidgetCheck(
        notebook=path,
        slider=TOY_SLIDER,
        readout=TOY_READOUT,
        pattern=r"square = (?P<square>[-\d.]+)",
        expected=lambda value: {"square": toy_readout_value(value)},
        betas=(2.0, 0.7),
        figure=TOY_SLIDER,
        timed=False,  # its figure is a matplotlib render per step, not the book's SVG layers
        actions=(
            Action(
                button=TOY_BUTTON, readout=TOY_TRAINED, pattern=r"cube = (?P<cube>[-\d.]+)", check=_check_cube
            ),
        ),
    )


def test_harness_reads_a_working_slider(lab, open_notebook, tmp_path):
    slider_notebook(lab.root / "toy_ok.ipynb")
    notebook = open_notebook("toy_ok.ipynb")
    notebook.run_all()
    exercise_widget(notebook, toy_check("toy_ok.ipynb"), tmp_path)
    assert notebook.text(TOY_READOUT) == "square = 0.6400"  # 0.7 + one 0.1 step from the keyboard, squared
    assert notebook.text(TOY_TRAINED) == "cube = 0.5120"  # the button read the same value


def test_harness_catches_an_exception_in_a_widget_callback(lab, open_notebook, tmp_path):
    slider_notebook(lab.root / "toy_planted.ipynb", raise_in_callback=True)
    notebook = open_notebook("toy_planted.ipynb")
    notebook.run_all()
    with pytest.raises(AssertionError, match=PLANTED_MESSAGE) as caught:
        exercise_widget(notebook, toy_check("toy_planted.ipynb"), tmp_path)
    # reported from the comm message that moved the slider, not from a cell: only the listener could see it
    assert "[comm_msg] RuntimeError" in str(caught.value)
    assert "after moving the slider to β = 2.0" in str(caught.value)


def test_harness_catches_an_error_in_a_cell(lab, open_notebook, tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_code_cell("x = 1"),
        nbformat.v4.new_code_cell("1 / 0"),
        nbformat.v4.new_code_cell("y = 2"),
    ]
    nbformat.write(nb, lab.root / "toy_error.ipynb")
    notebook = open_notebook("toy_error.ipynb")
    report = notebook.run_all()
    assert any("ZeroDivisionError" in failure for failure in report.failures), report
    assert notebook.state()["pending"] == 1  # run-all stopped at the error: the last cell never ran
