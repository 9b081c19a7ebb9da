"""Segmentation metrics for the Oxford-IIIT Pet trimap task (paper Sec. 2.4).

Pure functions on integer label maps ``pred, target: [N, H, W]`` with values in
``0..num_classes-1`` (0 foreground, 1 background, 2 boundary).

Two definitions of each score are reported side by side:

* ``pixel_accuracy`` / ``miou``: the standard, dataset-level definitions, computed
  once from the confusion matrix summed over every pixel of every image
  (IoU_c = TP_c / (TP_c + FP_c + FN_c), averaged over the classes that occur in
  prediction or target anywhere in the data set).
* ``paper_pixel_accuracy`` / ``paper_miou``: the protocol of the paper's tables
  (docs/authors_code.md, "Segmentation fine-tuning"): per image, the pixel accuracy, and the IoU summed over
  the classes present in that image's prediction or target and divided by
  ``num_classes`` (so an image where a class is absent from both scores at most
  2/3); both averaged over images.

:class:`SegmentationMeter` accumulates the same quantities batch by batch, so an
evaluation never has to keep every label map in memory; its ``scores()`` equals
``segmentation_scores`` on the concatenated batches.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = [
    "confusion_matrix",
    "per_image_confusion",
    "segmentation_scores",
    "scores_from_confusions",
    "SegmentationMeter",
]


def _as_long(x) -> torch.Tensor:
    t = torch.as_tensor(x)
    if t.is_floating_point():
        raise TypeError(f"label maps must be integer tensors, got {t.dtype}")
    return t.long()


def _check(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"pred and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")
    for name, t in (("pred", pred), ("target", target)):
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_classes):
            raise ValueError(
                f"{name} has labels outside 0..{num_classes - 1} "
                f"(min {int(t.min())}, max {int(t.max())})"
            )


def per_image_confusion(pred, target, num_classes: int = 3) -> torch.Tensor:
    """Confusion matrices per image: ``[N, C, C]``, rows = target, columns = prediction."""
    pred, target = _as_long(pred), _as_long(target)
    _check(pred, target, num_classes)
    if pred.dim() == 2:
        pred, target = pred[None], target[None]
    n = pred.shape[0]
    idx = target.flatten(1) * num_classes + pred.flatten(1)
    idx = idx + (torch.arange(n, device=idx.device) * num_classes * num_classes)[:, None]
    counts = torch.bincount(idx.reshape(-1), minlength=n * num_classes * num_classes)
    return counts.reshape(n, num_classes, num_classes)


def confusion_matrix(pred, target, num_classes: int = 3) -> torch.Tensor:
    """Confusion matrix ``[C, C]`` summed over all pixels: rows = target, columns = prediction."""
    return per_image_confusion(pred, target, num_classes).sum(0)


def _iou_terms(cm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Intersection and union per class for confusion matrices ``[..., C, C]``."""
    tp = cm.diagonal(dim1=-2, dim2=-1)
    union = cm.sum(-1) + cm.sum(-2) - tp
    return tp, union


def scores_from_confusions(per_image: torch.Tensor) -> dict[str, float]:
    """All four scores from per-image confusion matrices ``[N, C, C]``."""
    if per_image.shape[0] == 0:
        raise ValueError("no images to score")
    per_image = per_image.double()
    num_classes = per_image.shape[-1]
    total = per_image.sum(0)
    tp, union = _iou_terms(total)
    present = union > 0
    miou = (tp[present] / union[present]).mean().item() if present.any() else float("nan")
    pixel_accuracy = (tp.sum() / total.sum()).item()

    tp_i, union_i = _iou_terms(per_image)
    iou_i = torch.where(union_i > 0, tp_i / union_i.clamp(min=1), torch.zeros_like(tp_i))
    paper_miou = (iou_i.sum(-1) / num_classes).mean().item()
    paper_acc = (tp_i.sum(-1) / per_image.sum((-1, -2))).mean().item()
    return {
        "pixel_accuracy": pixel_accuracy,
        "miou": miou,
        "paper_pixel_accuracy": paper_acc,
        "paper_miou": paper_miou,
    }


def segmentation_scores(pred, target, num_classes: int = 3) -> dict[str, float]:
    """Pixel accuracy and mIoU, dataset-level and per the paper's protocol (see module doc)."""
    return scores_from_confusions(per_image_confusion(pred, target, num_classes))


@dataclass
class SegmentationMeter:
    """Accumulates per-image confusion matrices over batches (kept on CPU, C*C ints per image)."""

    num_classes: int = 3
    _chunks: list[torch.Tensor] = field(default_factory=list)

    def update(self, pred, target) -> None:
        self._chunks.append(per_image_confusion(pred, target, self.num_classes).cpu())

    @property
    def num_images(self) -> int:
        return sum(c.shape[0] for c in self._chunks)

    def confusion(self) -> torch.Tensor:
        return torch.cat(self._chunks).sum(0)

    def scores(self) -> dict[str, float]:
        if not self._chunks:
            raise ValueError("SegmentationMeter.scores() called before any update()")
        return scores_from_confusions(torch.cat(self._chunks))
