"""Notebooks the browser tests generate at test time (never stored as .ipynb: nbval would collect them).

``slider_notebook(raise_in_callback=False)`` is a β-widget in miniature: a slider with the book's CSS class,
a readout that shows a closed-form function of the slider's value, and a matplotlib figure in an ``Output``
widget, and a *Train* button whose result (value³) appears in a second readout. With ``raise_in_callback=True`` the slider's observer raises, outside any ``Output`` widget — the
failure that only shows in JupyterLab's log console, which the harness must still catch.
"""

from __future__ import annotations

from pathlib import Path

import nbformat

TOY_SLIDER = ".dpo-toy-slider"
TOY_READOUT = ".dpo-toy-readout"
TOY_BUTTON = ".dpo-toy-train"
TOY_TRAINED = ".dpo-toy-trained"
PLANTED_MESSAGE = "planted failure in a widget callback"


def toy_readout_value(value: float) -> float:
    """The number the toy readout prints for a slider value: value² (printed with 4 decimals)."""
    return value**2


def slider_notebook(path: Path, raise_in_callback: bool = False) -> Path:
    setup = """\
import ipywidgets as widgets
import matplotlib.pyplot as plt
from IPython.display import display

slider = widgets.FloatSlider(value=1.0, min=0.5, max=3.0, step=0.1, description="β")
slider.add_class("dpo-toy-slider")
readout = widgets.HTML()
readout.add_class("dpo-toy-readout")
figure = widgets.Output()
train = widgets.Button(description="Train")
train.add_class("dpo-toy-train")
trained = widgets.HTML("not trained yet")
trained.add_class("dpo-toy-trained")
train.on_click(lambda button: setattr(trained, "value", f"cube = {slider.value ** 3:.4f}"))


def show(value):
    readout.value = f"square = {value ** 2:.4f}"
    with figure:
        figure.clear_output(wait=True)
        fig, ax = plt.subplots(figsize=(3, 2))
        ax.bar(["value", "square"], [value, value ** 2])
        ax.set_title(f"β = {value:.2f}")
        plt.show()
"""
    callback = (
        f"""
def on_change(change):
    raise RuntimeError("{PLANTED_MESSAGE}")
"""
        if raise_in_callback
        else """
def on_change(change):
    show(change["new"])
"""
    )
    wire = """\
show(slider.value)
slider.observe(on_change, names="value")
display(widgets.VBox([slider, readout, figure, train, trained]))
"""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_markdown_cell("# A toy slider for the browser harness"),
        nbformat.v4.new_code_cell(setup + callback),
        nbformat.v4.new_code_cell(wire),
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path
