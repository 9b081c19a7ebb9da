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
# # 5. Geometry of patch representations (paper Sec. 4.2, Table 2, Figs. 5-6)
# The same held-out Pets images through several encoders: random, SimMIM pre-trained, and the
# pre-trained encoder after CLS supervision on Intel, CLS on Pets breeds, spatial (per-patch
# trimap) supervision on Pets, or label-free spatial supervision on the Intel images
# themselves (per-patch cluster targets: same data as CLS-Intel, different supervision
# geometry). Variances, a held-out linear patch probe, DSE, similarity vs distance, heatmaps.

# %% tags=["parameters"]
model: str = "viny"
pretrain_images: int = 9469
pretrain_epochs: int = 25  # 0 with pretrain_source shipped: each shipped encoder as its card says
pretrain_source: str = "shipped"  # shipped (viny/pretrained) or train (here)
intermediate_epochs: int = 10  # the paper diagnostic study: 20
intermediate_images: int = 0
num_images: int = 2000  # Pets images for the diagnostics (the shipped sample has 598)
dse_images: int = 512
layers: str = "final"  # final or all
intermediates: list = ["cls_intel", "cls_pets", "spatial", "spatial_intel"]
live_explorer: bool = True  # the ipywidgets explorer (grids turn it off: it needs a person)
heatmap_images: int = 3
test_size: int = 200  # Pets images held out from the Pets-based intermediate tasks
seed: int = 0
data_root: str = ""
store_dir: str = ""
output_dir: str = ""

# %%
from pathlib import Path

from IPython.display import display

from viny.diagnostics import compare_encoders, diagnostic_images
from viny.figures import cosine_chart, heatmap_explorer, setup_charts
from viny.pipeline import upstream_encoder
from viny.registry import create_encoder
from viny.study import FILES, RANDOM_INIT, encoder_label
from viny.views import heatmap_data, repo_runs, write_json
from viny.weights import load_encoder

setup_charts()
out = Path(output_dir) if output_dir else repo_runs("notebooks", "geometry")
out.mkdir(parents=True, exist_ok=True)
store = Path(store_dir) if store_dir else repo_runs("notebooks", "store")
common = dict(model=model, seed=seed, pretrain={"epochs": pretrain_epochs}, data_root=data_root or None, pretrain_source=pretrain_source,
              intermediate_options={"epochs": intermediate_epochs, "num_images": intermediate_images or None, "test_size": test_size})
encoders = {RANDOM_INIT: create_encoder(model)}
for task in ["none", *intermediates]:
    encoders[encoder_label(task)] = load_encoder(upstream_encoder(store, pretrain_images, task, **common))
size = encoders[RANDOM_INIT].patch_embed.img_size[0]
data = diagnostic_images(data_root or None, num_images, size=size, seed=seed)

# %% [markdown]
# ## Table 2: variances, patch probe, DSE
# `probe_accuracy` is scored on held-out images; `probe_train_accuracy_authors` is the
# authors' number (accuracy during the probe's last training epoch).

# %%
table, cosine = compare_encoders(encoders, data, layers, dse_images, seed=seed)
table.to_csv(out / FILES["geometry"], index=False)
cosine.to_csv(out / FILES["cosine"], index=False)
write_json(out / FILES["metrics"], {"table": table.to_dict("records"), "images": len(data.images)})
display(table)

# %% [markdown]
# ## Fig. 5: similarity vs distance (dashed: the cross-image control)

# %%
cosine_chart(cosine[cosine["layer"] == cosine["layer"].max()])

# %% [markdown]
# ## Fig. 6: similarity heatmaps. Click a patch on the left: every encoder's map updates.

# %%
held_out = [i for i in range(len(data.images)) if not data.probe_train[i]][:heatmap_images]
sims, uris, refs = heatmap_data(encoders, data.images[held_out], data.targets[held_out])
sims.to_parquet(out / FILES["heatmaps"])
write_json(out / FILES["heatmap_images"], {"images": uris, "references": refs})
heatmap_explorer(sims, uris, tuple(encoders[RANDOM_INIT].grid_size), default_patch=refs["image 1"]["foreground"])

# %% [markdown]
# ## Live explorer (needs a running kernel)

# %%
import ipywidgets as W

from viny.views import similarity_maps, similarity_panel


def show(image=0, encoder=list(encoders)[1], layer=len(encoders[RANDOM_INIT].blocks), patch=int(refs["image 1"]["foreground"])):
    i = held_out[image]
    m = similarity_maps(encoders[encoder], data.images[i], {"patch": patch}, layer)["patch"]
    display(similarity_panel(data.images[i], data.targets[i], m, patch))


if live_explorer:
    depth = len(encoders[RANDOM_INIT].blocks)
    n_patches = encoders[RANDOM_INIT].patch_embed.num_patches
    wide = dict(layout=W.Layout(width="max-content"), style={"description_width": "initial"})
    W.interact(show, image=W.IntSlider(0, 0, len(held_out) - 1), encoder=W.Dropdown(options=list(encoders), **wide),
               layer=W.IntSlider(depth, 1, depth), patch=W.IntSlider(int(refs["image 1"]["foreground"]), 0, n_patches - 1))
