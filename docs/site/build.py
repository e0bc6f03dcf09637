"""Build the book site (``make html``): Sphinx + myst-nb + sphinx-book-theme, from the stored outputs.

    python docs/site/build.py                   # book/ → _build/html/index.html
    python docs/site/build.py --out /tmp/html

Nothing is re-executed. The chapters are copied into a staging folder (``_build/site-src``) with these changes,
then Sphinx builds that folder with ``docs/site/conf.py``; any Sphinx warning fails the build.

- **Widgets.** A live widget needs a kernel. Each widget output becomes what the widget showed when the
  notebook was saved, taken from the notebook's saved widget state: its controls (slider values, buttons,
  progress), its readout (HTML labels), and its figure (the ``ImageModel``'s PNG or SVG, or an ``Output``'s
  images). A tqdm progress bar becomes its text line.
- **Markdown.** "chapter 03" and "chapters 02–04" in the prose become links to those chapters; inline math that a
  line break splits is put back on one line (myst would read a line starting ``- `` inside it as a list).

The pages are discovered, not listed: ``book/NN_*.ipynb`` in order, then ``book/solutions/*.ipynb`` and any
``book/glossary*.ipynb``. The staged ``index.md`` is ``docs/site/index.md`` followed by one table of contents per
part of the book (chapters by number; solutions and the glossary in the appendix): the sidebar shows them.
"""

from __future__ import annotations

import argparse
import base64
import html
import re
import sys
import warnings
from pathlib import Path

import nbformat

SITE = Path(__file__).resolve().parent
REPO = SITE.parent.parent
BOOK = REPO / "book"
OUT = REPO / "_build" / "html"
STAGE = REPO / "_build" / "site-src"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
PROGRESS = {"FloatProgressModel", "IntProgressModel"}
TEXT = {"HTMLModel", "HTMLMathModel", "LabelModel"}
# A widget holding one of these (or a slider) is interactive; one with only a bar and labels is a tqdm bar.
LIVE = {"ImageModel", "OutputModel", "ButtonModel"}
LAYER = "dpo-svg-layer"  # dpo_teach.widgets.canvas.LAYER_CLASS: an image drawn on top of the image before it
PARTS = [  # (title, first chapter number of the part)
    ("Part I — From RLHF to a closed form", 0),
    ("Part II — DPO on a language model", 5),
    ("Part III — Beyond vanilla DPO", 9),
]
APPENDIX = "Appendix"


def discover(book: Path = BOOK) -> list[Path]:
    """The notebooks of the site in reading order: chapters, then solutions, then the glossary."""
    chapters = sorted(book.glob("[0-9][0-9]_*.ipynb"))
    if not chapters:
        raise FileNotFoundError(f"no chapters (NN_slug.ipynb) in {book}: pass the book folder with --book")
    appendix = sorted((book / "solutions").glob("*.ipynb")) + sorted(book.glob("glossary*.ipynb"))
    return chapters + appendix


def part_of(name: str) -> str:
    """The part of the book a staged page (``07_beta.ipynb``, ``solutions/part1.ipynb``) belongs to."""
    if name.startswith("solutions/") or "glossary" in name:
        return APPENDIX
    return [title for title, first in PARTS if int(name[:2]) >= first][-1]


def contents(names: list[str]) -> str:
    """MyST table-of-contents blocks, one per part that has a page, in reading order."""
    blocks = []
    for title in [t for t, _ in PARTS] + [APPENDIX]:
        pages = [name.removesuffix(".ipynb") for name in names if part_of(name) == title]
        if pages:
            blocks.append(
                "```{toctree}\n:caption: " + title + "\n:maxdepth: 1\n\n" + "\n".join(pages) + "\n```\n"
            )
    return "\n".join(blocks)


# --- widgets → what they showed -------------------------------------------------------------------------
def _children(model: dict) -> list[str]:
    refs = model.get("state", {}).get("children") or []
    return [ref.removeprefix("IPY_MODEL_") for ref in refs if isinstance(ref, str)]


def widget_tree(model_id: str, models: dict, seen: set | None = None) -> list[dict]:
    """The models reachable from ``model_id``, depth first in display order, each once."""
    seen = set() if seen is None else seen
    if model_id in seen or model_id not in models:
        return []
    seen.add(model_id)
    found = [models[model_id]]
    for child in _children(models[model_id]):
        found += widget_tree(child, models, seen)
    return found


