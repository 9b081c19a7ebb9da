"""A grid's results table, read: the finished cells of a study, the fine-tuning cells with
the axes a grid left out filled in from the upstream chain's defaults, and
:func:`read_results` for a grid's output folder or a published one (``results/staged``).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from viny.errors import VinyError
from viny.files import project_path
from viny.study import CONTROL, FILES, FINETUNE

__all__ = ["finetune_defaults", "study_rows", "finetune_rows", "control_rows", "read_results"]


def finetune_defaults() -> dict:
    """What a fine-tuning cell means when its grid does not set an axis: the upstream chain's
    defaults (:class:`viny.upstream.Upstream`, which 04_finetune's parameters match) and seed 0."""
    from viny.upstream import chain_defaults

    d = chain_defaults()
    return {"pretrain_images": d["pretrain_images"], "intermediate": d["intermediate"], "init": d["init"], "seed": 0}


def study_rows(table: pd.DataFrame, study: str) -> pd.DataFrame:
    """The finished cells of one study in a grid's results table."""
    if "study" not in table or "status" not in table:
        return table.iloc[0:0]
    return table[(table["study"] == study) & (table["status"] == "done")]


def finetune_rows(table: pd.DataFrame, source: str | Path | None = None) -> pd.DataFrame:
    """The finished fine-tuning cells, with the axes a grid left out filled with the notebook's defaults.
    With ``source`` (the results file ``table`` was read from) there must be some: a clear error otherwise."""
    ft = study_rows(table, FINETUNE).copy()
    if source is not None and ft.empty:
        raise VinyError(f"{source} has no finished {FINETUNE} cells: run the grid's {FINETUNE} study first "
                        f"(viny grid PARAMS; --status lists what is done)")
    for col, value in finetune_defaults().items():
        ft[col] = ft[col].fillna(value) if col in ft else value
    return ft


def control_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The finished cells of the random-init control (``init: timm``, no pre-training)."""
    return study_rows(table, CONTROL)


def read_results(folder: str | Path) -> tuple[pd.DataFrame, Path]:
    """``(results table, folder)`` of a grid's output folder or a published one
    (``results/staged``), with each cell's ``output_dir`` as a path on this machine
    (a published table names its cells relative to its folder). A relative ``folder`` is
    taken from the project folder inside ``notebooks/`` (:func:`viny.files.project_path`)."""
    folder = project_path(folder)
    path = folder / FILES["results"]
    if not path.is_file():
        raise VinyError(f"{folder} has no {FILES['results']}: run a grid there first (viny grid PARAMS.yaml, or make demo for runs/demo), "
                        f"or read the reference results in results/staged")
    try:
        table = pd.read_parquet(path)
    except Exception as e:  # pyarrow raises several kinds on a truncated or foreign file
        raise VinyError(f"{path} cannot be read ({type(e).__name__}: {e}); run its grid again to rewrite it "
                        "(viny grid PARAMS.yaml: finished cells are kept; viny demo --no-run for a demo)") from None
    if "output_dir" in table:
        table["output_dir"] = [d if d is None or Path(str(d)).is_absolute() else str(folder / str(d)) for d in table["output_dir"]]
    return table, folder
