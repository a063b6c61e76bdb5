"""Where a run may read and write: the checks both front ends make before the first request.

* :func:`check_output_file`: an output (the report, the JSON summary) is a regular file or a
  new path, never the input or inside it, never a device, FIFO, directory or symlink.
* :func:`check_output_dir`: an output folder (the sync state, the validation results) is a
  folder or a new path whose nearest existing ancestor is a writable folder.
* :func:`name_under`: a trigger-time report *name* joined to the folder the DAG author chose.
* :func:`require_under`: a trigger-time input or suite path inside a prefix the DAG author allows.

A leaf: it knows paths, not settings (:func:`polyv_connector.trigger_paths.confine` applies these
checks to a run).

Nothing here writes anything. Errors are :class:`ConfigError` naming the setting as given.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from polyv_connector.errors import ConfigError


def is_url(path: str) -> bool:
    """Whether ``path`` names a filesystem URL (``s3://...``) rather than a local path."""
    return "://" in path and not path.startswith("file://")


def local_path(path: str) -> Path:
    """``path`` as a local path (``file://`` stripped), absolute, symlinks resolved."""
    if path.startswith("file://"):
        path = path[len("file://") :]
    return Path(os.path.realpath(os.path.expanduser(path)))


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_output_file(path: str, setting: str, *, input_path: str | None = None, create_parent: bool = True) -> None:
    """Refuse an output file that would destroy or feed back into something it must not.

    ``input_path`` is the run's input: the output may be neither it nor inside it (a report in
    the input folder would be read back as input by the next run). With ``create_parent``
    false the output's folder must already exist (no one creates it before sending).
    """
    if is_url(path):
        raise ConfigError(setting, f"{path!r}: give a local file path")
    raw = Path(path).expanduser()
    try:
        st = raw.lstat()
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise ConfigError(setting, f"cannot inspect {path!r}: {exc.strerror or exc}") from None
    if st is not None:
        if stat.S_ISLNK(st.st_mode):
            raise ConfigError(setting, f"{path!r} is a symbolic link; give the path of a regular file")
        if stat.S_ISDIR(st.st_mode):
            raise ConfigError(setting, f"{path!r} is a directory; give a file path such as report.parquet")
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(setting, f"{path!r} is not a regular file (a device, FIFO or socket)")
    target = local_path(str(raw))
    if input_path and not is_url(input_path):
        source = local_path(input_path)
        if target == source:
            raise ConfigError(setting, f"{path!r} is the input; the report would replace it")
        if source.is_dir() and _inside(target, source):
            raise ConfigError(setting, f"{path!r} lies inside the input directory; the next run would read it")
    parent = _nearest_existing(target.parent)
    if parent != target.parent and not create_parent:
        raise ConfigError(setting, f"the folder {str(target.parent)!r} does not exist")
    if not parent.is_dir():
        raise ConfigError(setting, f"{str(parent)!r} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(setting, f"cannot write to {str(parent)!r}: the folder is not writable")


def check_output_dir(path: str, setting: str) -> None:
    """Refuse an output folder that is a file, or that could not be created or written."""
    if is_url(path):
        raise ConfigError(setting, f"{path!r}: give a local folder")
    target = local_path(path)
    if target.exists() and not target.is_dir():
        raise ConfigError(setting, f"{path!r} is not a directory")
    parent = _nearest_existing(target)
    if not parent.is_dir():
        raise ConfigError(setting, f"{str(parent)!r} is not a directory; cannot create {path!r}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(setting, f"cannot write to {str(parent)!r}: the folder is not writable")


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def name_under(folder: str, name: str, setting: str) -> str:
    """``folder``/``name`` where ``name`` is a relative name without ``..`` (a trigger-time value)."""
    if "\x00" in name or "\\" in name:
        raise ConfigError(setting, "must be a plain relative name (no NUL or backslash)")
    pure = PurePosixPath(name)
    if pure.is_absolute() or name.startswith("~") or "://" in name:
        raise ConfigError(setting, f"must be a name under the report folder, not an absolute path or URL: {name!r}")
    if any(part == ".." for part in pure.parts):
        raise ConfigError(setting, f"must not contain '..': {name!r}")
    return os.path.join(folder, *pure.parts)


def require_under(path: str, prefixes: Sequence[str], setting: str, allowed_setting: str) -> None:
    """Refuse ``path`` unless it lies under one of ``prefixes`` (local paths with symlinks
    resolved, URLs by scheme, host and path segments)."""
    if not prefixes:
        raise ConfigError(allowed_setting, f"allows no location, so {setting} cannot be used")
    if is_url(path):
        parts = urlsplit(path)
        if any(seg in ("..", ".") for seg in parts.path.split("/")) or parts.query or parts.fragment:
            raise ConfigError(setting, f"{path!r}: '..', '.', queries and fragments are not allowed in a URL")
        for prefix in prefixes:
            if is_url(prefix):
                p = urlsplit(prefix)
                base = p.path.rstrip("/")
                if (p.scheme, p.netloc) == (parts.scheme, parts.netloc) and (
                    parts.path == base or parts.path.startswith(base + "/")
                ):
                    return
    else:
        target = local_path(path)
        if any(not is_url(prefix) and _inside(target, local_path(prefix)) for prefix in prefixes):
            return
    raise ConfigError(setting, f"{path!r} is not under a location {allowed_setting} allows")
