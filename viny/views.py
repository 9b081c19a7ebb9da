"""What the notebooks and the report show, computed from models and runs: parameter
tables, patchify and attention pictures, SimMIM reconstructions, segmentation examples,
and the similarity data behind the Fig. 6 explorer. Each returns plain data (DataFrame,
uint8 arrays, PIL images) drawn by :mod:`viny.figures` or displayed as is.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from viny.config import config_from_dict
from viny.data import augment as A
from viny.device import autocast
from viny.diagnostics import layer_tokens
from viny.evaluate import load_segmenter
from viny.figures import colorize_trimap, panel, png_data_uri
from viny.files import atomic_write_json, project_path, repo_runs  # noqa: F401  (notebooks import them from here)
from viny.geometry import reference_patches, similarity_map
from viny.metrics import segmentation_scores
from viny.model import ViNy
from viny.simmim import reconstruction_panels
from viny.tasks import FinetuneTask

__all__ = [
    "project_path", "repo_runs", "similarity_panel", "parameter_table", "patch_grid_image", "attention_maps", "reconstructions", "segmentation_examples",
    "heatmap_data", "write_json", "read_metrics_csv",
]


def write_json(path: str | Path, obj) -> Path:
    atomic_write_json(path, obj)
    return Path(path)


def read_metrics_csv(run_dir: str | Path, name: str | None = None) -> pd.DataFrame:
    df = pd.read_csv(Path(run_dir) / "metrics.csv")
    if name is not None:
        df["run"] = name
    return df


def parameter_table(encoder: ViNy) -> pd.DataFrame:
    """Parameters per part of the encoder (patch embedding, positions, blocks, final norm)."""
    groups: dict[str, int] = {}
    for name, p in encoder.named_parameters():
        key = name.split(".")[0] if not name.startswith("blocks.") else "blocks (x%d)" % len(encoder.blocks)
        if name.startswith("blocks.0."):
            sub = name.split(".")[2]
            groups[f"  one block: {sub}"] = groups.get(f"  one block: {sub}", 0) + p.numel()
        groups[key] = groups.get(key, 0) + p.numel()
    groups["total"] = sum(p.numel() for p in encoder.parameters())
    return pd.DataFrame({"part": list(groups), "parameters": list(groups.values())})


def patch_grid_image(image_u8: np.ndarray, patch_size: int = 16, scale: int = 3) -> np.ndarray:
    """The image enlarged with the patch grid drawn on it (how ViNy sees it: 8x8 tokens)."""
    img = np.repeat(np.repeat(image_u8, scale, 0), scale, 1).copy()
    step = patch_size * scale
    img[::step, :] = 255
    img[:, ::step] = 255
    return img


@torch.no_grad()
def attention_maps(encoder: ViNy, image_u8: np.ndarray, block: int = -1) -> np.ndarray:
    """Attention of the CLS token to every patch in ``block``, per head: ``[heads, gh, gw]``."""
    x = A.normalize(A.to_float(torch.from_numpy(np.array(image_u8[None]))))  # a copy: cached images are read-only memmaps
    weights = encoder.eval().attention_weights(x, block)[0, :, 0, 1:]  # heads, L
    return weights.reshape(weights.shape[0], *encoder.grid_size).numpy()


@torch.no_grad()
def reconstructions(model, images_u8: np.ndarray, seed: int = 0, normalize: bool = True) -> dict[str, np.ndarray]:
    """SimMIM original / masked / reconstructed images (uint8 ``[N, H, W, 3]``) with masks drawn from ``seed``."""

    model = model.eval()
    x = A.to_float(torch.from_numpy(np.array(images_u8)))  # a copy: cached images are read-only memmaps
    xin = A.normalize(x) if normalize else x
    mask = model.random_mask(len(x), generator=torch.Generator().manual_seed(seed))
    _, pred, mask = model(xin, mask=mask)
    mean, std = (A.IMAGENET_MEAN, A.IMAGENET_STD) if normalize else (None, None)
    panels = reconstruction_panels(xin, pred, mask, model.encoder.patch_size, mean, std)
    return {k: (v.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8) for k, v in panels.items()}


def reconstruction_figure(model, images_u8: np.ndarray, seed: int = 0, scale: int = 2):
    r = reconstructions(model, images_u8, seed)
    rows = [[r["original"][i], r["masked"][i], r["reconstruction"][i]] for i in range(len(images_u8))]
    return panel(rows, ["original", "masked 50%", "reconstruction"], scale=scale)


def segmentation_examples(run_dir: str | Path, n: int = 4, scale: int = 2):
    """Paper Fig. A1: test images, ground truth and prediction of a finetune run (PIL image)."""

    model, meta = load_segmenter(run_dir)
    task = FinetuneTask(config_from_dict(meta["config"]), progress=False)
    idx = task.test_index[:n]
    pred = task.predict(model, idx, torch.device("cpu"), autocast(torch.device("cpu"), "fp32")).numpy()
    images = task.pets.arrays.images[idx]
    truth = task.pets.arrays.targets[idx]
    rows = [[images[i], colorize_trimap(truth[i]), colorize_trimap(pred[i])] for i in range(len(idx))]
    img = panel(rows, ["image", "ground truth", "prediction"], scale=scale)
    # each row's own score, written on its prediction
    from PIL import ImageDraw


    draw = ImageDraw.Draw(img)
    h, w, gap, top = images.shape[1] * scale, images.shape[2] * scale, 4, 14
    for i in range(len(idx)):
        sc = segmentation_scores(torch.from_numpy(pred[i : i + 1]), torch.from_numpy(np.asarray(truth[i : i + 1])))
        text = f"mIoU {100 * sc['paper_miou']:.0f}  acc {100 * sc['paper_pixel_accuracy']:.0f}"
        x, y = gap + 2 * (w + gap) + 2, top + gap + i * (h + gap) + 2
        draw.rectangle([x - 1, y - 1, x + 6 * len(text) + 1, y + 11], fill=(255, 255, 255))
        draw.text((x, y), text, fill=(0, 0, 0))
    return img


def heatmap_data(encoders: dict[str, ViNy], images_u8: np.ndarray, targets: np.ndarray) -> tuple[pd.DataFrame, dict[str, str], dict]:
    """Similarity of every patch to every patch, per image and encoder, for the Fig. 6
    explorer: ``(sims, image data URIs, reference patches per image)``."""
    from PIL import Image


    rows = []
    uris, refs = {}, {}
    for name, enc in encoders.items():
        toks = layer_tokens(enc, images_u8, precision="fp32")[len(enc.blocks)]
        for i in range(len(images_u8)):
            t = torch.nn.functional.normalize(toks[i].double(), dim=-1)
            sims = (t @ t.T).numpy()
            l = sims.shape[0]
            rows.append(pd.DataFrame({"image": f"image {i + 1}", "encoder": name, "patch": np.repeat(np.arange(l), l),
                                      "target": np.tile(np.arange(l), l), "sim": sims.reshape(-1).round(4)}))
    for i in range(len(images_u8)):
        uris[f"image {i + 1}"] = png_data_uri(Image.fromarray(images_u8[i]))
        refs[f"image {i + 1}"] = reference_patches(torch.from_numpy(np.asarray(targets[i])).long(), 16)
    return pd.concat(rows, ignore_index=True), uris, refs


def similarity_maps(encoder: ViNy, image_u8: np.ndarray, patches: dict[str, int], layer: int | None = None) -> dict[str, np.ndarray]:
    """Cosine maps ``[gh, gw]`` of the given reference patches (name -> index) for one image,
    at block ``layer`` (1-based; default: the last)."""

    layer = layer or len(encoder.blocks)
    tok = layer_tokens(encoder, image_u8[None], [layer], precision="fp32")[layer][0]
    return {k: similarity_map(tok, v, tuple(encoder.grid_size)).numpy() for k, v in patches.items()}


def similarity_panel(image_u8: np.ndarray, trimap: np.ndarray, sim: np.ndarray, patch: int, scale: int = 2):
    """The live explorer's figure: image (the chosen patch boxed in red), trimap, and the
    cosine map to that patch in viridis on Fig. 6's fixed [-0.5, 1] scale, with a colour bar."""
    from matplotlib import colormaps
    from PIL import Image, ImageDraw

    gh, gw = sim.shape
    p = image_u8.shape[0] // gh
    rgba = colormaps["viridis"]((np.clip(sim, -0.5, 1) + 0.5) / 1.5)
    heat = (rgba[..., :3] * 255).astype(np.uint8).repeat(p, 0).repeat(p, 1)
    img = panel([[image_u8, colorize_trimap(trimap), heat]], ["image", "trimap", f"cosine to patch {patch}"], scale=scale)
    draw = ImageDraw.Draw(img)
    r, c = divmod(int(patch), gw)
    gap, top, w = 4, 14, image_u8.shape[1] * scale
    x0, y0 = gap + c * p * scale, top + gap + r * p * scale
    for x_off in (0, 2 * (w + gap)):  # on the image and on the map
        draw.rectangle([x_off + x0, y0, x_off + x0 + p * scale - 1, y0 + p * scale - 1], outline=(255, 0, 0), width=2)
    # colour bar below: -0.5 ... 1
    bar_h, bar_w = 10, w
    canvas = Image.new("RGB", (img.width, img.height + bar_h + 16), "white")
    canvas.paste(img, (0, 0))
    ramp = (colormaps["viridis"](np.linspace(0, 1, bar_w))[:, :3] * 255).astype(np.uint8)[None].repeat(bar_h, 0)
    x_bar = gap + 2 * (w + gap)
    canvas.paste(Image.fromarray(ramp), (x_bar, img.height))
    d = ImageDraw.Draw(canvas)
    for value in (-0.5, 0, 0.5, 1):
        x = x_bar + int((value + 0.5) / 1.5 * (bar_w - 1))
        d.text((min(x, x_bar + bar_w - 18), img.height + bar_h + 2), f"{value:g}", fill="black")
    return canvas


