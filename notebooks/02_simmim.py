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
epochs: int = 25  # paper: 100; 0 with pretrain_source shipped: the shipped encoder as its card says
pretrain_source: str = "shipped"  # shipped (viny/pretrained: 2368, 4734 or 9469 images) or train (here)
seed: int = 0
data_root: str = ""  # folder holding imagenet-subset/train (empty: the shipped sample)
show_images: int = 4
curve_run: str = ""  # a pre-training run folder with snapshots (--save-encoder-every): fine-tune from each (empty: skip)
curve_results: str = ""  # or a measured curve to show: a folder with downstream.csv and scores.csv (benchmarks/along_pretraining.py), e.g. results/along_pretraining/simmim_9469 or .../simmim_{pretrain_images}
curve_sizes: list = [100, 250]  # fine-tuning images for the curve along pre-training
curve_seeds: int = 3
curve_epochs: int = 50  # fine-tuning epochs of each curve run
test_size: int = 198  # held-out Pets images for the curve (split nested)
store_dir: str = ""  # shared store of upstream runs (empty: runs/notebooks/store)
output_dir: str = ""  # empty: runs/notebooks/simmim

# %%
from pathlib import Path

import pandas as pd
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

# %% [markdown]
# ## Did it learn anything? The reconstruction yardstick
# Masked-patch L1 on held-out Intel `seg_test` images (never seen in pre-training), fixed
# masks, next to two predictors that learn nothing: each image's mean visible colour, and
# one mean colour for all. A ratio below 1 means the encoder learned more than colour means.

# %%
from viny.config import make_config
from viny.data import augment as A
from viny.simmim import reconstruction_yardstick
from viny.tasks import heldout_images

intel = str(Path(data_root) / "intel-image-classification") if data_root else None
held = A.normalize(A.to_float(heldout_images(make_config("pretrain", model=model), intel)))
yardstick = reconstruction_yardstick(simmim, held)
display(pd.DataFrame([{"predictor": "this encoder", "masked L1": yardstick["l1"]},
                      {"predictor": "mean visible colour of each image", "masked L1": yardstick["mean_colour_l1"]},
                      {"predictor": "one mean colour for all", "masked L1": yardstick["dataset_mean_l1"]}]))
print(f"ratio to the mean-colour predictor: {yardstick['ratio']:.3f} on {yardstick['images']} held-out images")

# %% [markdown]
# ## When does pre-training start to pay?
# Downstream mIoU after fine-tuning from snapshots taken along a pre-training run, with
# random init (dashed) at the same fine-tuning sizes, seeds and held-out images.

# %%
from viny.figures import pretraining_curve
from viny.selection import curve_folder, downstream_along_pretraining, read_along_pretraining
from viny.views import project_path

curve_source = ""
if curve_run and curve_results:
    raise ValueError("give curve_run (fine-tune from its snapshots here) or curve_results (show a measured curve), not both")
if curve_results:
    curve_results = curve_folder(curve_results, pretrain_images)
    runs, measured_scores = read_along_pretraining(project_path(curve_results))
    curve_source = f"measured by benchmarks/along_pretraining.py, {curve_results} (not rerun here)"
elif curve_run:
    pets = str(Path(data_root) / "oxford-iiit-pet") if data_root else None
    runs = downstream_along_pretraining(curve_run, out / "curve", curve_sizes, range(curve_seeds), epochs=curve_epochs,
                                        test_size=test_size, split="nested", data=pets, model=model)
    curve_source = f"run {Path(curve_run).name}, fine-tuned here"
if curve_source:
    runs.to_csv(out / FILES["pretraining_curve"], index=False)
    print(curve_source)
    display(pretraining_curve(runs))
else:
    print("no curve_run or curve_results given: pass a pre-training run folder with encoder snapshots, or a measured curve, to draw it")

# %% [markdown]
# ## Label-free checkpoint selection (DSE)
# The same snapshots scored without labels: does DSE (adaptive lambda) pick the one that
# segments best, better than taking the last one or than effective rank?

# %%
from viny.diagnostics import diagnostic_images
from viny.figures import selection_chart
from viny.selection import label_free_scores, selection_verdicts

if curve_source:
    scores = measured_scores if curve_results else label_free_scores(curve_run, diagnostic_images(pets, 600, size=size), held)
    scores.to_csv(out / FILES["selection_scores"], index=False)
    sizes = sorted(int(n) for n in runs["train_size"].unique())
    display(selection_chart(scores, runs, sizes[0]))
    display(pd.concat([selection_verdicts(scores, runs, n) for n in sizes], ignore_index=True))

# %%
write_json(out / FILES["metrics"], {"pretrain_images": pretrain_images, "epochs": epochs or len(curve), "encoder_source": describe_encoder(encoder_path),
                                   "curve_source": curve_source,
                                   **results, **{f"yardstick_{k}": v for k, v in yardstick.items()}})
