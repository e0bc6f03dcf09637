"""Build the static HTML book (``make html``) from the notebooks' stored outputs; nothing is re-executed.

    python tools/build_html.py                      # book/ → _build/html (index.html + one page per chapter)
    python tools/build_html.py --out /tmp/html --strict

Each chapter goes through nbconvert's ``lab`` template with three changes, so the pages work offline:

- math: MathJax 2.7 from the pinned PyPI package ``jupyter-server-mathjax`` is copied into ``_static/mathjax``
  (HTML-CSS output, STIX-Web fonts) instead of nbconvert's CDN link; pages record TeX errors in
  ``window.dpoMath.errors`` and set ``window.dpoMath.done`` when typesetting finished (the test reads both);
- widgets: a live widget needs a kernel, so each widget output becomes a static block — the figures and the
  readout it showed when the notebook was stored (taken from the notebook's saved widget state), under a
  note saying how to run it; progress bars become their text line;
- no ``require.js``, widget manager or mermaid from a CDN.

``index.html`` holds the table of contents: every chapter with its sections (the ``##`` headings).
"""

from __future__ import annotations

import argparse
import html
import logging
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import nbformat
from nbconvert import HTMLExporter

REPO = Path(__file__).resolve().parent.parent
BOOK = REPO / "book"
OUT = REPO / "_build" / "html"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
PARTS = [
    (range(0, 5), "Part I — From RLHF to a closed form"),
    (range(5, 9), "Part II — DPO on a language model"),
    (range(9, 12), "Part III — Beyond vanilla DPO"),
]
# What of jupyter-server-mathjax's MathJax the pages load (the a11y extensions alone are 3.6 MB).
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

MATHJAX_HEAD = r"""
<script type="text/x-mathjax-config">
MathJax.Hub.Config({
  tex2jax: {inlineMath: [['$','$'], ['\\(','\\)']], displayMath: [['$$','$$'], ['\\[','\\]']],
            processEscapes: true, processEnvironments: true},
  TeX: {extensions: ["autoload-all.js"], equationNumbers: {autoNumber: "AMS", useLabelIds: true}},
  "HTML-CSS": {availableFonts: [], webFont: "STIX-Web", imageFont: null, preferredFont: null,
               linebreaks: {automatic: true}},
  showMathMenu: false, messageStyle: "none"
});
window.dpoMath = {errors: [], done: false};
MathJax.Hub.Register.MessageHook("TeX Jax - parse error", function (m) { window.dpoMath.errors.push(String(m[1])); });
MathJax.Hub.Register.MessageHook("Math Processing Error", function (m) { window.dpoMath.errors.push(String(m[2])); });
MathJax.Hub.Register.StartupHook("End", function () { window.dpoMath.done = true; });
</script>
<script src="{{ resources.dpo_static }}/mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full"></script>
"""

NAV = """<nav class="dpo-nav">{% for label, href in resources.dpo_nav %}<a href="{{ href }}">{{ label }}</a>{% endfor %}</nav>"""

CHAPTER_TEMPLATE = (
    "{%- extends 'lab/index.html.j2' -%}\n"
    "{% block html_head_js_requirejs %}{% endblock html_head_js_requirejs %}\n"
    "{% block jupyter_widgets %}{% endblock jupyter_widgets %}\n"
    "{% block html_head_js_mermaidjs %}{% endblock html_head_js_mermaidjs %}\n"
    "{% block html_head_js_mathjax %}" + MATHJAX_HEAD + "{% endblock html_head_js_mathjax %}\n"
    "{% block extra_css %}<style>.dpo-nav{display:flex;gap:1.5em;padding:.6em 0;font-family:sans-serif}"
    ".dpo-static-widget{border:1px solid #ccc;border-radius:4px;padding:.5em 1em;margin:.3em 0}"
    ".dpo-static-note{font-style:italic;color:#555}</style>{% endblock extra_css %}\n"
    "{% block body_header %}{{ super() }}" + NAV + "{% endblock body_header %}\n"
    "{% block body_footer %}" + NAV + "{{ super() }}{% endblock body_footer %}\n"
    "{% block data_png scoped %}{{ super() | replace('<img src=', "
    "'<img alt=\"Figure drawn by the code cell above\" src=') }}{% endblock data_png %}\n"
)


@dataclass
class Chapter:
    source: Path
    page: str
    title: str
    sections: list[tuple[str, str]] = field(default_factory=list)  # (anchor id, heading text)
    widgets: int = 0


