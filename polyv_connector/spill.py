"""The run's spill directory: a private temporary folder holding a full copy of the input items.

A run that ends normally removes it. A run killed with SIGKILL cannot, so each directory names
its owner (pid and the process's start time, which defeats pid reuse) and every run removes
the directories whose owner is gone. A live concurrent run keeps its own.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

PREFIX = "polyv-sync-"
OWNER_FILE = "owner.json"


def process_start_time(pid: int) -> str | None:
    """When process ``pid`` started, as an opaque token (None if unknown or the process is gone).

    Linux: field 22 of ``/proc/<pid>/stat`` (clock ticks since boot). Elsewhere None, and only
    the pid is compared.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


def _alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process: not ours to judge
    if started is None:
        return True
    now = process_start_time(pid)
    return now is None or now == started


def create_file(path: Path) -> None:
    """Create ``path`` empty and readable by the owner only (0600), whatever the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)


@contextmanager
def spill_dir(parent: str | None = None) -> Iterator[Path]:
    """A new private (0700) spill directory, its owner recorded; removed on exit.

    Before creating it, removes the spill directories that dead runs left in the same place.
    """
    base = Path(parent or tempfile.gettempdir())
    remove_orphans(base)
    path = Path(tempfile.mkdtemp(prefix=PREFIX, dir=base))  # mkdtemp makes it 0700
    try:
        pid = os.getpid()
        owner = path / OWNER_FILE
        create_file(owner)
        owner.write_text(json.dumps({"pid": pid, "started": process_start_time(pid)}), encoding="utf-8")
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def remove_orphans(base: Path) -> list[Path]:
    """Remove the spill directories under ``base`` whose owning process is gone; returns them.

    A directory without a readable owner file is left alone: it may be a run that has just
    created it, or not ours.
    """
    removed: list[Path] = []
    uid = os.getuid() if hasattr(os, "getuid") else None
    try:
        candidates = list(base.glob(PREFIX + "*"))
    except OSError:
        return removed
    for path in candidates:
        try:
            if uid is not None and path.stat().st_uid != uid:
                continue
            owner = json.loads((path / OWNER_FILE).read_text(encoding="utf-8"))
            pid, started = int(owner["pid"]), owner.get("started")
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if pid == os.getpid() or _alive(pid, started):
            continue
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            log.info("removed the spill directory %s left by a dead run (pid %d)", path, pid)
            removed.append(path)
    return removed