def _plain(fragment: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", fragment)).replace("\u2007", " ").strip()


def progress_line(tree: list[dict]) -> str:
    """tqdm's text line for a progress-bar widget: ``left label|█████     | right label``."""
    bar = next(m["state"] for m in tree if m["model_name"] in PROGRESS)
    texts = [_plain(m["state"].get("value", "")) for m in tree if m["model_name"] in TEXT]
    filled = round(10 * bar.get("value", 0) / bar.get("max", 100)) if bar.get("max", 100) else 0
    left, right = (texts + ["", ""])[:2]
    return f"{left}|{'█' * filled}{' ' * (10 - filled)}| {right}".strip()


def _control(model: dict) -> str | None:
    state, name = model["state"], model["model_name"]
    label = html.escape(state.get("description") or "")
    if name == "SelectionSliderModel" and state.get("_options_labels"):
        return f"<span>{label} = {html.escape(state['_options_labels'][state.get('index', 0)])}</span>"
    if name.endswith("SliderModel") and isinstance(state.get("value"), (int, float)):
        return f"<span>{label} = {state['value']:.3g}</span>"
    if name == "ButtonModel":
        return f"<button disabled>{label}</button>"
    if name in PROGRESS:
        value, top = state.get("value", 0), state.get("max", 100)
        return f'<span>{label} <progress max="{top}" value="{value}"></progress></span>'
    return None


def _image_output(model: dict) -> dict | None:
    buffer = next((b for b in model.get("buffers", []) if b.get("path") == ["value"]), None)
    if buffer is None:
        return None
    fmt = model["state"].get("format", "png")
    if fmt == "svg+xml":
        data = {"image/svg+xml": base64.b64decode(buffer["data"]).decode("utf-8")}
    else:
        data = {f"image/{fmt}": buffer["data"]}
    return nbformat.v4.new_output("display_data", data=data)


def stack_svg(below: str, above: str) -> str:
    """One SVG from two layers of the same size (``dpo_teach.widgets.canvas.layered_image``): the elements of
    ``above`` are appended to ``below``, as the widget stacks the two images in one grid cell."""
    body = above[above.index(">", above.index("<svg")) + 1 : above.rindex("</svg>")]
    return below[: below.rindex("</svg>")] + body + "</svg>\n"


def static_widget(model_id: str, models: dict) -> list[dict]:
    """The outputs standing in for widget view ``model_id``: a note with its controls, its readouts, figures."""
    tree = widget_tree(model_id, models)
    names = {m["model_name"] for m in tree}
    if names & PROGRESS and not names & LIVE and not any(n.endswith("SliderModel") for n in names):
        return [nbformat.v4.new_output("display_data", data={"text/plain": progress_line(tree)})]
    controls = [c for c in map(_control, tree) if c]
    note = (
        '<p class="dpo-widget-note">Interactive widget, shown as it was when the chapter was saved'
        f"{': ' + ' · '.join(controls) if controls else ''}. Run the chapter in JupyterLab "
        "(<code>make lab</code>) to move it.</p>"
    )
    readouts = "".join(f"<div>{m['state'].get('value', '')}</div>" for m in tree if m["model_name"] in TEXT)
    outputs = [nbformat.v4.new_output("display_data", data={"text/html": note + readouts})]
    for model in tree:
        if model["model_name"] == "ImageModel":
            image = _image_output(model)
            if (
                image
                and LAYER in model["state"].get("_dom_classes", [])
                and "image/svg+xml" in outputs[-1].data
            ):
                outputs[-1].data["image/svg+xml"] = stack_svg(
                    outputs[-1].data["image/svg+xml"], image.data["image/svg+xml"]
                )
            elif image:
                outputs.append(image)
        elif model["model_name"] == "OutputModel":
            outputs += [nbformat.from_dict(out) for out in model["state"].get("outputs", [])]
    return outputs


def replace_widgets(nb) -> int:
    """Swap every widget output of ``nb`` for static outputs and drop the widget state; returns the count."""
    models = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    swapped = 0
    for cell in nb.cells:
        outputs = []
        for out in cell.get("outputs", []):
            view = out.get("data", {}).get(WIDGET_VIEW)
            outputs += [out] if view is None else static_widget(view["model_id"], models)
            swapped += view is not None
        if cell.cell_type == "code":
            cell.outputs = outputs
    nb.metadata.pop("widgets", None)
    return swapped


# --- markdown: math kept on one line, "chapter 03" → a link ------------------------------------------------
FENCE = re.compile(r"(^```.*?^```)", re.S | re.M)
CODE_OR_DISPLAY = re.compile(
    r"(`(?:[^`\n]|\n(?!\s*\n))*`|\$\$.*?\$\$)", re.S
)  # a code span ends with its paragraph
INLINE_MATH = re.compile(r"\$(?=\S)([^$]*?\S)\$")


def join_math_lines(markdown: str) -> str:
    """Put each inline ``$…$`` that a line break splits back on one line.

    JupyterLab takes the math out before it parses the markdown; myst parses the markdown first, so a math
    line that starts with ``- `` or ``1. `` becomes a list item and the TeX is left raw on the page.
    """

    def join(match: re.Match) -> str:
        tex = match.group(1)
        if "\n" not in tex or "\\" not in tex or re.search(r"\n\s*\n", tex):  # not TeX, or two paragraphs
            return match.group()
        return "$" + re.sub(r"\s*\n\s*", " ", tex) + "$"

    blocks = FENCE.split(markdown)
    for i in range(0, len(blocks), 2):  # odd pieces are fenced code
        parts = CODE_OR_DISPLAY.split(blocks[i])
        blocks[i] = "".join(p if k % 2 else INLINE_MATH.sub(join, p) for k, p in enumerate(parts))
    return "".join(blocks)


PROTECTED = re.compile(r"(`+.*?`+|\$\$.*?\$\$|\$[^$\n]+\$|\[[^\]\n]*\]\([^)\n]*\)|<[^>\n]+>)", re.S)
MENTION = re.compile(r"\b([Cc]hapters?)(\s+)(\d\d(?:(?:\s*(?:,|–|-|and|or|to)\s*)\d\d)*)\b")


def link_chapters(markdown: str, targets: dict[str, str]) -> str:
    """Link each "chapter NN" (or "chapters NN–MM, NN and NN") to ``targets[NN]``, outside code and math."""

    def number(match: re.Match) -> str:
        target = targets.get(match.group())
        return f"[{match.group()}]({target})" if target else match.group()

    def mention(match: re.Match) -> str:
        word, space, numbers = match.groups()
        if word.endswith("s"):
            return word + space + re.sub(r"\d\d", number, numbers)
        target = targets.get(numbers)
        return f"[{match.group()}]({target})" if target else match.group()

    blocks = FENCE.split(markdown)
    for i in range(0, len(blocks), 2):  # odd pieces are fenced code
        lines = blocks[i].split("\n")
        for j, line in enumerate(lines):
            if not line.lstrip().startswith("#"):  # headings become page titles: leave them plain
                parts = PROTECTED.split(line)
                lines[j] = "".join(p if k % 2 else MENTION.sub(mention, p) for k, p in enumerate(parts))
        blocks[i] = "\n".join(lines)
    return "".join(blocks)


# --- staging and the Sphinx run -------------------------------------------------------------------------
def _write_if_changed(path: Path, text: str) -> None:
    """Keep an unchanged staged file's mtime, so that Sphinx rebuilds only the pages that changed."""
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def stage(book: Path, stage_dir: Path) -> dict[str, int]:
    """Write the site's sources into ``stage_dir``; returns the widgets made static per staged page."""
    sources = discover(book)
    names = {source: source.relative_to(book).as_posix() for source in sources}
    chapters = {name[:2]: name for name in names.values() if re.match(r"\d\d_", name)}
    widgets = {}
    for source, name in names.items():
        nb = nbformat.read(source, as_version=4)
        widgets[name] = replace_widgets(nb)
        up = "../" * name.count("/")
        targets = {num: up + chapter for num, chapter in chapters.items() if chapter != name}
        for cell in nb.cells:
            if cell.cell_type == "markdown":
                cell.source = link_chapters(join_math_lines(cell.source), targets)
        _write_if_changed(stage_dir / name, nbformat.writes(nb) + "\n")
    intro = (SITE / "index.md").read_text(encoding="utf-8")
    _write_if_changed(stage_dir / "index.md", intro + "\n" + contents(list(names.values())))
    keep = {stage_dir / name for name in [*names.values(), "index.md"]}
    for stale in [p for p in stage_dir.rglob("*") if p.is_file() and p not in keep]:
        stale.unlink()  # a renamed chapter must not stay on as a page of its old name
    return widgets


def build(book: Path = BOOK, out: Path = OUT, stage_dir: Path = STAGE) -> tuple[dict[str, int], list[str]]:
    """Stage ``book`` and build the site into ``out``; returns (widgets per page, Sphinx's warnings)."""
    from sphinx.cmd.build import build_main

    widgets = stage(Path(book), Path(stage_dir))
    log = Path(stage_dir).parent / f"{Path(stage_dir).name}-warnings.txt"
    doctrees = Path(stage_dir).parent / f"{Path(stage_dir).name}-doctrees"
    args = ["-b", "html", "-q", "-c", str(SITE), "-d", str(doctrees), "-w", str(log), "--keep-going"]
    # Sphinx's notices that its extensions call deprecated API: not ours to fix, and they drown the warnings.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        status = build_main([*args, str(stage_dir), str(out)])
    messages = [line for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
    if status and not messages:
        messages = [f"sphinx-build exited with status {status}"]
    return widgets, messages


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Build the book site from the stored notebooks (no execution)."
    )
    parser.add_argument("--book", type=Path, default=BOOK, help="folder of NN_slug.ipynb chapters")
    parser.add_argument("--out", type=Path, default=OUT, help="output folder")
    parser.add_argument("--stage", type=Path, default=STAGE, help="staging folder for the prepared sources")
    args = parser.parse_args(argv)
    widgets, messages = build(args.book, args.out, args.stage)
    for name, count in widgets.items():
        print(f"{name:<40} {count} widget(s) made static" if count else name)
    for message in messages:
        print(f"warning: {message}", file=sys.stderr)
    print(f"open {args.out / 'index.html'}")
    return 1 if messages else 0


if __name__ == "__main__":
    sys.exit(main())
