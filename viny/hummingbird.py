"""Dense nearest-neighbour segmentation of patch tokens: a label-light probe with no training.

The Hummingbird evaluation (Balazevic et al., "Towards In-context Scene Understanding",
NeurIPS 2023), as reproduced by Open Hummingbird Eval (github vpariza/open-hummingbird-eval):

* a *memory bank* holds the L2-normalised patch tokens of labelled images, each with its
  patch's label *distribution* (the fraction of its pixels in each class);
* every query patch token retrieves its ``k`` most cosine-similar memory tokens, weights
  them by ``softmax(cosine / temperature)`` and takes the weighted mean of their label
  distributions (Hummingbird's cross-attention with beta = ``temperature``);
* :func:`nn_probe_miou`: the predicted per-patch distributions are upsampled bilinearly to
  the pixel grid and arg-maxed; the score is the dataset-level mIoU of
  :func:`viny.metrics.segmentation_scores`.

Defaults are Open Hummingbird's: ``k = 30``, ``temperature = 0.02``. The search is exact
(a chunked matrix product; the reference code uses approximate ScaNN / Faiss indices),
and the memory holds every patch of every labelled image once (no augmentation epochs and
no memory sub-sampling: the banks here are at most a few 10^4 tokens).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from viny.metrics import segmentation_scores

__all__ = ["patch_label_distribution", "nn_label_distribution", "nn_segmentation", "nn_probe_miou"]


def patch_label_distribution(targets: torch.Tensor, patch_size: int, num_classes: int = 3) -> torch.Tensor:
    """Pixel label maps ``[N, H, W]`` -> each patch's class fractions ``[N, L, num_classes]``
    (row-major patches, each row sums to 1)."""
    t = torch.as_tensor(targets).long()
    n, h, w = t.shape
    p = patch_size
    if h % p or w % p:
        raise ValueError(f"label maps of {h}x{w} do not split into {p}x{p} patches")
    onehot = F.one_hot(t, num_classes).double()  # n h w k
    return onehot.reshape(n, h // p, p, w // p, p, num_classes).mean((2, 4)).reshape(n, -1, num_classes)


def _flat(x: torch.Tensor, name: str) -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.dim() < 2:
        raise ValueError(f"{name} must be features [..., D], got shape {tuple(x.shape)}")
    dtype = torch.promote_types(x.dtype, torch.float32) if x.is_floating_point() else torch.float32
    return x.reshape(-1, x.shape[-1]).to(dtype)  # fp32 tokens search in fp32 (fast), fp64 ones in fp64


def nn_label_distribution(train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor, k: int = 30,
                          temperature: float = 0.02, num_classes: int | None = None, chunk: int = 512) -> torch.Tensor:
    """Soft labels of ``test_feats [..., D]`` transferred from the memory bank ``train_feats
    [..., D]`` (any leading shape, flattened) with labels ``train_labels``: one integer class
    per memory token (``[...]``, one-hot with ``num_classes``, default max + 1) or a class
    distribution per token (``[..., K]`` floats).

    Each query takes its ``k`` most cosine-similar memory tokens (all of them when the bank
    is smaller) and averages their labels with weights ``softmax(cosine / temperature)``.
    Returns ``[..., K]`` (the query's leading shape; float64 when either features are,
    else float32); each row sums to 1 when the memory's rows do."""
    if not k >= 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    mem = F.normalize(_flat(train_feats, "train_feats"), dim=-1)
    labels = torch.as_tensor(train_labels)
    if labels.is_floating_point():
        labels = labels.reshape(-1, labels.shape[-1]).to(mem.dtype)
    else:
        labels = labels.reshape(-1).long()
        labels = F.one_hot(labels, num_classes or int(labels.max()) + 1).to(mem.dtype)
    if len(labels) != len(mem):
        raise ValueError(f"{len(mem)} memory tokens but {len(labels)} labels")
    queries = torch.as_tensor(test_feats)
    lead = queries.shape[:-1]
    q = F.normalize(_flat(queries, "test_feats"), dim=-1).to(mem.dtype)
    if q.shape[1] != mem.shape[1]:
        raise ValueError(f"test features have {q.shape[1]} dims, the memory bank {mem.shape[1]}")
    kk = min(k, len(mem))
    out = []
    for part in q.split(chunk):
        sim, idx = (part @ mem.T).topk(kk, dim=1)  # largest first
        w = torch.softmax(sim / temperature, dim=1)
        out.append((w[..., None] * labels[idx]).sum(1))
    return torch.cat(out).reshape(*lead, labels.shape[1])


def nn_segmentation(train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor, k: int = 30,
                    temperature: float = 0.02, num_classes: int | None = None) -> torch.Tensor:
    """Per-patch label predictions (int64, the query's leading shape): the arg-max of
    :func:`nn_label_distribution` (ties: the lowest class)."""
    return nn_label_distribution(train_feats, train_labels, test_feats, k, temperature, num_classes).argmax(-1)


def nn_probe_miou(train_tokens: torch.Tensor, train_targets: torch.Tensor, test_tokens: torch.Tensor, test_targets: torch.Tensor,
                  k: int = 30, temperature: float = 0.02, num_classes: int = 3) -> dict[str, float]:
    """The Hummingbird score of patch tokens: memory = ``train_tokens [N, L, D]`` with the
    class fractions of each patch of ``train_targets [N, H, W]``; queries = ``test_tokens
    [M, L, D]``; their transferred distributions, upsampled bilinearly to ``H x W`` and
    arg-maxed, are scored against ``test_targets [M, H, W]``.

    Returns ``miou`` and ``pixel_accuracy`` (dataset-level, pixels), and ``patch_accuracy``:
    the share of test patches whose arg-max matches their majority label."""
    train_targets, test_targets = torch.as_tensor(train_targets).long(), torch.as_tensor(test_targets).long()
    n, l, _ = torch.as_tensor(train_tokens).shape
    m, h, w = test_targets.shape
    side = int(round(l ** 0.5))
    if side * side != l or h % side or w % side or train_targets.shape[1:] != (h, w):
        raise ValueError(f"{l} tokens per image do not tile {h}x{w} label maps in square patches")
    p = h // side
    mem_labels = patch_label_distribution(train_targets, p, num_classes)
    soft = nn_label_distribution(train_tokens, mem_labels, test_tokens, k, temperature)  # m l K
    grid = soft.reshape(m, side, w // p, num_classes).permute(0, 3, 1, 2)
    pred = F.interpolate(grid, size=(h, w), mode="bilinear", align_corners=False).argmax(1)
    scores = segmentation_scores(pred, test_targets, num_classes)
    majority = patch_label_distribution(test_targets, p, num_classes).argmax(-1)
    return {"miou": scores["miou"], "pixel_accuracy": scores["pixel_accuracy"],
            "patch_accuracy": (soft.argmax(-1) == majority).double().mean().item()}
