"""Measured training rates and a grid's predicted wall time (``viny grid --estimate``).

:func:`measure_rates` times a few real training steps of each phase (and evaluation) on
this machine with the default path (cached uint8 data, bf16 autocast where it helps,
the attention kernel chosen per device). :func:`grid_work` counts the image-steps a grid
needs, once per distinct upstream run (runs shared through the store are counted once),
and :func:`estimate` turns both into seconds.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import torch

from viny.config import make_config
from viny.data.datasets import sample_root
from viny.data.images import IMAGE_EXTENSIONS
from viny.device import autocast, keep_freed_memory, resolve_device, resolve_precision
from viny.grid import expand, notebook_defaults
from viny.study import CONTROL, FINETUNE, GEOMETRY, INDOMAIN, JOINT
from viny.tasks import make_task
from viny.train import init_encoder

__all__ = ["time_train_step", "time_evaluation", "measure_rates", "grid_work", "estimate"]


def time_train_step(phase: str, steps: int = 3, batch_size: int = 64, device: str = "auto", precision: str = "auto",
                    model: str = "viny", timings: dict | None = None, attn_impl: str = "auto", **options) -> float:
    """Images/s of full training steps of ``phase`` (data gather, augmentation, forward,
    backward, AdamW) on the shipped sample, after one warm-up step (which compiles the
    model when ``compile=True``; its seconds go to ``timings["warmup_seconds"]``).
    ``attn_impl`` picks the attention kernel (``ViNyAttention``)."""

    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    amp = autocast(dev, prec)
    cfg = make_config(phase, model=model, batch_size=batch_size, precision=prec, **options)
    task = make_task(cfg, progress=False)
    net = task.build(init_encoder(cfg).set_attn_impl(attn_impl)).to(dev).train()
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr)
    step_net = torch.compile(net, dynamic=False) if cfg.compile else net
    gen = torch.Generator().manual_seed(0)

    def step():
        idx = task.train_index[torch.randint(len(task.train_index), (batch_size,), generator=gen).numpy()]
        with amp:
            loss = task.loss(step_net, idx, gen, dev)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    t = time.perf_counter()
    step()
    if timings is not None:
        timings["warmup_seconds"] = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch_size / (time.perf_counter() - t)


def time_evaluation(repeats: int = 2, images: int = 256, device: str = "auto", precision: str = "auto", model: str = "viny",
                    attn_impl: str = "auto") -> float:
    """Images/s of the segmenter's evaluation forward (no grad) on held-out Pets images."""

    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    amp = autocast(dev, prec)
    cfg = make_config("finetune", model=model, precision=prec, train_size=16, test_size=images, split="nested")
    task = make_task(cfg, progress=False)
    net = task.build(init_encoder(cfg).set_attn_impl(attn_impl)).to(dev)
    task.predict(net, task.test_index, dev, amp)
    t = time.perf_counter()
    for _ in range(repeats):
        task.predict(net, task.test_index, dev, amp)
    return repeats * len(task.test_index) / (time.perf_counter() - t)


PHASE_OPTIONS = {"pretrain": {"num_images": 256}, "intermediate": {"num_images": 256},
                 "finetune": {"train_size": 256, "test_size": 256, "split": "nested"}}


def measure_rates(model: str = "viny", steps: int = 3, batch_size: int = 64, device: str = "auto", precision: str = "auto") -> dict[str, float]:
    """Images per second of a training step of each phase, and of evaluation, as training
    runs them (on CPU with freed memory kept, :func:`viny.device.keep_freed_memory`)."""

    if resolve_device(device).type == "cpu":
        keep_freed_memory()
    rates = {phase: time_train_step(phase, steps, batch_size, device, precision, model, **opts) for phase, opts in PHASE_OPTIONS.items()}
    rates["evaluate"] = time_evaluation(device=device, precision=precision, model=model)
    return rates


def _count_images(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)


FULL_SIZES = {"intel": 14_034, "pets": 7_349}  # the full data sets, when their folders are not on this machine


def _sizes(data_root: str | None) -> dict[str, int]:
    root = Path(data_root) if data_root else sample_root()
    if not root.is_dir():
        return dict(FULL_SIZES)
    ann = root / "oxford-iiit-pet" / "annotations"
    pets = sum(len([ln for ln in (ann / f).read_text().splitlines() if ln.strip() and not ln.startswith("#")])
               for f in ("trainval.txt", "test.txt") if (ann / f).is_file())
    return {"intel": _count_images(root / "intel-image-classification" / "seg_train"), "pets": pets}


def grid_work(grid) -> pd.DataFrame:
    """Image-steps per phase that ``grid`` needs, each distinct upstream run counted once.

    A cell's upstream runs are the chains its notebook builds (:func:`viny.upstream.notebook_chains`,
    the notebooks' own defaults filled in from their parameters cells): the same object the
    notebook resolves, so the estimate cannot count another chain than the one that runs."""
    from viny.upstream import notebook_chains

    rows, upstream = [], set()
    size_cache: dict = {}
    defaults: dict = {}
    for study, cells in expand(grid).items():
        for c in cells:
            if c.notebook not in defaults:
                defaults[c.notebook] = notebook_defaults(c.notebook)
            p = {**defaults[c.notebook], **c.params}
            root = p.get("data_root") or None
            if root not in size_cache:
                size_cache[root] = _sizes(root)
            for chain in notebook_chains(c.notebook, p):
                for key, phase, steps in chain.steps(size_cache[root]):
                    if key not in upstream:
                        upstream.add(key)
                        rows.append({"study": study, "phase": phase, "image_steps": steps})
            if study in (FINETUNE, CONTROL, JOINT, INDOMAIN):
                joint = 2 if p.get("aux_mim_weight") else 1  # the joint arm: a second encoder pass (masked images) and the decoder
                rows.append({"study": study, "phase": "finetune", "image_steps": p["train_size"] * p["epochs"] * joint})
                rows.append({"study": study, "phase": "evaluate", "image_steps": p["test_size"]})
            if study == GEOMETRY:
                n = min(p["num_images"], size_cache[root]["pets"])
                rows.append({"study": study, "phase": "evaluate", "image_steps": n * (len(p["intermediates"]) + 2)})
            rows.append({"study": study, "phase": "kernel", "image_steps": 0})
    return pd.DataFrame(rows)


def estimate(work: pd.DataFrame, rates: dict[str, float], kernel_seconds: float = 2.0) -> pd.DataFrame:
    """Predicted seconds per study and phase, one cell at a time (``kernel``: per cell, the
    warm kernel's reset and the notebook's set-up; a fresh kernel with its imports costs about
    8 s more, once per worker: :mod:`viny.kernels`)."""
    w = work.copy()
    w["seconds"] = [kernel_seconds if ph == "kernel" else s / rates[ph] for ph, s in zip(w["phase"], w["image_steps"])]
    return w.groupby(["study", "phase"], sort=False)[["image_steps", "seconds"]].sum().reset_index()
