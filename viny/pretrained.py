"""Pre-trained ViNy encoders shipped with viny: SimMIM on nested subsets of Imagenette.

Three SimMIM models (encoder + linear pixel decoder, fp16 safetensors, ~10 MB each) live
in ``viny/pretrained/``, each with a model card (``<name>.md``: the exact command, data,
epochs, loss curve, commit, sha256) and a JSON sidecar holding the same facts:

| name | images (nested) |
|---|---|
| ``simmim_imagenette2k`` | 2,368 |
| ``simmim_imagenette5k`` | 4,734 |
| ``simmim_imagenette9k`` | 9,469 (all staged Imagenette train images) |

and one in-domain SimMIM model (beyond the paper, :data:`SHIPPED_INDOMAIN`):
``simmim_pets400``, on the 400 staged Oxford-IIIT Pet images outside fine-tuning's nested
test set (198 images, split seed 42), labels unused.

Loading one is one call::

    encoder = viny.load_pretrained("simmim_imagenette9k")            # ViNy encoder, fp32
    simmim = viny.load_pretrained("simmim_imagenette9k", decoder=True)  # SimMIM, for reconstructions
    encoder = timm.create_model("viny.simmim_imagenette9k", pretrained=True)

The demo fine-tunes from these (``pretrain_source: shipped``) so that its pre-training
axis is real at demo cost; :func:`export_pretrained` is how they were made from runs of
``viny pretrain`` (see each card), and :func:`describe_encoder` says where an encoder
file came from (the report's "Encoders" table).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import torch

from viny.errors import VinyError
from viny.files import file_sha256

__all__ = ["PRETRAINED_DIR", "DATA_PLACEHOLDER", "SHIPPED", "SHIPPED_INDOMAIN", "SHIPPED_BY_DATA", "weights_path", "card", "load_pretrained", "shipped_encoder", "export_pretrained",
           "describe_encoder", "pretrain_command", "pretraining_record"]

PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"

# name -> number of pre-training images (first N of the seed-0 permutation of the staged Imagenette train folder)
SHIPPED: dict[str, int] = {"simmim_imagenette2k": 2368, "simmim_imagenette5k": 4734, "simmim_imagenette9k": 9469}
# name -> number of Pets images (pretrain --source pets: the staged Pets pool without the nested test set of its card's test_size)
SHIPPED_INDOMAIN: dict[str, int] = {"simmim_pets400": 400}
# the pre-training data a chain names (viny.upstream.Upstream.pretrain_data) -> its shipped encoders
SHIPPED_BY_DATA: dict[str, dict[str, int]] = {"imagenette": SHIPPED, "pets": SHIPPED_INDOMAIN}


def weights_path(name: str, folder: str | Path | None = None) -> Path:
    """The ``.safetensors`` file of shipped model ``name``."""
    folder = Path(folder) if folder else PRETRAINED_DIR
    path = folder / f"viny_{name}.safetensors"
    if not path.is_file():
        known = sorted(p.stem.removeprefix("viny_") for p in folder.glob("viny_*.safetensors"))
        raise VinyError(f"no pre-trained model {name!r} in {folder}; available: {', '.join(known) or 'none'}")
    return path


def card(name: str, folder: str | Path | None = None) -> dict:
    """The model card facts of ``name`` (its JSON sidecar): config, loss curve, command, commit, sha256."""
    return json.loads(weights_path(name, folder).with_suffix(".json").read_text())


def load_pretrained(name: str, decoder: bool = False, folder: str | Path | None = None):
    """A shipped model in fp32: the ViNy encoder, or with ``decoder`` the whole SimMIM model."""
    from viny.weights import load_encoder, load_simmim

    path = weights_path(name, folder)
    return load_simmim(path) if decoder else load_encoder(path)


def shipped_encoder(num_images: int, model: str = "viny", folder: str | Path | None = None, **options) -> Path:
    """The shipped SimMIM file pre-trained on ``num_images`` images, checked against ``options``.

    ``options`` are pre-training options the caller expects (e.g. ``epochs=25``); a
    difference from the shipped model's configuration is an error rather than a silent
    substitution, so a grid never reports a shipped encoder as something it is not.
    """
    folder = Path(folder) if folder else PRETRAINED_DIR
    for name, n in SHIPPED.items():
        if n == int(num_images) and (folder / f"viny_{name}.safetensors").is_file():
            config = card(name, folder)["config"]
            if model != config["model"]:
                raise VinyError(f"the shipped encoders are {config['model']!r} models, not {model!r}; set pretrain_source to train")
            for key, want in options.items():
                have = config.get(key)
                if want is not None and (list(want) if isinstance(want, (list, tuple)) else want) != have:
                    raise VinyError(f"shipped encoder {name} was pre-trained with {key}={have}, not {want}; "
                                    f"use {key}={have} or set pretrain_source to train")
            return weights_path(name, folder)
    sizes = ", ".join(f"{n}" for name, n in SHIPPED.items() if (folder / f"viny_{name}.safetensors").is_file())
    raise VinyError(f"no shipped encoder pre-trained on {num_images} images (shipped: {sizes or 'none'}); "
                    "use one of those sizes or set pretrain_source to train")


DATA_PLACEHOLDER = "<DATA>/imagenet-subset/train"  # how cards name the pre-training folder: a path on the training machine means nothing elsewhere
PETS_PLACEHOLDER = "<DATA>"  # --source pets: the folder holding oxford-iiit-pet/
HELDOUT_PLACEHOLDER = "<DATA>/intel-image-classification"  # and the yardstick's held-out images


def pretrain_command(config: dict, data: str = DATA_PLACEHOLDER) -> str:
    """The ``viny pretrain`` command line that reproduces a run with ``config`` (``--data``
    written as ``data``, since the folder differs between machines)."""
    from viny.config import RUNTIME_OPTIONS, make_config

    default = make_config("pretrain", epochs=config["epochs"]).to_dict()  # milestones scaled to the epochs
    args = ([f"--data {data}"] if config.get("data") else []) + [f"--epochs {config['epochs']}"]
    for key, value in config.items():
        if key in RUNTIME_OPTIONS or key in ("phase", "runtime", "data", "epochs") or json.loads(json.dumps(default.get(key))) == value:
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + key.replace("_", "-"))
        elif isinstance(value, list):
            args.append(f"{flag} {' '.join(map(str, value))}")
        else:
            args.append(f"{flag} {value}")
    return "viny pretrain " + " ".join(args)


def recipe_text(cfg: dict) -> str:
    """The pre-training recipe of a run's config in words (model cards, the report)."""
    base = (f"SimMIM, AdamW lr {cfg['lr']:g}, weight decay {cfg['weight_decay']:g}, batch {cfg['batch_size']}, "
            f"mask ratio {cfg['mask_ratio']}, L1 on masked patches, {cfg['epochs']} epochs")
    warm = f", {cfg['warmup_epochs']} warmup epochs" if cfg.get("warmup_epochs") else ""
    if cfg.get("schedule", "multistep") == "cosine":
        return base + warm + ", cosine LR decay to 0 (per step)"
    table_a1 = cfg["lr"] == 1e-4 and cfg["gamma"] == 0.1 and not warm
    steps = f"LR x{cfg['gamma']:g} at epochs {', '.join(map(str, cfg['milestones'])) or 'none'}"
    return base + warm + f", {steps}" + (" (the paper's Table A1 recipe, milestones at the same fractions)" if table_a1 else "")


