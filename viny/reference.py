"""Loading the authors' checkpoints (github itshuey/masked-image-modelling).

The authors save plain ``torch.save(state_dict)`` files in the vit-pytorch layout
(docs/authors_code.md): the encoder (``encoder_vit_4M_pretrain_*.pth``) and the SimMIM model
(``mim_vit_4M_pretrain_*.pth``: the encoder under ``encoder.``, plus ``mask_token`` and
``decoder``). :func:`load_reference_checkpoint` reads either safely
(``torch.load(weights_only=True)``: tensors only, no code) and returns the equivalent
viny model through one explicit key map with count and shape checks.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from viny.errors import VinyError
from viny.model import ViNy

__all__ = ["ReferenceCheckpointError", "convert_reference_state_dict", "is_reference_layout", "load_reference_checkpoint"]


class ReferenceCheckpointError(VinyError, ValueError):
    """A state dict that is not (or not a complete) authors' checkpoint."""


# authors' key (regex) -> viny key template; {i} is the block index.
_KEY_MAP: list[tuple[re.Pattern, str]] = [
    (re.compile(r"^to_patch_embedding\.1\.(weight|bias)$"), "patch_embed.pre_norm.{0}"),
    (re.compile(r"^to_patch_embedding\.2\.(weight|bias)$"), "patch_embed.proj.{0}"),
    (re.compile(r"^to_patch_embedding\.3\.(weight|bias)$"), "patch_embed.norm.{0}"),
    (re.compile(r"^pos_embedding$"), "pos_embed"),
    (re.compile(r"^cls_token$"), "cls_token"),
    (re.compile(r"^transformer\.layers\.(\d+)\.0\.layernorm\.(weight|bias)$"), "blocks.{0}.norm1.{1}"),
    (re.compile(r"^transformer\.layers\.(\d+)\.0\.to_qkv\.weight$"), "blocks.{0}.attn.qkv.weight"),
    (re.compile(r"^transformer\.layers\.(\d+)\.0\.fc_out\.0\.(weight|bias)$"), "blocks.{0}.attn.proj.{1}"),
    (re.compile(r"^transformer\.layers\.(\d+)\.1\.network\.0\.(weight|bias)$"), "blocks.{0}.norm2.{1}"),
    (re.compile(r"^transformer\.layers\.(\d+)\.1\.network\.1\.(weight|bias)$"), "blocks.{0}.mlp.fc1.{1}"),
    (re.compile(r"^transformer\.layers\.(\d+)\.1\.network\.4\.(weight|bias)$"), "blocks.{0}.mlp.fc2.{1}"),
    (re.compile(r"^transformer\.norm\.(weight|bias)$"), "norm.{0}"),
    (re.compile(r"^head\.(weight|bias)$"), "head.{0}"),
]
_MIM_KEYS = {"mask_token": "mask_token", "decoder.weight": "decoder.weight", "decoder.bias": "decoder.bias"}


def _strip_module(sd: dict) -> dict:
    if sd and all(k.startswith("module.") for k in sd):
        return {k[len("module."):]: v for k, v in sd.items()}
    return sd


def is_reference_layout(state_dict: dict) -> bool:
    """True if the keys look like the authors' encoder or SimMIM checkpoint."""
    keys = _strip_module(state_dict).keys()
    return any(k in ("pos_embedding", "encoder.pos_embedding") or k.startswith(("to_patch_embedding.", "encoder.to_patch_embedding.")) for k in keys)


def _map_encoder_key(key: str) -> str | None:
    for pattern, template in _KEY_MAP:
        m = pattern.match(key)
        if m:
            return template.format(*m.groups())
    return None


def _inverse_rule(pattern: re.Pattern, template: str) -> tuple[re.Pattern, str]:
    """viny key regex -> authors' key template, derived from one rule of ``_KEY_MAP``."""
    groups = re.findall(r"\((.*?)\)", pattern.pattern)
    viny_re = re.escape(template)
    for i, g in enumerate(groups):
        viny_re = viny_re.replace(re.escape("{%d}" % i), f"({g})")
    authors = pattern.pattern.strip("^$")
    for i, g in enumerate(groups):
        authors = authors.replace(f"({g})", "{%d}" % i, 1)
    return re.compile(f"^{viny_re}$"), authors.replace("\\.", ".")


_INVERSE = [_inverse_rule(p, t) for p, t in _KEY_MAP]
_INVERSE_MIM = {v: k for k, v in _MIM_KEYS.items()}


def reference_key(key: str) -> str:
    """The authors' name of a viny key (``blocks.5.attn.qkv.weight`` ->
    ``transformer.layers.5.0.to_qkv.weight``; ``encoder.`` prefixes kept), for messages."""
    if key in _INVERSE_MIM:
        return _INVERSE_MIM[key]
    prefix, rest = ("encoder.", key[len("encoder."):]) if key.startswith("encoder.") else ("", key)
    for pattern, template in _INVERSE:
        m = pattern.match(rest)
        if m:
            return prefix + template.format(*m.groups())
    return key


