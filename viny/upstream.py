"""The upstream chain a cell starts from, in one typed place.

A downstream cell (and the SimMIM, intermediate and geometry notebooks) starts from an
encoder made by a chain: random init, or SimMIM pre-training (the shipped encoder for that
many images, or a run trained here), optionally followed by an intermediate stage whose
head is dropped. :class:`Upstream` is that chain as a frozen, typed object. Notebooks build
it from their parameters (:func:`notebook_chains`, through :func:`viny.notebook.setup`), the
grid checks every cell's chains before any cell runs (:func:`check_chains`), the wall-time
estimate counts their image-steps (:meth:`Upstream.steps`), and :meth:`Upstream.resolve`
turns one into an encoder file, training what the store does not hold yet.

A shipped encoder is taken as its model card says (``pretrain_epochs: 0``); asking for a
recipe the card does not have (other epochs, another model) is refused up front with the
parameter's name as the notebook or grid spells it.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal

from viny.config import choices
from viny.errors import VinyError

__all__ = ["Upstream", "INTERMEDIATES", "NOTEBOOK_NAMES", "notebook_chains", "check_chains", "chain_defaults"]

Source = Literal["shipped", "train"]
Data = Literal["imagenette", "pets"]
Intermediate = Literal["none", "cls_intel", "cls_pets", "spatial", "spatial_intel"]
Init = Literal["reference", "timm"]
Model = Literal["viny", "viny_test"]

INTERMEDIATES: tuple[str, ...] = typing.get_args(Intermediate)


@dataclass(frozen=True)
class Upstream:
    """What a cell's encoder is made of. The defaults are the notebooks' (a first look on the
    shipped data: no pre-training; with ``pretrain_images`` set, the shipped encoder of that
    size as its card says)."""

    model: Model = "viny"
    pretrain_images: int = 0  # 0: no pre-training (random init)
    pretrain_source: Source = "shipped"  # shipped (viny/pretrained: 2368, 4734 or 9469 images) or train (here, in the store)
    pretrain_epochs: int = 0  # 0 with shipped: as its card says; train: >= 1
    pretrain_data: Data = "imagenette"  # imagenette (the paper's arm) or pets (the shipped in-domain encoder; beyond the paper)
    intermediate: Intermediate = "none"
    intermediate_epochs: int = 3
    intermediate_images: int = 0  # 0: all training images of the task
    intermediate_lr: float = 8e-4  # Table A1
    intermediate_weight_decay: float = 0.0  # Table A1
    test_size: int = 200  # Pets images held out from Pets-based intermediate tasks (a fine-tune's test set)
    init: Init = "reference"  # the random init the chain starts from (no pre-training)
    seed: int = 0  # seed of the runs trained here (a shipped encoder has its card's)
    data_root: str = ""  # folder with imagenet-subset/, intel-image-classification/, oxford-iiit-pet/ ("": the shipped sample)

    # ---- checks -------------------------------------------------------------------------
    def check(self, names: dict[str, str] | None = None) -> "Upstream":
        """Refuse a chain that cannot exist, before anything runs: one line naming the
        parameter as ``names`` spells it (a notebook's own name for a field, e.g. 02_simmim's
        ``epochs`` for ``pretrain_epochs``)."""
        names = names or {}

        def bad(field: str, why: str):
            raise VinyError(f"{names.get(field, field)} = {getattr(self, field)!r}: {why}")

        for name, allowed in choices(type(self)).items():
            if getattr(self, name) not in allowed:
                bad(name, f"not one of {', '.join(allowed)}")
        for name in ("pretrain_images", "pretrain_epochs", "intermediate_epochs", "intermediate_images", "test_size", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                bad(name, "must be a whole number >= 0")
        for name in ("intermediate_lr", "intermediate_weight_decay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 <= value < float("inf")):
                bad(name, "must be a finite number >= 0")
        if self.intermediate != "none" and self.intermediate_epochs < 1:
            bad("intermediate_epochs", f"the intermediate stage {self.intermediate} needs at least 1 epoch")
        if self.intermediate != "none" and self.intermediate_lr <= 0:
            bad("intermediate_lr", "must be > 0")
        if self.pretrain_images and self.pretrain_source == "train" and self.pretrain_epochs < 1:
            bad("pretrain_epochs", f"pre-training {self.pretrain_images} images here needs at least 1 epoch "
                                   f"(0 means 'as the shipped card says' and goes with {names.get('pretrain_source', 'pretrain_source')} shipped)")
        if self.pretrain_images and self.pretrain_data == "pets" and self.pretrain_source != "shipped":
            bad("pretrain_data", f"pre-training on the Pets images is shipped only (viny/pretrained); set "
                                 f"{names.get('pretrain_source', 'pretrain_source')} to shipped, or train one with viny pretrain --source pets")
        if self.pretrain_images and self.pretrain_source == "shipped":
            self._check_shipped(names)
        return self

    def _check_shipped(self, names: dict[str, str]) -> None:
        from viny.pretrained import PRETRAINED_DIR, SHIPPED_BY_DATA, card

        name = self.shipped_name
        source = names.get("pretrain_source", "pretrain_source")
        if name is None:
            shipped = SHIPPED_BY_DATA[self.pretrain_data]
            sizes = ", ".join(str(n) for k, n in shipped.items() if (PRETRAINED_DIR / f"viny_{k}.safetensors").is_file())
            what = "" if self.pretrain_data == "imagenette" else " Pets"
            raise VinyError(f"{names.get('pretrain_images', 'pretrain_images')} = {self.pretrain_images}: no shipped encoder was pre-trained on "
                            f"{self.pretrain_images}{what} images (shipped: {sizes or 'none'}); use one of those sizes, 0 (random init), "
                            + (f"or set {source} to train" if self.pretrain_data == "imagenette" else
                               f"or set {names.get('pretrain_data', 'pretrain_data')} to imagenette"))
        config = card(name)["config"]
        if self.pretrain_data == "pets" and self.test_size != config["test_size"]:
            # the in-domain encoder saw every Pets image outside the nested test set of its test_size: another one would leak
            raise VinyError(f"{names.get('test_size', 'test_size')} = {self.test_size}: the shipped {name} was pre-trained on the Pets pool "
                            f"without the nested test set of test_size {config['test_size']} (split seed {config['split_seed']}); fine-tune "
                            f"from it with test_size {config['test_size']} and split nested, so that its test images stay unseen")
        if self.model != config["model"]:
            raise VinyError(f"{names.get('model', 'model')} = {self.model!r}: the shipped encoders are {config['model']!r} models; "
                            f"set {source} to train, or {names.get('pretrain_images', 'pretrain_images')} to 0")
        if self.pretrain_epochs and self.pretrain_epochs != config["epochs"]:
            key = names.get("pretrain_epochs", "pretrain_epochs")
            raise VinyError(f"{key} = {self.pretrain_epochs}: the shipped encoder {name} was pre-trained for {config['epochs']} epochs; "
                            f"set {key} to 0 (the shipped encoder as its card says) or {config['epochs']}, or {source} to train")

    @property
    def shipped_name(self) -> str | None:
        """The shipped encoder this chain starts from (``None``: none, or not shipped)."""
        from viny.pretrained import PRETRAINED_DIR, SHIPPED_BY_DATA

        if not self.pretrain_images or self.pretrain_source != "shipped":
            return None
        for name, n in SHIPPED_BY_DATA.get(self.pretrain_data, {}).items():
            if n == self.pretrain_images and (PRETRAINED_DIR / f"viny_{name}.safetensors").is_file():
                return name
        return None

    def describe(self) -> str:
        """The chain in words, e.g. ``cls_intel (3 ep) <- shipped 9,469-image encoder``."""
        if not self.pretrain_images:
            start = f"random init ({self.init})"
        elif self.pretrain_source == "shipped":
            start = f"shipped {self.pretrain_images:,}-image encoder"
        else:
            start = f"SimMIM on {self.pretrain_images:,} images ({self.pretrain_epochs} ep)"
        return start if self.intermediate == "none" else f"{self.intermediate} ({self.intermediate_epochs} ep) <- {start}"

    # ---- the chain's parts --------------------------------------------------------------
    def pretrained(self) -> "Upstream":
        """The same chain without its intermediate stage (the pre-trained encoder)."""
        return dataclasses.replace(self, intermediate="none")

    def _root(self) -> Path | None:
        return Path(self.data_root) if self.data_root else None

    def pretrain_config(self):
        """The :class:`viny.config.PretrainConfig` of the pre-training run trained here (``None``: none)."""
        from viny.config import make_config

        if not self.pretrain_images or self.pretrain_source != "train":
            return None
        root = self._root()
        return make_config("pretrain", model=self.model, seed=self.seed, num_images=self.pretrain_images, init=self.init,
                           epochs=self.pretrain_epochs, data=str(root / "imagenet-subset" / "train") if root else None)

    def intermediate_config(self, init_from: str | None):
        """The :class:`viny.config.IntermediateConfig` of the intermediate stage (``None``: none),
        starting from ``init_from`` (or this chain's random init)."""
        from viny.config import make_config
        from viny.study import INTERMEDIATE_TASKS

        if self.intermediate == "none":
            return None
        on_intel = INTERMEDIATE_TASKS[self.intermediate].data == "intel"
        root = self._root()
        data = (str(root / "intel-image-classification") if on_intel else str(root)) if root else None
        options = {"epochs": self.intermediate_epochs, "num_images": self.intermediate_images or None, "lr": self.intermediate_lr,
                   "weight_decay": self.intermediate_weight_decay}
        if not on_intel:  # the Pets hold-out does not concern Intel: one run for every test size
            options["test_size"] = self.test_size
        start = {"init_from": init_from} if init_from else {"init": self.init}
        return make_config("intermediate", task=self.intermediate, model=self.model, seed=self.seed, data=data, **start, **options)

    def resolve(self, store: str | Path, progress: bool = True) -> str | None:
        """The encoder file this chain ends in (``None``: random init), training in ``store``
        whatever it does not hold yet (:func:`viny.pipeline.run_in_store`)."""
        from viny.pipeline import run_in_store
        from viny.pretrained import weights_path

        self.check()
        encoder: str | None = None
        if self.shipped_name:
            encoder = str(weights_path(self.shipped_name))
        elif self.pretrain_images:
            encoder = str(run_in_store(self.pretrain_config(), store, progress) / "encoder.safetensors")
        if self.intermediate != "none":
            encoder = str(run_in_store(self.intermediate_config(encoder), store, progress) / "encoder.safetensors")
        return encoder

    def steps(self, sizes: dict[str, int]) -> list[tuple[tuple, str, int]]:
        """``(run key, phase, image-steps)`` of each run this chain trains here (a shipped
        encoder trains nothing); ``sizes`` holds the training images of ``intel`` and ``pets``.
        Equal keys are one run in the store: the estimate counts each once."""
        from viny.study import INTERMEDIATE_TASKS

        out = []
        pre = self.pretrain_config()
        if pre is not None:
            out.append((("pretrain", self.model, self.pretrain_images, self.pretrain_epochs, self.seed, self.init, self.data_root), "pretrain",
                        self.pretrain_images * self.pretrain_epochs))
        if self.intermediate != "none":
            task = INTERMEDIATE_TASKS[self.intermediate]
            n = self.intermediate_images or (sizes["intel"] if task.data == "intel" else sizes["pets"] - self.test_size)
            out.append((("intermediate", dataclasses.astuple(self)), "intermediate", n * self.intermediate_epochs))
        return out


# ---- notebooks: which parameter is which field ----------------------------------------------
# A notebook names a field differently where its own phase owns the plain name: 02_simmim's
# `epochs` are the pre-training's, 03_intermediate's `epochs`, `lr`, `weight_decay` the
# intermediate stage's. 04_finetune's `upstream_seed` (-1: the cell's `seed`) seeds its chain.
NOTEBOOK_NAMES: dict[str, dict[str, str]] = {
    "02_simmim": {"pretrain_epochs": "epochs"},
    "03_intermediate": {"intermediate_epochs": "epochs", "intermediate_lr": "lr", "intermediate_weight_decay": "weight_decay"},
}
# the parameter listing a notebook's intermediate stages (one chain each, beside the pre-trained one)
_TASK_LISTS = {"03_intermediate": "tasks", "05_geometry": "intermediates"}


def _stem(notebook: str | Path) -> str:
    return Path(notebook).stem


def chain_defaults() -> dict:
    """The chain's fields and their defaults (what a cell means when it leaves one out)."""
    return {f.name: f.default for f in fields(Upstream)}


def notebook_chains(notebook: str | Path, params: dict) -> list[Upstream]:
    """The chains a notebook with ``params`` (its parameters, defaults filled in) builds:
    the pre-trained encoder's first, then one per intermediate stage it trains. Notebooks
    without a chain (01_model, 06_results) build none."""
    stem = _stem(notebook)
    names = NOTEBOOK_NAMES.get(stem, {})
    if "pretrain_images" not in params:
        return []
    values = {}
    for f in fields(Upstream):
        key = names.get(f.name, f.name)
        if key in params:
            values[f.name] = params[key]
    if params.get("upstream_seed", -1) is not None and isinstance(params.get("upstream_seed"), int) and params["upstream_seed"] >= 0:
        values["seed"] = params["upstream_seed"]
    if "intermediate_images" in values and values["intermediate_images"] is None:
        values["intermediate_images"] = 0
    base = Upstream(**values)
    chains = [base.pretrained()]
    if base.intermediate != "none":
        chains.append(base)
    tasks = params.get(_TASK_LISTS.get(stem, ""), [])
    if not isinstance(tasks, (list, tuple)):
        raise VinyError(f"{_TASK_LISTS[stem]} = {tasks!r}: expected a list of intermediate tasks ({', '.join(INTERMEDIATES[1:])})")
    for task in tasks:
        if task not in INTERMEDIATES[1:]:
            raise VinyError(f"{_TASK_LISTS[stem]}: {task!r} is not an intermediate task; use {', '.join(INTERMEDIATES[1:])}")
        chains.append(dataclasses.replace(base, intermediate=task))
    return chains


def check_chains(notebook: str | Path, params: dict) -> list[Upstream]:
    """:func:`notebook_chains`, each checked (:meth:`Upstream.check`) with the notebook's own parameter names."""
    names = NOTEBOOK_NAMES.get(_stem(notebook), {})
    if "upstream_seed" in params:
        names = {**names, "seed": "upstream_seed"}
    return [c.check(names) for c in notebook_chains(notebook, params)]