def yardstick_text(metrics: dict) -> str:
    """The reconstruction yardstick of a pre-training run in one line, or why there is none."""
    if "yardstick_ratio" not in metrics:
        return "not measured: this run predates it)"
    return (f"masked-patch L1 on {metrics['yardstick_images']} held-out Intel seg_test images, fixed masks): "
            f"**{metrics['yardstick_l1']:.4f}**, **{metrics['yardstick_ratio']:.3f} x** the mean-colour predictor's "
            f"{metrics['yardstick_mean_colour_l1']:.4f} (each image's mean visible colour; dataset mean colour: "
            f"{metrics['yardstick_dataset_mean_l1']:.4f}). " + ("Below 1: it learned more than colour means." if metrics["yardstick_ratio"] < 1
                                                                else "Not below 1: it has not learned more than colour means."))


def _card_markdown(name: str, meta: dict) -> str:
    curve = pd.DataFrame(meta["loss_curve"])
    rows = "\n".join(f"| {int(r.epoch)} | {r.train_loss:.4f} | {r.lr:g} |" for r in curve.itertuples())
    cfg, res = meta["config"], meta["metrics"]
    if cfg.get("source") == "pets":
        n, pool = meta["runtime"].get("pretrain_images"), meta["runtime"].get("pets_pool_images")
        data = (f"{n:,} Oxford-IIIT Pet images (in domain; beyond the paper): the staged Pets pool ({pool:,} listed images) without "
                f"the {cfg['test_size']} images of fine-tuning's nested test set (`--split nested --test-size {cfg['test_size']}`, split "
                f"seed {cfg['split_seed']}), labels unused; it includes the images `--validation-size` scores. Fine-tune from it only with "
                f"that split and test size, so that the test images stay unseen. Each image resized (shorter side, {cfg['resize']}) and "
                "centre-cropped to 128 px.")
        licence = "Oxford-IIIT Pet (CC BY-SA 4.0) is the data the model was trained on."
    else:
        data = (f"{cfg['num_images']:,} images of the staged Imagenette train folder (10 ImageNet classes,\n  9,469 images, ImageFolder layout): "
                f"the first {cfg['num_images']:,} of the seed-{cfg['subset_seed']} permutation, so the\n  shipped sizes are nested. Each image resized "
                f"(shorter side, {cfg['resize']}) and centre-cropped to 128 px.")
        licence = ("Imagenette is a subset of ImageNet ILSVRC-2012, whose terms\n  (non-commercial research and education) apply to the images "
                   "the model was trained on.")
    return f"""# ViNy {name}

SimMIM-pre-trained ViNy (4,842,880-parameter encoder + linear pixel decoder and mask token),
stored in fp16. Load it with `viny.load_pretrained("{name}")` (encoder) or
`timm.create_model("viny.{name}", pretrained=True)`; `decoder=True` gives the SimMIM model.

- **Data**: {data}
- **Recipe**: {recipe_text(cfg)}. Precision: {meta['runtime'].get('precision')} autocast on {meta['runtime'].get('device')}.
- **Command**: `{meta['command']}`
- **Result**: final training L1 {res['final_train_loss']:.4f}; L1 on {res.get('eval_images', '?')} of its training images (un-augmented, fixed masks) {res.get('eval_l1', float('nan')):.4f}.
- **Held-out reconstruction** (the yardstick: {yardstick_text(res)}
- **Trained with**: viny {meta['runtime'].get('viny_version')}, commit {meta['commit']}; training time {meta['train_minutes']:.0f} min.
- **File**: `viny_{name}.safetensors`, sha256 `{meta['sha256']}`.
- **Licence**: weights MIT (as viny). {licence}

## Loss curve

| epoch | train L1 | lr |
|---|---|---|
{rows}
"""


