"""Sphinx configuration of the book site (``make html``): myst-nb renders the notebooks' stored outputs.

``docs/site/build.py`` stages the sources (the chapters with their widgets made static, and ``index.md``) and
runs Sphinx with this folder as the configuration directory. Everything a page loads is in the build folder:
MathJax 2.7 comes from the pinned PyPI package ``jupyter-server-mathjax`` (``mathjax_path`` below), and no
widget manager, font or script is taken from a CDN.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import jupyter_server_mathjax

project = "dpo_teach"
author = "the dpo_teach authors"
copyright = "the dpo_teach authors, MIT licence"
html_title = "dpo_teach"

extensions = ["myst_nb"]
root_doc = "index"
exclude_patterns = ["_build", "**.ipynb_checkpoints"]

# The stored outputs are the book: never re-execute (that is `make test`'s job).
nb_execution_mode = "off"
# The staged notebooks hold no widget state (build.py replaced each widget by its saved figure and readout),
# and nothing may come from a CDN: no widget manager, no require.js.
nb_ipywidgets_js = {}
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3
# Chapters put $$…$$ on a line of its own inside a paragraph (JupyterLab shows it as display math); without
# this, myst reads those dollars as inline delimiters and leaves raw TeX on the page.
myst_dmath_double_inline = True
# myst marks each page ``tex2jax_ignore`` (so that a stray $ in prose is left alone) and writes a MathJax 3
# configuration; this site runs MathJax 2, told below to typeset only the elements Sphinx marks as math.
myst_update_mathjax = False

html_theme = "sphinx_book_theme"
html_theme_options = {
    "home_page_in_toc": False,
    "show_navbar_depth": 1,
    "use_download_button": True,
    "use_fullscreen_button": False,
}
html_static_path = ["_static"]
html_css_files = ["site.css"]
html_last_updated_fmt = None
html_show_sphinx = False

# MathJax 2.7 from jupyter-server-mathjax, copied into _static/mathjax by `copy_mathjax` (only what the
# TeX-AMS-MML_HTMLorMML-full configuration with STIX-Web fonts loads: the a11y extensions alone are 3.6 MB).
mathjax_path = "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full"
mathjax2_config = {
    "tex2jax": {
        "inlineMath": [["\\(", "\\)"]],
        "displayMath": [["\\[", "\\]"]],
        "processEscapes": False,
        "processClass": "math|output_area",
        "preview": "none",
    },
    # The fast preview renders with MathJax's TeX fonts, which jupyter-server-mathjax does not ship (the pages
    # would request missing files); HTML-CSS alone, one chunk per page as the preview would have set it.
    "fast-preview": {"disabled": True},
    "TeX": {"extensions": ["autoload-all.js"], "equationNumbers": {"autoNumber": "AMS"}},
    "HTML-CSS": {
        "availableFonts": [],
        "webFont": "STIX-Web",
        "imageFont": None,
        "preferredFont": None,
        "linebreaks": {"automatic": True},
        "EqnChunk": 10000,
        "EqnChunkFactor": 1,
        "EqnChunkDelay": 0,
    },
    "showMathMenu": False,
    "messageStyle": "none",
}
MATHJAX_SOURCE = Path(jupyter_server_mathjax.__file__).parent / "static"
MATHJAX_PARTS = [
    "MathJax.js",
    "LICENSE",
    "config/TeX-AMS-MML_HTMLorMML-full.js",
    "extensions",
    "jax/input",
    "jax/element",
    "jax/output/HTML-CSS",
    "fonts/HTML-CSS/STIX-Web",
    "localization/en",
]


def copy_mathjax(app, exception) -> None:
    """Copy the MathJax parts the pages load into ``<out>/_static/mathjax`` once the HTML is written."""
    if exception is not None or app.builder.format != "html":
        return
    target = Path(app.outdir) / "_static" / "mathjax"
    for part in MATHJAX_PARTS:
        source, destination = MATHJAX_SOURCE / part, target / part
        if source.is_dir():
            shutil.copytree(source, destination, dirs_exist_ok=True, ignore=shutil.ignore_patterns("a11y"))
        else:
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination)


def setup(app) -> None:
    app.connect("build-finished", copy_mathjax)
