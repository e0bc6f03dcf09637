"""`make html`: the book site (Sphinx + myst-nb) builds from the stored notebooks, offline, and works in Chromium.

The site is built once into a temporary folder. The unit tests check the staging (widgets → their saved figure and
readout, "chapter NN" → a link, pages discovered, parts). The browser tests open every page from disk (file://)
in headless Chromium and check what a reader would see: MathJax finished without a TeX error and left no raw
``$$`` or TeX command in the prose; every figure the notebook stored is on the page and decoded, the widgets'
saved figures included; the page title is the chapter's title; the sidebar links to every page; "chapter NN"
is a link; search finds a word; and no request goes anywhere but the build folder.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import nbformat
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
BOOK = REPO / "book"


def _load_site_build():
    spec = importlib.util.spec_from_file_location("site_build", REPO / "docs" / "site" / "build.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


site_build = _load_site_build()


def book_pages(book: Path = BOOK) -> list[str]:
    """The pages the site must have, found here independently of build.py: chapters, solutions, glossary."""
    names = sorted(p.name for p in book.glob("[0-9][0-9]_*.ipynb"))
    names += sorted(f"solutions/{p.name}" for p in (book / "solutions").glob("*.ipynb"))
    names += sorted(p.name for p in book.glob("glossary*.ipynb"))
    return names


def html_name(name: str) -> str:
    return name.removesuffix(".ipynb") + ".html"


@dataclass
class Site:
    book: Path  # the copy of book/ the site was built from (chapters may be re-executed during the run)
    out: Path
    widgets: dict[str, int]
    warnings: list[str]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Site:
    root = tmp_path_factory.mktemp("site")
    book = root / "book"
    shutil.copytree(BOOK, book, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    widgets, warnings = site_build.build(book, root / "html", root / "stage")
    return Site(book, root / "html", widgets, warnings)


# --- the build -------------------------------------------------------------------------------------------
def test_build_logs_no_warning(site):
    assert not site.warnings, "Sphinx warned while building the site:\n" + "\n".join(site.warnings)


def test_every_notebook_is_a_page(site):
    out = site.out
    assert list(site.widgets) == book_pages(site.book)
    missing = [html_name(n) for n in book_pages(site.book) if not (out / html_name(n)).is_file()]
    assert not missing, f"no page for {missing}"
    assert (out / "index.html").is_file() and (out / "searchindex.js").is_file()


def test_pages_load_nothing_from_the_network(site):
    out = site.out
    remote = re.compile(
        r"""<(?:script|link|img|iframe|source|embed)\b[^>]*?(?:src|href)=["']?(?:https?:)?//""", re.I
    )
    css_remote = re.compile(
        r"""url\(\s*["']?(?:https?:)?//|@import\s+["']?(?:url\()?\s*["']?(?:https?:)?//""", re.I
    )
    pages = sorted(out.rglob("*.html"))
    assert len(pages) > len(book_pages(site.book))
    for page in pages:
        found = remote.findall(page.read_text(encoding="utf-8"))
        assert not found, f"{page.relative_to(out)} loads from the network: {found[:3]}"
    for css in sorted((out / "_static").rglob("*.css")):
        found = css_remote.findall(css.read_text(encoding="utf-8", errors="replace"))
        assert not found, f"{css.relative_to(out)} loads from the network: {found[:3]}"
    assert (out / "_static" / "mathjax" / "MathJax.js").is_file()


def test_widget_state_and_views_do_not_reach_the_pages(site):
    assert sum(site.widgets.values()) > 0, "no widget in the book: the widget checks below would be vacuous"
    for name in book_pages(site.book):
        text = (site.out / html_name(name)).read_text(encoding="utf-8")
        assert site_build.WIDGET_VIEW not in text and site_build.WIDGET_STATE not in text, name


