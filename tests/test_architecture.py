"""The project stands on its own files: docs/ARCHITECTURE.md names every module, and nothing cites a file that is
not in the repository."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MAP = REPO / "docs" / "ARCHITECTURE.md"


def package_modules() -> set[str]:
    """Every module of the package as a path relative to ``dpo_teach/`` (``trainers/dpo.py``), dunders left out."""
    root = REPO / "dpo_teach"
    return {
        p.relative_to(root).as_posix()
        for p in root.rglob("*.py")
        if p.name not in {"__init__.py", "__main__.py"} and "__pycache__" not in p.parts
    }


def mapped_modules(text: str) -> set[str]:
    """The module paths the map names in backticks, e.g. `trainers/dpo.py` or `dpo_teach/losses.py`."""
    found = re.findall(r"`((?:dpo_teach/)?[\w/]+\.py)`", text)
    outside = ("tests/", "docs/", "benchmarks/", "tools/")  # files the map may cite that are not modules
    return {m.removeprefix("dpo_teach/") for m in found if not m.startswith(outside)}


def test_the_map_names_every_module_and_only_modules_that_exist():
    named = mapped_modules(MAP.read_text(encoding="utf-8"))
    modules = package_modules()
    assert not modules - named, f"docs/ARCHITECTURE.md does not name: {sorted(modules - named)}"
    ghosts = {m for m in named - modules if not m.endswith(("__init__.py", "__main__.py"))}
    assert not ghosts, f"docs/ARCHITECTURE.md names modules that do not exist: {sorted(ghosts)}"


def test_the_map_check_can_fail(tmp_path):
    """The extraction sees a missing module: a map without `losses.py` misses exactly that module."""
    text = MAP.read_text(encoding="utf-8").replace("`losses.py`", "`losses`")
    assert "losses.py" in package_modules() - mapped_modules(text)


def _tracked_text_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    suffixes = {".py", ".md", ".ipynb", ".toml", ".cfg", ".txt", ".json", ""}
    return [REPO / f for f in listed if Path(f).suffix in suffixes and (REPO / f).is_file()]


def cited_notes(text: str) -> set[str]:
    """Every upper-case Markdown file name a text mentions (``README.md``, ``RESULTS.md``, ...)."""
    return set(re.findall(r"\b([A-Z][A-Z0-9_]*\.md)\b", text))


def test_every_note_a_file_cites_is_in_the_repository():
    """A reader sees only the repository: a file may name a note (``ARCHITECTURE.md``) only if the note is there."""
    files = _tracked_text_files()
    present = {p.name for p in files}
    files = [p for p in files if p.resolve() != Path(__file__).resolve()]  # its own can-fail example
    citing = {}
    for path in files:
        for name in cited_notes(path.read_text(encoding="utf-8", errors="replace")) - present:
            citing.setdefault(name, []).append(str(path.relative_to(REPO)))
    assert not citing, f"these notes are not in the repository, but files cite them: {citing}"


def test_the_citation_check_can_fail():
    assert cited_notes("see `NOTES.md` and README.md, not readme.md") == {"NOTES.md", "README.md"}
