"""Interactive widgets of the book (ipywidgets + matplotlib).

Each widget is split in two: a pure function that computes what the widget shows for a given β (tested
from pytest, fast enough for a live slider), and a builder that wires it to ipywidgets controls and returns
the widget plus handles the tests and the browser tests can drive.
"""