# --- widgets → what they showed ---------------------------------------------------------------------------
def _png(title: str) -> bytes:
    fig, ax = plt.subplots(figsize=(2, 1.5))
    ax.plot([0, 1], [0, 1])
    ax.set_title(title)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def _saved_widget_notebook(view) -> nbformat.NotebookNode:
    """A notebook whose one code cell shows ``view``, with ipywidgets' own saved state (as JupyterLab saves it)."""
    from ipywidgets.embed import embed_data

    state = embed_data(views=[view], drop_defaults=False)
    nb = nbformat.v4.new_notebook(metadata={"language_info": {"name": "python"}})
    nb.metadata["widgets"] = {site_build.WIDGET_STATE: state["manager_state"]}
    cell = nbformat.v4.new_code_cell("explorer.widget", execution_count=1)
    view_data = {"version_major": 2, "version_minor": 0, "model_id": state["view_specs"][0]["model_id"]}
    cell.outputs = [
        nbformat.v4.new_output(
            "display_data", data={site_build.WIDGET_VIEW: view_data, "text/plain": "VBox()"}
        )
    ]
    nb.cells = [nbformat.v4.new_markdown_cell("# 02 · Widgets"), cell]
    return nb


def test_widget_becomes_its_controls_readout_and_figure():
    import ipywidgets as widgets

    png = _png("π* at β = 0.25")
    svg = "<svg xmlns='http://www.w3.org/2000/svg' width='10' height='10'><circle r='4' cx='5' cy='5'/></svg>"
    view = widgets.VBox(
        [
            widgets.HBox(
                [
                    widgets.FloatLogSlider(value=0.25, min=-2, max=2, description="β"),
                    widgets.Button(description="Train"),
                ]
            ),
            widgets.HTML("KL(π*‖π<sub>ref</sub>) = 0.4321"),
            widgets.Image(value=png, format="png"),
            widgets.Image(value=svg.encode(), format="svg+xml"),
        ]
    )
    nb = _saved_widget_notebook(view)
    assert site_build.replace_widgets(nb) == 1
    outputs = nb.cells[1].outputs
    assert [sorted(o.data) for o in outputs] == [["text/html"], ["image/png"], ["image/svg+xml"]]
    note = outputs[0].data["text/html"]
    assert "β = 0.25" in note and "<button disabled>Train</button>" in note
    assert "KL(π*‖π<sub>ref</sub>) = 0.4321" in note
    assert base64.b64decode(outputs[1].data["image/png"]) == png
    assert outputs[2].data["image/svg+xml"] == svg
    assert "widgets" not in nb.metadata
    nbformat.validate(nb)


def test_layered_widget_picture_becomes_one_svg_and_a_grid_slider_its_label():
    """dpo_teach's widgets stack a frame and a layer of marks (two Images in one grid cell) and use a
    SelectionSlider over an exact β grid: the page shows one SVG holding both, and the slider's label."""
    import ipywidgets as widgets
    from matplotlib.figure import Figure

    from dpo_teach.widgets import beta_slider
    from dpo_teach.widgets.canvas import Line, SvgCanvas, layered_image

    fig = Figure(figsize=(2, 1.5))
    fig.subplots().set_xlim(0, 1)
    canvas = SvgCanvas(fig)
    box, marks = layered_image(canvas, "dpo-test-plot")
    marks.value = canvas.marks_svg([Line(0, [0.0, 1.0], [0.0, 1.0], color="C3")])
    nb = _saved_widget_notebook(widgets.VBox([beta_slider(0.5, 0.1, 10.0, "s"), box]))
    assert saved_figures(nb) == (1, 1)
    site_build.replace_widgets(nb)
    outputs = nb.cells[1].outputs
    assert [sorted(o.data) for o in outputs] == [["text/html"], ["image/svg+xml"]]
    assert "β = 0.5" in outputs[0].data["text/html"]
    stacked = outputs[1].data["image/svg+xml"]
    assert stacked.count("<svg") == 1 and "<polyline" in stacked  # the marks are inside the frame's SVG
    assert stacked.index("<polyline") > stacked.index("dpo-clip-0")


def test_widget_with_an_output_shows_the_output_figure():
    import ipywidgets as widgets

    png = base64.b64encode(_png("in an Output")).decode()
    figure = widgets.Output()
    figure.outputs = ({"output_type": "display_data", "data": {"image/png": png}, "metadata": {}},)
    nb = _saved_widget_notebook(widgets.VBox([widgets.FloatSlider(value=2.0, description="β"), figure]))
    site_build.replace_widgets(nb)
    outputs = nb.cells[1].outputs
    assert "β = 2" in outputs[0].data["text/html"]
    assert outputs[1].data["image/png"] == png


