"""Typed configurations of the three training phases, with the paper's values as defaults.

Defaults are the paper's Table A1 (the ``paper`` preset). The ``reference`` preset holds
the values of the authors' code where they differ (docs/authors_code.md); :data:`PRESETS`
is the one table of them, shown in docs/deviations.md (generated from it by viny.docs).

The ``small_compute`` preset (pre-training only: lr 1e-3, x0.5 at the same milestones) was
chosen by a fixed-budget sweep on held-out reconstruction (docs/pretrain_sweep.md); it
trains the shipped encoders. Batch size 64 everywhere; the LR is set per optimizer step
(Table A1's multistep changes it only at epoch boundaries). Unknown keys are an error.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import typing
from dataclasses import dataclass, fields
from typing import Any, Literal

from viny.errors import VinyError

__all__ = ["TrainConfig", "PretrainConfig", "IntermediateConfig", "FinetuneConfig", "PHASES", "PRESETS", "make_config", "config_from_dict", "scale_milestones", "RUNTIME_OPTIONS"]


# options that change how fast a run goes or what it keeps, not what it computes (up to
# rounding): left out of the store's run keys, and free to differ when a run is resumed
# torch.compile costs about a minute on 2 CPU cores and saves 5-20 % a step: it pays from
# about 20 minutes of training, ~100k image-steps at ViNy's CPU rate (benchmarks/throughput.py)
COMPILE_ABOVE = 100_000

RUNTIME_OPTIONS = frozenset({"device", "precision", "compile", "cache_dir", "checkpoint_every", "eval_batch_size", "save_encoder_every"})


SEED_MAX = 2**32 - 1  # seeds: 0..SEED_MAX (torch's generators take 64 bits; epoch generators multiply the seed by ~1e6)

# every numeric option of the configs: (integer?, lowest, highest); a bound given as (value, True)
# is open (the value itself refused). Options outside are refused before any work starts, so a
# NaN or inf learning rate never trains a NaN model, a huge seed never overflows a generator
# after the data are loaded, and a count is never a fraction.
NUMBER_LIMITS: dict[str, tuple] = {
    "epochs": (True, 1, 100_000),
    "warmup_epochs": (True, 0, 100_000),
    "batch_size": (True, 1, 65_536),
    "eval_batch_size": (True, 1, 65_536),
    "seed": (True, 0, SEED_MAX),
    "subset_seed": (True, 0, SEED_MAX),
    "split_seed": (True, 0, SEED_MAX),
    "checkpoint_every": (True, 0, 100_000),
    "save_encoder_every": (True, 0, 100_000),
    "eval_every": (True, 0, 100_000),
    "lr": (False, (0, True), 10),
    "weight_decay": (False, 0, 10),
    "gamma": (False, (0, True), 10),
    "num_images": (True, 1, 10**9),  # or None: all
    "heldout_images": (True, 1, 10**6),
    "mask_ratio": (False, (0, True), (1, True)),
    "contrast": (False, 0, 1),
    "mixup_alpha": (False, 0, 100),
    "train_size": (True, 1, 10**8),
    "test_size": (True, 0, 10**8),
    "validation_size": (True, 0, 10**8),
    "num_clusters": (True, 2, 10_000),
    "aux_mim_weight": (False, 0, 1000),
    "aux_mask_ratio": (False, (0, True), (1, True)),
}
_NONE_ALLOWED = {"num_images"}


def _num(v) -> str:
    return str(v) if isinstance(v, int) else f"{v:g}"


def number_problem(value, integer: bool, low, high, none: bool = False) -> str | None:
    """Why ``value`` is not a finite number (an integer where ``integer``) in ``[low, high]``
    (a bound ``(x, True)`` is open), or None when it is."""
    if value is None and none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral if integer else numbers.Real):
        if integer and isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return f"expected a whole number, got {value!r} (write it without a decimal point)"
        return f"expected {'a whole number' if integer else 'a number'}, got {value!r}"
    if not math.isfinite(value):
        return f"must be a finite number, got {value!r}"
    (lo, lo_open), (hi, hi_open) = (low if isinstance(low, tuple) else (low, False)), (high if isinstance(high, tuple) else (high, False))
    if value < lo or value > hi or (lo_open and value == lo) or (hi_open and value == hi):
        return f"must be in {'(' if lo_open else '['}{_num(lo)}, {_num(hi)}{')' if hi_open else ']'}, got {value!r}"
    return None


def choices(cls: type) -> dict[str, tuple]:
    """The allowed values of each ``Literal`` field of a config class (the one list of them)."""
    return {name: typing.get_args(tp) for name, tp in typing.get_type_hints(cls).items() if typing.get_origin(tp) is Literal}


@dataclass(frozen=True)
class TrainConfig:
    """Fields shared by every phase."""

    epochs: int = 100
    lr: float = 1e-4
    weight_decay: float = 0.0
    milestones: tuple[int, ...] = ()  # epochs at which the LR is multiplied by gamma (schedule multistep)
    gamma: float = 0.1
    schedule: Literal["multistep", "cosine"] = "multistep"  # cosine: per-step half-cosine from lr to 0 after warmup
    warmup_epochs: int = 0  # linear LR warmup over the first N epochs (per step), before either schedule
    batch_size: int = 64
    optimizer: Literal["adamw", "adam"] = "adamw"
    seed: int = 0
    model: Literal["viny", "viny_test"] = "viny"
    init_from: str | None = None  # encoder weights: viny .safetensors or an authors' .pth; None = random init
    init: Literal["reference", "timm"] = "reference"  # a random encoder's init: the authors' N(0,1) positions, or timm's (std 0.02)
    data: str | None = None  # dataset root; None = the sample shipped in the repo
    cache_dir: str | None = None  # decoded-image cache; None = $VINY_CACHE or ~/.cache/viny
    skip_bad_images: bool = False
    resize: Literal["bilinear", "nearest"] = "bilinear"  # image resize when caching (authors: nearest)
    normalize: bool = True  # ImageNet mean/std on the input
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on CUDA and on CPUs with bf16 units
    device: str = "auto"
    compile: bool | None = None  # torch.compile the training steps (inductor); None: only for runs of >= COMPILE_ABOVE image-steps, where its ~1 min compile pays
    checkpoint_every: int = 0  # epochs between resume checkpoints; 0: about one a minute (after the epoch that ends >= 60 s after the last), and always the last epoch
    save_encoder_every: int = 0  # also keep encoder snapshots every N epochs (0: only the final one)
    eval_every: int = 0  # intermediate, finetune: score the evaluation images every N epochs (val_* columns of metrics.csv, a learning curve); finetune only with validation_size
    eval_batch_size: int = 256

    phase = "base"

    def validate(self) -> "TrainConfig":
        def bad(name, why):
            raise VinyError(f"invalid {self.phase} option --{name.replace('_', '-')}: {why}")

        names = {f.name for f in fields(self)}
        for name, limits in NUMBER_LIMITS.items():  # numbers first: finite, in range, integers where counts are meant
            if name in names:
                problem = number_problem(getattr(self, name), *limits, none=name in _NONE_ALLOWED)
                if problem:
                    bad(name, problem)
        for name in ("milestones", "crop_scale", "crop_ratio"):
            if name in names:
                value = getattr(self, name)
                if not isinstance(value, tuple):
                    bad(name, f"expected numbers, got {value!r}")
                for v in value:
                    problem = number_problem(v, name == "milestones", (0, name != "milestones"), 100_000 if name == "milestones" else 100)
                    if problem:
                        bad(name, f"{problem} (in {list(value)})")
        for name in ("crop_scale", "crop_ratio"):
            if name in names:
                value = getattr(self, name)
                if len(value) != 2 or value[0] > value[1] or (name == "crop_scale" and value[1] > 1):
                    bad(name, f"expected two numbers LOW HIGH with LOW <= HIGH{' <= 1' if name == 'crop_scale' else ''}, got {list(value)}")
        for name in ("epochs", "batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                bad(name, f"must be >= 1, got {getattr(self, name)}")
        if self.checkpoint_every < 0:
            bad("checkpoint_every", f"must be >= 0 (0: about one a minute), got {self.checkpoint_every}")
        if self.lr <= 0:
            bad("lr", f"must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            bad("weight_decay", f"must be >= 0, got {self.weight_decay}")
        if not 0 <= self.warmup_epochs < self.epochs:
            bad("warmup_epochs", f"must be in 0..epochs-1 ({self.epochs - 1}), got {self.warmup_epochs}")
        if list(self.milestones) != sorted(self.milestones):
            bad("milestones", f"must be increasing, got {list(self.milestones)}")
        if self.eval_every < 0 or (self.eval_every and self.phase == "pretrain"):
            bad("eval_every", f"must be >= 0, and 0 for pretrain (score pre-training snapshots with `viny select` or the yardstick), got {self.eval_every}")
        if self.init_from and self.init != "reference":
            bad("init", f"{self.init!r} sets up a random encoder; --init-from {self.init_from} gives the weights")
        for name, allowed in choices(type(self)).items():  # every Literal field, from its type
            if getattr(self, name) not in allowed:
                bad(name, f"{getattr(self, name)!r} is not one of {', '.join(map(str, allowed))}")
        return self

    def to_dict(self) -> dict:
        return {"phase": self.phase, **dataclasses.asdict(self)}

    def inert_options(self) -> set[str]:
        """Options added after the store's run keys were in use that do not change this run
        (e.g. an auxiliary loss switched off): left out of :meth:`key_dict`, so that every
        run configured before they existed keeps its key."""
        return set()

    def key_dict(self) -> dict:
        """What the store's run key hashes (:func:`viny.pipeline.config_key`): the options that
        change the result, without runtime options and without :meth:`inert_options`."""
        drop = RUNTIME_OPTIONS | self.inert_options()
        return {k: v for k, v in self.to_dict().items() if k not in drop}


@dataclass(frozen=True)
class PretrainConfig(TrainConfig):
    """SimMIM pre-training (paper Sec. 2.2, Table A1)."""

    epochs: int = 100
    lr: float = 1e-4
    weight_decay: float = 0.05
    milestones: tuple[int, ...] = (50, 85)
    gamma: float = 0.1
    num_images: int | None = None  # nested subset of the image folder (paper: 45k / 100k / 200k); None = all
    subset_seed: int = 0
    mask_ratio: float = 0.5
    crop_scale: tuple[float, float] = (0.67, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    divide_loss_by_masked: bool = False  # authors: L1 / number of masked patches
    heldout_data: str | None = None  # Intel root whose seg_test images score the reconstruction yardstick; None = the shipped sample
    heldout_images: int = 256  # held-out images for the yardstick (at most; the shipped sample has 120)
    # in-domain pre-training (beyond the paper): "pets" pre-trains on the Pets images outside the nested test
    # set (test_size, split_seed, as fine-tuning's --split nested), labels unused; --data is then a Pets root
    source: Literal["imagefolder", "pets"] = "imagefolder"
    test_size: int = 1000  # source pets: the nested test set left out (fine-tuning's --test-size)
    split_seed: int = 42  # source pets: seed of the nested split (fine-tuning's --split-seed)

    phase = "pretrain"

    def validate(self):
        super().validate()
        if not 0 < self.mask_ratio < 1:
            raise VinyError(f"invalid pretrain option --mask-ratio: must be in (0, 1), got {self.mask_ratio}")
        if self.source != "pets" and (self.test_size, self.split_seed) != (1000, 42):
            raise VinyError(f"invalid pretrain option --test-size {self.test_size} / --split-seed {self.split_seed}: "
                            "they choose the Pets test images to leave out, only with --source pets")
        return self

    def inert_options(self):
        return {"source", "test_size", "split_seed"} if self.source == "imagefolder" else set()


@dataclass(frozen=True)
class IntermediateConfig(TrainConfig):
    """Intermediate fine-tuning (paper Sec. 2.3, Table A1); the head is dropped afterwards.

    ``task``: ``cls_intel`` (CLS classification of Intel scenes, the paper's), ``cls_pets``
    (CLS classification of Pets breeds), ``spatial`` (per-patch majority-trimap labels
    on Pets) or ``spatial_intel`` (label-free and patch-aligned on the Intel images: each
    patch's k-means cluster of the initial encoder's tokens, ``num_clusters``), so that
    "same data, different supervision geometry" is tested as the paper's text intends.
    Pets-based tasks train on the images outside the nested test set
    (``test_size``, ``split_seed``), so that a fine-tune with ``--split nested`` and the
    same test set never sees its test images twice.
    """

    epochs: int = 200
    lr: float = 8e-4
    weight_decay: float = 0.0
    milestones: tuple[int, ...] = (180, 190)
    gamma: float = 0.1
    task: Literal["cls_intel", "cls_pets", "spatial", "spatial_intel"] = "cls_intel"
    num_images: int | None = None  # use only the first N training images (seeded); None = all
    contrast: float = 0.3
    mixup_alpha: float = 0.0  # authors: 0.1 (torchvision MixUp)
    test_size: int = 1000
    split_seed: int = 42
    num_clusters: int = 8  # spatial_intel: k-means clusters of patch tokens

    phase = "intermediate"

    def validate(self):
        super().validate()
        if self.num_clusters < 2:
            raise VinyError(f"invalid intermediate option --num-clusters: must be >= 2, got {self.num_clusters}")
        return self


@dataclass(frozen=True)
class FinetuneConfig(TrainConfig):
    """Downstream trimap segmentation on Oxford-IIIT Pet (paper Sec. 2.4, Table A1)."""

    epochs: int = 100
    lr: float = 2e-3
    weight_decay: float = 1e-4
    milestones: tuple[int, ...] = (70, 90, 95)
    gamma: float = 0.5
    train_size: int = 250
    test_size: int = 1000
    split: Literal["paper", "nested"] = "paper"
    split_seed: int = 42
    validation_size: int = 0  # > 0 (split nested): score on this many images from the end of the training pool instead of the test split, for choosing recipes without touching the test images
    contrast: float = 0.3
    loss_quirk: bool = False  # authors' log_softmax over pixels before the CE (likely unintended)
    # joint training (beyond the paper; SSAT, WACV 2024): + aux_mim_weight x SimMIM masked L1 on the same augmented
    # batch, through a mask token and linear decoder that are dropped afterwards; 0: off (the paper's fine-tune)
    aux_mim_weight: float = 0.0
    aux_mask_ratio: float = 0.5  # the auxiliary loss's share of masked patches

    phase = "finetune"

    def inert_options(self):
        return {"aux_mim_weight", "aux_mask_ratio"} if self.aux_mim_weight == 0 else set()

    def validate(self):
        super().validate()
        if self.validation_size < 0 or (self.validation_size and self.split != "nested"):
            raise VinyError(f"invalid finetune option --validation-size {self.validation_size}: must be >= 0, and > 0 only with --split nested")
        if self.eval_every and not self.validation_size:
            raise VinyError(f"invalid finetune option --eval-every {self.eval_every}: must be >= 0, and > 0 only with --validation-size "
                            "(the learning curve scores validation images, never the test images)")
        return self


PHASES: dict[str, type[TrainConfig]] = {"pretrain": PretrainConfig, "intermediate": IntermediateConfig, "finetune": FinetuneConfig}

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "paper": {"pretrain": {}, "intermediate": {}, "finetune": {}},
    # pre-training at small compute, chosen by benchmarks/pretrain_sweep.py (docs/pretrain_sweep.md):
    # at a fixed budget the authors' code LR (1e-3, x0.5 at 50 % and 85 %) beat Table A1's
    # (1e-4, x0.1) and cosine schedules on held-out reconstruction; everything else is Table A1
    "small_compute": {"pretrain": {"lr": 1e-3, "gamma": 0.5}, "intermediate": {}, "finetune": {}},
    "reference": {
        "pretrain": {"lr": 1e-3, "gamma": 0.5, "divide_loss_by_masked": True},
        "intermediate": {"optimizer": "adam", "mixup_alpha": 0.1, "resize": "nearest"},
        "finetune": {"normalize": False, "resize": "nearest"},
    },
}


def _coerce(cls: type, name: str, value):
    ftype = {f.name: f.type for f in fields(cls)}[name]
    if isinstance(value, list):
        value = tuple(value)
    if "tuple" in str(ftype) and value is not None and not isinstance(value, tuple):
        value = (value,)
    return value


def scale_milestones(milestones: tuple[int, ...], from_epochs: int, to_epochs: int) -> tuple[int, ...]:
    """Milestones at the same fractions of a schedule of ``to_epochs`` (e.g. {50, 85} of 100 -> {10, 17} of 20)."""
    return tuple(sorted({max(1, round(m * to_epochs / from_epochs)) for m in milestones if round(m * to_epochs / from_epochs) < to_epochs}))


def make_config(phase: str, preset: str = "paper", scale_schedule: bool = True, **overrides) -> TrainConfig:
    """The ``preset`` configuration of ``phase`` with ``overrides``; unknown keys are an error.

    With ``scale_schedule`` (default), overriding ``epochs`` without ``milestones`` moves
    the LR milestones to the same fractions of the shorter or longer schedule.
    """
    if phase not in PHASES:
        raise VinyError(f"unknown phase {phase!r}: use one of {', '.join(PHASES)}")
    if preset not in PRESETS:
        raise VinyError(f"unknown preset {preset!r}: use one of {', '.join(PRESETS)}")
    cls = PHASES[phase]
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise VinyError(f"unknown {phase} option(s): {', '.join(unknown)}")
    values = {**PRESETS[preset][phase], **overrides}
    if scale_schedule and "epochs" in overrides and "milestones" not in overrides and not number_problem(overrides["epochs"], *NUMBER_LIMITS["epochs"]):
        base = cls()
        values["milestones"] = scale_milestones(base.milestones, base.epochs, int(overrides["epochs"]))
    return cls(**{k: _coerce(cls, k, v) for k, v in values.items()}).validate()


def config_from_dict(d: dict) -> TrainConfig:
    """Inverse of ``TrainConfig.to_dict`` (e.g. a run's ``config.json``)."""
    d = dict(d)
    phase = d.pop("phase", None)
    if phase not in PHASES:
        raise VinyError(f"config has unknown phase {phase!r}")
    return make_config(phase, scale_schedule=False, **d)


def load_config_json(path) -> TrainConfig:
    return config_from_dict(json.loads(open(path).read()))
