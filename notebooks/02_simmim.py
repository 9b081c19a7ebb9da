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
# The paper pre-trains ViNy with SimMIM: half of the 64 patches are replaced by a learned mask
# token, a linear decoder predicts their pixels, and the loss is the L1 error on the masked
# patches (Sec. 2.2, Table A1). Its claim (Fig. 3) is that this pays downstream, with
# diminishing returns as the number of pre-training images grows.
#
# As opened, this notebook takes the encoder shipped for `pretrain_images` as its model card
# says (`epochs = 0`; Run All takes well under a minute) and shows the curve measured along a
# re-run of its recipe. Set `pretrain_source = "train"` and `epochs` (e.g. 5 on
# `pretrain_images = 256`: a few minutes on 2 CPU cores) to pre-train here instead; the
# shipped 9k encoder took 100 epochs, hours on a CPU.

# %% tags=["parameters"]
model: str = "viny"
pretrain_images: int = 9469  # images of the ImageNet folder (paper: 45k / 100k / 200k; shipped: 2368, 4734, 9469)
epochs: int = 0  # pre-training epochs; 0 with pretrain_source shipped: the shipped encoder as its card says (paper: 100)
pretrain_source: str = "shipped"  # shipped (viny/pretrained) or train (here, in the store)
seed: int = 0  # seed of a pre-training run trained here (a shipped encoder has its card's)
data_root: str = ""  # folder holding imagenet-subset/train and intel-image-classification (empty: the shipped sample)
show_images: int = 4
curve_results: str = "results/along_pretraining/simmim_{pretrain_images}"  # a measured curve to show (downstream.csv, scores.csv); empty: none
curve_run: str = ""  # or a pre-training run folder with snapshots (--save-encoder-every): fine-tune from each here (replaces curve_results)
curve_sizes: list = [100, 250]  # fine-tuning images for the curve along pre-training
curve_seeds: int = 3
curve_epochs: int = 50  # fine-tuning epochs of each curve run
test_size: int = 198  # held-out Pets images for the curve (split nested)
store_dir: str = ""  # shared store of upstream runs (empty: runs/notebooks/store)
output_dir: str = ""  # empty: runs/notebooks/simmim

# %% [markdown]
# Set-up: check the chain these parameters ask for (a shipped size that does not exist, or
# epochs its card does not have, stop here with the parameter's name), then take the shipped
# encoder or pre-train it in the store. The table is the run's record: final training L1,
# the held-out reconstruction yardstick and where the encoder came from.

# %%
from IPython.display import display

from viny.figures import loss_curve
from viny.notebook import setup
from viny.pretrained import describe_encoder, pretraining_record

nb = setup("simmim", globals())
encoder_path = nb.encoder()
results, losses, simmim_path = pretraining_record(encoder_path)
print(describe_encoder(encoder_path))
results

# %% [markdown]
# ## Loss curve
# The masked-patch L1 on the training images, per epoch. Look for a steady fall that
# flattens: the LR steps at 50 % and 85 % of the schedule show as small kinks.

# %%
loss_curve(losses, "SimMIM masked L1 (training)")

# %% [markdown]
# ## Reconstructions (paper Fig. 2; fixed masks, seed 0)
# Original, masked input and reconstruction. SimMIM's linear decoder gives blurry but
# correctly coloured and placed patches; sharp detail is not the goal.

# %%
from viny.data import load_image_folder
from viny.views import reconstruction_figure
from viny.weights import load_simmim

simmim = load_simmim(simmim_path)
size = simmim.encoder.patch_embed.img_size[0]
images = load_image_folder(nb.data("imagenet"), size=size, progress=False).images
fig = reconstruction_figure(simmim, images[:show_images], seed=0)
fig.save(nb.path("reconstructions"))
display(fig)

# %% [markdown]
# ## Did it learn anything? The reconstruction yardstick
# The paper reports no held-out score for pre-training. Here: masked-patch L1 on held-out Intel
# `seg_test` images (never seen in pre-training), fixed masks, next to two predictors that
# learn nothing: each image's mean visible colour, and one mean colour for all. A ratio below
# 1 means the encoder learned more than colour means.

# %%
from viny.views import yardstick_table

yardstick, table = yardstick_table(simmim, nb.data("intel"), model=model)
display(table)

# %% [markdown]
# ## When does pre-training start to pay? (the paper's Fig. 3, along one run)
# Downstream mIoU after fine-tuning from snapshots taken along a pre-training run, with
# random init (dashed) at the same fine-tuning sizes, seeds and held-out images. As opened, it
# shows the curve measured by `benchmarks/along_pretraining.py` for this size (not rerun here);
# `curve_run` fine-tunes from a run's snapshots here instead (minutes per snapshot).

# %%
from viny.views import along_pretraining_curve

curve = along_pretraining_curve(nb.out, curve_run=curve_run, curve_results=curve_results, pretrain_images=pretrain_images, sizes=curve_sizes,
                                seeds=curve_seeds, epochs=curve_epochs, test_size=test_size, model=model, pets=nb.data("pets"), intel=nb.data("intel"))
print(curve.source or "no curve_run or curve_results given: pass a pre-training run folder with encoder snapshots, or a measured curve, to draw it")
curve.chart

# %% [markdown]
# ## Label-free checkpoint selection (DSE)
# The same snapshots scored without labels: does DSE (adaptive lambda) pick the snapshot that
# segments best, better than taking the last one or than effective rank? The verdicts are
# paired over seeds; "take the last" is the baseline every score must beat.

# %%
if curve.source:
    display(curve.selection_chart)
    display(curve.verdicts)

# %% [markdown]
# The record the grid joins into `results.parquet`.

# %%
nb.write_metrics({"pretrain_images": pretrain_images, "epochs": epochs or len(losses),
                  "encoder_source": describe_encoder(encoder_path), "curve_source": curve.source,
                  **results, "card_yardstick_ratio": results.get("yardstick_ratio"),  # the run's own held-out images
                  **{f"yardstick_{k}": v for k, v in yardstick.items()}})  # this notebook's held-out images
