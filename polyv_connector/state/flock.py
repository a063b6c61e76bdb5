"""The folder store's lock: ``flock`` on a file in the state folder, and its run counter.

The OS releases an ``flock`` when the process dies, so ``kill -9`` never leaves it locked.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from polyv_connector.errors import StateError
from polyv_connector.state.locks import LockMode, PollingLock, self_description

SEQ_FILE = "runseq"
_SEQ_LOCK_FILE = "runseq.lock"


def read_file_seq(directory: str | os.PathLike[str]) -> int:
    """The last run sequence number handed out in ``directory`` (0 if none yet)."""
    path = Path(directory) / SEQ_FILE
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return 0
    try:
        return int(text)
    except ValueError as exc:
        raise StateError(f"the run counter {path} is unreadable ({text[:40]!r}); delete it to start over") from exc


def next_file_seq(directory: str | os.PathLike[str], floor: Callable[[], int] | None = None) -> int:
    """Hand out the next run sequence number of ``directory`` (durably: fsync'ed before returning).

    ``floor`` returns a number the counter must exceed (the highest sequence number found in
    the state's logs), so a deleted or restored counter file cannot reorder runs.
    """
    directory = Path(directory)
    # The counter has its own short exclusive flock: shared holders of the state's lock take
    # numbers concurrently, and each must get a different one.
    fd = os.open(directory / _SEQ_LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        current = read_file_seq(directory)
        if floor is not None:
            current = max(current, floor())
        seq = current + 1
        _durable_replace(directory / SEQ_FILE, f"{seq}\n".encode())
        return seq
    finally:
        os.close(fd)  # releases the flock


def _durable_replace(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Make a rename or unlink in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileLock(PollingLock):
    """An OS lock (``flock``) on ``<directory>/<name>``, released by the OS when the process dies.

    Each holder describes itself in ``<name>.holders/<host>-<pid>-<token>.json``, a file it
    keeps ``flock``-ed too: a description whose file is not locked belongs to a dead process
    and is removed by the next reader, so a killed holder is never shown as holding.
    Not for NFS (``flock`` is local there).
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        run_id: str,
        *,
        mode: LockMode = "exclusive",
        name: str = "lock",
        take_seq: bool = True,
        seq_floor: Callable[[], int] | None = None,
    ) -> None:
        super().__init__(run_id, mode)
        self.directory = Path(directory)
        self.name = name
        self.path = self.directory / name
        self.holders_dir = self.directory / f"{name}.holders"
        self.what = f"the lock {self.path}"
        self.take_seq = take_seq
        self._seq_floor = seq_floor
        self._fd: int | None = None
        self._holder_fd: int | None = None
        self._holder_path: Path | None = None

    def _try_acquire(self) -> bool:
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            op = fcntl.LOCK_EX if self.mode == "exclusive" else fcntl.LOCK_SH
            try:
                fcntl.flock(fd, op | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                    os.close(fd)
                    return False
                raise
            # Someone removed the folder (or the lock file) while we opened it: the lock we hold
            # is on an orphan inode that others would not see. Try again on the current file.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                return False
        except BaseException:
            os.close(fd)
            raise
        # From here the descriptor belongs to self: _close_all() closes it (exactly once).
        self._fd = fd
        try:
            self._seq = next_file_seq(self.directory, self._seq_floor) if self.take_seq else None
            self._write_holder()
        except BaseException:
            self._close_all()
            raise
        return True

    def _write_holder(self) -> None:
        self.holders_dir.mkdir(exist_ok=True)
        me = self_description(self.run_id, self.mode, self._seq, str(self.path))
        final = self.holders_dir / f"{_safe(str(me['host']))}-{os.getpid()}-{uuid.uuid4().hex[:8]}.json"
        # Written under a dot-name and renamed: a reader never sees a description whose file is
        # not yet locked (it would take it for a dead holder's and remove it).
        tmp = final.with_name("." + final.name + ".tmp")
        hfd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        self._holder_fd = hfd
        fcntl.flock(hfd, fcntl.LOCK_EX)
        os.write(hfd, json.dumps(me).encode())
        os.fsync(hfd)
        os.replace(tmp, final)
        self._holder_path = final

    def _close_all(self) -> None:
        if self._holder_path is not None:
            with contextlib.suppress(OSError):
                self._holder_path.unlink()
            self._holder_path = None
        if self._holder_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._holder_fd)
            self._holder_fd = None
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)  # closing the last descriptor releases the flock
            self._fd = None

    def _release(self) -> None:
        self._close_all()

    def __del__(self) -> None:
        # A lock object dropped without release() (an exception path) must not keep the
        # process's descriptors, hence the lock, until the process ends.
        self._close_all()

    def holders(self) -> list[dict[str, object]]:
        """Live holders, oldest first; removes the descriptions dead processes left behind."""
        try:
            entries = sorted(self.holders_dir.iterdir())
        except FileNotFoundError:
            return []
        found: list[dict[str, object]] = []
        for path in entries:
            hidden = path.name.startswith(".")
            if hidden:
                # A description being written, or one a writer died writing: only the latter,
                # old enough not to be in progress, is cleaned up.
                with contextlib.suppress(OSError):
                    if time.time() - path.stat().st_mtime > 60 and not _is_flocked(path):
                        path.unlink()
                continue
            if path.suffix != ".json":
                continue
            try:
                if not _is_flocked(path):
                    path.unlink(missing_ok=True)  # its process is gone, and the OS released its lock
                    continue
                found.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue
        return sorted(found, key=lambda h: str(h.get("since", "")))


def file_slice_holders(directory: str | os.PathLike[str], prefix: str = "lock-") -> dict[str, list[dict[str, object]]]:
    """Live holders of every slice lock (``<prefix>slice-<k>-of-<N>``) in ``directory``, by slice name."""
    found: dict[str, list[dict[str, object]]] = {}
    for holders_dir in sorted(Path(directory).glob(f"{prefix}slice-*-of-*.holders")):
        name = holders_dir.name.removesuffix(".holders")
        holders = FileLock(directory, "", name=name).holders()
        if holders:
            found[name.removeprefix(prefix)] = holders
    return found


def _is_flocked(path: Path) -> bool:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                return True
            raise
        return False
    finally:
        os.close(fd)


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text)[:64] or "_"
