"""SimMIM pre-training around a ViNy encoder (paper Sec. 2.2; Xie et al., CVPR 2022).

Per image, exactly ``int(mask_ratio * L)`` of the ``L`` patch tokens (32 of 64 at the
paper's ratio 0.5) are chosen uniformly at random and replaced by a learned mask token;
positions are added to every token (as in the authors' code, the mask token also gets
its patch's position); the encoder runs on the 64 patch tokens without CLS; a linear
decoder maps each output token to its patch's ``16*16*3`` pixels (pixel-major, the
layout of :func:`viny.model.patchify`); the loss is the L1 distance between prediction
and the normalised input pixels, averaged over the masked patches only.

``forward(images, mask=None) -> (loss, pred, mask)`` follows MAE's convention: ``pred``
``[B, L, p*p*3]`` holds the decoder output for every patch (only the masked ones enter
the loss), ``mask`` ``[B, L]`` is boolean, True = masked. Passing an explicit ``mask``
(or a ``generator``) makes runs and figures reproducible.

Deviation option: the authors divide the mean L1 by the number of masked patches once
more (``L1Loss()(pred, target) / 32``), a constant factor that only rescales the
gradients; ``divide_loss_by_masked=True`` reproduces it, the default is plain mean L1.
"""

from __future__ import annotations

import torch
from torch import nn

from viny.model import ViNy, patchify, unpatchify

__all__ = ["SimMIM", "random_mask", "masked_l1", "mean_colour_prediction", "dataset_mean_prediction", "reconstruction_yardstick", "reconstruction_panels"]