def test_progress_bar_widget_becomes_its_text_line():
    import ipywidgets as widgets

    bar = widgets.HBox(
        [
            widgets.HTML("sigmoid\u2007training:\u2007\u200799%"),
            widgets.FloatProgress(value=188.0, max=189.0),
            widgets.HTML("\u2007188/189\u2007[00:07&lt;00:00,\u200726.05it/s]"),
        ]
    )
    nb = _saved_widget_notebook(bar)
    site_build.replace_widgets(nb)
    [output] = nb.cells[1].outputs
    assert output.data == {
        "text/plain": "sigmoid training:  99%|██████████| 188/189 [00:07<00:00, 26.05it/s]"
    }


# --- "chapter NN" → a link, parts, discovery ---------------------------------------------------------------
TARGETS = {"01": "01_rlhf_objective.ipynb", "03": "03_reward_in_disguise.ipynb", "04": "04_dpo_loss.ipynb"}


@pytest.mark.parametrize(
    ("markdown", "expected"),
    [
        ("as chapter 03 shows", "as [chapter 03](03_reward_in_disguise.ipynb) shows"),
        ("Chapter 01 ended", "[Chapter 01](01_rlhf_objective.ipynb) ended"),
        (
            "chapters 03–04 and 01",
            "chapters [03](03_reward_in_disguise.ipynb)–[04](04_dpo_loss.ipynb) and [01](01_rlhf_objective.ipynb)",
        ),
        ("chapter 99 does not exist", "chapter 99 does not exist"),
        ("`chapter 03` is code", "`chapter 03` is code"),
        ("$\\text{chapter 03}$ is math", "$\\text{chapter 03}$ is math"),
        ("[see chapter 03](https://x.org)", "[see chapter 03](https://x.org)"),
        ("## Back to chapter 03", "## Back to chapter 03"),
        ("```\nchapter 03\n```\nchapter 04", "```\nchapter 03\n```\n[chapter 04](04_dpo_loss.ipynb)"),
        ("subchapter 03", "subchapter 03"),
    ],
    ids=["singular", "capital", "plural", "missing", "code", "math", "link", "heading", "fence", "word"],
)
def test_link_chapters(markdown, expected):
    assert site_build.link_chapters(markdown, TARGETS) == expected


@pytest.mark.parametrize(
    ("markdown", "expected"),
    [
        ("is $\\beta(a - b)\n- \\gamma$, built", "is $\\beta(a - b) - \\gamma$, built"),
        ("$x^2 = \\frac{1}{2}$\nnext line", "$x^2 = \\frac{1}{2}$\nnext line"),
        ("costs $5\n- and $10", "costs $5\n- and $10"),
        ("$\\alpha\n\nstill$", "$\\alpha\n\nstill$"),
        ("$$a\n- b$$", "$$a\n- b$$"),
        ("`$\\a\n- b$`", "`$\\a\n- b$`"),
        ("```\n$\\a\n- b$\n```", "```\n$\\a\n- b$\n```"),
    ],
    ids=["split", "one-line", "currency", "paragraphs", "display", "code", "fence"],
)
def test_join_math_lines(markdown, expected):
    assert site_build.join_math_lines(markdown) == expected


@pytest.mark.parametrize(
    ("name", "part"),
    [
        ("00_preface.ipynb", "Part I"),
        ("04_dpo_loss.ipynb", "Part I"),
        ("05_tiny_lm_and_sft.ipynb", "Part II"),
        ("08_dpo_vs_rlhf.ipynb", "Part II"),
        ("09_variants.ipynb", "Part III"),
        ("13_scaling_up.ipynb", "Part III"),
        ("14_glossary.ipynb", "Appendix"),
        ("solutions/part1.ipynb", "Appendix"),
    ],
)
def test_part_of(name, part):
    assert site_build.part_of(name).split(" — ")[0] == part


