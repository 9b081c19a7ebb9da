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
# # 4. Downstream segmentation fine-tuning (paper Sec. 2.4, Tables 1, A2, A3)
# One cell of the study's grid: an encoder (random, SimMIM pre-trained, optionally with an
# intermediate stage) fine-tuned on `train_size` Pets images with a per-patch linear head,
# scored on held-out images.

# %% tags=["parameters"]
model: str = "viny"
pretrain_images: int = 0  # 0: no pre-training
pretrain_epochs: int = 25  # 0 with pretrain_source shipped: each shipped encoder as its card says
pretrain_source: str = "shipped"  # shipped (viny/pretrained: 2368, 4734 or 9469 images) or train (here)
intermediate: str = "none"  # none, cls_intel, cls_pets, spatial
intermediate_epochs: int = 10
intermediate_images: int = 0  # 0: all
train_size: int = 100
test_size: int = 200
split: str = "nested"  # nested (fixed test set) or paper (authors random_split, seed 42)
epochs: int = 10  # paper: 100
lr: float = 0.002  # fine-tuning learning rate (Table A1)
weight_decay: float = 0.0001  # (Table A1)
init: str = "reference"  # random init (no pre-training): reference (authors' N(0,1) positions) or timm (std 0.02)
seed: int = 0
upstream_seed: int = -1  # seed of the pre-training and intermediate runs (-1: the same as seed)
precision: str = "auto"
data_root: str = ""
store_dir: str = ""
output_dir: str = ""

# %%
from pathlib import Path

from IPython.display import display

from viny.config import make_config
from viny.figures import loss_curve, setup_charts
from viny.pipeline import run_in_store, upstream_encoder
from viny.pretrained import describe_encoder, pretraining_record
from viny.study import FILES
from viny.views import load_json, read_metrics_csv, repo_runs, segmentation_examples, write_json

setup_charts()
out = Path(output_dir) if output_dir else repo_runs("notebooks", "finetune")
store = Path(store_dir) if store_dir else repo_runs("notebooks", "store")
upstream = dict(model=model, seed=seed if upstream_seed < 0 else upstream_seed, pretrain={"epochs": pretrain_epochs},
                intermediate_options={"epochs": intermediate_epochs, "num_images": intermediate_images or None, "test_size": test_size},
                data_root=data_root or None, pretrain_source=pretrain_source, init=init)
encoder = upstream_encoder(store, pretrain_images, intermediate, **upstream)
config = make_config("finetune", model=model, epochs=epochs, lr=lr, weight_decay=weight_decay, train_size=train_size, test_size=test_size, split=split,
                     seed=seed, precision=precision, data=data_root or None, **({"init_from": encoder} if encoder else {"init": init}))
run = run_in_store(config, out / "runs")
results = load_json(run / "results.json")
# the pre-training's held-out reconstruction yardstick, for the report's Encoders table
pretrained = pretraining_record(upstream_encoder(store, pretrain_images, "none", **upstream))[0] if pretrain_images else {}
write_json(out / FILES["metrics"], {**results, "encoder_source": describe_encoder(encoder) + ("" if encoder or init == "reference" else f" ({init} init)"),
                                   "pretraining_yardstick_ratio": pretrained.get("yardstick_ratio")})
results

# %%
loss_curve(read_metrics_csv(run), "fine-tuning loss")

# %% [markdown]
# ## Segmentation examples (Fig. A1 / A2): image, ground truth, prediction

# %%
fig = segmentation_examples(run, n=3)
fig.save(out / FILES["segmentation"])
display(fig)
