"""Scoring a fine-tuned segmentation checkpoint on the test split of its configuration."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from viny.config import config_from_dict
from viny.device import autocast, resolve_device, resolve_precision
from viny.errors import VinyError
from viny.model import ViNy
from viny.tasks import FinetuneTask, Segmenter
from viny.weights import load_weights

__all__ = ["evaluate_checkpoint", "load_segmenter"]


def load_segmenter(path: str | Path) -> tuple[Segmenter, dict]:
    """The encoder + segmentation head saved by a finetune run, with its metadata."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    try:
        sd, meta = load_weights(path)
    except (FileNotFoundError, ValueError) as e:
        raise VinyError(str(e)) from None
    if meta.get("kind") != "segmenter":
        raise VinyError(f"{path} holds a {meta.get('kind', 'unknown')!r} model, not a fine-tuned segmenter; pass a finetune run folder")
    model = Segmenter(ViNy(**meta["model_args"]))
    model.load_state_dict(sd, strict=True)
    return model, meta


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
