"""Links are not broken: between README.md and docs/ (files and heading anchors), and from the
code, the tests and the DAG files' docs into them (``README.md#anchor``, ``docs/x.md#anchor``, and the
prose form ``(README: Section)``)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.docs.markdown import DOC_FILES, ROOT, anchor, anchors, headings, prose

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
CODE_FILES = sorted(
    p
    for p in [
        *(ROOT / "polyv_connector").rglob("*.py"),
        *(ROOT / "dags").glob("*.py"),
        *(ROOT / "scripts").glob("*.py"),
        *(ROOT / "tests").rglob("*.py"),
    ]
    if (ROOT / "tests" / "docs") not in p.parents  # these tests name the patterns themselves
)


def _check(target: str, base: Path) -> str | None:
    """Why ``target`` (a relative link from a file in ``base``) is broken, or None."""
    path_part, _, frag = target.partition("#")
    path = (base / path_part).resolve() if path_part else None
    if path is not None and not path.exists():
        return "no such file"
    md = path if path is not None else None
    if frag and md is not None and md.suffix == ".md" and frag not in anchors(md):
        return f"no heading #{frag}"
    return None


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: p.name)
def test_links_in_the_docs(path: Path) -> None:
    bad = []
    for target in LINK.findall(prose(path)):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        if target.startswith("#"):
            if target[1:] not in anchors(path):
                bad.append((target, "no such heading here"))
            continue
        why = _check(target, path.parent)
        if why:
            bad.append((target, why))
    assert bad == []


def _all_headings() -> set[str]:
    return {h for p in DOC_FILES for h in headings(p)}


def test_links_from_the_code() -> None:
    bad, checked = [], 0
    for code in CODE_FILES:
        text = code.read_text(encoding="utf-8")
        for target in re.findall(r"\b((?:README\.md|docs/[\w-]+\.md)(?:#[\w-]+)?)", text):
            checked += 1
            why = _check(target, ROOT)
            if why:
                bad.append((code.relative_to(ROOT), target, why))
        for section in re.findall(r"\(README: ([^)]+)\)", text):
            checked += 1
            if anchor(section) not in {anchor(h) for h in _all_headings()}:
                bad.append((code.relative_to(ROOT), section, "no such section in README or docs/"))
    assert checked >= 8 and bad == []


def test_the_anchor_rule() -> None:
    assert (
        anchor("The `polyv` connection (default id `polyv_default`)") == "the-polyv-connection-default-id-polyv_default"
    )
    assert anchor("Incremental sync, the state, and resuming") == "incremental-sync-the-state-and-resuming"
