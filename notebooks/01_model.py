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
# A Vision Transformer with image 128, patch 16 (an 8x8 grid of 64 patch tokens plus CLS),
# width 128, depth 12, 8 heads of dimension 64 and an MLP of 512: 4,842,880 parameters.

# %% tags=["parameters"]
model: str = "viny"  # viny (the paper) or viny_test (tiny)
image_index: int = 0  # which shipped Pets image to look at
attention_block: int = 11  # block whose CLS attention is shown (0-based)
output_dir: str = ""  # empty: runs/notebooks/model

# %%
import altair as alt
import pandas as pd
from IPython.display import display

import viny
from viny.data import load_pets
from viny.figures import panel, setup_charts
from viny.study import FILES
from viny.views import attention_maps, parameter_table, patch_grid_image, repo_runs, write_json

out = __import__("pathlib").Path(output_dir) if output_dir else repo_runs("notebooks", "model")
setup_charts()
encoder = viny.create_encoder(model).eval()
pets = load_pets(size=encoder.patch_embed.img_size[0], progress=False)
image = pets.arrays.images[image_index]

# %% [markdown]
# ## Where the parameters are

# %%
table = parameter_table(encoder)
display(table)
write_json(out / FILES["metrics"], {"parameters": int(table["parameters"].iloc[-1]), "model": model})

# %% [markdown]
# ## Patchify: what the encoder sees
# Each 16x16 patch is flattened pixel-major (channels innermost), normalised, projected
# to 128 dimensions and given a learned position.

# %%
display(panel([[patch_grid_image(image, encoder.patch_size, scale=2)]], [f"{len(encoder.pos_embed[0]) - 1} patches"]))

# %% [markdown]
# ## Attention of the CLS token (randomly initialised encoder)
# One map per head, in the chosen block: how much CLS attends to each patch.

# %%
maps = attention_maps(encoder, image, attention_block)
df = pd.DataFrame([{"head": h, "row": r, "col": c, "attention": float(maps[h, r, c])}
                   for h in range(maps.shape[0]) for r in range(maps.shape[1]) for c in range(maps.shape[2])])
alt.Chart(df).mark_rect().encode(
    x=alt.X("col:O", axis=None), y=alt.Y("row:O", axis=None), color=alt.Color("attention:Q", scale=alt.Scale(scheme="magma")),
).properties(width=90, height=90).facet(column="head:O")