def load_json(path: str | Path):
    return json.loads(Path(path).read_text())


def heldout_yardstick_images(intel: str | None, model: str = "viny") -> torch.Tensor:
    """The held-out Intel ``seg_test`` images of the reconstruction yardstick, normalised ``[N, 3, S, S]``."""
    from viny.config import make_config
    from viny.tasks import heldout_images

    return A.normalize(A.to_float(heldout_images(make_config("pretrain", model=model), intel)))


def yardstick_table(simmim, intel: str | None, model: str = "viny") -> tuple[dict, pd.DataFrame]:
    """The reconstruction yardstick of ``simmim`` on the held-out Intel images (``intel``:
    its folder, ``None``: the shipped sample): ``(scores, table beside the two colour predictors)``."""
    from viny.simmim import reconstruction_yardstick

    y = reconstruction_yardstick(simmim, heldout_yardstick_images(intel, model))
    table = pd.DataFrame([{"predictor": "this encoder", "masked L1": y["l1"]},
                          {"predictor": "mean visible colour of each image", "masked L1": y["mean_colour_l1"]},
                          {"predictor": "one mean colour for all", "masked L1": y["dataset_mean_l1"]},
                          {"predictor": f"ratio to the mean-colour predictor ({y['images']} held-out images)", "masked L1": y["ratio"]}])
    return y, table


