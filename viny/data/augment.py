"""Batched augmentations as pure functions of (tensors, torch.Generator).

They work on whole batches on any device (so a GPU-resident data set is augmented on
the GPU), draw all randomness from the generator passed in (so a run is reproducible
and resumable), and follow torchvision's definitions:

* :func:`to_float`: uint8 ``[B, H, W, C]`` -> float ``[B, C, H, W]`` in [0, 1];
* :func:`random_hflip`: flip each sample with probability 0.5 (same flip for its target);
* :func:`random_contrast`: ``ColorJitter(contrast=s)``: blend with the image's mean grey
  level by a factor drawn from U[1-s, 1+s];
* :func:`random_resized_crop`: ``RandomResizedCrop(size, scale, ratio)``: a box of area
  fraction U[scale] and log-uniform aspect ratio, at a uniform position, resampled
  bilinearly (boxes that do not fit are shrunk to fit instead of re-drawn);
* :func:`normalize`: ``(x - mean) / std``;
* :func:`mixup`: torchvision's ``MixUp``: one ``lam ~ Beta(a, a)`` per batch, mixing each
  sample with its neighbour in the batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "to_float", "random_hflip", "random_contrast", "random_resized_crop", "normalize", "mixup"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_float(images_u8: torch.Tensor) -> torch.Tensor:
    # contiguous NCHW: the augmentations below run several times faster than on the
    # channels-last strides a bare permute leaves
    return images_u8.permute(0, 3, 1, 2).contiguous().float().div_(255.0)


def _rand(n: int, gen: torch.Generator, device) -> torch.Tensor:
    # drawn on the CPU generator, then moved: the same numbers whatever the device
    return torch.rand(n, generator=gen).to(device)


def random_hflip(images: torch.Tensor, gen: torch.Generator, target: torch.Tensor | None = None, width_dim: int = -1):
    """Flip ``images [B, C, H, W]`` (and ``target [B, H, W]``) left-right with p = 0.5 each.
    ``width_dim=2`` flips uint8 ``[B, H, W, C]`` batches before :func:`to_float` (the same
    result for a quarter of the memory traffic)."""
    flip = (_rand(images.shape[0], gen, images.device) < 0.5).nonzero().squeeze(1)  # only those samples are copied flipped
    out = images.index_copy(0, flip, images.index_select(0, flip).flip(width_dim))
    if target is None:
        return out
    return out, target.index_copy(0, flip, target.index_select(0, flip).flip(-1))


def random_contrast(images: torch.Tensor, strength: float, gen: torch.Generator) -> torch.Tensor:
    """torchvision ``adjust_contrast`` with a factor from U[1-strength, 1+strength] per image."""
    if strength <= 0:
        return images
    factor = 1 + (2 * _rand(images.shape[0], gen, images.device) - 1) * strength
    # the mean of torchvision's grey image (0.2989 R + 0.587 G + 0.114 B), as the weighted sum of the channel means
    grey_mean = images.mean((-1, -2)) @ torch.tensor([0.2989, 0.587, 0.114], dtype=images.dtype, device=images.device)
    out = images.mul(factor[:, None, None, None]).add_(((1 - factor) * grey_mean)[:, None, None, None])
    return out.clamp_(0, 1)


def random_resized_crop(images: torch.Tensor, size: int, scale: tuple[float, float], ratio: tuple[float, float], gen: torch.Generator) -> torch.Tensor:
    """Per-sample random crop of area fraction ``scale`` and aspect ``ratio``, resized to ``size``."""
    b, _, h, w = images.shape
    dev = images.device
    area = scale[0] + (scale[1] - scale[0]) * _rand(b, gen, dev)
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * _rand(b, gen, dev)
    r = log_r.exp()
    cw = (area * r).sqrt().clamp(max=1.0)  # crop width as a fraction of the image width
    ch = (area / r).sqrt().clamp(max=1.0)
    cx = (1 - cw) * _rand(b, gen, dev)  # left edge (fraction)
    cy = (1 - ch) * _rand(b, gen, dev)
    # affine grid in [-1, 1] coordinates: x_src = cw * x_out + (2*cx + cw - 1)
    theta = torch.zeros(b, 2, 3, device=dev, dtype=images.dtype)
    theta[:, 0, 0] = cw
    theta[:, 0, 2] = 2 * cx + cw - 1
    theta[:, 1, 1] = ch
    theta[:, 1, 2] = 2 * cy + ch - 1
    grid = F.affine_grid(theta, (b, images.shape[1], size, size), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def normalize(images: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    m = torch.as_tensor(mean, dtype=images.dtype, device=images.device)[:, None, None]
    s = torch.as_tensor(std, dtype=images.dtype, device=images.device)[:, None, None]
    return images.sub(m).div_(s)


def mixup(images: torch.Tensor, labels: torch.Tensor, num_classes: int, alpha: float, gen: torch.Generator):
    """Returns ``(mixed images, soft targets [B, num_classes])``; identity when ``alpha <= 0``."""
    onehot = F.one_hot(labels, num_classes).to(images.dtype)
    if alpha <= 0:
        return images, onehot
    lam = _beta(alpha, gen)
    return lam * images + (1 - lam) * images.roll(1, 0), lam * onehot + (1 - lam) * onehot.roll(1, 0)


def _beta(alpha: float, gen: torch.Generator) -> float:
    """A Beta(alpha, alpha) draw from ``gen`` (Johnk's algorithm, exact; fast for small alpha)."""
    while True:
        u, v = torch.rand(2, generator=gen, dtype=torch.float64).tolist()
        x, y = u ** (1 / alpha), v ** (1 / alpha)
        if 0 < x + y <= 1:
            return x / (x + y)