# --- widgets → static blocks ---------------------------------------------------------------------------
def _model_refs(value) -> list[str]:
    if isinstance(value, str) and value.startswith("IPY_MODEL_"):
        return [value[len("IPY_MODEL_") :]]
    if isinstance(value, list):
        return [ref for item in value for ref in _model_refs(item)]
    return []


def _walk(model_id: str, models: dict, seen: set | None = None) -> list[dict]:
    """The widget models reachable from ``model_id`` (children before siblings), each once."""
    seen = set() if seen is None else seen
    if model_id in seen or model_id not in models:
        return []
    seen.add(model_id)
    model = models[model_id]
    found = [model]
    for ref in _model_refs(model.get("state", {}).get("children")):
        found += _walk(ref, models, seen)
    return found


def _output_html(outputs: list[dict]) -> list[str]:
    parts = []
    for out in outputs:
        data = out.get("data", {})
        if "image/png" in data:
            parts.append(
                f'<img alt="Figure shown by the widget" src="data:image/png;base64,{data["image/png"]}">'
            )
        elif "text/html" in data:
            parts.append("".join(data["text/html"]))
        elif "text/plain" in data or out.get("output_type") == "stream":
            text = "".join(data.get("text/plain", out.get("text", "")))
            parts.append(f"<pre>{html.escape(text)}</pre>")
    return parts


def static_widget(model_id: str, models: dict) -> str:
    """HTML standing in for the widget view ``model_id``, built from the saved widget state."""
    found = _walk(model_id, models)
    names = {m.get("model_name") for m in found}
    texts = [
        m["state"].get("value", "")
        for m in found
        if m.get("model_name") in ("HTMLModel", "HTMLMathModel", "LabelModel")
    ]
    if names & {"FloatProgressModel", "IntProgressModel"}:  # a tqdm bar: its text line is all a reader needs
        return f"<pre>{html.escape(' '.join(_plain(t) for t in texts))}</pre>"
    controls = [
        f"{html.escape(m['state'].get('description') or 'value')} = {m['state']['value']:.3g}"
        for m in found
        if m.get("model_name", "").endswith("SliderModel")
        and isinstance(m["state"].get("value"), (int, float))
    ]
    parts = [f"<div>{t}</div>" for t in texts]
    for model in found:
        if model.get("model_name") == "OutputModel":
            parts += _output_html(model["state"].get("outputs", []))
    setting = f" (set to {', '.join(controls)})" if controls else ""
    note = (
        f'<p class="dpo-static-note">Interactive widget{setting}, shown as it was when the notebook was stored. '
        "Run the chapter in JupyterLab (<code>make lab</code>) to move it.</p>"
    )
    return f'<div class="dpo-static-widget">{note}{"".join(parts)}</div>'


def replace_widgets(nb) -> int:
    """Swap every widget output of ``nb`` for a static ``text/html`` block; returns how many were swapped."""
    models = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    swapped = 0
    for cell in nb.cells:
        for index, out in enumerate(cell.get("outputs", [])):
            view = out.get("data", {}).get(WIDGET_VIEW)
            if view is None:
                continue
            cell.outputs[index] = nbformat.v4.new_output(
                "display_data", data={"text/html": static_widget(view["model_id"], models)}
            )
            swapped += 1
    nb.metadata.pop("widgets", None)
    return swapped


# --- pages ---------------------------------------------------------------------------------------------
HEADING = re.compile(r'<h([12]) id="([^"]+)"[^>]*>(.*?)</h\1>', re.S)


def _plain(fragment: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", fragment)).replace("¶", "").strip()


def exporter() -> HTMLExporter:
    loader = jinja2.DictLoader({"dpo_chapter.html.j2": CHAPTER_TEMPLATE})
    return HTMLExporter(
        template_name="lab", template_file="dpo_chapter.html.j2", extra_loaders=[loader], embed_images=True
    )


def convert(source: Path, out_dir: Path, nav: list[tuple[str, str]], html_exporter: HTMLExporter) -> Chapter:
    nb = nbformat.read(source, as_version=4)
    widgets = replace_widgets(nb)
    resources = {
        "metadata": {"path": str(source.parent), "name": source.stem},
        "dpo_static": "_static",
        "dpo_nav": nav,
    }
    body, _ = html_exporter.from_notebook_node(nb, resources=resources)
    page = f"{source.stem}.html"
    (out_dir / page).write_text(body, encoding="utf-8")
    headings = [(int(level), anchor, _plain(text)) for level, anchor, text in HEADING.findall(body)]
    title = next((text for level, _, text in headings if level == 1), source.stem)
    sections = [(anchor, text) for level, anchor, text in headings if level == 2]
    return Chapter(source=source, page=page, title=title, sections=sections, widgets=widgets)


def copy_mathjax(out_dir: Path) -> None:
    try:
        import jupyter_server_mathjax
    except ImportError as err:
        raise SystemExit(
            "the HTML book renders math with the MathJax of the PyPI package jupyter-server-mathjax: "
            "run `make install` (it is pinned in requirements.txt) or `pip install jupyter-server-mathjax`"
        ) from err

    source = Path(jupyter_server_mathjax.__file__).parent / "static"
    target = out_dir / "_static" / "mathjax"
    for part in MATHJAX_PARTS:
        src, dst = source / part, target / part
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True, ignore=shutil.ignore_patterns("a11y"))
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)


