"""ViNy: the 4.8M-parameter Vision Transformer of the paper (Sec. 2.1), as a timm model.

Architecture (paper Sec. 2.1; layer layout from the authors' code, docs/authors_code.md):

* image 128, patch 16 -> an 8x8 grid of 64 patch tokens plus a CLS token;
* patch embedding: each 16x16 patch flattened *pixel-major* ``(ph pw c)`` (768 values,
  channels innermost, unlike a Conv2d stem's ``(c ph pw)``), then
  LayerNorm(768) -> Linear(768, 128) -> LayerNorm(128);
* CLS token prepended, learned positions (1, 65, 128) added;
* 12 pre-norm blocks: attention with 8 heads of dim 64 (inner width 512, qkv without
  bias, output projection with bias) and an MLP 128 -> 512 -> 128 with exact GELU;
* a final LayerNorm(128).

The encoder (``num_classes=0``) has exactly 4,842,880 parameters; the paper's
"4,843,138" is that plus a Linear(128, 2) head.

:mod:`viny.registry` (imported by ``import viny``) registers ``viny`` (the paper's model)
and ``viny_test`` (a tiny configuration for fast tests) with timm, so
``timm.create_model("viny", num_classes=0)`` returns the encoder; this module knows
nothing of shipped weights.

Initialisation follows the authors' code (the paper is silent): PyTorch's default
``nn.Linear``/``nn.LayerNorm`` init, and ``randn`` (std 1) for the CLS token and the
positions (``init="reference"``). ``init="timm"`` gives timm's ViT init instead.
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from timm.layers import Attention, PatchEmbed
from timm.models import VisionTransformer
from torch import nn

from viny.attention import self_attention

__all__ = [
    "VINY_ARGS",
    "VINY_TEST_ARGS",
    "ViNy",
    "ViNyAttention",
    "ViNyPatchEmbed",
    "patchify",
    "unpatchify",
    "patch_tokens",
]

AttnImpl = Literal["auto", "fused", "manual", "custom"]

# The paper's configuration (Sec. 2.1).
VINY_ARGS: dict = dict(img_size=128, patch_size=16, embed_dim=128, depth=12, num_heads=8, head_dim=64, mlp_dim=512)
# A tiny configuration for tests: same patch size (so heads and SimMIM targets keep
# their 16x16x3 shape), a 4x4 grid, 2 blocks.
VINY_TEST_ARGS: dict = dict(img_size=64, patch_size=16, embed_dim=32, depth=2, num_heads=2, head_dim=16, mlp_dim=64)


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """``[B, C, H, W] -> [B, (H/p)*(W/p), p*p*C]``, each patch flattened pixel-major ``(ph pw c)``.

    This is the authors' ``b c (h ph) (w pw) -> b (h w) (ph pw c)``: also the layout
    of the SimMIM targets and decoder outputs.
    """
    b, c, h, w = images.shape
    p = patch_size
    if h % p or w % p:
        raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {p}")
    x = images.reshape(b, c, h // p, p, w // p, p)
    x = x.permute(0, 2, 4, 3, 5, 1)  # b, gh, gw, ph, pw, c
    return x.reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(patches: torch.Tensor, patch_size: int, grid: tuple[int, int] | None = None, channels: int = 3) -> torch.Tensor:
    """Inverse of :func:`patchify`: ``[B, L, p*p*C] -> [B, C, H, W]`` (square grid unless ``grid`` given)."""
    b, n, _ = patches.shape
    p = patch_size
    if grid is None:
        g = int(round(n**0.5))
        if g * g != n:
            raise ValueError(f"{n} patches do not form a square grid; pass grid=(rows, cols)")
        grid = (g, g)
    gh, gw = grid
    x = patches.reshape(b, gh, gw, p, p, channels).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(b, channels, gh * p, gw * p)


class ViNyPatchEmbed(PatchEmbed):
    """Pixel-major patchify -> LayerNorm(p*p*C) -> Linear -> LayerNorm(embed_dim).

    A timm ``PatchEmbed`` (same ``img_size``/``grid_size``/``num_patches`` interface) whose
    ``proj`` is a Linear on pixel-major flattened patches rather than a Conv2d.
    """

    def __init__(self, img_size=128, patch_size=16, in_chans=3, embed_dim=128, bias=True, **kwargs):
        kwargs.pop("norm_layer", None)
        super().__init__(img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim, bias=bias, **kwargs)
        patch_dim = self.patch_size[0] * self.patch_size[1] * in_chans
        self.pre_norm = nn.LayerNorm(patch_dim)
        self.proj = nn.Linear(patch_dim, embed_dim, bias=bias)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, H, W] -> [B, L, D]
        _, _, h, w = x.shape
        if self.strict_img_size and (h, w) != tuple(self.img_size):
            raise ValueError(f"input is {h}x{w}, the model expects {self.img_size[0]}x{self.img_size[1]}")
        return self.norm(self.proj(self.pre_norm(patchify(x, self.patch_size[0]))))


class ViNyAttention(Attention):
    """Multi-head self-attention with an inner width ``num_heads * head_dim`` that may differ
    from the token width (ViNy: 8 x 64 = 512 on 128-wide tokens), as in the authors' code.

    ``attn_impl`` picks the kernel: ``"fused"`` (``F.scaled_dot_product_attention``),
    ``"manual"`` (matmul-softmax-matmul under plain autograd: the authors' path),
    ``"custom"`` (:func:`viny.attention.self_attention`: the same matmul-softmax-matmul
    with one head-major copy each way and a hand-written backward) or ``"auto"``: fused
    on CUDA, custom elsewhere (on CPU under bf16 autocast SDPA's backward is about 3x
    slower than matmul-softmax-matmul, docs/performance.md). All compute the same function; fp32
    results agree to rounding. Attention weights kept for a view, and attention dropout
    in training, take the manual path.
    """

    def __init__(self, dim: int, num_heads: int, head_dim: int, attn_impl: AttnImpl = "auto", **kwargs):
        super().__init__(dim, num_heads=num_heads, attn_head_dim=head_dim, qkv_bias=False, proj_bias=True, **kwargs)
        if attn_impl not in AttnImpl.__args__:
            raise ValueError(f"attn_impl must be one of {', '.join(map(repr, AttnImpl.__args__))}, got {attn_impl!r}")
        self.attn_impl = attn_impl
        self.keep_weights = False  # set by ViNy.attention_weights: keep the softmax weights of the next forward
        self.weights: torch.Tensor | None = None

    def kernel(self, x: torch.Tensor) -> str:
        """The kernel this forward runs: ``fused``, ``manual`` or ``custom``."""
        impl = ("fused" if x.is_cuda else "custom") if self.attn_impl == "auto" else self.attn_impl
        if self.keep_weights or (impl == "custom" and self.training and self.attn_drop.p > 0):
            return "manual"
        return impl

    def forward(self, x: torch.Tensor, attn_mask=None, is_causal: bool = False) -> torch.Tensor:
        if attn_mask is not None or is_causal:
            raise NotImplementedError("ViNy attention takes no mask")
        b, n, _ = x.shape
        kernel = self.kernel(x)
        if kernel == "custom":
            return self.proj_drop(self.proj(self_attention(x, self.qkv.weight, self.num_heads, self.head_dim, self.scale)))
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        if kernel == "fused":
            x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop.p if self.training else 0.0)
        else:
            attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
            if self.keep_weights:
                self.weights = attn.detach()
            x = self.attn_drop(attn) @ v
        x = x.transpose(1, 2).reshape(b, n, self.attn_dim)
        return self.proj_drop(self.proj(x))


class ViNy(VisionTransformer):
    """ViNy encoder (timm ``VisionTransformer``); see the module docstring for the architecture.

    ``num_classes > 0`` adds a Linear head on the CLS output (``forward``); ``0`` gives the
    bare encoder. ``patch_tokens`` is the token path used for segmentation, SimMIM and the
    geometry diagnostics.
    """

    def __init__(
        self,
        img_size: int = 128,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 0,
        embed_dim: int = 128,
        depth: int = 12,
        num_heads: int = 8,
        head_dim: int = 64,
        mlp_dim: int = 512,
        attn_impl: AttnImpl = "auto",
        init: Literal["reference", "timm"] = "reference",
        **kwargs,
    ):
        if init not in ("reference", "timm"):
            raise ValueError(f"init must be 'reference' or 'timm', got {init!r}")
        self.model_args = dict(
            img_size=img_size, patch_size=patch_size, in_chans=in_chans, num_classes=num_classes,
            embed_dim=embed_dim, depth=depth, num_heads=num_heads, head_dim=head_dim, mlp_dim=mlp_dim,
        )
        super().__init__(
            img_size=img_size,
            patch_size=patch_size,
            in_chans=in_chans,
            num_classes=num_classes,
            global_pool="token",
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_dim / embed_dim,
            qkv_bias=False,
            class_token=True,
            fc_norm=False,
            embed_layer=ViNyPatchEmbed,
            norm_layer=nn.LayerNorm,  # eps 1e-5 as in the authors' code (timm's ViT uses 1e-6)
            act_layer=nn.GELU,
            weight_init="skip",
            **kwargs,
        )
        # timm's Block builds a square attention (inner width = embed_dim); ViNy's is 8 x 64.
        for blk in self.blocks:
            blk.attn = ViNyAttention(embed_dim, num_heads=num_heads, head_dim=head_dim, attn_impl=attn_impl)
        if init == "reference":
            nn.init.normal_(self.pos_embed, std=1.0)
            nn.init.normal_(self.cls_token, std=1.0)
        else:
            self.init_weights("")

    @property
    def grid_size(self) -> tuple[int, int]:
        return tuple(self.patch_embed.grid_size)

    @property
    def patch_size(self) -> int:
        return self.patch_embed.patch_size[0]

    def set_attn_impl(self, attn_impl: AttnImpl) -> "ViNy":
        for blk in self.blocks:
            blk.attn.attn_impl = attn_impl
        return self

    def embed_patches(self, images: torch.Tensor) -> torch.Tensor:
        """Patch embedding without positions: ``[B, C, H, W] -> [B, L, D]``."""
        return self.patch_embed(images)

    def forward_intermediates(self, x: torch.Tensor, indices: int | Sequence[int] | None = None, norm: bool = False,
                              output_fmt: str = "NLC", intermediates_only: bool = False):
        """timm's ``forward_intermediates`` on ViNy's patch-token path (patch embedding +
        positions, no CLS, as :func:`patch_tokens`): the outputs of blocks ``indices``
        (0-based; an int ``n`` means the last ``n``; None: all), each through the final
        LayerNorm when ``norm``, as ``[B, L, D]`` (``NLC``) or ``[B, D, gh, gw]`` (``NCHW``).
        Returns ``(final tokens, intermediates)``, or only the intermediates."""
        depth = len(self.blocks)
        if indices is None:
            take = list(range(depth))
        elif isinstance(indices, int):
            take = list(range(depth - indices, depth))
        else:
            take = sorted(int(i) % depth for i in indices)
        if output_fmt not in ("NLC", "NCHW"):
            raise ValueError(f"output_fmt must be NLC or NCHW, got {output_fmt!r}")
        final, kept = self.forward_patch_tokens(self.embed_patches(x), return_blocks=take)
        out = [self.norm(t) if norm else t for t in kept]
        if output_fmt == "NCHW":
            gh, gw = self.grid_size
            out = [t.transpose(1, 2).reshape(t.shape[0], t.shape[-1], gh, gw) for t in out]
        return out if intermediates_only else (final, out)

    @torch.no_grad()
    def attention_weights(self, x: torch.Tensor, block: int = -1) -> torch.Tensor:
        """Softmax attention weights ``[B, heads, N, N]`` of one block (negative: from the
        end) on the CLS path (``forward_features``: CLS + patch tokens), in eval mode."""
        attn = self.blocks[block].attn
        attn.keep_weights, attn.weights = True, None
        try:
            self.forward_features(x)
            return attn.weights
        finally:
            attn.keep_weights, attn.weights = False, None

    def forward_patch_tokens(self, tokens: torch.Tensor, return_blocks: Sequence[int] | None = None):
        """Run already-embedded patch tokens ``[B, L, D]`` (no CLS) + patch positions through
        every block and the final norm. With ``return_blocks``, also return the (un-normed)
        outputs of those block indices as a list."""
        x = self.pos_drop(tokens + self.pos_embed[:, self.num_prefix_tokens :])
        kept = []
        for i, blk in enumerate(self.blocks):
            x = blk(x)
            if return_blocks is not None and i in return_blocks:
                kept.append(x)
        x = self.norm(x)
        return (x, kept) if return_blocks is not None else x


def patch_tokens(encoder: ViNy, images: torch.Tensor) -> torch.Tensor:
    """Patch tokens as the authors compute them for segmentation and diagnostics:
    ``[B, 3, H, W] -> [B, 64, D]``: patch embedding + patch positions (no CLS in the
    sequence) through all blocks and the final norm."""
    return encoder.forward_patch_tokens(encoder.embed_patches(images))
