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
# The paper explains its results by the geometry of the patch tokens: SimMIM pre-training
# spreads them out and keeps neighbours similar, while the CLS intermediate stage collapses
# them (lower patch-token variance, flatter similarity-vs-distance, washed-out heatmaps;
# Table 2, Figs. 5-6). This notebook measures that on the same Pets images for several
# encoders: random, SimMIM pre-trained, and the pre-trained encoder after each intermediate stage.
#
# As opened: the shipped 9k encoder and two stages (CLS on Intel, spatial on Pets) of 3 epochs
# each on the shipped sample, the same runs 03 trains (reused from the store when 03 ran first);
# about 4 minutes on 2 CPU cores the first time. The paper's diagnostic study trains each stage
# for 20 epochs (`intermediate_epochs = 20`) and adds CLS on Pets breeds and a label-free
# spatial stage on Intel (`intermediates`, below): about 30 minutes.

# %% tags=["parameters"]
model: str = "viny"
pretrain_images: int = 9469
pretrain_epochs: int = 0  # 0 with pretrain_source shipped: the shipped encoder as its card says
pretrain_source: str = "shipped"  # shipped (viny/pretrained) or train (here)
intermediate_epochs: int = 3  # the paper's diagnostic study: 20
intermediate_images: int = 0
num_images: int = 2000  # Pets images for the diagnostics (the shipped sample has 598)
dse_images: int = 512
layers: str = "final"  # final or all
intermediates: list = ["cls_intel", "spatial"]  # also: cls_pets, spatial_intel
live_explorer: bool = True  # the ipywidgets explorer (grids turn it off: it needs a person)
heatmap_images: int = 3
test_size: int = 200  # Pets images held out from the Pets-based intermediate tasks
seed: int = 0
data_root: str = ""
store_dir: str = ""
output_dir: str = ""

# %% [markdown]
# Set-up: the encoders (random init, the pre-trained one, one per intermediate stage; each
# taken from the store or trained there) and the diagnostic Pets images, split into a part
# that trains the patch probe and a held-out part that scores it.

# %%
from IPython.display import display

from viny.diagnostics import diagnostic_images
from viny.notebook import setup
from viny.views import geometry_encoders

nb = setup("geometry", globals())
encoders = geometry_encoders(nb)
data = diagnostic_images(nb.data("root"), num_images, size=encoders.image_size, seed=seed)

# %% [markdown]
# ## Table 2: variances, patch probe, DSE
# Per encoder: patch-token variance (total, and its within-image and between-image parts),
# the accuracy of a linear probe of each patch's trimap class (scored on held-out images;
# `probe_train_accuracy_authors` is the authors' number, accuracy during the probe's last
# training epoch), and DSE. The paper's claim: the CLS stage lowers the within-image variance
# and the probe accuracy; SimMIM raises both over random init.

# %%
from viny.diagnostics import compare_encoders

table, cosine = compare_encoders(encoders.models, data, layers, dse_images, seed=seed)
table.to_csv(nb.path("geometry"), index=False)
cosine.to_csv(nb.path("cosine"), index=False)
nb.write_metrics({"table": table.to_dict("records"), "images": len(data.images)})
display(table)

# %% [markdown]
# ## Fig. 5: similarity vs distance
# Mean cosine similarity of two patch tokens of one image against their distance on the 8x8
# grid (dashed: pairs from different images, the control). A curve that falls with distance
# means local structure; a flat curve high above the control means collapsed tokens.

# %%
from viny.figures import cosine_chart

cosine_chart(cosine[cosine["layer"] == cosine["layer"].max()])

# %% [markdown]
# ## Fig. 6: similarity heatmaps
# Click a patch on the left: every encoder's map of cosine similarity to that patch updates
# (fixed [-0.5, 1] scale, as in the paper). Look for the animal's outline in the pre-trained
# and spatial encoders' maps, and for its loss after the CLS stage.

# %%
from viny.figures import heatmap_explorer
from viny.views import heatmap_figure_data

held_out, sims, uris, refs = heatmap_figure_data(encoders.models, data, heatmap_images, nb)
heatmap_explorer(sims, uris, encoders.grid, default_patch=refs["image 1"]["foreground"])

# %% [markdown]
# ## Live explorer (needs a running kernel)
# Any image, encoder, layer and patch, computed on demand; a grid run turns it off.

# %%
if live_explorer:
    from viny.views import live_similarity_explorer

    live_similarity_explorer(encoders.models, data, held_out, refs)