class AlongPretraining:
    """A curve along pre-training as 02_simmim shows it: where it came from, the runs, the
    label-free scores, and their charts and verdicts (empty when no curve was asked for)."""

    def __init__(self, source: str = "", runs: pd.DataFrame | None = None, scores: pd.DataFrame | None = None):
        self.source, self.runs, self.scores = source, runs, scores

    @property
    def chart(self):
        from viny.figures import pretraining_curve

        return pretraining_curve(self.runs) if self.source else None

    @property
    def sizes(self) -> list[int]:
        return sorted(int(n) for n in self.runs["train_size"].unique()) if self.source else []

    @property
    def selection_chart(self):
        from viny.figures import selection_chart

        return selection_chart(self.scores, self.runs, self.sizes[0]) if self.source else None

    @property
    def verdicts(self) -> pd.DataFrame:
        from viny.selection import selection_verdicts

        return pd.concat([selection_verdicts(self.scores, self.runs, n) for n in self.sizes], ignore_index=True) if self.source else pd.DataFrame()


def along_pretraining_curve(out: str | Path, *, curve_run: str = "", curve_results: str = "", pretrain_images: int = 0, sizes=(100, 250),
                            seeds: int = 3, epochs: int = 50, test_size: int = 198, model: str = "viny", pets: str | None = None,
                            intel: str | None = None) -> AlongPretraining:
    """The curve along pre-training of 02_simmim: a measured one (``curve_results``, a folder
    of ``benchmarks/along_pretraining.py``; ``{pretrain_images}`` is filled in) or one
    fine-tuned here from the snapshots of ``curve_run``. Writes its tables into ``out``."""
    from viny.diagnostics import diagnostic_images
    from viny.errors import VinyError
    from viny.selection import curve_folder, downstream_along_pretraining, label_free_scores, read_along_pretraining
    from viny.study import FILES

    out = Path(out)
    if curve_results and not curve_run:  # a run to fine-tune from here is the more specific request
        folder = curve_folder(curve_results, pretrain_images)
        if not project_path(folder).is_dir() and "{pretrain_images}" in curve_results:  # "this size's measured curve, if any"
            print(f"no measured curve for {pretrain_images} pre-training images ({folder}); the curve is skipped")
            return AlongPretraining()
        if not project_path(folder).is_dir():
            raise VinyError(f"curve_results = {curve_results!r}: no measured curve at {folder} (measured: "
                            f"{', '.join(sorted(p.name for p in project_path('results/along_pretraining').glob('simmim_*'))) or 'none'}); "
                            "set curve_results to one of those, or to empty to skip the curve")
        runs, scores = read_along_pretraining(project_path(folder))
        source = f"measured by benchmarks/along_pretraining.py, {folder} (not rerun here)"
    elif curve_run:
        runs = downstream_along_pretraining(curve_run, out / "curve", list(sizes), range(seeds), epochs=epochs, test_size=test_size,
                                            split="nested", data=pets, model=model)
        size = load_encoder_size(curve_run)
        scores = label_free_scores(curve_run, diagnostic_images(pets, 600, size=size), heldout_yardstick_images(intel, model))
        source = f"run {Path(curve_run).name}, fine-tuned here"
    else:
        return AlongPretraining()
    runs.to_csv(out / FILES["pretraining_curve"], index=False)
    scores.to_csv(out / FILES["selection_scores"], index=False)
    return AlongPretraining(source, runs, scores)


