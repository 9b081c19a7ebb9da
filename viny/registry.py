"""ViNy's timm registration: ``viny`` and ``viny_test``, with the encoders shipped in
``viny/pretrained`` as pretrained tags (``timm.create_model("viny.simmim_imagenette9k",
pretrained=True)``), and :func:`create_encoder`. Kept out of :mod:`viny.model`, so the
architecture does not depend on the shipped weights or the authors' checkpoint format.
"""

from __future__ import annotations

import timm
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from viny.model import VINY_ARGS, VINY_TEST_ARGS, ViNy
from viny.pretrained import PRETRAINED_DIR, SHIPPED, SHIPPED_INDOMAIN
from viny.reference import convert_reference_state_dict, is_reference_layout

__all__ = ["create_encoder", "viny", "viny_test", "default_cfgs"]


def _cfg(**kwargs) -> dict:
    return {
        "url": "", "num_classes": 0, "input_size": (3, 128, 128), "pool_size": None, "crop_pct": 1.0,
        "interpolation": "bicubic", "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225),
        "first_conv": "patch_embed.proj", "classifier": "head", "license": "mit", **kwargs,
    }


def _shipped_cfgs() -> dict:
    return {f"viny.{name}": _cfg(file=str(PRETRAINED_DIR / f"viny_{name}.safetensors"), license="mit (weights); ImageNet terms (data)")
            for name in SHIPPED} | {
        f"viny.{name}": _cfg(file=str(PRETRAINED_DIR / f"viny_{name}.safetensors"), license="mit (weights); Oxford-IIIT Pet CC BY-SA 4.0 (data)")
        for name in SHIPPED_INDOMAIN}


# timm looks up the default pretrained config of each registered model here; the tags are
# the encoders shipped in viny/pretrained (timm.create_model("viny.simmim_imagenette9k", pretrained=True)).
default_cfgs = generate_default_cfgs({"viny": _cfg(), **_shipped_cfgs(), "viny_test": _cfg(input_size=(3, 64, 64))})


def _filter_fn(state_dict: dict, model: ViNy) -> dict:
    """timm's ``pretrained_filter_fn`` hook: accept the authors' layout, viny's own, and a
    viny SimMIM file (its ``encoder.*`` part; decoder and mask token dropped)."""
    if any(k.startswith("encoder.") for k in state_dict):
        state_dict = {k[len("encoder."):]: v for k, v in state_dict.items() if k.startswith("encoder.")}
    if is_reference_layout(state_dict):
        state_dict, _ = convert_reference_state_dict(state_dict)
    return state_dict


def _create(variant: str, defaults: dict, pretrained: bool = False, **kwargs) -> ViNy:
    kwargs.setdefault("num_classes", 0)
    return build_model_with_cfg(ViNy, variant, pretrained, pretrained_filter_fn=_filter_fn, **{**defaults, **kwargs})


@register_model
def viny(pretrained: bool = False, **kwargs) -> ViNy:
    """ViNy, the paper's 4.8M-parameter ViT (image 128, patch 16, width 128, depth 12, 8x64 heads, MLP 512)."""
    return _create("viny", VINY_ARGS, pretrained, **kwargs)


@register_model
def viny_test(pretrained: bool = False, **kwargs) -> ViNy:
    """A tiny ViNy (image 64, patch 16, width 32, depth 2) for fast tests."""
    return _create("viny_test", VINY_TEST_ARGS, pretrained, **kwargs)


def create_encoder(name: str = "viny", **kwargs) -> ViNy:
    """``timm.create_model(name, num_classes=0, **kwargs)`` with a clear error for unknown names."""
    if name not in ("viny", "viny_test"):
        raise ValueError(f"unknown model {name!r}: expected 'viny' or 'viny_test'")
    kwargs.setdefault("num_classes", 0)
    return timm.create_model(name, **kwargs)
