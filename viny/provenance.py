"""Where a result came from: the record each grid cell (``status.json``) and each training
run (``config.json``'s ``runtime``) keeps beside its numbers.

:func:`provenance` returns plain JSON values: the git commit of the code and whether the
tree had uncommitted changes, a SHA-256 of the full configuration (key order does not
matter), the versions of python, torch, timm and viny, the device with the CPU's (and
GPU's) model, the precision and the thread count. No host name and no path: the record
is published with the cells as it is.
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path

__all__ = ["provenance", "config_sha256", "git_state", "cpu_model", "NOT_RECORDED"]

NOT_RECORDED = "not recorded"  # what the report shows for cells published before this record existed
_REPO = Path(__file__).resolve().parents[1]


def config_sha256(config: dict) -> str:
    """SHA-256 of ``config`` as canonical JSON (sorted keys, no spaces): the same for the
    same configuration whatever the order its keys were written in."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def git_state(path: str | Path = _REPO) -> tuple[str | None, bool | None]:
    """``(commit, dirty)`` of the checkout holding ``path``; ``(None, None)`` outside a git
    checkout or without git. ``dirty``: tracked files differ from the commit."""
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, timeout=10)
        if rev.returncode:
            return None, None
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=path, capture_output=True, text=True, timeout=30)
        return rev.stdout.strip() or None, (bool(status.stdout.strip()) if status.returncode == 0 else None)
    except (OSError, subprocess.SubprocessError):
        return None, None


@lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``, else :mod:`platform`)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _gpu_model(device) -> str | None:
    """The GPU's name when ``device`` is a CUDA device, without starting CUDA in a process
    that has not (a grid worker records its cell's GPU beside the kernel that uses it)."""
    import torch

    if device is None or torch.device(device).type != "cuda":
        return None
    if torch.cuda.is_initialized():
        return torch.cuda.get_device_name(torch.device(device))
    for info in sorted(Path("/proc/driver/nvidia/gpus").glob("*/information")):
        for line in info.read_text().splitlines():
            if line.startswith("Model:"):
                return line.split(":", 1)[1].strip()
    return "CUDA GPU"


def provenance(config: dict | None = None, device=None, precision: str | None = None, threads: int | None = None) -> dict:
    """The provenance record of a run of ``config`` on ``device`` (default: the one
    ``device: auto`` picks) at ``precision``, with ``threads`` intra-op threads (default:
    torch's). Git is read without failing: outside a checkout ``commit`` is None."""
    import torch

    import viny

    commit, dirty = git_state()
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return {
        "commit": commit,
        "dirty": dirty,
        "config_sha256": config_sha256(config) if config is not None else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": _version("timm"),
        "viny": viny.__version__,
        "device": str(device),
        "cpu_model": cpu_model(),
        "gpu_model": _gpu_model(device),
        "precision": precision,
        "threads": int(threads) if threads else torch.get_num_threads(),
    }


def cell_provenance(notebook: str | Path, params: dict, threads: int | None = None) -> dict:
    """:func:`provenance` of a grid cell: ``notebook`` run with ``params`` (without the
    grid's own folders, which name this machine) by a kernel with ``threads`` threads.
    The configuration hashed is the notebook's file name and the parameters; the device
    is the one the notebooks' ``auto`` picks, the precision the cell's ``precision``
    parameter (``auto`` resolved where that needs no CUDA start here)."""
    import torch

    from viny.device import resolve_precision

    name = f"{Path(notebook).parent.name}/{Path(notebook).name}"
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision = str(params.get("precision", "auto"))
    if precision == "auto" and (device.type == "cpu" or torch.cuda.is_initialized()):
        precision = resolve_precision(precision, device)
    return {"notebook": name, **provenance({"notebook": name, **params}, device, precision, threads)}
