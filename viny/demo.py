"""``viny demo`` (what ``make demo`` runs): the study's grid at demo scale on the data
shipped in the repo, then the HTML report.

It runs ``params/demo.yaml`` (or ``params/smoke.yaml`` with ``--scale smoke``) through
:func:`viny.grid.run_grid`, builds ``<out>/report.html`` with :func:`viny.report.build_report`,
prints a table of the fine-tuning cells (mean ± std over seeds) and writes it as
``<out>/summary.csv``. Finished cells are reused, so a killed demo continues where it stopped.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from viny.files import atomic_path

__all__ = ["PARAMS", "run_demo", "summarize"]

PARAMS = Path(__file__).resolve().parents[1] / "params"


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds of each score, per (pretrain_images, intermediate, train_size)."""
    keys = ["pretrain_images", "intermediate", "train_size"]
    scores = ["miou", "pixel_accuracy", "paper_miou", "paper_pixel_accuracy"]
    g = results.groupby(keys)[scores]
    out = g.mean().add_suffix("_mean").join(g.std(ddof=1).add_suffix("_std")).join(g.size().rename("seeds"))
    return out.reset_index()


def _format(summary: pd.DataFrame) -> str:
    view = summary[["pretrain_images", "intermediate", "train_size", "seeds"]].copy()
    view["pretrain_images"] = view["pretrain_images"].astype(int)
    view["train_size"] = view["train_size"].astype(int)
    for s in ("miou", "pixel_accuracy"):
        view[s] = [f"{100 * m:.1f} ± {100 * (0 if pd.isna(sd) else sd):.1f}" for m, sd in zip(summary[f"{s}_mean"], summary[f"{s}_std"])]
    return view.to_string(index=False)


def run_demo(out: str | Path | None = None, scale: str = "demo", executor: str = "local", jobs: int = 1, progress: bool = True) -> Path:
    """Run (or finish) the demo grid and build its report; returns the report's path."""
    from viny.grid import load_grid, run_grid
    from viny.report import build_report

    grid = load_grid(PARAMS / f"{scale}.yaml", out)
    table = run_grid(grid, executor=executor, jobs=jobs, quiet=not progress)
    report = build_report(grid.out)
    ft = table[(table["study"] == "finetune") & (table["status"] == "done")]
    if len(ft):
        summary = summarize(ft)
        with atomic_path(grid.out / "summary.csv") as tmp:
            summary.to_csv(tmp, index=False)
        print(f"\nViNy {scale} grid: dataset-level mIoU and pixel accuracy in %, mean ± std over seeds:\n")
        print(_format(summary))
    failed = int((table["status"] == "failed").sum())
    if failed:
        print(f"\n{failed} cell(s) failed; see {grid.out / 'results.parquet'} and the cells' notebook.ipynb")
    print(f"\nreport: {report}")
    return report