def test_discover_refuses_a_folder_without_chapters(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no chapters \(NN_slug.ipynb\) in .*pass the book folder"):
        site_build.discover(tmp_path)


def test_stage_removes_a_renamed_chapter(tmp_path):
    book = tmp_path / "book"
    book.mkdir()
    nbformat.write(
        nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# 00 · A")]), book / "00_a.ipynb"
    )
    site_build.stage(book, tmp_path / "stage")
    (book / "00_a.ipynb").rename(book / "00_b.ipynb")
    site_build.stage(book, tmp_path / "stage")
    assert sorted(p.name for p in (tmp_path / "stage").iterdir()) == ["00_b.ipynb", "index.md"]
    assert "00_b\n" in (tmp_path / "stage" / "index.md").read_text()


# --- in Chromium -----------------------------------------------------------------------------------------
# Runs before any page script: MathJax 2 reads `window.MathJax` as its configuration, and AuthorInit registers
# the hooks before typesetting starts, so neither an error nor the end of typesetting can be missed.
MATHJAX_PROBE = """
window.dpoMath = {errors: [], done: false};
window.MathJax = {AuthorInit: function () {
  MathJax.Hub.Register.MessageHook("TeX Jax - parse error", function (m) { dpoMath.errors.push(String(m[1])); });
  MathJax.Hub.Register.MessageHook("Math Processing Error", function (m) { dpoMath.errors.push(String(m[2])); });
  MathJax.Hub.Register.StartupHook("End", function () { dpoMath.done = true; });
}};
"""

PAGE_REPORT = """(chapterNumbers) => {
  const article = document.querySelector('article.bd-article');
  const prose = article.cloneNode(true);
  prose.querySelectorAll('div.cell, code, pre, script, .MathJax_Preview, a.headerlink').forEach(el => el.remove());
  const unlinked = [];
  const walker = document.createTreeWalker(article, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const node = walker.currentNode;
    if (node.parentElement.closest('a, code, pre, script, .MathJax, .MathJax_Preview, h1, h2, h3, h4, div.cell')) continue;
    for (const m of node.textContent.matchAll(/\\b[Cc]hapter (\\d\\d)\\b/g))
      if (chapterNumbers.includes(m[1])) unlinked.push(m[0]);
  }
  const internal = Array.from(article.querySelectorAll('a.reference.internal'))
    .map(a => a.href.split('#')[0]).filter(href => href.endsWith('.html'));
  return {
    title: document.title,
    h1: (article.querySelector('h1') || {innerText: ''}).innerText.replace(/#$/, '').trim(),
    prose: prose.innerText,
    math: article.querySelectorAll('.MathJax, .MathJax_Display').length,
    figures: Array.from(article.querySelectorAll('div.cell_output img')).map(img => img.naturalWidth),
    widgetFigures: Array.from(article.querySelectorAll('div.cell_output'))
      .filter(o => o.querySelector('.dpo-widget-note'))
      .reduce((n, o) => n + Array.from(o.querySelectorAll('img')).filter(img => img.naturalWidth > 0).length, 0),
    sidebar: Array.from(document.querySelectorAll('nav.bd-docs-nav a')).map(a => a.href.split('#')[0]),
    internal, unlinked,
    mathErrors: window.dpoMath ? window.dpoMath.errors : [],
  };
}"""


def saved_figures(nb) -> tuple[int, int]:
    """(figures, of which widgets' figures) that ``nb``'s stored outputs hold, read from the notebook itself."""
    models = nb.metadata.get("widgets", {}).get(site_build.WIDGET_STATE, {}).get("state", {})
    figures = widget_figures = 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if site_build.WIDGET_VIEW in data:
                found = _widget_images(data[site_build.WIDGET_VIEW]["model_id"], models, set())
                figures, widget_figures = figures + found, widget_figures + found
            elif any(key.startswith("image/") for key in data) and "text/html" not in data:
                figures += 1
    return figures, widget_figures


def _widget_images(model_id: str, models: dict, seen: set) -> int:
    if model_id in seen or model_id not in models:
        return 0
    seen.add(model_id)
    model = models[model_id]
    layer = site_build.LAYER in model["state"].get("_dom_classes", [])  # merged into the image below it
    count = int(model["model_name"] == "ImageModel" and bool(model.get("buffers")) and not layer)
    if model["model_name"] == "OutputModel":
        count += sum(
            any(k.startswith("image/") for k in o.get("data", {})) for o in model["state"]["outputs"]
        )
    for ref in model["state"].get("children") or []:
        count += _widget_images(ref.removeprefix("IPY_MODEL_"), models, seen)
    return count


class Recorder:
    """Every request a page makes; ``remote`` lists those leaving the build folder."""

    LOCAL = ("file:", "data:", "about:", "blob:")

    def __init__(self, page):
        self.urls: list[str] = []
        self.failed: list[str] = []
        page.on("request", lambda request: self.urls.append(request.url))
        page.on("requestfailed", lambda request: self.failed.append(request.url))

    def remote(self) -> list[str]:
        return [url for url in self.urls if not url.startswith(self.LOCAL)]

    def broken(self) -> list[str]:
        return [url for url in self.failed if url != "about:blank"]  # MathJax's placeholder font


def open_page(page, path: Path, book: Path) -> dict:
    """Open ``path`` from disk, wait for MathJax where the page loads it, and return the page report."""
    page.goto(path.as_uri())
    if page.locator('script[src*="mathjax/MathJax.js"]').count():
        page.wait_for_function("window.dpoMath && window.dpoMath.done", timeout=180_000)
    return page.evaluate(PAGE_REPORT, sorted(n[:2] for n in book_pages(book) if n[:2].isdigit()))


def page_problems(report: dict, name: str, nb) -> list[str]:
    """What a reader would see broken on page ``name`` (the notebook ``nb``); empty when all is fine."""
    problems = [f"{name}: TeX error: {error}" for error in report["mathErrors"]]
    if any(c.cell_type == "markdown" and "$" in c.source for c in nb.cells) and report["math"] == 0:
        problems.append(f"{name}: the chapter has math but MathJax rendered none")
    if "$$" in report["prose"]:
        problems.append(f"{name}: raw $$ left in the rendered prose")
    problems += [
        f"{name}: raw TeX left in the prose: {raw}" for raw in re.findall(r"\\[A-Za-z]{2,}", report["prose"])
    ]
    figures, widget_figures = saved_figures(nb)
    decoded = sum(width > 0 for width in report["figures"])
    if len(report["figures"]) != figures or decoded != figures:
        problems.append(
            f"{name}: {figures} figures stored, {len(report['figures'])} on the page, {decoded} decoded"
        )
    if report["widgetFigures"] != widget_figures:
        problems.append(f"{name}: {widget_figures} widget figures saved, {report['widgetFigures']} shown")
    lines = [line for c in nb.cells if c.cell_type == "markdown" for line in c.source.split("\n")]
    heading = next((line[2:] for line in lines if line.startswith("# ")), "")
    heading = re.sub(r"[*_`]", "", heading).strip()
    if report["h1"] != heading or not report["title"].startswith(heading + " — "):
        problems.append(
            f"{name}: title {report['title']!r}, heading {report['h1']!r}; the chapter says {heading!r}"
        )
    problems += [
        f"{name}: mention not linked: {text!r}" for text in report["unlinked"] if text[-2:] != name[:2]
    ]
    return problems


@pytest.fixture(scope="module")
def chromium():
    from browser.chromium import launched_chromium

    with launched_chromium() as browser:
        yield browser


@pytest.fixture
def page(chromium):
    context = chromium.new_context()
    context.add_init_script(MATHJAX_PROBE)
    page = context.new_page()
    page.recorder = Recorder(page)
    yield page
    context.close()


@pytest.mark.browser
def test_every_page_renders_in_chromium(site, page):
    out, pages = site.out, book_pages(site.book)
    problems, internal, widget_pages = [], set(), set()
    for name in pages:
        nb = nbformat.read(site.book / name, as_version=4)
        report = open_page(page, out / html_name(name), site.book)
        problems += page_problems(report, name, nb)
        expected_sidebar = {(out / html_name(n)).as_uri() for n in pages}
        if missing := expected_sidebar - set(report["sidebar"]):
            problems.append(f"{name}: the sidebar does not link {sorted(missing)}")
        internal |= {href for href in report["internal"] if href != (out / html_name(name)).as_uri()}
        if report["widgetFigures"]:
            widget_pages.add(name[:2])
    assert not problems, "\n".join(problems)
    assert internal and internal <= {(out / html_name(n)).as_uri() for n in pages} | {
        (out / "index.html").as_uri()
    }
    assert {"02", "04", "07"} <= widget_pages, f"widget figures shown only in chapters {sorted(widget_pages)}"
    assert not page.recorder.remote(), f"requests left the build folder: {page.recorder.remote()[:5]}"
    assert not page.recorder.broken(), f"requests failed: {page.recorder.broken()[:5]}"


@pytest.mark.browser
def test_index_and_cross_reference_navigate(site, page):
    out = site.out
    page.goto((out / "index.html").as_uri())
    hrefs = page.eval_on_selector_all(
        "article .toctree-wrapper a.reference.internal", "els => els.map(a => a.href)"
    )
    assert hrefs == [(out / html_name(n)).as_uri() for n in book_pages(site.book)]
    page.goto((out / "02_optimal_policy.html").as_uri())
    link = page.locator("article a.reference.internal", has_text=re.compile(r"^[Cc]hapter 01$")).first
    link.click()
    page.wait_for_load_state()
    assert page.url == (out / "01_rlhf_objective.html").as_uri()
    assert not page.recorder.remote()


@pytest.mark.browser
def test_search_works_offline(site, page):
    out, book = site.out, site.book

    def search(word: str) -> list[str]:
        page.goto((out / "index.html").as_uri())
        page.locator(".bd-sidebar-primary .search-button__button").first.click()
        page.locator("#pst-search-dialog input[type=search]").fill(word)
        page.keyboard.press("Enter")
        page.wait_for_function(
            "() => { const s = document.querySelector('#search-results .search-summary');"
            " return s && /Search finished|did not match/.test(s.innerText); }",
            timeout=60_000,
        )
        return page.eval_on_selector_all("#search-results ul.search li > a", "els => els.map(a => a.href)")

    hits = search("partition")
    holding = {
        (out / html_name(n)).as_uri()
        for n in book_pages(book)
        if "partition" in (book / n).read_text().lower()
    }
    assert hits, "searching 'partition' found nothing"
    assert {h.split("?")[0].split("#")[0] for h in hits} <= holding
    assert search("zqxjvbnonsense") == []
    assert not page.recorder.remote(), f"search went to the network: {page.recorder.remote()[:5]}"


@pytest.mark.browser
def test_page_check_reports_what_is_broken(tmp_path, chromium):
    """The checks can fail: a TeX error, a figure that does not decode, a lost widget figure, a remote request."""
    import ipywidgets as widgets

    saved = _saved_widget_notebook(widgets.VBox([widgets.Image(value=_png("lost"), format="png")]))
    stored = nbformat.from_dict(saved)
    stored.metadata["widgets"][site_build.WIDGET_STATE]["state"] = {}  # the page loses the widget's state
    bad_png = nbformat.v4.new_code_cell("plot()", execution_count=2)
    bad_png.outputs = [
        nbformat.v4.new_output("display_data", data={"image/png": "bm90IGEgcG5n"})
    ]  # "not a png"
    cells = [
        nbformat.v4.new_markdown_cell("# 00 · Broken\n\nFine $x^2$, broken $\\frac{1}{$ here."),
        nbformat.v4.new_markdown_cell('<img src="https://example.invalid/remote.png" alt="remote">'),
        bad_png,
        saved.cells[1],
    ]
    saved.cells = stored.cells = cells
    (tmp_path / "book").mkdir()
    nbformat.write(stored, tmp_path / "book" / "00_broken.ipynb")
    site_build.build(tmp_path / "book", tmp_path / "html", tmp_path / "stage")

    context = chromium.new_context()
    context.add_init_script(MATHJAX_PROBE)
    page = context.new_page()
    recorder = Recorder(page)
    report = open_page(page, tmp_path / "html" / "00_broken.html", tmp_path / "book")
    context.close()
    problems = page_problems(report, "00_broken.ipynb", saved)  # checked against what the notebook had saved
    assert any("TeX error" in p for p in problems), problems
    assert any("raw TeX left in the prose: \\frac" in p for p in problems), problems
    assert any("2 figures stored, 1 on the page, 0 decoded" in p for p in problems), problems
    assert any("1 widget figures saved, 0 shown" in p for p in problems), problems
    assert set(recorder.remote()) == {"https://example.invalid/remote.png"}
