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
# The paper inserts an optional supervised stage between pre-training and the downstream
# task: CLS classification of Intel scenes (6 classes, Sec. 2.3). Its finding (Sec. 4.2) is
# that this stage *hurts* segmentation, and its explanation is the geometry of the
# supervision: a global CLS objective pulls the patch tokens together, where a patch-aligned
# ("spatial") objective would keep them apart. This notebook trains both stages from the same
# pre-trained encoder; the heads are dropped afterwards and only the encoders go on.
#
# As opened: the shipped 9k encoder, each stage for 3 epochs on the shipped sample (about
# 3 minutes on 2 CPU cores). The paper trains the Intel stage for 200 epochs and its diagnostic
# study for 20; `epochs = 20` here takes about 15 minutes and gives clearer maps.

# %% tags=["parameters"]
model: str = "viny"
pretrain_images: int = 9469  # 0: start from a random encoder
pretrain_epochs: int = 0  # 0 with pretrain_source shipped: the shipped encoder as its card says
pretrain_source: str = "shipped"  # shipped (viny/pretrained: 2368, 4734 or 9469 images) or train (here)
epochs: int = 3  # intermediate epochs (paper: 200 on Intel; 20 in its diagnostic study)
lr: float = 0.0008  # intermediate learning rate (Table A1)
weight_decay: float = 0.0  # (Table A1)
intermediate_images: int = 0  # 0: all training images of the task
tasks: list = ["cls_intel", "spatial"]  # cls_intel, cls_pets, spatial, spatial_intel
test_size: int = 200  # Pets images held out (Pets-based tasks train on the rest)
seed: int = 0
data_root: str = ""  # folder with imagenet-subset/, intel-image-classification/, oxford-iiit-pet/ (empty: shipped)
store_dir: str = ""
output_dir: str = ""

# %% [markdown]
# Set-up and training: one chain per task, from the same pre-trained encoder (the store keeps
# each run, so 04 and 05 reuse them with the same settings). The table lists each encoder's
# source and the stage's held-out scores (accuracy on Intel `seg_test`, or on the held-out
# Pets patches for `spatial`).

# %%
from IPython.display import display

from viny.notebook import setup
from viny.views import encoder_summary

nb = setup("intermediate", globals())
paths = {"pre-trained" if c.intermediate == "none" else c.intermediate: nb.encoder(c) for c in nb.chains}
summary = encoder_summary(paths)
display(summary)

# %% [markdown]
# ## Training loss of each stage
# Both heads should learn (falling loss) within these epochs; a flat curve means the stage
# had too few epochs to move the encoder, and the maps below will look like the pre-trained one.

# %%
from viny.figures import loss_curve
from viny.views import stage_losses

loss_curve(stage_losses(paths, tasks), "intermediate training loss")

# %% [markdown]
# ## Similarity to reference patches (paper Fig. 6, one image)
# Cosine similarity of a background corner, a foreground patch and a boundary patch to every
# patch of one Pets image, one row per encoder in the order of the table above
# (white = 1, black = -0.5). The paper's claim: after the CLS stage the maps wash out (every
# patch looks like every other), while spatial supervision keeps foreground and background apart.

# %%
from viny.views import reference_similarity_figure

display(reference_similarity_figure(paths, nb.data("root")))
nb.write_metrics({"tasks": tasks, "rows": summary.to_dict("records")})
