"""Decode once: a per-dataset cache of uint8 arrays at training resolution.

The first use of a data set decodes every image (in threads; Pillow releases the GIL),
resizes it to training resolution and writes ``images.npy`` (``[N, H, W, 3]`` uint8),
``targets.npy`` and ``valid.npy`` into a folder named after a hash of the source files
(path, size, modification time) and of the transform parameters. Later uses
memory-map those files, so epochs never decode a JPEG again. The folder is built
under a temporary name and renamed into place when complete, so an interrupted build
leaves nothing that a later run would mistake for a cache; the temporary folders of builds
whose process is gone are removed at the next build (:func:`remove_stale_builds`). The
free space is checked and the files' blocks reserved before decoding, so a full disk is a
one-line error naming the cache folder, not a SIGBUS halfway through; a damaged cache is
rebuilt.

Location: ``$VINY_CACHE``, else ``~/.cache/viny``.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from viny.errors import DataError

__all__ = ["ArrayCache", "default_cache_dir", "build_or_load"]

CACHE_FORMAT = 1


def default_cache_dir() -> Path:
    return Path(os.environ.get("VINY_CACHE") or Path.home() / ".cache" / "viny")


@dataclass
class ArrayCache:
    """Decoded arrays of one data set: ``images [N, H, W, 3] uint8``, ``targets`` (any
    per-item array), ``valid [N] bool`` (False for files skipped as unreadable)."""

    path: Path | None
    images: np.ndarray
    targets: np.ndarray
    valid: np.ndarray
    bad_files: list[str]

    def __len__(self) -> int:
        return len(self.images)


def _fingerprint(files: Sequence[Path], params: dict) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"format": CACHE_FORMAT, **params}, sort_keys=True, default=str).encode())
    for f in files:
        st = os.stat(f)
        h.update(f"{Path(f).resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


_MARGIN = 64 * 2**20  # free space left beside a new cache
_BUILD = re.compile(r"\.[A-Za-z0-9_-]+-[0-9a-f]{20}\.(?P<rest>.+)")  # a cache folder being built (tempfile.mkdtemp in build_or_load)


def _full_message(root: Path, need: int, free: int) -> str:
    return (f"not enough free space for the decoded-image cache in {root}: it needs {need / 2**20:,.0f} MiB, the disk has "
            f"{free / 2**20:,.0f} MiB free; free some space there, or point $VINY_CACHE (or --cache-dir, the notebooks' cache_dir) "
            "at a disk with room")


def _reserve(path: Path) -> None:
    """Allocate the blocks of a memory-mapped file now (a write into a hole of a sparse file
    on a full disk kills the process with SIGBUS). File systems that cannot (EOPNOTSUPP)
    go without."""
    if not hasattr(os, "posix_fallocate"):
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as e:
        if e.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            raise
    finally:
        os.close(fd)


def remove_stale_builds(root: Path, older_than: float = 86_400) -> list[Path]:
    """Delete the temporary folders of cache builds that were killed (or ran out of disk):
    those of this machine whose process is gone, and those of unknown owner (older viny
    versions) untouched for ``older_than`` seconds. A build still running is left alone."""
    removed = []
    host = socket.gethostname()
    for d in root.iterdir():
        m = _BUILD.fullmatch(d.name)
        if not m or not d.is_dir() or d.is_symlink():
            continue
        # .<kind>-<hash>.<host>.<pid>.<random> (host names may hold dots) or .<kind>-<hash>.<random> (before)
        parts = m["rest"].split(".")
        pid = parts[-2] if len(parts) >= 3 else None
        owner = ".".join(parts[:-2]) if len(parts) >= 3 else None
        if pid is not None and pid.isdigit() and owner == host:
            stale = not _alive(int(pid))
        else:
            try:
                stale = time.time() - d.stat().st_mtime > older_than
            except OSError:
                continue
        if stale:
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _load(folder: Path) -> ArrayCache:
    meta = json.loads((folder / "meta.json").read_text())
    return ArrayCache(
        path=folder,
        images=np.load(folder / "images.npy", mmap_mode="r"),
        targets=np.load(folder / "targets.npy", mmap_mode="r"),
        valid=np.load(folder / "valid.npy"),
        bad_files=meta["bad_files"],
    )


def build_or_load(
    kind: str,
    n: int,
    files: Sequence[Path],
    decode: Callable[[int], tuple[np.ndarray, np.ndarray]],
    image_shape: tuple[int, int, int],
    target_shape: tuple[int, ...],
    target_dtype,
    params: dict,
    cache_dir: str | Path | None = None,
    skip_bad: bool = False,
    progress: bool = True,
) -> ArrayCache:
    """Return the cached arrays for ``files``, decoding them first if needed.

    ``decode(i)`` returns ``(image uint8 image_shape, target)`` for item ``i < n`` or raises
    :class:`DataError`. ``files`` are the source files whose identity keys the cache
    (for Pets, images and trimaps). With ``skip_bad`` unreadable items are marked
    invalid and counted; otherwise the first one stops the build with its message.
    ``cache_dir=False`` keeps everything in memory (no files written).
    """
    if cache_dir is not False:
        root = Path(cache_dir) if cache_dir else default_cache_dir()
        folder = root / f"{kind}-{_fingerprint(files, params)[:20]}"
        if (folder / "meta.json").is_file():
            try:
                cache = _load(folder)
            except (OSError, ValueError, KeyError, TypeError):  # truncated or damaged (a copy, a failing disk): rebuilt
                shutil.rmtree(folder, ignore_errors=True)
                if (folder / "meta.json").exists():
                    raise DataError(f"the decoded-image cache {folder} is damaged and cannot be removed; delete it") from None
                return build_or_load(kind, n, files, decode, image_shape, target_shape, target_dtype, params, cache_dir, skip_bad, progress)
            if cache.bad_files and not skip_bad:
                raise DataError(
                    f"{len(cache.bad_files)} unreadable file(s) in this data set, e.g. {cache.bad_files[0]}; "
                    "replace them or pass --skip-bad-images"
                )
            return cache
        try:
            root.mkdir(parents=True, exist_ok=True)
            remove_stale_builds(root)
            need = n * (int(np.prod(image_shape)) + int(np.prod(target_shape, dtype=np.int64)) * np.dtype(target_dtype).itemsize + 1) + 2**20
            free = shutil.disk_usage(root).free
            if free < need + _MARGIN:
                raise DataError(_full_message(root, need, free))
            tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.{socket.gethostname()}.{os.getpid()}.", dir=root))
        except OSError as e:
            raise DataError(f"cannot write the decoded-image cache in {root} ({(e.strerror or str(e)).lower()}); "
                            "set $VINY_CACHE (or --cache-dir) to a writable folder") from None
        try:
            images = np.lib.format.open_memmap(tmp / "images.npy", mode="w+", dtype=np.uint8, shape=(n, *image_shape))
            targets = np.lib.format.open_memmap(tmp / "targets.npy", mode="w+", dtype=target_dtype, shape=(n, *target_shape))
            _reserve(tmp / "images.npy")  # the blocks now: a full disk fails here in one line, not as SIGBUS halfway through
            _reserve(tmp / "targets.npy")
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if e.errno == errno.ENOSPC:
                raise DataError(_full_message(root, need, shutil.disk_usage(root).free)) from None
            raise DataError(f"cannot write the decoded-image cache in {root} ({(e.strerror or str(e)).lower()}); "
                            "set $VINY_CACHE (or --cache-dir) to a writable folder") from None
    else:
        folder = tmp = None
        images = np.zeros((n, *image_shape), np.uint8)
        targets = np.zeros((n, *target_shape), target_dtype)
    valid = np.ones(n, bool)
    bad: list[str] = []

    def work(i: int):
        try:
            return i, decode(i), None
        except DataError as e:
            return i, None, e

    try:
        with ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:
            it = pool.map(work, range(n))
            for i, out, err in tqdm(it, total=n, desc=f"decoding {kind}", disable=not progress, leave=False):
                if err is not None:
                    if not skip_bad:
                        raise DataError(f"{err} (pass --skip-bad-images to skip unreadable files)")
                    valid[i] = False
                    bad.append(str(err))
                    continue
                images[i], targets[i] = out
        if tmp is None:
            return ArrayCache(None, images, targets, valid, bad)
        try:
            images.flush()
            targets.flush()
            del images, targets
            np.save(tmp / "valid.npy", valid)
            (tmp / "meta.json").write_text(json.dumps({"kind": kind, "n": n, "params": params, "bad_files": bad}, indent=2, default=str))
        except OSError as e:
            raise DataError(f"cannot write the decoded-image cache in {root} ({(e.strerror or str(e)).lower()}); free some space "
                            "there or set $VINY_CACHE (or --cache-dir) to another folder") from None
        try:
            os.replace(tmp, folder)
        except OSError:  # another process finished the same cache first
            pass
        return _load(folder)
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