def export_pretrained(run_dir: str | Path, name: str, folder: str | Path | None = None, commit: str = "unknown") -> Path:
    """Ship the SimMIM model of a finished ``viny pretrain`` run as ``viny_<name>.safetensors``
    (fp16) with its JSON sidecar and model card ``<name>.md`` in ``folder``."""
    from viny.weights import load_weights, save_weights

    run = Path(run_dir)
    if not (run / "results.json").is_file():
        raise VinyError(f"{run} is not a finished pre-training run (no results.json)")
    sd, meta = load_weights(run / "model.safetensors")
    if meta.get("kind") != "simmim":
        raise VinyError(f"{run}/model.safetensors holds a {meta.get('kind')!r} model, not SimMIM")
    config = json.loads((run / "config.json").read_text())
    curve = pd.read_csv(run / "metrics.csv")
    folder = Path(folder) if folder else PRETRAINED_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"viny_{name}.safetensors"
    half = {k: v.to(torch.float16) if v.is_floating_point() else v for k, v in sd.items()}
    runtime = config.pop("runtime", {})
    data = PETS_PLACEHOLDER if config.get("source") == "pets" else DATA_PLACEHOLDER
    if config.get("data"):
        config["data"] = data
    if config.get("heldout_data"):
        config["heldout_data"] = HELDOUT_PLACEHOLDER
    facts = {
        "kind": meta["kind"], "model_args": meta["model_args"], "mask_ratio": meta.get("mask_ratio"), "name": name,
        "phase": "pretrain", "epoch": config["epochs"], "metrics": meta.get("metrics", {}), "config": config, "runtime": runtime,
        "command": pretrain_command(config, data), "commit": commit, "dtype": "float16",
        "train_minutes": float(curve["seconds"].sum()) / 60, "loss_curve": curve.to_dict(orient="list"),
    }
    save_weights(half, path, **facts)
    facts["sha256"] = file_sha256(path)
    facts["viny_version"] = meta.get("viny_version")
    from viny.files import atomic_write_json, atomic_write_text

    atomic_write_json(path.with_suffix(".json"), facts)
    facts["loss_curve"] = curve.to_dict(orient="records")
    atomic_write_text(folder / f"{name}.md", _card_markdown(name, facts))
    return path