def random_mask(batch: int, num_patches: int, num_masked: int, *, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Boolean mask ``[B, L]`` with exactly ``num_masked`` True per row, chosen uniformly
    (top-k of uniform noise, as in the authors' code)."""
    if not 0 <= num_masked <= num_patches:
        raise ValueError(f"num_masked must be in 0..{num_patches}, got {num_masked}")
    noise = torch.rand(batch, num_patches, device=device, generator=generator)
    idx = noise.topk(num_masked, dim=1).indices
    mask = torch.zeros(batch, num_patches, dtype=torch.bool, device=device)
    return mask.scatter_(1, idx, True)


def masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """SimMIM's loss: the per-patch mean absolute error ``[B, L]``, averaged over the masked patches."""
    err = (pred.float() - target.float()).abs().mean(-1)
    m = mask.to(err.dtype)
    return (err * m).sum() / m.sum().clamp(min=1)


def mean_colour_prediction(target: torch.Tensor, mask: torch.Tensor, channels: int = 3) -> torch.Tensor:
    """A trivial predictor: every patch of an image filled with the mean colour (per channel)
    of that image's *visible* patches. ``target [B, L, p*p*c]`` pixel-major, ``mask [B, L]``."""
    b, l, d = target.shape
    x = target.float().reshape(b, l, d // channels, channels)
    vis = (~mask.bool()).to(x.dtype)[..., None, None]  # b l 1 1
    colour = (x * vis).sum((1, 2)) / (vis.sum((1, 2)) * x.shape[2]).clamp(min=1)  # b c
    return colour[:, None, None, :].expand(b, l, d // channels, channels).reshape(b, l, d)


def dataset_mean_prediction(target: torch.Tensor, channels: int = 3) -> torch.Tensor:
    """A trivial predictor: every pixel the data set's mean colour (per channel, over ``target``)."""
    b, l, d = target.shape
    colour = target.float().reshape(-1, channels).mean(0)
    return colour.expand(b, l, d // channels, channels).reshape(b, l, d)


@torch.no_grad()
def reconstruction_yardstick(model: "SimMIM", images: torch.Tensor, *, seed: int = 0, batch_size: int = 128, autocast=None) -> dict:
    """Masked-patch L1 of ``model`` on held-out ``images`` (normalised ``[N, 3, H, W]``) next
    to two trivial predictors, with fixed masks drawn from ``seed``.

    Returns ``l1`` (the model), ``mean_colour_l1`` (each image's mean visible colour),
    ``dataset_mean_l1`` (one colour for all), ``ratio = l1 / mean_colour_l1`` (below 1: the
    encoder learned more than colour means; the shipped encoders' target is <= 0.75) and
    ``images``. Each L1 is pooled over all masked patches of all images.
    """
    import contextlib

    model.eval()
    n = images.shape[0]
    gen = torch.Generator().manual_seed(seed)
    masks = model.random_mask(n, generator=gen)
    p = model.encoder.patch_size
    sums = {"l1": 0.0, "mean_colour_l1": 0.0}
    targets = []
    device = next(model.parameters()).device
    for start in range(0, n, batch_size):
        x = images[start:start + batch_size].to(device)
        m = masks[start:start + batch_size].to(device)
        with autocast or contextlib.nullcontext():
            pred = model(x, mask=m)[1]
        t = patchify(x, p)
        k = float(m.sum())  # masked patches in the chunk: pool over all of them
        sums["l1"] += float(masked_l1(pred, t, m)) * k
        sums["mean_colour_l1"] += float(masked_l1(mean_colour_prediction(t, m), t, m)) * k
        targets.append(t.cpu())
    total = float(masks.sum())
    out = {k: v / total for k, v in sums.items()}
    t = torch.cat(targets)
    out["dataset_mean_l1"] = float(masked_l1(dataset_mean_prediction(t), t, masks))
    out["ratio"] = out["l1"] / out["mean_colour_l1"]
    out["images"] = int(n)
    return out


class SimMIM(nn.Module):
    """Masked image modelling with a linear pixel decoder (see module docstring).

    State-dict layout: ``encoder.*``, ``mask_token`` ``[D]``, ``decoder.weight/bias``
    (Linear(D, p*p*3)): the authors' ``mim_*`` layout once encoder keys are renamed.
    """

    def __init__(self, encoder: ViNy, mask_ratio: float = 0.5, divide_loss_by_masked: bool = False):
        super().__init__()
        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1), got {mask_ratio}")
        self.encoder = encoder
        self.mask_ratio = mask_ratio
        self.divide_loss_by_masked = divide_loss_by_masked
        dim = encoder.embed_dim
        self.mask_token = nn.Parameter(torch.zeros(dim))
        nn.init.normal_(self.mask_token, std=0.02)  # SimMIM's init (the authors' is not recorded)
        self.decoder = nn.Linear(dim, encoder.patch_embed.proj.in_features)  # -> p*p*3 pixels

    @property
    def num_patches(self) -> int:
        return self.encoder.patch_embed.num_patches

    @property
    def num_masked(self) -> int:
        return int(self.mask_ratio * self.num_patches)

    def random_mask(self, batch: int, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
        return random_mask(batch, self.num_patches, self.num_masked, device=device, generator=generator)

    def forward_encoder(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Embed, replace masked tokens by the mask token, add positions, encode: ``[B, L, D]``."""
        tokens = self.encoder.embed_patches(images)
        tokens = torch.where(mask[..., None], self.mask_token.to(tokens.dtype), tokens)
        return self.encoder.forward_patch_tokens(tokens)

    def forward_loss(self, images: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean L1 between predicted and true (normalised) pixels over masked patches."""
        loss = masked_l1(pred, patchify(images, self.encoder.patch_size), mask)
        if self.divide_loss_by_masked:
            loss = loss / self.num_masked
        return loss

    def forward(self, images: torch.Tensor, mask: torch.Tensor | None = None, generator: torch.Generator | None = None):
        """``images [B, 3, H, W]`` (normalised) -> ``(loss, pred [B, L, p*p*3], mask [B, L] bool)``."""
        b = images.shape[0]
        if mask is None:
            mask = self.random_mask(b, device=images.device, generator=generator)
        else:
            mask = mask.to(device=images.device, dtype=torch.bool)
            if mask.shape != (b, self.num_patches):
                raise ValueError(f"mask must have shape {(b, self.num_patches)}, got {tuple(mask.shape)}")
        pred = self.decoder(self.forward_encoder(images, mask))
        return self.forward_loss(images, pred, mask), pred, mask


@torch.no_grad()
def reconstruction_panels(images: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor, patch_size: int = 16, mean=None, std=None) -> dict[str, torch.Tensor]:
    """Original / masked / reconstructed images for plotting (paper Fig. 2).

    ``images`` normalised ``[B, 3, H, W]``, ``pred`` and ``mask`` from :meth:`SimMIM.forward`.
    Returns float images in [0, 1] (de-normalised with ``mean``/``std`` when given):
    ``original``, ``masked`` (masked patches greyed out) and ``reconstruction``
    (visible patches from the input, masked patches from the prediction).
    """
    target = patchify(images, patch_size)
    m = mask[..., None].to(target.dtype)
    masked = target * (1 - m)
    recon = target * (1 - m) + pred.to(target.dtype) * m
    grid = (images.shape[-2] // patch_size, images.shape[-1] // patch_size)

    def show(x: torch.Tensor, fill_masked: bool = False) -> torch.Tensor:
        img = unpatchify(x, patch_size, grid, images.shape[1])
        if mean is not None and std is not None:
            img = img * torch.as_tensor(std, dtype=img.dtype, device=img.device)[:, None, None] + torch.as_tensor(mean, dtype=img.dtype, device=img.device)[:, None, None]
        img = img.clamp(0, 1)
        if fill_masked:
            pix = unpatchify(m.expand_as(x), patch_size, grid, images.shape[1]).bool()
            img = img.masked_fill(pix, 0.5)
        return img

    return {"original": show(target), "masked": show(masked, fill_masked=True), "reconstruction": show(recon)}
