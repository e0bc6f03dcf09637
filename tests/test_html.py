"""`make html`: the static book builds from the stored notebooks, offline, and renders in a real browser.

The build runs into a temporary folder. Chromium then opens every page from disk (file://, no server, no
network) and checks what a reader would see: MathJax finished without a TeX error and left no raw ``$$`` or
TeX command in the prose, every image decoded (naturalWidth > 0), and the table of contents links to every
chapter and section.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import re
import sys
from pathlib import Path

import matplotlib
import nbformat
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
BOOK = REPO / "book"


def _load_build_html():
    spec = importlib.util.spec_from_file_location("build_html", REPO / "tools" / "build_html.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


build_html = _load_build_html()


@pytest.fixture(scope="module")
def html_book(tmp_path_factory):
    out = tmp_path_factory.mktemp("html")
    chapters, warnings = build_html.build(BOOK, out)
    return out, chapters, warnings


def _png(title: str) -> str:
    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.plot([0, 1], [0, 1])
    ax.set_title(title)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def test_build_logs_no_warning(html_book):
    _, _, warnings = html_book
    assert not warnings, f"nbconvert warned while building the HTML book: {warnings}"


def test_index_links_every_chapter_and_section(html_book):
    out, chapters, _ = html_book
    index = (out / "index.html").read_text()
    assert len(chapters) == len(list(BOOK.glob("[0-9][0-9]_*.ipynb")))
    for chapter in chapters:
        assert f'href="{chapter.page}"' in index, f"index.html does not link {chapter.page}"
        page = (out / chapter.page).read_text()
        assert chapter.title.startswith(chapter.source.name[:2]), f"{chapter.page}: title {chapter.title!r}"
        for anchor, _ in chapter.sections:
            assert f'href="{chapter.page}#{anchor}"' in index
            assert f'id="{anchor}"' in page, f"{chapter.page} has no anchor {anchor!r} the index links to"


def test_pages_load_nothing_from_the_network(html_book):
    out, chapters, _ = html_book
    remote = re.compile(r"""<(?:script|link|img)[^>]+(?:src|href)=["']?(?:https?:)?//""", re.I)
    for name in ["index.html", *(c.page for c in chapters)]:
        found = remote.findall((out / name).read_text())
        assert not found, f"{name} loads from the network: {found[:3]}"
    assert (out / "_static" / "mathjax" / "MathJax.js").exists()


def test_widget_outputs_become_static_figures(tmp_path):
    """A widget's stored state (slider, readout, figure in an Output) becomes a static block with a note."""
    import ipywidgets as widgets
    from ipywidgets.embed import embed_data

    slider = widgets.FloatSlider(value=0.25, description="β")
    readout = widgets.HTML("KL(π*‖π_ref) = 0.4321")
    figure = widgets.Output()
    png = _png("π* at β = 0.25")
    figure.outputs = ({"output_type": "display_data", "data": {"image/png": png}, "metadata": {}},)
    state = embed_data(views=[widgets.VBox([slider, readout, figure])])
    nb = nbformat.v4.new_notebook()
    nb.metadata["widgets"] = {build_html.WIDGET_STATE: state["manager_state"]}
    cell = nbformat.v4.new_code_cell("explorer.widget", execution_count=1)
    view = {"version_major": 2, "version_minor": 0, "model_id": state["view_specs"][0]["model_id"]}
    cell.outputs = [
        nbformat.v4.new_output("display_data", data={build_html.WIDGET_VIEW: view, "text/plain": "VBox()"})
    ]
    nb.cells = [nbformat.v4.new_markdown_cell("# 02 · Widgets\n\n## The slider"), cell]
    (tmp_path / "book").mkdir()
    nbformat.write(nb, tmp_path / "book" / "02_widgets.ipynb")

    chapters, warnings = build_html.build(tmp_path / "book", tmp_path / "html")
    page = (tmp_path / "html" / "02_widgets.html").read_text()
    assert chapters[0].widgets == 1 and not warnings
    assert "Interactive widget (set to β = 0.25)" in page
    assert "KL(π*‖π_ref) = 0.4321" in page
    assert png in page
    assert build_html.WIDGET_VIEW not in page


_PAGE_REPORT = """() => {
  const prose = Array.from(document.querySelectorAll('.jp-MarkdownCell')).map(cell => {
    const copy = cell.cloneNode(true);
    copy.querySelectorAll('code, pre, script, .MathJax_Preview').forEach(el => el.remove());
    return copy.innerText;
  }).join('\\n');
  return {errors: window.dpoMath.errors, prose,
          math: document.querySelectorAll('.MathJax, .MathJax_Display').length,
          images: Array.from(document.images).map(img => [img.alt, img.naturalWidth])};
}"""


def page_problems(page, path: Path, has_math: bool) -> list[str]:
    """Open ``path`` from disk, wait for MathJax, and list what a reader would see broken (empty: fine)."""
    page.goto(path.as_uri())
    if not page.evaluate("typeof window.MathJax !== 'undefined' && !!window.dpoMath"):
        return [f"{path.name}: MathJax did not load (is _static/mathjax there?)"]
    page.wait_for_function("window.dpoMath.done", timeout=120_000)
    result = page.evaluate(_PAGE_REPORT)
    problems = [f"{path.name}: TeX error: {error}" for error in result["errors"]]
    if has_math and result["math"] == 0:
        problems.append(f"{path.name}: the chapter has math but MathJax rendered none")
    if "$$" in result["prose"]:
        problems.append(f"{path.name}: raw $$ left in the rendered prose")
    problems += [
        f"{path.name}: raw TeX left in the prose: {raw}"
        for raw in re.findall(r"\\[A-Za-z]{2,}", result["prose"])
    ]
    problems += [f"{path.name}: image did not decode: {alt}" for alt, width in result["images"] if width == 0]
    return problems


@pytest.mark.browser
def test_pages_render_math_and_images_in_chromium(html_book):
    from browser.chromium import launched_chromium

    out, chapters, _ = html_book
    with launched_chromium() as chromium:
        page = chromium.new_page()
        for chapter in chapters:
            nb = nbformat.read(chapter.source, as_version=4)
            has_math = any(c.cell_type == "markdown" and "$" in c.source for c in nb.cells)
            problems = page_problems(page, out / chapter.page, has_math)
            assert not problems, "\n".join(problems)
        page.goto((out / "index.html").as_uri())
        assert page.locator(".dpo-toc > li > a").count() == len(chapters)


@pytest.mark.browser
def test_page_check_reports_broken_math_and_images(tmp_path):
    """The check above can fail: a TeX error, and an image that does not decode, are both reported."""
    from browser.chromium import launched_chromium

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("plot()", execution_count=1)
    cell.outputs = [nbformat.v4.new_output("display_data", data={"image/png": "bm90IGEgcG5n"})]  # "not a png"
    nb.cells = [nbformat.v4.new_markdown_cell("# 02 · Broken\n\nFine $x^2$, broken $\\frac{1}{$ here."), cell]
    (tmp_path / "book").mkdir()
    nbformat.write(nb, tmp_path / "book" / "02_broken.ipynb")
    build_html.build(tmp_path / "book", tmp_path / "html")
    with launched_chromium() as chromium:
        problems = page_problems(chromium.new_page(), tmp_path / "html" / "02_broken.html", has_math=True)
    assert any("TeX error" in p for p in problems), problems
    assert any("raw TeX left in the prose: \\frac" in p for p in problems), problems
    assert any("image did not decode" in p for p in problems), problems