def load_encoder_size(run_dir: str | Path) -> int:
    """The image size of a pre-training run's model (its config's model)."""
    from viny.registry import create_encoder

    cfg = json.loads((Path(run_dir) / "config.json").read_text())
    return create_encoder(cfg.get("model", "viny")).patch_embed.img_size[0]


def encoder_summary(paths: dict[str, str | None]) -> pd.DataFrame:
    """One row per encoder (name -> file, ``None``: random init): where it came from and its
    run's record (the pre-training's card or results; an intermediate stage's held-out scores)."""
    from viny.pretrained import describe_encoder, pretraining_record

    rows = []
    for name, p in paths.items():
        if p is None:
            continue
        record = pretraining_record(p)[0] if name == "pre-trained" else json.loads((Path(p).parent / "results.json").read_text())
        rows.append({"encoder": name, "source": describe_encoder(p), **record})
    return pd.DataFrame(rows)


def stage_losses(paths: dict[str, str | None], stages) -> pd.DataFrame:
    """The per-epoch metrics of the runs behind the encoders of ``stages`` (a ``run`` column names each)."""
    return pd.concat([read_metrics_csv(Path(paths[s]).parent, s) for s in stages], ignore_index=True)


def reference_similarity_figure(paths: dict[str, str | None], data_root: str | None = None, image_index: int = 0):
    """Fig. 6 for one Pets image: the cosine maps of a background, a foreground and a boundary
    patch for each encoder in ``paths`` (name -> file; ``None`` is skipped), one row each."""
    from viny.data import load_pets
    from viny.figures import reference_similarity_panel
    from viny.weights import load_encoder

    encoders = {k: load_encoder(p) for k, p in paths.items() if p}
    if not encoders:
        raise ValueError("no encoder files given")
    first = next(iter(encoders.values()))
    pets = load_pets(Path(data_root) if data_root else None, size=first.patch_embed.img_size[0], progress=False)
    image, target = np.array(pets.arrays.images[image_index]), np.array(pets.arrays.targets[image_index])  # copies of the read-only cache
    refs = reference_patches(target, first.patch_size)
    maps = {k: similarity_maps(e, image, refs) for k, e in encoders.items()}
    return reference_similarity_panel(image, target, maps, first.patch_size)


class GeometryEncoders:
    """The encoders 05_geometry compares, by display label (random init first)."""

    def __init__(self, models: dict[str, ViNy]):
        self.models = models

    @property
    def first(self) -> ViNy:
        return next(iter(self.models.values()))

    @property
    def image_size(self) -> int:
        return self.first.patch_embed.img_size[0]

    @property
    def grid(self) -> tuple[int, int]:
        return tuple(self.first.grid_size)


def geometry_encoders(nb) -> GeometryEncoders:
    """Random init, then the encoder of each of the notebook run ``nb``'s chains (the
    pre-trained one, then one per intermediate stage), each from the store or trained there."""
    from viny.registry import create_encoder
    from viny.study import RANDOM_INIT, encoder_label
    from viny.weights import load_encoder

    models = {RANDOM_INIT: create_encoder(nb.chains[0].model)}
    for chain in nb.chains:
        path = nb.encoder(chain)
        models[encoder_label(chain.intermediate)] = load_encoder(path) if path else create_encoder(chain.model)
    return GeometryEncoders(models)


