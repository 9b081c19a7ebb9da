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
# # 6. Results of the grid (paper Figs. 3-4, Tables 1, A2, A3)
# The paper's three findings, drawn from a grid's results beside its published numbers:
# SimMIM pre-training helps segmentation with diminishing returns in the number of
# pre-training images (Fig. 3); the intermediate CLS stage hurts (Fig. 4, Tables A2-A3); the
# gap closes as fine-tuning data grows (Table 1).
#
# As opened, it reads the reference results committed in the repo (`results/staged`: the
# study at staged scale, 3 seeds, made by `viny demo --scale staged`); set `grid_dir` to a
# grid's output folder (e.g. `runs/demo` after `make demo`) to read your own.

# %% tags=["parameters"]
grid_dir: str = "results/staged"  # a grid output folder, or a published one (results/staged)
metric: str = "miou"  # miou or pixel_accuracy (dataset-level); paper_miou, paper_pixel_accuracy (per image, the authors')
output_dir: str = ""

# %% [markdown]
# The finished fine-tuning cells, one row each (axes a grid leaves out take 04_finetune's defaults).

# %%
from IPython.display import Markdown, display

from viny.notebook import setup
from viny.results import control_rows, finetune_rows, read_results

nb = setup("results", globals())
table, grid = read_results(grid_dir)
ft = finetune_rows(table, grid)
display(ft.head())

# %% [markdown]
# ## Fig. 3: mIoU against fine-tuning images, per pre-training size
# Mean over seeds with the seeds' spread; grey diamonds are the paper's published numbers; the
# dashed line is the random-init control with small position embeddings (timm init) when the
# grid has it. Look at the gap between random init and the pre-trained encoders at the
# smallest size, and whether it narrows as the fine-tuning set grows.

# %%
from viny.figures import miou_vs_size

miou_vs_size(ft, metric, control=control_rows(table))

# %% [markdown]
# ## Fig. 4: what the intermediate CLS stage does
# mIoU with the CLS stage minus without it, paired by seed, per cell. Below zero: the stage hurt.

# %%
from viny.figures import intermediate_delta

intermediate_delta(ft, metric)

# %% [markdown]
# ## Ours beside the paper's tables (Tables 1, A2, A3)
# Where a cell has a counterpart in the paper, both numbers side by side. The scales differ
# (fewer images, epochs and test images here), so compare directions, not values.

# %%
from viny.paper import comparison_table

display(comparison_table(ft))

# %% [markdown]
# ## Findings, computed from these results
# Each of the paper's claims as a verdict with its paired interval over seeds: "holds",
# "does not hold" or "inconclusive" (the interval spans zero).

# %%
from viny.findings import findings, findings_markdown

verdicts = findings(table, grid)
nb.write_metrics({r.claim: r.verdict for r in verdicts.itertuples()})
display(Markdown(findings_markdown(verdicts)))

# %% [markdown]
# ## Beyond the paper: joint training, in-domain pre-training (issue #34)
# Two arms the paper leaves open, when the grid has them (`results/staged` does): fine-tuning
# with an auxiliary SimMIM loss (`aux_mim_weight`, chosen on validation images:
# `results/joint_weight`) against sequential fine-tuning from the same encoder, and the
# in-domain encoder (SimMIM on the 400 Pets images outside the test set) against Imagenette
# pre-training. Each row is a paired difference over seeds in mIoU points; "supported" means
# the new arm is better.

# %%
from viny.views import beyond_tables

for title, frame in beyond_tables(table):
    display(Markdown(f"**{title}**"), frame)

# %% [markdown]
# ## Which cheap score predicts fine-tuned mIoU?
# The selection study across encoders (`results/encoder_selection`, made by
# `benchmarks/encoder_selection.py`): every encoder of the staged grid scored without
# fine-tuning, against its fine-tuned mIoU. Rising panels: the score ranks the encoders like
# mIoU. The table gives Kendall's tau with its bootstrap interval, each score's pick and its
# regret against the best encoder.

# %%
from viny.views import encoder_selection_view

chart, summary = encoder_selection_view()
display(chart, summary)
