"""Decode once: a per-dataset cache of uint8 arrays at training resolution.

The first use of a data set decodes every image (in threads; Pillow releases the GIL),
resizes it to training resolution and writes ``images.npy`` (``[N, H, W, 3]`` uint8),
``targets.npy`` and ``valid.npy`` into a folder named after a hash of the source files
(path, size, modification time) and of the transform parameters. Later uses
memory-map those files, so epochs never decode a JPEG again. The folder is built
under a temporary name and renamed into place when complete, so an interrupted build
leaves nothing that a later run would mistake for a cache.

Location: ``$VINY_CACHE``, else ``~/.cache/viny``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
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
            cache = _load(folder)
            if cache.bad_files and not skip_bad:
                raise DataError(
                    f"{len(cache.bad_files)} unreadable file(s) in this data set, e.g. {cache.bad_files[0]}; "
                    "replace them or pass --skip-bad-images"
                )
            return cache
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=root))
        images = np.lib.format.open_memmap(tmp / "images.npy", mode="w+", dtype=np.uint8, shape=(n, *image_shape))
        targets = np.lib.format.open_memmap(tmp / "targets.npy", mode="w+", dtype=target_dtype, shape=(n, *target_shape))
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
        images.flush()
        targets.flush()
        del images, targets
        np.save(tmp / "valid.npy", valid)
        (tmp / "meta.json").write_text(json.dumps({"kind": kind, "n": n, "params": params, "bad_files": bad}, indent=2, default=str))
        try:
            os.replace(tmp, folder)
        except OSError:  # another process finished the same cache first
            pass
        return _load(folder)
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
