"""Browser tests: the book's widgets in a real JupyterLab, driven by headless Chromium.

A package (not a bare folder) so that its ``conftest.py`` is imported as ``browser.conftest`` and does not
replace ``tests/conftest.py`` in ``sys.modules`` (bare conftest files are all imported as ``conftest``).
"""
