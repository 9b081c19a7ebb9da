"""Weights as safetensors plus a small JSON of metadata.

``save_weights(model, "run/encoder.safetensors", phase="pretrain", epoch=99, ...)``
writes ``encoder.safetensors`` (tensors, with the metadata also in its header, so the
file alone is self-describing) and ``encoder.json`` (the same metadata, for people and
tools): the model name and arguments, the phase, epoch, metrics, config and the viny
version. Both writes are atomic. safetensors files hold tensors only and cannot run code.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Sequence

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

import viny
from viny.errors import VinyError
from viny.files import atomic_path, atomic_write_json
from viny.heads import Segmenter
from viny.reference import ReferenceCheckpointError, load_reference_checkpoint
from viny.simmim import SimMIM

__all__ = ["save_weights", "load_weights", "read_metadata", "load_encoder", "load_simmim", "load_user_encoder", "load_segmenter", "model_spec",
           "SNAPSHOTS", "snapshot_path", "snapshots"]

_META_KEY = "viny"


def model_spec(model: nn.Module) -> dict:
    """``{"kind": "encoder"|"simmim", "model_args": {...}}`` for a ViNy or SimMIM model."""
    if isinstance(model, SimMIM):
        return {"kind": "simmim", "model_args": dict(model.encoder.model_args), "mask_ratio": model.mask_ratio}
    if isinstance(model, viny.ViNy):
        return {"kind": "encoder", "model_args": dict(model.model_args)}
    encoder = getattr(model, "encoder", None)
    if isinstance(encoder, viny.ViNy):  # encoder + task head (viny.tasks)
        return {"kind": type(model).__name__.lower(), "model_args": dict(encoder.model_args)}
    return {"kind": type(model).__name__.lower()}


def save_weights(model: nn.Module | dict, path: str | os.PathLike, **metadata) -> Path:
    """Save ``model`` (or a state dict) to ``path`` (``.safetensors``) and its JSON sidecar."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"weights path must end in .safetensors: {path}")
    sd = model if isinstance(model, dict) else model.state_dict()
    meta = {"viny_version": viny.__version__, **({} if isinstance(model, dict) else model_spec(model)), **metadata}
    tensors = {k: v.detach().cpu().contiguous() for k, v in sd.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={_META_KEY: json.dumps(meta, default=str)})
    atomic_write_json(path.with_suffix(".json"), meta)
    return path


def read_metadata(path: str | os.PathLike) -> dict:
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(_META_KEY)
    except (SafetensorError, OSError) as e:
        raise ValueError(f"cannot read weights file {path}: {e}") from None
    return json.loads(raw) if raw else {}


