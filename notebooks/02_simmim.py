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
# # 2. SimMIM pre-training (paper Sec. 2.2, Fig. 2)
# Half of the 64 patches are replaced by a learned mask token; a linear decoder predicts
# their pixels; the loss is the L1 error on the masked patches.

# %% tags=["parameters"]
model: str = "viny"
pretrain_images: int = 9469  # images of the ImageNet folder (paper: 45k / 100k / 200k)
epochs: int = 25  # paper: 100
pretrain_source: str = "shipped"  # shipped (viny/pretrained: 2368, 4734 or 9469 images) or train (here)
seed: int = 0
data_root: str = ""  # folder holding imagenet-subset/train (empty: the shipped sample)
show_images: int = 4
store_dir: str = ""  # shared store of upstream runs (empty: runs/notebooks/store)
output_dir: str = ""  # empty: runs/notebooks/simmim

# %%
from pathlib import Path

from IPython.display import display

from viny.data import load_image_folder
from viny.figures import loss_curve, setup_charts
from viny.pipeline import upstream_encoder
from viny.pretrained import describe_encoder, pretraining_record
from viny.study import FILES
from viny.views import reconstruction_figure, repo_runs, write_json
from viny.weights import load_simmim

setup_charts()
out = Path(output_dir) if output_dir else repo_runs("notebooks", "simmim")
store = Path(store_dir) if store_dir else repo_runs("notebooks", "store")
encoder_path = upstream_encoder(store, pretrain_images, "none", model=model, seed=seed, pretrain={"epochs": epochs},
                                data_root=data_root or None, pretrain_source=pretrain_source)
results, curve, simmim_path = pretraining_record(encoder_path)
print(describe_encoder(encoder_path))
results

# %% [markdown]
# ## Loss curve

# %%
loss_curve(curve, "SimMIM masked L1 (training)")

# %% [markdown]
# ## Reconstructions (fixed masks, seed 0)

# %%
simmim = load_simmim(simmim_path)
size = simmim.encoder.patch_embed.img_size[0]
images = load_image_folder(Path(data_root) / "imagenet-subset" / "train" if data_root else None, size=size, progress=False).images
fig = reconstruction_figure(simmim, images[:show_images], seed=0)
out.mkdir(parents=True, exist_ok=True)
fig.save(out / FILES["reconstructions"])
display(fig)
write_json(out / "metrics.json", {"pretrain_images": pretrain_images, "epochs": epochs, "encoder_source": describe_encoder(encoder_path),
                                   **results})