def part_of(chapter: Chapter) -> str:
    number = int(chapter.source.name[:2])
    return next((title for numbers, title in PARTS if number in numbers), "Further chapters")


def write_index(out_dir: Path, chapters: list[Chapter]) -> Path:
    lines = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1.0">',
        "<title>dpo_teach — contents</title>",
        "<style>body{font-family:sans-serif;max-width:50em;margin:2em auto;line-height:1.5}"
        ".dpo-toc{list-style:none;padding-left:0}.dpo-toc>li{margin:.5em 0}li li{font-size:.92em}</style></head><body>",
        "<h1>dpo_teach — an executable textbook on Direct Preference Optimization</h1>",
        "<p>The chapters as stored, with their outputs. To run the code and move the widgets, "
        "open the notebooks in JupyterLab (<code>make lab</code>).</p>",
    ]
    current = None
    for chapter in chapters:
        part = part_of(chapter)
        if part != current:
            lines.append(("</ul>" if current else "") + f'<h2>{html.escape(part)}</h2><ul class="dpo-toc">')
            current = part
        items = "".join(
            f'<li><a href="{chapter.page}#{a}">{html.escape(t)}</a></li>' for a, t in chapter.sections
        )
        lines.append(f'<li><a href="{chapter.page}">{html.escape(chapter.title)}</a><ul>{items}</ul></li>')
    lines += ["</ul>" if current else "", "</body></html>"]
    target = out_dir / "index.html"
    target.write_text("\n".join(lines), encoding="utf-8")
    return target


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def build(book_dir: Path = BOOK, out_dir: Path = OUT) -> tuple[list[Chapter], list[str]]:
    """Write the HTML book to ``out_dir`` (emptied first); returns the chapters and the warnings logged."""
    sources = sorted(Path(book_dir).glob("[0-9][0-9]_*.ipynb"))
    if not sources:
        raise FileNotFoundError(f"no chapters (NN_slug.ipynb) in {book_dir}")
    out_dir = Path(out_dir)
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    copy_mathjax(out_dir)
    collector = _Collect()
    logging.getLogger().addHandler(collector)
    html_exporter = exporter()
    html_exporter.log.addHandler(collector)
    try:
        chapters = []
        for i, source in enumerate(sources):
            nav = [("Contents", "index.html")]
            if i > 0:
                nav.insert(0, ("← previous", f"{sources[i - 1].stem}.html"))
            if i + 1 < len(sources):
                nav.append(("next →", f"{sources[i + 1].stem}.html"))
            chapters.append(convert(source, out_dir, nav, html_exporter))
    finally:
        logging.getLogger().removeHandler(collector)
        html_exporter.log.removeHandler(collector)
    write_index(out_dir, chapters)
    return chapters, sorted(set(collector.messages))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the static HTML book from the stored notebooks.")
    parser.add_argument("--book", type=Path, default=BOOK, help="folder of NN_slug.ipynb chapters")
    parser.add_argument("--out", type=Path, default=OUT, help="output folder (emptied first)")
    parser.add_argument("--strict", action="store_true", help="exit with status 1 when nbconvert warned")
    args = parser.parse_args(argv)
    chapters, warnings = build(args.book, args.out)
    for chapter in chapters:
        note = f", {chapter.widgets} widget(s) made static" if chapter.widgets else ""
        print(f"{chapter.page:<32} {chapter.title}  ({len(chapter.sections)} sections{note})")
    for message in warnings:
        print(f"warning: {message}", file=sys.stderr)
    print(f"open {args.out / 'index.html'}")
    return 1 if args.strict and warnings else 0


if __name__ == "__main__":
    sys.exit(main())
