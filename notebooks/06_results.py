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
# Reads the tidy table written by `viny grid` and draws the study's figures beside the
# paper's published numbers.

# %% tags=["parameters"]
grid_dir: str = ""  # the grid output folder (empty: runs/demo)
metric: str = "miou"
output_dir: str = ""

# %%
from pathlib import Path

import pandas as pd
from IPython.display import Markdown, display

from viny.figures import intermediate_delta, miou_vs_size, setup_charts
from viny.findings import findings, findings_markdown
from viny.paper import comparison_table
from viny.study import FILES, control_rows, finetune_rows
from viny.views import repo_runs, write_json

setup_charts()
grid = Path(grid_dir) if grid_dir else repo_runs("demo")
table = pd.read_parquet(grid / FILES["results"])
ft = finetune_rows(table, grid / FILES["results"])  # axes a grid leaves out take the notebook's defaults
display(ft.head())

# %%
miou_vs_size(ft, metric, control=control_rows(table))  # with the random-init control (timm init) when the grid has it

# %%
intermediate_delta(ft, metric)

# %% [markdown]
# ## Ours beside the paper's tables

# %%
display(comparison_table(ft))

# %% [markdown]
# ## Findings, computed from these results

# %%
verdicts = findings(table, grid)
write_json(Path(output_dir) / FILES["metrics"] if output_dir else grid / "findings.json", {r.claim: r.verdict for r in verdicts.itertuples()})
display(Markdown(findings_markdown(verdicts)))
