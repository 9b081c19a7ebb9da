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
# # 1. ViNy: the model (paper Sec. 2.1)
# The paper's encoder is a deliberately tiny Vision Transformer: image 128, patch 16 (an 8x8
# grid of 64 patch tokens plus CLS), width 128, depth 12, 8 heads of dimension 64 and an MLP
# of 512, **4,842,880 parameters** (Sec. 2.1). This notebook builds it and shows what it sees.
# Run All takes a few seconds; nothing is trained.

# %% tags=["parameters"]
model: str = "viny"  # viny (the paper) or viny_test (tiny)
image_index: int = 0  # which shipped Pets image to look at
attention_block: int = 11  # block whose CLS attention is shown (0-based)
output_dir: str = ""  # empty: runs/notebooks/model

# %% [markdown]
# Set-up: the output folder, the randomly initialised encoder and one Pets image from the
# sample shipped in the repo.

# %%
from IPython.display import display

import viny
from viny.data import load_pets
from viny.figures import attention_chart, panel
from viny.notebook import setup
from viny.views import attention_maps, parameter_table, patch_grid_image

nb = setup("model", globals())
encoder = viny.create_encoder(model).eval()
pets = load_pets(size=encoder.patch_embed.img_size[0], progress=False)
image = pets.arrays.images[image_index]

# %% [markdown]
# ## Where the parameters are
# The paper gives the total only. The table splits it: almost all of it sits in the twelve
# blocks (attention and MLP); the patch embedding and the 65 position embeddings are small.
# Look at the last row: it must read 4,842,880 for `model = "viny"`.

# %%
table = parameter_table(encoder)
display(table)
nb.write_metrics({"parameters": int(table["parameters"].iloc[-1]), "model": model})

# %% [markdown]
# ## Patchify: what the encoder sees
# Each 16x16 patch is flattened pixel-major (channels innermost), normalised, projected to
# 128 dimensions and given a learned position. The grid drawn on the image is the 8x8 token
# grid that every later figure (similarity maps, per-patch labels) is drawn on.

# %%
display(panel([[patch_grid_image(image, encoder.patch_size, scale=2)]], [f"{len(encoder.pos_embed[0]) - 1} patches"]))

# %% [markdown]
# ## Attention of the CLS token (randomly initialised encoder)
# One map per head in the chosen block: how much CLS attends to each patch. With random
# weights the maps carry no object structure yet; compare them with a pre-trained encoder
# (`viny.load_pretrained("simmim_imagenette9k")`) to see what pre-training adds.

# %%
attention_chart(attention_maps(encoder, image, attention_block))
