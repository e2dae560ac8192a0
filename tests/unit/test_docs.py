"""The docs against the tree: links resolve, every module is in the layout, every serve flag is documented.

Docs drift where nothing checks them: a module moves and architecture.md still names the old one, a
setting is added and docs/server.md's table never hears of it, a heading is reworded and a link to
its anchor dies.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "m3engine"
DOCS = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"```.*?```", re.S)


def anchors(path: Path) -> set[str]:
    """GitHub's anchors of a markdown file's headings: lower case, punctuation dropped, spaces to -."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for heading in re.findall(r"^#{1,6}\s+(.+)$", FENCE.sub("", path.read_text()), re.M):
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())
        slug = re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_and_anchors_resolve(doc: Path) -> None:
    broken = []
    for link in re.findall(r"\]\(([^)\s]+)\)", FENCE.sub("", doc.read_text())):
        if re.match(r"[a-z]+:", link):
            continue  # a URL
        path, _, anchor = link.partition("#")
        target = (doc.parent / path).resolve() if path else doc
        if not target.exists():
            broken.append(f"{link}: no such file")
        elif anchor and target.suffix == ".md" and anchor not in anchors(target):
            broken.append(f"{link}: no such heading in {target.name}")
    assert not broken, f"{doc.name}: {broken}"


def test_architecture_names_every_package_and_module() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    missing = [
        str(path.relative_to(PACKAGE))
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.stem not in ("__init__", "__main__") and not re.search(rf"\b{path.stem}\b", text)
    ]
    missing += [
        f"{d.relative_to(PACKAGE)}/"
        for d in sorted(PACKAGE.rglob("*"))
        if d.is_dir() and (d / "__init__.py").exists() and f"{d.name}/" not in text
    ]
    assert not missing, f"docs/architecture.md's layout lacks {missing}: add each where it belongs"


def test_server_doc_lists_every_serve_flag(serve_parser: argparse.ArgumentParser) -> None:
    options = [s for a in serve_parser._actions for s in a.option_strings]
    flags = [s for s in options if s.startswith("--") and s != "--help"]
    text = (ROOT / "docs" / "server.md").read_text()
    # a boolean's --no- form is documented through its positive flag
    missing = [f for f in flags if f"`{f}`" not in text and f"`--{f.removeprefix('--no-')}`" not in text]
    assert flags and not missing, f"docs/server.md's settings table lacks {missing}"
