"""Picking the device and the numeric precision once per run."""

from __future__ import annotations

import contextlib
import ctypes
import sys
from functools import lru_cache

import torch

__all__ = ["resolve_device", "resolve_precision", "autocast", "cpu_has_bf16", "keep_freed_memory"]


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        from viny.errors import VinyError

        raise VinyError(f"--device {name}: CUDA is not available on this machine; use --device cpu or auto")
    return dev


@lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """True when the CPU has native bf16 matmul units (AVX512-BF16 or AMX)."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> ``bf16`` on CUDA and on CPUs with bf16 units (about 3x faster here), else ``fp32``."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_bf16() else "fp32"


def autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3


@lru_cache(maxsize=1)
def keep_freed_memory() -> bool:
    """Keep the memory that freed tensors leave in this process for the next step's tensors.

    A training step frees and re-allocates the same large activations (a qkv projection
    of a 64-image batch is 12.6 MB) every step. glibc serves blocks that large with
    ``mmap`` and returns them to the OS on free, and trims the heap's free top, so each
    step page-faults its activations in again: 10-15 thousand faults and 65-100 ms of
    system time per fine-tuning step on a 2-core VM, a sixth of the step. Serving every
    block from the heap and never trimming it keeps the pages: the process holds on to
    its peak memory (what one step needs) until it exits. ``viny.train.train`` and the
    speed measurements call this; nothing else does. No-op (False) off glibc.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int  # C ints: larger values would wrap
    return all(mallopt(param, value) == 1 for param, value in (
        (_M_MMAP_THRESHOLD, 1 << 30),  # blocks below 1 GiB come from the heap, not mmap
        (_M_TRIM_THRESHOLD, 2**31 - 1),  # give the heap's free top back only past 2 GiB
        (_M_TOP_PAD, 64 << 20),  # grow the heap in 64 MiB steps
    ))
