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
from viny.files import atomic_write_json
from viny.geometry import reference_patches, similarity_map
from viny.metrics import segmentation_scores
from viny.model import ViNy
from viny.simmim import reconstruction_panels
from viny.tasks import FinetuneTask

__all__ = [
    "project_path", "repo_runs", "similarity_panel", "parameter_table", "patch_grid_image", "attention_maps", "reconstructions", "segmentation_examples",
    "heatmap_data", "write_json", "read_metrics_csv",
]


def project_path(path: str | Path) -> Path:
    """``path`` as given when absolute; a relative one is taken from the project folder when
    the working directory is a project's ``notebooks/`` (as in JupyterLab and papermill
    cells), else from the working directory: grids can name files of the repo the same
    way from anywhere."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    cwd = Path.cwd()
    base = cwd.parent if cwd.name == "notebooks" and (cwd.parent / "pyproject.toml").is_file() else cwd
    return base / p


def repo_runs(*parts: str) -> Path:
    """Where notebooks write when no folder is given: ``$VINY_RUNS/<parts>`` if set, else
    ``runs/<parts>`` in the working directory, or in the project folder when the working
    directory is a project's ``notebooks/`` (as in JupyterLab). A notebook copied elsewhere
    writes beside itself, never into the installed package's checkout."""
    import os

    if os.environ.get("VINY_RUNS"):
        return Path(os.environ["VINY_RUNS"]).expanduser().joinpath(*parts)
    return project_path(Path("runs", *parts))


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
