"""Self-attention core with a hand-written backward, for the CPU training step.

Under plain autograd, ViNy's attention (``qkv -> reshape -> permute -> unbind``, then
``(q * scale) @ k^T``, softmax, ``@ v``) pays for memory copies more than for matmuls on
a CPU with fast matrix units (issue 13's profile on an AMX Xeon: copies 110 ms, ``cat``
36 ms and the q scaling 20 ms of a 460 ms step, against 133 ms of ``mm``):

* the permute of q, k, v to head-major happens once per matmul that reads them
  (``q * scale`` makes one copy, ``k^T`` and ``v`` one more each inside ``matmul``);
* the backward of ``unbind`` stacks dq, dk, dv with ``cat``, then the backward of the
  permute copies that stack again into the ``[B, N, 3, H, Dh]`` layout of the qkv
  projection's gradient.

:func:`self_attention` does the same arithmetic with one permute copy each way: q, k
and v are laid out head-major once (``[3, B*H, N, Dh]``, contiguous, so every bmm reads
them as they are); the scale is folded into the score bmm (``baddbmm``'s ``alpha``);
the backward writes dq, dk and dv with ``out=`` into one buffer, which is then permuted
once into the projection's layout for the two weight/input matmuls. Nothing else
changes: fp32 results equal the plain path's to rounding (``tests/test_model.py``).
"""

from __future__ import annotations

import torch

__all__ = ["self_attention"]


class _SelfAttention(torch.autograd.Function):
    """``x [B, N, D]``, ``weight [3*H*Dh, D]`` (qkv without bias) -> ``[B, N, H*Dh]``:
    softmax(q k^T * scale) v per head, heads concatenated (before the output projection)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, num_heads: int, head_dim: int, scale: float) -> torch.Tensor:
        b, n, d = x.shape
        h, e = num_heads, head_dim
        qkv = torch.mm(x.reshape(b * n, d), weight.t())
        qkv = qkv.view(b, n, 3, h, e).permute(2, 0, 3, 1, 4).contiguous().view(3, b * h, n, e)  # the one copy
        q, k, v = qkv.unbind(0)
        attn = torch.baddbmm(torch.empty(b * h, n, n, dtype=q.dtype, device=q.device), q, k.transpose(1, 2), beta=0.0, alpha=scale)
        attn = attn.softmax(-1)
        out = torch.bmm(attn, v)
        ctx.save_for_backward(x, weight, qkv, attn)
        ctx.shape = (b, n, d, h, e)
        ctx.scale = scale
        return out.view(b, h, n, e).transpose(1, 2).reshape(b, n, h * e)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight, qkv, attn = ctx.saved_tensors
        b, n, d, h, e = ctx.shape
        q, k, v = qkv.unbind(0)
        g = grad.to(attn.dtype).reshape(b, n, h, e).transpose(1, 2).reshape(b * h, n, e)
        gqkv = torch.empty_like(qkv)  # dq, dk, dv land here: no unbind -> cat
        torch.bmm(attn.transpose(1, 2), g, out=gqkv[2])
        gscores = torch._softmax_backward_data(torch.bmm(g, v.transpose(1, 2)), attn, -1, attn.dtype)
        gscores.mul_(ctx.scale)
        torch.bmm(gscores, k, out=gqkv[0])
        torch.bmm(gscores.transpose(1, 2), q, out=gqkv[1])
        gqkv = gqkv.view(3, b, h, n, e).permute(1, 3, 0, 2, 4).reshape(b * n, 3 * h * e)  # the one copy back
        gx = gw = None
        if ctx.needs_input_grad[0]:
            gx = torch.mm(gqkv, weight).view(b, n, d)
        if ctx.needs_input_grad[1]:
            gw = torch.mm(gqkv.t(), x.reshape(b * n, d))
        return gx, gw, None, None, None


def self_attention(x: torch.Tensor, weight: torch.Tensor, num_heads: int, head_dim: int, scale: float) -> torch.Tensor:
    """Multi-head self-attention before the output projection: ``[B, N, D] -> [B, N, H*Dh]``.

    Under CPU/CUDA autocast the inputs are cast once to the autocast dtype (as autocast
    would for the qkv matmul) and the core runs in that dtype, softmax included, as the
    plain bf16 path does.
    """
    dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype
    if dtype != x.dtype or dtype != weight.dtype:
        x, weight = x.to(dtype), weight.to(dtype)
    with torch.autocast(x.device.type, enabled=False):
        return _SelfAttention.apply(x, weight, num_heads, head_dim, scale)
