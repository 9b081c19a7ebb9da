"""An independent oracle for the authors' model: vit-pytorch 1.16.0's ViT (the library the
authors' code follows), with its keys renamed to the authors' names (docs/authors_code.md:
norm->layernorm, to_out->fc_out, net->network, mlp_head->head)."""

import re

import torch
from vit_pytorch import ViT


def oracle_vit(num_classes: int = 0, **overrides) -> ViT:
    args = dict(image_size=128, patch_size=16, dim=128, depth=12, heads=8, dim_head=64, mlp_dim=512)
    args.update(overrides)
    return ViT(num_classes=max(num_classes, 1), **args)


def authors_state_dict(vit: ViT, with_head: bool) -> dict:
    out = {}
    for k, v in vit.state_dict().items():
        k = re.sub(r"^(transformer\.layers\.\d+\.0\.)norm\.", r"\1layernorm.", k)
        k = k.replace(".to_out.", ".fc_out.").replace(".net.", ".network.")
        k = re.sub(r"^mlp_head\.", "head.", k)
        if k.startswith("head.") and not with_head:
            continue
        out[k] = v.clone()
    return out


def oracle_patch_tokens(vit: ViT, images: torch.Tensor) -> torch.Tensor:
    x = vit.to_patch_embedding(images) + vit.pos_embedding[:, 1:]
    return vit.transformer(x)


def oracle_simmim_pred(vit: ViT, mask_token: torch.Tensor, decoder: torch.nn.Linear, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The authors' SimMIM forward (docs/authors_code.md): masked tokens replaced by mask_token,
    positions added to every token, decoder on the masked outputs only -> [n_masked_total, 768]."""
    tokens = vit.to_patch_embedding(images)
    tokens = torch.where(mask[..., None], mask_token.expand_as(tokens), tokens)
    out = vit.transformer(tokens + vit.pos_embedding[:, 1:])
    return decoder(out[mask])