def describe_encoder(path: str | Path | None) -> str:
    """Where an encoder file came from, e.g. ``intermediate cls_intel (2 ep) <- shipped simmim_imagenette9k``."""
    if path is None or str(path) == "":
        return "random init"
    path = Path(path).resolve()
    if path.parent == PRETRAINED_DIR:
        name = path.stem.removeprefix("viny_")
        try:
            facts = card(name)
            c = facts["config"]
            if c.get("source") == "pets":
                return f"shipped {name} (SimMIM, {facts['runtime']['pretrain_images']:,} Pets images, {c['epochs']} ep)"
            return f"shipped {name} (SimMIM, {c['num_images']:,} images, {c['epochs']} ep)"
        except (VinyError, OSError, KeyError):
            return f"shipped {name}"
    config_file = path.parent / "config.json"
    if not config_file.is_file():
        return f"file {path.name}"
    c = json.loads(config_file.read_text())
    if c.get("phase") == "pretrain":
        here = f"SimMIM, {c.get('num_images') or 'all'} images, {c['epochs']} ep (trained here)"
    else:
        here = f"{c.get('phase')} {c.get('task', '')} ({c['epochs']} ep)".replace("  ", " ")
    return here if not c.get("init_from") else f"{here} <- {describe_encoder(c['init_from'])}"


def pretraining_record(encoder_path: str | Path) -> tuple[dict, pd.DataFrame, Path]:
    """``(results, loss curve, SimMIM weights file)`` of the pre-training behind
    ``encoder_path``: a shipped file (its card) or a ``viny pretrain`` run folder's encoder."""
    path = Path(encoder_path).resolve()
    if path.parent == PRETRAINED_DIR:
        facts = card(path.stem.removeprefix("viny_"))
        return dict(facts["metrics"]), pd.DataFrame(facts["loss_curve"]), path
    run = path.parent
    if not (run / "results.json").is_file():
        raise VinyError(f"{run} is not a finished pre-training run (no results.json)")
    return json.loads((run / "results.json").read_text()), pd.read_csv(run / "metrics.csv"), run / "model.safetensors"