def heatmap_figure_data(encoders: dict[str, ViNy], data, images: int, nb=None):
    """The Fig. 6 explorer's data for the first ``images`` probe-held-out diagnostic images:
    ``(their indices, similarities, image URIs, reference patches)``; with the notebook run
    ``nb``, also saved in its folder (for the report)."""
    held_out = [i for i in range(len(data.images)) if not data.probe_train[i]][:images]
    sims, uris, refs = heatmap_data(encoders, data.images[held_out], data.targets[held_out])
    if nb is not None:
        sims.to_parquet(nb.path("heatmaps"))
        write_json(nb.path("heatmap_images"), {"images": uris, "references": refs})
    return held_out, sims, uris, refs


def live_similarity_explorer(encoders: dict[str, ViNy], data, held_out: list[int], refs: dict):
    """The ipywidgets explorer of 05_geometry: image, encoder, layer and patch sliders; the map is computed on demand."""
    import ipywidgets as W
    from IPython.display import display

    first = next(iter(encoders.values()))
    depth, n_patches = len(first.blocks), first.patch_embed.num_patches
    names = list(encoders)
    patch0 = int(refs["image 1"]["foreground"])

    def show(image=0, encoder=names[min(1, len(names) - 1)], layer=depth, patch=patch0):
        i = held_out[image]
        m = similarity_maps(encoders[encoder], data.images[i], {"patch": patch}, layer)["patch"]
        display(similarity_panel(data.images[i], data.targets[i], m, patch))

    wide = dict(layout=W.Layout(width="max-content"), style={"description_width": "initial"})
    return W.interact(show, image=W.IntSlider(0, 0, len(held_out) - 1), encoder=W.Dropdown(options=names, value=names[min(1, len(names) - 1)], **wide),
                      layer=W.IntSlider(depth, 1, depth), patch=W.IntSlider(patch0, 0, n_patches - 1))


def beyond_tables(table: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """The arms beyond the paper in a grid's results (notebook 06): ``(title, table)`` for the
    joint arm against sequential fine-tuning and for the in-domain encoder against Imagenette
    pre-training, each row a paired difference over seeds (mIoU points). Empty where the grid
    has neither study."""
    from viny.findings import format_interval, indomain_vs_imagenette, joint_vs_sequential

    out = []
    joint = joint_vs_sequential(table)
    if len(joint):
        out.append(("Joint (fine-tuning + auxiliary SimMIM loss) minus sequential fine-tuning",
                    pd.DataFrame({"pre-training images": joint["pretrain_images"], "fine-tuning images": joint["train_size"],
                                  "aux_mim_weight": joint["aux_mim_weight"],
                                  "difference [95 % interval]": [format_interval(r) for r in joint.to_dict("records")],
                                  "verdict": joint["verdict"]})))
    dom = indomain_vs_imagenette(table)
    if len(dom):
        out.append(("In-domain (SimMIM on 400 Pets images) minus Imagenette pre-training",
                    pd.DataFrame({"comparison": dom["comparison"], "Imagenette encoder": dom["reference"], "fine-tuning images": dom["train_size"],
                                  "fine-tuning epochs": dom["finetune_epochs"],
                                  "pre-training image-steps": [f"{a:,} vs {b:,}" for a, b in zip(dom["indomain_steps"], dom["imagenette_steps"])],
                                  "difference [95 % interval]": [format_interval(r) for r in dom.to_dict("records")],
                                  "verdict": dom["verdict"]})))
    return out


def encoder_selection_view(folder: str | Path = "results/encoder_selection", train_size: int = 100):
    """The selection study across encoders (notebook 06): ``(chart, table)`` from a folder
    written by ``benchmarks/encoder_selection.py``: each score against fine-tuned mIoU at
    ``train_size``, and per pool, size and score the tau, pick, regret and verdict."""
    from viny.errors import VinyError
    from viny.figures import encoder_selection_chart
    from viny.files import project_path

    folder = project_path(folder)
    if not (folder / "selection.csv").is_file():
        raise VinyError(f"{folder} has no selection.csv: run benchmarks/encoder_selection.py --data-root PATH --out {folder}")
    sel = pd.read_csv(folder / "selection.csv")
    shown = pd.DataFrame({"pool": sel["pool"], "fine-tuning images": sel["train_size"], "score": sel["label"], "encoders": sel["encoders"],
                          "tau [95 % interval]": [f"{r.tau:+.2f} [{r.tau_lo:+.2f}, {r.tau_hi:+.2f}]" for r in sel.itertuples()],
                          "picks": sel["picks"], "regret (points)": sel["regret"].round(2), "verdict": sel["verdict"]})
    return encoder_selection_chart(pd.read_csv(folder / "encoders.csv"), train_size), shown
