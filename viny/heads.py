"""Task heads (paper Secs. 2.3-2.4). Separate modules, so that one encoder passes from
phase to phase and each phase's head is dropped afterwards.

* :class:`SegmentationHead`: per-patch Linear(D -> p*p*K) read as K classes x p*p pixels
  (the authors' class-major layout), assembled into ``[B, K, H, W]`` logits; trained with
  plain per-pixel cross-entropy (:func:`segmentation_loss`). The authors' code applies a
  ``log_softmax`` over the *pixel* axis before the cross-entropy over classes; that quirk
  is available as ``segmentation_loss(..., reference_quirk=True)``, not used by default.
* :class:`ClassificationHead`: Linear on the CLS output (Intel scenes: 6, Pets breeds: 37).
* :class:`PatchClassifier`: Linear on each patch token (the "spatial" intermediate
  supervision and the linear patch probe).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from viny.model import ViNy, patch_tokens

__all__ = ["SegmentationHead", "ClassificationHead", "PatchClassifier", "segmentation_loss", "patch_majority_labels",
           "Segmenter", "CLSClassifier", "PatchSupervised"]


class SegmentationHead(nn.Module):
    """``[B, L, D]`` patch tokens -> ``[B, K, H, W]`` per-pixel logits (L = gh*gw patches)."""

    def __init__(self, dim: int = 128, patch_size: int = 16, num_classes: int = 3, grid_size: tuple[int, int] = (8, 8)):
        super().__init__()
        self.patch_size = patch_size
        self.num_classes = num_classes
        self.grid_size = tuple(grid_size)
        self.proj = nn.Linear(dim, num_classes * patch_size * patch_size)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        b, n, _ = tokens.shape
        gh, gw = self.grid_size
        if n != gh * gw:
            raise ValueError(f"expected {gh * gw} patch tokens, got {n}")
        p, k = self.patch_size, self.num_classes
        x = self.proj(tokens).reshape(b, gh, gw, k, p, p)  # class-major: (K, ph, pw) per patch
        return x.permute(0, 3, 1, 4, 2, 5).reshape(b, k, gh * p, gw * p)


class ClassificationHead(nn.Module):
    """Linear on the CLS token output: ``[B, D] -> [B, num_classes]``."""

    def __init__(self, dim: int = 128, num_classes: int = 6):
        super().__init__()
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, cls_token: torch.Tensor) -> torch.Tensor:
        return self.fc(cls_token)


class PatchClassifier(nn.Module):
    """Linear on every patch token: ``[B, L, D] -> [B, L, num_classes]``."""

    def __init__(self, dim: int = 128, num_classes: int = 3):
        super().__init__()
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.fc(tokens)


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, reference_quirk: bool = False, patch_size: int = 16) -> torch.Tensor:
    """Per-pixel cross-entropy; ``logits [B, K, H, W]``, ``target [B, H, W]`` (int64).

    ``reference_quirk=True`` reproduces the authors' loss: a log_softmax over the p*p
    pixels of each patch (not over classes), then cross-entropy over classes.
    """
    if reference_quirk:
        b, k, h, w = logits.shape
        p = patch_size
        x = logits.reshape(b, k, h // p, p, w // p, p).permute(0, 1, 2, 4, 3, 5)  # b k gh gw ph pw
        x = x.reshape(b, k, h // p, w // p, p * p).log_softmax(-1)
        logits = x.reshape(b, k, h // p, w // p, p, p).permute(0, 1, 2, 4, 3, 5).reshape(b, k, h, w)
    return F.cross_entropy(logits.float(), target)


def patch_majority_labels(target: torch.Tensor, patch_size: int, num_classes: int = 3) -> torch.Tensor:
    """``[B, H, W]`` pixel labels -> ``[B, L]`` each patch's most frequent label (ties: lowest class)."""
    b, h, w = target.shape
    p = patch_size
    onehot = F.one_hot(target.long(), num_classes)  # b h w k
    counts = onehot.reshape(b, h // p, p, w // p, p, num_classes).sum((2, 4))  # b gh gw k
    return counts.reshape(b, -1, num_classes).argmax(-1)


# ------------------------------------------------------------- encoder + head, one per task kind


class Segmenter(nn.Module):
    """Encoder + per-patch segmentation head: images -> ``[B, 3, H, W]`` logits."""

    def __init__(self, encoder: ViNy, num_classes: int = 3):
        super().__init__()
        self.encoder = encoder
        self.head = SegmentationHead(encoder.embed_dim, encoder.patch_size, num_classes, encoder.grid_size)

    def forward(self, images):
        return self.head(patch_tokens(self.encoder, images))


class CLSClassifier(nn.Module):
    """Encoder + Linear on the CLS output: images -> ``[B, num_classes]``."""

    def __init__(self, encoder: ViNy, num_classes: int):
        super().__init__()
        self.encoder = encoder
        self.head = ClassificationHead(encoder.embed_dim, num_classes)

    def forward(self, images):
        return self.head(self.encoder.forward_features(images)[:, 0])


class PatchSupervised(nn.Module):
    """Encoder + Linear on each patch token: images -> ``[B, L, num_classes]``."""

    def __init__(self, encoder: ViNy, num_classes: int = 3):
        super().__init__()
        self.encoder = encoder
        self.head = PatchClassifier(encoder.embed_dim, num_classes)

    def forward(self, images):
        return self.head(patch_tokens(self.encoder, images))
