"""Geometry studies over encoders, layers and checkpoints (paper Table 2, Figs. 5-6).

Tokens are computed once per encoder and layer (:func:`layer_tokens`) and reused by
every diagnostic (:func:`diagnose`): the variance decomposition, the held-out patch
probe, DSE, and the cosine-vs-distance curve, all from :mod:`viny.geometry`, and the
nearest-neighbour (Hummingbird) probe of :mod:`viny.hummingbird` (``nn_probe_*``: the
probe's training images as memory bank, no training).

* :func:`compare_encoders`: the paper's Table 2 / Fig. 5 over named encoders, at the final
  layer or at every block ("where does CLS supervision start to scramble patches?");
* :func:`stage_cka`: linear CKA between two encoders' tokens at every block (e.g.
  pre-trained vs after intermediate fine-tuning);
* :func:`along_training`: the diagnostics over the encoder snapshots of a run, with
  Kendall's tau between DSE and held-out probe accuracy (as the DSE paper reports).

Layer ``i`` (1-based) means the output of block ``i`` passed through the encoder's final
LayerNorm (timm's ``forward_intermediates(norm=True)`` convention); layer ``depth`` is
exactly :func:`viny.model.patch_tokens`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from viny.data import augment as A
from viny.data.datasets import load_pets
from viny.device import autocast, resolve_device, resolve_precision
from viny.geometry import cosine_vs_distance, dse_components, patch_probe, variance_decomposition
from viny.heads import patch_majority_labels
from viny.hummingbird import nn_probe_miou
from viny.model import ViNy

__all__ = ["DiagnosticImages", "diagnostic_images", "layer_tokens", "diagnose", "compare_encoders", "stage_cka", "kendall_tau", "along_training"]


@dataclass
class DiagnosticImages:
    """Pets images for the diagnostics: ``images [N, S, S, 3]`` uint8, pixel ``targets``,
    per-patch majority labels ``patch_labels [N, L]``, and ``probe_train`` (bool [N]):
    which images train the patch probe (the rest score it)."""

    images: np.ndarray
    targets: np.ndarray
    patch_labels: torch.Tensor
    probe_train: np.ndarray
    index: np.ndarray  # indices into the Pets pool


def diagnostic_images(data: str | None = None, num_images: int = 2000, probe_test_fraction: float = 0.25, seed: int = 0,
                      size: int = 128, patch_size: int = 16, cache_dir=None, progress: bool = False,
                      exclude: np.ndarray | None = None) -> DiagnosticImages:
    """Up to ``num_images`` Pets images (a seeded sample of the pool, without the indices in
    ``exclude``, e.g. a fine-tuning test set), split for the probe."""
    pets = load_pets(data, size, cache_dir=cache_dir, progress=progress)
    valid = np.flatnonzero(pets.arrays.valid)
    if exclude is not None:
        valid = np.setdiff1d(valid, np.asarray(exclude))
    perm = torch.randperm(len(valid), generator=torch.Generator().manual_seed(seed)).numpy()
    index = np.sort(valid[perm[: min(num_images, len(valid))]])
    images = np.ascontiguousarray(pets.arrays.images[index])
    targets = np.ascontiguousarray(pets.arrays.targets[index])
    labels = patch_majority_labels(torch.from_numpy(targets).long(), patch_size)
    n_test = max(1, int(round(probe_test_fraction * len(index))))
    order = torch.randperm(len(index), generator=torch.Generator().manual_seed(seed + 1)).numpy()
    probe_train = np.ones(len(index), bool)
    probe_train[order[:n_test]] = False
    return DiagnosticImages(images, targets, labels, probe_train, index)


@torch.no_grad()
def layer_tokens(encoder: ViNy, images_u8: np.ndarray, layers: Sequence[int] | None = None, batch_size: int = 128,
                 normalize: bool = True, device: str = "auto", precision: str = "auto") -> dict[int, torch.Tensor]:
    """Patch tokens ``{layer: [N, L, D] float32}`` for 1-based block indices ``layers``
    (default: the last block only), in one pass over the images."""
    dev = resolve_device(device)
    amp = autocast(dev, resolve_precision(precision, dev))
    depth = len(encoder.blocks)
    layers = [depth] if layers is None else list(layers)
    bad = [x for x in layers if not 1 <= x <= depth]
    if bad:
        raise ValueError(f"layers must be in 1..{depth}, got {bad}")
    encoder = encoder.to(dev).eval()
    out: dict[int, list[torch.Tensor]] = {x: [] for x in layers}
    for start in range(0, len(images_u8), batch_size):
        x = A.to_float(torch.from_numpy(np.array(images_u8[start : start + batch_size])).to(dev))  # a copy: memmaps are read-only
        if normalize:
            x = A.normalize(x)
        with amp:
            kept = encoder.forward_intermediates(x, [x_ - 1 for x_ in layers], norm=True, intermediates_only=True)
            for layer, tok in zip(sorted(layers), kept):
                out[layer].append(tok.float().cpu())
    return {x: torch.cat(v) for x, v in out.items()}


def diagnose(tokens: torch.Tensor, data: DiagnosticImages, dse_images: int = 512, seed: int = 0) -> dict[str, float]:
    """Every scalar diagnostic of one set of tokens ``[N, L, D]``."""
    tr = torch.from_numpy(data.probe_train)
    probe = patch_probe(tokens[tr], data.patch_labels[tr], tokens[~tr], data.patch_labels[~tr], seed=seed)
    targets = torch.from_numpy(np.asarray(data.targets))
    nn = nn_probe_miou(tokens[tr], targets[tr], tokens[~tr], targets[~tr])  # no training: labels transferred by similarity
    v = variance_decomposition(tokens)
    n = min(dse_images, len(tokens))
    d = dse_components(tokens[:n], seed=seed, group_images=min(8, n))
    return {
        "within_variance": v["within"], "across_variance": v["across"], "total_variance": v["total"],
        "probe_accuracy": probe["accuracy"], "probe_miou": probe["miou"],
        "nn_probe_miou": nn["miou"], "nn_probe_accuracy": nn["pixel_accuracy"],
        "probe_train_accuracy_authors": probe["train_accuracy_last_epoch"], "probe_test_patches": int((~tr).sum()) * tokens.shape[1],
        **{k: d[k] for k in ("m_inter", "m_intra", "m_dim", "dse")},
    }


def compare_encoders(encoders: dict[str, ViNy], data: DiagnosticImages, layers: str | Sequence[int] = "final",
                     dse_images: int = 512, device: str = "auto", precision: str = "auto", seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Diagnostics per encoder (and layer): ``(table, cosine)`` DataFrames.

    ``table``: one row per (encoder, layer) with every scalar of :func:`diagnose`;
    ``cosine``: the cosine-vs-distance curve (with cross-image control) per (encoder, layer).
    """
    rows, curves = [], []
    for name, enc in encoders.items():
        depth = len(enc.blocks)
        ls = [depth] if layers == "final" else list(range(1, depth + 1)) if layers == "all" else list(layers)
        toks = layer_tokens(enc, data.images, ls, device=device, precision=precision)
        for layer in ls:
            rows.append({"encoder": name, "layer": layer, **diagnose(toks[layer], data, dse_images, seed)})
            c = cosine_vs_distance(toks[layer], tuple(enc.grid_size))
            c.insert(0, "layer", layer)
            c.insert(0, "encoder", name)
            curves.append(c)
    return pd.DataFrame(rows), pd.concat(curves, ignore_index=True)


