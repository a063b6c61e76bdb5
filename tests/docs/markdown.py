"""Reading README.md and docs/*.md the way the docs tests need: code blocks, headings, links.

The one marker for a block a reader is not meant to run as written is an HTML comment on the
line right before its fence::

    <!-- illustration -->
    ```bash
    ...
    ```

It renders as nothing on a code host, and it is the only way a shell or SQL block escapes the
"commands are real" tests (tests/docs/test_commands.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC_FILES: tuple[Path, ...] = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))
ILLUSTRATION = "<!-- illustration -->"
SHELL_LANGUAGES = frozenset({"sh", "bash", "shell", "console"})
FENCE = re.compile(r"^(`{3,})(.*)$")


@dataclass(frozen=True)
class Block:
    """One fenced code block: where it is, its info string, body, and whether it is marked."""

    path: Path
    line: int  # 1-based line of the opening fence
    info: str
    body: str
    illustration: bool

    @property
    def language(self) -> str:
        return self.info.split()[0] if self.info.split() else ""

    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown file, in order."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, info = m.group(1), m.group(2).strip()
        j = i + 1
        while j < len(lines) and not lines[j].startswith(fence):
            j += 1
        marked = i > 0 and lines[i - 1].strip() == ILLUSTRATION
        found.append(Block(path, i + 1, info, "\n".join(lines[i + 1 : j]), marked))
        i = j + 1
    return found


def prose(path: Path) -> str:
    """The file's text without its fenced code blocks (what a reader reads as sentences and tables)."""
    out: list[str] = []
    fence: str | None = None
    for line in path.read_text(encoding="utf-8").splitlines():
        m = FENCE.match(line)
        if fence is None and m:
            fence = m.group(1)
            continue
        if fence is not None:
            if line.startswith(fence):
                fence = None
            continue
        out.append(line)
    return "\n".join(out)


def anchor(heading: str) -> str:
    """The anchor a code host gives a heading (GitHub's rule: lower case, punctuation dropped,
    spaces to hyphens)."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file (a repeated heading gets -1, -2, ...)."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    for line in prose(path).splitlines():
        m = re.match(r"^#{1,6} (.+)$", line)
        if not m:
            continue
        a = anchor(m.group(1))
        n = seen.get(a, 0)
        out.add(a if n == 0 else f"{a}-{n}")
        seen[a] = n + 1
    return out


def headings(path: Path) -> set[str]:
    return {m.group(1).strip() for m in re.finditer(r"^#{1,6} (.+)$", prose(path), re.MULTILINE)}
