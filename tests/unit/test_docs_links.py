"""The repository stands on its own: every document links only to files that ship."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted(
    p
    for p in ROOT.rglob("*.md")
    if not any(part.startswith(".") or part in ("build", "node_modules") for part in p.parts)
    and ".egg-info" not in str(p)
)
LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")
OUTSIDE = re.compile(r"`(\.\./[^`\s]+)`")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_names_a_file_in_the_repository(doc: Path) -> None:
    text = doc.read_text()
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        resolved = (doc.parent / target).resolve()
        if not resolved.is_relative_to(ROOT) or not resolved.exists():
            broken.append(target)
    assert not broken, f"{doc.relative_to(ROOT)} links to what does not ship: {broken}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_document_sends_the_reader_outside_the_repository(doc: Path) -> None:
    outside = [
        p
        for p in OUTSIDE.findall(doc.read_text())
        if not (doc.parent / p).resolve().is_relative_to(ROOT)
    ]
    assert not outside, f"{doc.relative_to(ROOT)} names files outside the repository: {outside}"


ANCHORED = re.compile(r"\]\(([^)\s#]*)#([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6} (.+?)\s*#*$", re.M)
HTML_ID = re.compile(r"<a (?:id|name)=\"([^\"]+)\"")


def anchors(doc: Path) -> set[str]:
    """The fragment ids GitHub gives a document's headings (lower case; punctuation but
    ``-`` and ``_`` dropped; spaces to ``-``; a repeated one numbered), and its HTML ids."""
    text = re.sub(r"^```.*?^```", "", doc.read_text(), flags=re.M | re.S)  # no code blocks
    seen: dict[str, int] = {}
    out = set(HTML_ID.findall(text))
    for heading in HEADING.findall(text):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_to_a_heading_finds_it(doc: Path) -> None:
    """A review: two of the guide's links led to no heading (#ashat-fleet-list)."""
    broken = []
    for target, fragment in ANCHORED.findall(doc.read_text()):
        if re.match(r"[a-z]+:", target) or (target and not target.endswith(".md")):
            continue
        linked = (doc.parent / target).resolve() if target else doc
        if linked.exists() and fragment not in anchors(linked):
            broken.append(f"{target}#{fragment}")
    assert not broken, f"{doc.relative_to(ROOT)} links to headings that do not exist: {broken}"
