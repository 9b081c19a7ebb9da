"""Scoring a fine-tuned segmentation checkpoint on the test split of its configuration."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from viny.config import config_from_dict
from viny.device import autocast, resolve_device, resolve_precision
from viny.tasks import FinetuneTask
from viny.weights import load_segmenter

__all__ = ["evaluate_checkpoint", "load_segmenter"]


def evaluate_checkpoint(path: str | Path, data: str | None = None, device: str = "auto", progress: bool = True) -> dict:
    """Segmentation scores (both mIoU definitions) of a finetune checkpoint on its test split."""
    model, meta = load_segmenter(path)
    config = config_from_dict(meta["config"])
    if data is not None:
        config = dataclasses.replace(config, data=str(data))
    dev = resolve_device(device)
    task = FinetuneTask(config, progress)
    scores = task.evaluate(model.to(dev), dev, autocast(dev, resolve_precision(config.precision, dev)))
    return {"checkpoint": str(path), "train_size": config.train_size, "split": config.split, **scores}