def load_weights(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[dict, dict]:
    """``(state_dict, metadata)`` from a viny ``.safetensors`` file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    meta = read_metadata(path)
    return load_file(str(path), device=str(device)), meta


def load_encoder(path: str | os.PathLike, **model_kwargs) -> "viny.ViNy":
    """Rebuild the ViNy encoder saved at ``path`` (an encoder file, or the encoder part of a
    SimMIM file). Any head in the file is dropped unless ``num_classes`` is passed."""
    sd, meta = load_weights(path)
    if "model_args" not in meta:
        raise ValueError(f"{path} has no viny model metadata; was it written by viny.weights.save_weights?")
    if meta.get("kind") != "encoder":  # SimMIM or encoder + head: keep the encoder part
        sd = {k[len("encoder."):]: v for k, v in sd.items() if k.startswith("encoder.")}
    args = {**meta["model_args"], "num_classes": 0, **model_kwargs}
    if args["num_classes"] == 0:
        sd = {k: v for k, v in sd.items() if not k.startswith("head.")}
    encoder = viny.ViNy(**args)
    encoder.load_state_dict(sd, strict=True)
    return encoder


def load_simmim(path: str | os.PathLike):
    """Rebuild a SimMIM model saved by :func:`save_weights`."""
    sd, meta = load_weights(path)
    if meta.get("kind") != "simmim":
        raise ValueError(f"{path} holds a {meta.get('kind', 'unknown')!r} model, not a SimMIM one")
    model = SimMIM(viny.ViNy(**meta["model_args"]), mask_ratio=meta.get("mask_ratio", 0.5))
    model.load_state_dict(sd, strict=True)
    return model


def _looks_pickled(path: Path) -> bool:
    """torch.save files start with a zip header (``PK``) or a pickle protocol byte (0x80)."""
    with open(path, "rb") as f:
        head = f.read(2)
    return head[:2] == b"PK" or head[:1] == b"\x80"


def load_user_encoder(path: str | os.PathLike, option: str = "--init-from") -> "viny.ViNy":
    """The one loader for encoder weights a user names (``--init-from``, ``viny geometry
    NAME=PATH``, notebooks): a viny ``.safetensors`` (encoder, SimMIM or encoder + head: the
    encoder part) or an authors' ``.pth`` (encoder or ``mim_*``). Anything else raises a
    :class:`~viny.errors.VinyError` naming ``option``, the file and what it is not.
    Nothing is ever unpickled beyond tensors (``torch.load(weights_only=True)``)."""
    path = Path(path).expanduser()
    what = "a viny .safetensors weights file or an authors' .pth checkpoint"
    if not path.is_file():
        raise VinyError(f"{option} {path}: no such file; pass {what}")
    if path.stat().st_size == 0:
        raise VinyError(f"{option} {path}: the file is empty; pass {what}")
    if path.suffix == ".safetensors":
        if _looks_pickled(path):
            raise VinyError(f"{option} {path}: a pickled torch file under a .safetensors name, not safetensors; "
                            "viny does not unpickle it; convert it with safetensors.torch.save_file or pass it as an authors' .pth")
        try:
            return load_encoder(path)
        except (ValueError, SafetensorError, RuntimeError, KeyError, TypeError) as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise VinyError(f"{option} {path}: not a usable viny weights file ({reason[:300]})") from None
    try:
        model = load_reference_checkpoint(path)
    except ReferenceCheckpointError as e:
        raise VinyError(f"{option} {e}") from None
    enc = model.encoder if isinstance(model, SimMIM) else model
    enc.reset_classifier(0)
    return enc


def load_segmenter(path: str | os.PathLike) -> tuple["torch.nn.Module", dict]:
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
    model = Segmenter(viny.ViNy(**meta["model_args"]))
    model.load_state_dict(sd, strict=True)
    return model, meta


SNAPSHOTS = "checkpoints"  # a run's encoder snapshots: <run>/checkpoints/encoder_epoch{N}.safetensors


def snapshot_path(run_dir: str | Path, epoch: int) -> Path:
    """Where a run keeps its encoder snapshot of ``epoch`` (``--save-encoder-every``)."""
    return Path(run_dir) / SNAPSHOTS / f"encoder_epoch{epoch}.safetensors"


def snapshots(run_dir: str | Path, every: int = 1, at: Sequence[int] | None = None) -> list[tuple[int, Path]]:
    """``[(epoch, path)]`` of a run's encoder snapshots, by epoch (with ``every``: only
    epochs that are multiples of it; with ``at``: exactly those epochs, each of which must exist)."""
    if not Path(run_dir).is_dir():
        raise VinyError(f"run folder {run_dir} does not exist; give a viny pretrain run folder (--out of viny pretrain)")
    paths = (Path(run_dir) / SNAPSHOTS).glob("encoder_epoch*.safetensors")
    out = sorted((int(re.findall(r"\d+", p.stem)[-1]), p) for p in paths)
    if at is not None:
        missing = sorted(set(at) - {e for e, _ in out})
        if missing:
            raise VinyError(f"{run_dir}/{SNAPSHOTS} has no encoder snapshot for epoch(s) {missing}; it has {[e for e, _ in out]}")
        out = [(e, p) for e, p in out if e in set(at)]
    out = [(e, p) for e, p in out if e % every == 0]
    if len(out) < 2:
        raise VinyError(f"{run_dir} has {len(out)} encoder snapshot(s); pre-train with --save-encoder-every N to get a trajectory")
    return out
