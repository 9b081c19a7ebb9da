"""Upstream work shared by many downstream runs: a content-addressed store of runs.

:meth:`viny.upstream.Upstream.resolve` returns the encoder a fine-tune should start from,
training the pre-training and the intermediate run through :func:`run_in_store` only if
no run with the same configuration is in the store yet. Runs
are keyed by a hash of their configuration (device, precision, cache and progress
settings excluded), so every grid cell that needs "SimMIM on 45k images, seed 0" gets
the same run, trained once. A lock file per run makes concurrent cells (local worker
processes, or Ray tasks on several hosts sharing the store's file system) wait for one
another instead of training twice; an interrupted run is resumed. The lock is a file
created exclusively (``O_EXCL``, atomic on local file systems and NFS v3+, unlike
``fcntl`` locks, which some network file systems keep per host), naming its owner (host,
pid) and touched by a heartbeat: a waiter takes it over when its owner is gone (a dead
process on the same host at once; on another host, a heartbeat that has not moved for
:data:`LOCK_STALE_SECONDS`, ``$VINY_LOCK_STALE_SECONDS``, by the waiter's own clock).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Iterator

from viny.config import TrainConfig
from viny.errors import VinyError
from viny.files import file_sha256
from viny.train import RESULTS, STATE, train

__all__ = ["config_key", "run_in_store"]


def config_key(config: TrainConfig) -> str:
    """Short hash of everything in ``config`` that changes the result, including the
    content of the ``init_from`` file: a run from a shipped encoder that was replaced by a
    newer one at the same path is a different run."""
    d = config.key_dict()  # without runtime options, and without options added since that leave this run unchanged
    if config.init_from and Path(config.init_from).is_file():
        d["init_from_sha256"] = file_sha256(config.init_from)
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]


LOCK_HEARTBEAT_SECONDS = 10.0  # how often a lock's holder touches its lock file
LOCK_STALE_SECONDS = 120.0  # a lock whose heartbeat has not moved this long (another host's owner) is taken over


def _lock_stale_seconds() -> float:
    try:
        return float(os.environ.get("VINY_LOCK_STALE_SECONDS") or LOCK_STALE_SECONDS)
    except ValueError:
        raise VinyError(f"VINY_LOCK_STALE_SECONDS must be a number of seconds, got {os.environ['VINY_LOCK_STALE_SECONDS']!r}") from None


def _machine() -> dict:
    """What makes a pid meaningful: the host, its boot and the pid namespace (containers)."""
    ids = {"host": socket.gethostname()}
    with contextlib.suppress(OSError):
        ids["boot"] = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    with contextlib.suppress(OSError):
        ids["pidns"] = os.readlink("/proc/self/ns/pid")
    return ids


def _pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")  # a zombie trains nothing
    except FileNotFoundError:
        return False
    except (OSError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _read_lock(path: Path) -> tuple[tuple, dict] | None:
    """``(signature, owner)`` of the lock file, or None when there is none. Opening the file
    (not only stat-ing it) makes an NFS client fetch its current attributes."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            text = f.read()
    except FileNotFoundError:
        return None
    try:
        owner = json.loads(text)
    except ValueError:  # being written, or not ours
        owner = {}
    return (st.st_ino, st.st_mtime_ns, st.st_size), owner if isinstance(owner, dict) else {}


def _take_over(path: Path, signature: tuple, token: str) -> None:
    """Remove the stale lock file ``path``, only if it is still the one seen (``signature``):
    moved aside first (one rename wins among waiters), then checked; a fresh lock moved by
    mistake is put back."""
    aside = path.with_name(f".{path.name}.{token}.stale")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    try:
        st = os.stat(aside)
        if (st.st_ino, st.st_mtime_ns, st.st_size) != signature:
            with contextlib.suppress(FileExistsError):
                os.link(aside, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            aside.unlink()


@contextlib.contextmanager
def _locked(path: Path, what: str = "") -> Iterator[None]:
    """Hold the lock file ``path`` (see the module's docstring); while another process holds
    it, say so on stderr once (a cell waiting here otherwise looks hung) and wait."""
    path.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    here = _machine()
    me = {**here, "pid": os.getpid(), "token": token, "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
    stale_after = _lock_stale_seconds()
    seen, seen_at, said = None, time.monotonic(), False
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(me))
                f.flush()
                os.fsync(f.fileno())
            break
        lock = _read_lock(path)
        if lock is None:
            continue
        signature, owner = lock
        if signature != seen:  # the heartbeat moved (or a new owner): the owner is alive
            seen, seen_at = signature, time.monotonic()
        same_machine = all(owner.get(k) == v for k, v in here.items()) and isinstance(owner.get("pid"), int)
        dead = same_machine and not _pid_alive(owner["pid"])
        if dead or time.monotonic() - seen_at > stale_after:
            why = f"its owner (pid {owner.get('pid')}) is gone" if dead else f"its heartbeat stopped {stale_after:.0f} s ago"
            print(f"taking over the lock of {what or path.stem} from {owner.get('host', 'an unknown host')}: {why}",
                  file=sys.stderr, flush=True)
            _take_over(path, signature, token)
            seen = None
            continue
        if not said:
            print(f"waiting for {what or path.stem}: another process is training it "
                  f"({owner.get('host', '?')}, pid {owner.get('pid', '?')}; {time.strftime('%H:%M:%S')})", file=sys.stderr, flush=True)
            said = True
        time.sleep(0.5)

    stop = threading.Event()

    def heartbeat():
        while not stop.wait(LOCK_HEARTBEAT_SECONDS):
            lock = _read_lock(path)
            if lock is None or lock[1].get("token") != token:
                print(f"warning: the lock of {what or path.stem} was taken over by another process "
                      f"(this one was paused for over {stale_after:.0f} s?); both may train it", file=sys.stderr, flush=True)
                return
            with contextlib.suppress(OSError):
                os.utime(path)

    beat = threading.Thread(target=heartbeat, name=f"viny-lock-{path.name}", daemon=True)
    beat.start()
    try:
        yield
    finally:
        stop.set()
        beat.join()
        lock = _read_lock(path)
        if lock is not None and lock[1].get("token") == token:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def run_in_store(config: TrainConfig, store: str | Path, progress: bool = True) -> Path:
    """The run folder of ``config`` in ``store``, trained (or resumed) if not finished."""
    store = Path(store)
    run = store / f"{config.phase}-{config_key(config)}"
    # .json: not the .lock files of earlier versions (fcntl locks, left in place), which would look held
    with _locked(store / ".locks" / f"{run.name}.lock.json", f"the {config.phase} run {run}"):
        if not (run / RESULTS).is_file():
            train(config, run, resume=(run / STATE).is_file(), progress=progress)
    return run