def stage_cka(a: ViNy, b: ViNy, data: DiagnosticImages, device: str = "auto", precision: str = "auto", max_tokens: int = 20000) -> pd.DataFrame:
    """Linear CKA between the patch tokens of encoders ``a`` and ``b`` at every block."""
    from viny.geometry import linear_cka

    depth = len(a.blocks)
    ls = list(range(1, depth + 1))
    ta = layer_tokens(a, data.images, ls, device=device, precision=precision)
    tb = layer_tokens(b, data.images, ls, device=device, precision=precision)
    rows = []
    for layer in ls:
        x, y = ta[layer].reshape(-1, ta[layer].shape[-1]), tb[layer].reshape(-1, tb[layer].shape[-1])
        rows.append({"layer": layer, "cka": linear_cka(x[:max_tokens], y[:max_tokens])})
    return pd.DataFrame(rows)


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b between two equally long sequences (ties handled)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if x.ndim != 1 or len(x) != len(y) or len(x) < 2:
        raise ValueError("kendall_tau needs two sequences of the same length >= 2")
    return float(kendall_tau_rows(x[None], y[None])[0])


def kendall_tau_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """:func:`kendall_tau` of each row pair of two ``(rows, n)`` arrays at once (NaN where a
    row is constant in x or in y); used for bootstrap resamples."""
    iu = np.triu_indices(x.shape[1], 1)  # every pair once
    dx = np.sign(x[:, :, None] - x[:, None, :])[:, iu[0], iu[1]]
    dy = np.sign(y[:, :, None] - y[:, None, :])[:, iu[0], iu[1]]
    conc, disc = (dx * dy > 0).sum(1), (dx * dy < 0).sum(1)
    tx, ty = ((dx == 0) & (dy != 0)).sum(1), ((dy == 0) & (dx != 0)).sum(1)  # tied in x only, in y only
    denom = np.sqrt((conc + disc + tx) * (conc + disc + ty).astype(float))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, (conc - disc) / np.where(denom > 0, denom, 1), np.nan)


def along_training(run_dir: str | Path, data: DiagnosticImages, dse_images: int = 512, device: str = "auto",
                   precision: str = "auto", seed: int = 0) -> tuple[pd.DataFrame, float]:
    """Diagnostics over a run's encoder snapshots (``checkpoints/encoder_epoch*.safetensors``,
    written with ``--save-encoder-every``): ``(table by epoch, Kendall tau(DSE, probe accuracy))``."""
    from viny.weights import load_encoder, snapshots

    rows = []
    for epoch, p in snapshots(run_dir):
        enc = load_encoder(p)
        toks = layer_tokens(enc, data.images, device=device, precision=precision)[len(enc.blocks)]
        rows.append({"epoch": epoch, **diagnose(toks, data, dse_images, seed)})
    table = pd.DataFrame(rows)
    return table, kendall_tau(table["dse"], table["probe_accuracy"])


def load_named_encoder(spec: str) -> tuple[str, ViNy]:
    """``NAME=PATH`` (viny .safetensors or an authors' .pth) or ``NAME=random`` /
    ``NAME=random:viny_test`` (a fresh, seeded encoder) -> ``(name, encoder)``."""
    from viny.errors import VinyError
    from viny.registry import create_encoder

    if "=" not in spec:
        raise VinyError(f"encoder {spec!r}: expected NAME=PATH or NAME=random")
    name, src = spec.split("=", 1)
    if src.startswith("random"):
        torch.manual_seed(0)
        try:
            return name, create_encoder(src.split(":", 1)[1] if ":" in src else "viny")
        except ValueError as e:
            raise VinyError(f"encoder {spec!r}: {e}") from None
    from viny.weights import load_user_encoder

    return name, load_user_encoder(src, f"encoder {name}=")