def convert_reference_state_dict(state_dict: dict) -> tuple[dict, bool]:
    """Rename an authors' state dict to viny's layout.

    Returns ``(converted, is_mim)``. Keys that match no rule are kept under their
    original name, so the strict load that follows reports them as unexpected.
    """
    sd = _strip_module(dict(state_dict))
    is_mim = any(k.startswith("encoder.") for k in sd) or "mask_token" in sd
    out = {}
    for key, value in sd.items():
        if is_mim:
            if key in _MIM_KEYS:
                out[_MIM_KEYS[key]] = value
                continue
            if key.startswith("encoder."):
                new = _map_encoder_key(key[len("encoder."):])
                out["encoder." + new if new else key] = value
                continue
            out[key] = value
        else:
            out[_map_encoder_key(key) or key] = value
    return out, is_mim


def _infer_args(sd: dict, prefix: str, head_dim: int) -> dict:
    """Model arguments from tensor shapes (depth, widths, grid, head)."""
    try:
        pos = sd[prefix + "pos_embed"]
        patch_dim = sd[prefix + "patch_embed.pre_norm.weight"].shape[0]
        depth = 1 + max(int(m.group(1)) for k in sd if (m := re.match(re.escape(prefix) + r"blocks\.(\d+)\.", k)))
        inner = sd[prefix + "blocks.0.attn.qkv.weight"].shape[0] // 3
        mlp_dim = sd[prefix + "blocks.0.mlp.fc1.weight"].shape[0]
    except (KeyError, ValueError) as e:
        missing = repr(reference_key(e.args[0])) if isinstance(e, KeyError) else "any transformer.layers.* key"
        raise ReferenceCheckpointError(
            f"not an authors' ViNy checkpoint: cannot find {missing} among its keys "
            f"(expected the vit-pytorch layout of the authors' code (docs/authors_code.md), e.g. 'pos_embedding', 'to_patch_embedding.1.weight', "
            f"'transformer.layers.0.0.to_qkv.weight')"
        ) from None
    patch_size = int(round((patch_dim / 3) ** 0.5))
    grid = int(round((pos.shape[1] - 1) ** 0.5))
    args = dict(
        img_size=grid * patch_size, patch_size=patch_size, embed_dim=pos.shape[-1], depth=depth,
        num_heads=inner // head_dim, head_dim=head_dim, mlp_dim=mlp_dim, num_classes=0,
    )
    if prefix + "head.weight" in sd:
        args["num_classes"] = sd[prefix + "head.weight"].shape[0]
    return args


def load_reference_checkpoint(path_or_state_dict, head_dim: int = 64, **model_kwargs):
    """Load an authors' checkpoint (encoder or ``mim_*``) into the equivalent viny model.

    ``path_or_state_dict``: a ``.pth`` path (read with ``torch.load(weights_only=True)``,
    never full unpickling) or an already loaded state dict. Returns a :class:`viny.ViNy`
    for an encoder file (with its ``head`` if the file has one) or a
    :class:`viny.simmim.SimMIM` for a ``mim_*`` file. Raises
    :class:`ReferenceCheckpointError` naming missing / unexpected keys or mismatched shapes.
    """
    from viny.simmim import SimMIM

    if isinstance(path_or_state_dict, (str, os.PathLike)):
        path = Path(path_or_state_dict)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint not found: {path}")
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # truncated file, pickled code, not a torch file ...
            # torch's own message suggests weights_only=False, i.e. running the file's code: never relay that
            raise ReferenceCheckpointError(
                f"{path}: not a weights-only torch checkpoint (empty, truncated, not a torch file, or it holds pickled "
                "objects other than tensors, which viny never loads); pass a state dict of tensors saved with torch.save") from None
        where = str(path)
    else:
        sd, where = path_or_state_dict, "state dict"
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ReferenceCheckpointError(f"{where}: expected a flat state dict of tensors")

    converted, is_mim = convert_reference_state_dict(sd)
    prefix = "encoder." if is_mim else ""
    try:
        args = {**_infer_args(converted, prefix, head_dim), **model_kwargs}
    except ReferenceCheckpointError as e:
        raise ReferenceCheckpointError(f"{where}: {e}") from None
    encoder = ViNy(**args)
    model = SimMIM(encoder) if is_mim else encoder

    expected = model.state_dict()
    missing = sorted(reference_key(k) for k in set(expected) - set(converted))
    unexpected = sorted(set(converted) - set(expected))
    if missing or unexpected:
        raise ReferenceCheckpointError(
            f"{where}: does not match the authors' {'SimMIM' if is_mim else 'encoder'} layout; "
            f"missing keys: {missing or 'none'}; unexpected keys: {unexpected or 'none'}"
        )
    bad = [f"{reference_key(k)} {tuple(converted[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items() if converted[k].shape != v.shape]
    if bad:
        raise ReferenceCheckpointError(f"{where}: shape mismatch (checkpoint vs model): {'; '.join(bad)}")
    model.load_state_dict(converted, strict=True)
    return model
