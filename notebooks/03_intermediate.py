# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: kernelspec,jupytext,-jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 3. Intermediate fine-tuning: CLS vs spatial supervision (paper Sec. 2.3, 4.2)
# From the same pre-trained encoder: a CLS classifier on Intel scenes (global supervision)
# and a per-patch classifier of majority trimap classes (spatial supervision). The heads
# are dropped afterwards; only the encoders go on.

# %% tags=["parameters"]
model: str = "viny"
pretrain_images: int = 9469  # 0: start from a random encoder
pretrain_epochs: int = 25  # 0 with pretrain_source shipped: each shipped encoder as its card says
pretrain_source: str = "shipped"  # shipped (viny/pretrained: 2368, 4734 or 9469 images) or train (here)
epochs: int = 10  # paper: 200 (Intel), 20 (diagnostic study)
lr: float = 0.0008  # intermediate learning rate (Table A1)
weight_decay: float = 0.0  # (Table A1)
intermediate_images: int = 0  # 0: all training images of the task
tasks: list = ["cls_intel", "spatial"]
test_size: int = 200  # Pets images held out (Pets-based tasks train on the rest)
seed: int = 0
data_root: str = ""  # folder with imagenet-subset/, intel-image-classification/, oxford-iiit-pet/ (empty: shipped)
store_dir: str = ""
output_dir: str = ""

# %%
from pathlib import Path

import pandas as pd
from IPython.display import display

from viny.data import load_pets
from viny.figures import colorize_trimap, loss_curve, panel, setup_charts
from viny.geometry import reference_patches
from viny.pipeline import upstream_encoder
from viny.pretrained import describe_encoder, pretraining_record
from viny.study import FILES
from viny.views import load_json, read_metrics_csv, repo_runs, similarity_maps, write_json
from viny.weights import load_encoder

setup_charts()
out = Path(output_dir) if output_dir else repo_runs("notebooks", "intermediate")
store = Path(store_dir) if store_dir else repo_runs("notebooks", "store")
options = {"epochs": epochs, "lr": lr, "weight_decay": weight_decay, "num_images": intermediate_images or None, "test_size": test_size}
common = dict(model=model, seed=seed, pretrain={"epochs": pretrain_epochs}, data_root=data_root or None, pretrain_source=pretrain_source)
paths = {"pre-trained": upstream_encoder(store, pretrain_images, "none", **common)}
for task in tasks:
    paths[task] = upstream_encoder(store, pretrain_images, task, intermediate_options=options, **common)
summary = pd.DataFrame([{"encoder": k, "source": describe_encoder(p),
                         **(pretraining_record(p)[0] if k == "pre-trained" else load_json(Path(p).parent / "results.json"))}
                        for k, p in paths.items() if p])
display(summary)

# %%
curves = pd.concat([read_metrics_csv(Path(paths[t]).parent, t) for t in tasks])
loss_curve(curves, "intermediate training loss")

# %% [markdown]
# ## Similarity to reference patches
# Cosine similarity of the background corner, a foreground patch and a boundary patch to
# every patch of one Pets image (colour: white = 1).

# %%
first = load_encoder(paths["pre-trained"]) if paths["pre-trained"] else None
size = (first.patch_embed.img_size[0] if first is not None else 128)
pets = load_pets(Path(data_root) if data_root else None, size=size, progress=False)
image, target = pets.arrays.images[0], pets.arrays.targets[0]
refs = reference_patches(target, 16)
rows = []
for name, p in paths.items():
    if p is None:
        continue
    maps = similarity_maps(load_encoder(p), image, refs)
    rows.append([image, colorize_trimap(target)] + [((m.clip(-0.5, 1) + 0.5) / 1.5)[..., None].repeat(3, -1).repeat(16, 0).repeat(16, 1) for m in maps.values()])
display(panel(rows, ["image", "trimap"] + list(refs)))
write_json(out / FILES["metrics"], {"tasks": tasks, "rows": summary.to_dict("records")})
