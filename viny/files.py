"""Atomic file writes: a temp file in the same folder, flushed and fsynced, then
``os.replace``d over the target and the folder fsynced. A kill at any moment leaves
either the old file or the new one, never a half-written file."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterator

__all__ = ["atomic_path", "atomic_write_text", "atomic_write_json", "file_sha256", "check_writable", "writable_output", "folder_lock", "LOCK_FILE", "project_path", "repo_runs"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform can open a folder
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically.

    The caller writes the whole file to the yielded path (any writer that takes a path:
    safetensors, torch.save, pandas ...). On an exception the temp file is removed and
    ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def writable_output(path: str | os.PathLike, option: str = "--out", file: bool = False) -> Path:
    """Refuse an output that cannot be written, before any work, in one line (a
    :class:`~viny.errors.VinyError` naming ``option``); ``file``: ``path`` is a file, whose
    folder is checked (and made)."""
    from viny.errors import VinyError

    path = Path(path)
    if file and path.is_dir():
        raise VinyError(f"{option} {path} is a folder; name a file")
    try:
        check_writable(path.parent if file else path)
    except OSError as e:
        raise VinyError(f"{option} {path}: cannot write there ({(e.strerror or str(e)).lower()}); choose a writable "
                        f"{'file' if file else 'folder'}. Nothing was computed") from None
    return path


def check_writable(folder: str | os.PathLike) -> Path:
    """Create ``folder`` (with its parents) and write and remove a probe file in it, so a
    folder that cannot be written fails (with its ``OSError``) before any work starts."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check.", suffix=".tmp"):
        pass
    return folder


LOCK_FILE = ".viny.lock"  # in a folder a viny command is writing: its pid and command
_HELD: dict[Path, int] = {}  # folders this process holds, with how many times (the lock is re-entrant within a process)


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, what: str = "viny", option: str = "--out") -> Iterator[Path]:
    """Hold ``folder`` (an output folder) for this process while a command writes into it.

    The lock is an exclusive ``flock`` on ``folder/.viny.lock``, which records the holder's
    pid and ``what`` it runs; a second process asking for the same folder is refused at once
    with a :class:`~viny.errors.VinyError` naming that pid (``option``: the option that chose
    the folder, for the message). The kernel drops the lock when the process ends, however it
    ends (``kill -9`` included), so a killed run leaves no stale lock, and the next run needs
    no clean-up. Re-entrant within a process (``viny demo`` holds its grid's folder while
    :func:`viny.grid.run_grid` asks for it again). Creating the folder may raise ``OSError``
    (an output that cannot be written); callers turn it into their one-line message."""
    from viny.errors import VinyError

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = folder.resolve()
    if key in _HELD:
        _HELD[key] += 1
        try:
            yield folder
        finally:
            _HELD[key] -= 1
        return
    path = folder / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # BlockingIOError: another process holds it
            holder = ""
            with contextlib.suppress(OSError, UnicodeDecodeError):
                holder = path.read_text().strip()
            pid, _, command = holder.partition(" ")
            who = f"pid {pid}" + (f", {command}" if command else "") if pid.isdigit() else "another process"
            raise VinyError(f"{folder} is in use by another viny run ({who}); wait for it to end or choose another {option}") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {what}\n".encode())
        _HELD[key] = 1
        try:
            yield folder
        finally:
            del _HELD[key]
    finally:
        os.close(fd)  # releases the flock


def project_path(path: str | Path) -> Path:
    """``path`` as given when absolute; a relative one is taken from the project folder when
    the working directory is a project's ``notebooks/`` (as in JupyterLab and papermill
    cells), else from the working directory: grids can name files of the repo the same
    way from anywhere."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    cwd = Path.cwd()
    base = cwd.parent if cwd.name == "notebooks" and (cwd.parent / "pyproject.toml").is_file() else cwd
    return base / p


def repo_runs(*parts: str) -> Path:
    """Where notebooks write when no folder is given: ``$VINY_RUNS/<parts>`` if set, else
    ``runs/<parts>`` in the working directory, or in the project folder when the working
    directory is a project's ``notebooks/`` (as in JupyterLab). A notebook copied elsewhere
    writes beside itself, never into the installed package's checkout."""
    import os

    if os.environ.get("VINY_RUNS"):
        return Path(os.environ["VINY_RUNS"]).expanduser().joinpath(*parts)
    return project_path(Path("runs", *parts))
