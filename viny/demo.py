"""``viny demo`` (what ``make demo`` runs): the study's grid at demo scale on the data
shipped in the repo, then the HTML report.

It runs ``params/demo.yaml`` (``--scale smoke``: ``params/smoke.yaml``; ``--scale staged``:
``params/staged.yaml``, the reference results, which needs ``--data-root``) through
:func:`viny.grid.run_grid`, builds ``<out>/report.html`` with :func:`viny.report.build_report`,
prints a table of the fine-tuning cells (mean ± std over seeds) and writes it as
``<out>/summary.csv``. Finished cells are reused, so a killed demo continues where it stopped.
``--publish DIR`` copies the report and the results tables into ``DIR`` (how
``results/staged`` is made: :func:`publish`), and the finished cells' own files into
``DIR/cells`` (:func:`viny.grid.export_cells`); a later ``--publish DIR`` on another machine
takes those cells as done (:func:`viny.grid.import_cells`) and runs only the rest, and
``--no-run`` publishes what is finished without running anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from viny.data.datasets import DATA_FOLDERS, check_data_root
from viny.errors import VinyError
from viny.files import atomic_path, check_writable
from viny.results import finetune_rows
from viny.study import FILES

__all__ = ["PARAMS", "run_demo", "summarize", "publish", "check_data_root"]

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


PUBLISHED_CELLS = "cells"  # folder of a publication holding its finished cells' own files

# published columns of the results table (paths and papermill internals are left out)
_PUBLISHED = ["study", "cell", "status", "pretrain_images", "intermediate", "train_size", "test_size", "seed", "epochs", "pretrain_epochs",
              "intermediate_epochs", "miou", "pixel_accuracy", "paper_miou", "paper_pixel_accuracy", "encoder_source", "seconds"]


def published_table(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` (a grid's results) as published: each cell's folder relative to the
    publication (``cells/<study>/<cell>``), the notebook by its name in the repo, the data
    root as ``<DATA>``, so that the table names no path of the machine that ran it."""
    out = table.copy()
    if "output_dir" in out:
        out["output_dir"] = [f"{PUBLISHED_CELLS}/{s}/{c}" for s, c in zip(out["study"], out["cell"])]
    if "notebook" in out:
        out["notebook"] = [None if n is None else f"notebooks/{Path(str(n)).name}" for n in out["notebook"]]
    if "data_root" in out:
        out["data_root"] = [d if not d else "<DATA>" for d in out["data_root"]]
    if "error" in out:
        out["error"] = [None if e is None or (isinstance(e, float) and e != e) else str(e).splitlines()[-1][:300] for e in out["error"]]
    return out


def publish(grid_out: str | Path, dest: str | Path, command: str = "") -> Path:
    """Copy a finished grid's report and results into ``dest``: ``report.html``,
    ``results.csv`` (one row per cell), ``summary.csv`` and ``README.md``."""
    import shutil

    from viny.files import atomic_write_text
    from viny.findings import findings, findings_markdown, format_interval, indomain_vs_imagenette, joint_vs_sequential, position_prior, pretraining_gain
    from viny.report import _git_commit, selection_across_cells
    from viny.selection import across_runs_markdown, verdict_counts

    grid_out, dest = Path(grid_out), Path(dest)
    commit = _git_commit(Path(__file__).resolve().parents[1])  # before writing: the files below would make the tree dirty
    if not (grid_out / "report.html").is_file():
        raise VinyError(f"{grid_out} has no report.html to publish; run the grid and `viny report` first")
    dest.mkdir(parents=True, exist_ok=True)
    table = pd.read_parquet(grid_out / "results.parquet")
    with atomic_path(dest / "results.csv") as tmp:
        table[[c for c in _PUBLISHED if c in table]].to_csv(tmp, index=False)
    # the whole table for `viny report DEST` and 06_results, its cells named relative to DEST (no machine paths)
    with atomic_path(dest / FILES["results"]) as tmp:
        published_table(table).to_parquet(tmp, index=False)
    for name in ("report.html", "summary.csv"):
        if (grid_out / name).is_symlink() or (dest / name).is_symlink():
            raise VinyError(f"{grid_out / name if (grid_out / name).is_symlink() else dest / name} is a symbolic link; "
                            "publishing copies regular files only: replace the link by the file, or delete it")
        if (grid_out / name).is_file():
            with atomic_path(dest / name) as tmp:
                shutil.copyfile(grid_out / name, tmp)
    done = table["status"].eq("done").sum()
    needed = {"study", "output_dir", "pretrain_images", "intermediate", "train_size", "seed"}
    judged = needed <= set(table) and len(finetune_rows(table)) > 0
    verdicts = findings_markdown(findings(table, grid_out)) if judged else "(this grid has no finished fine-tuning cell to judge)"
    extra = ""
    if judged:
        gain, prior = pretraining_gain(table), position_prior(table)
        if len(gain):
            extra += ("\n## Pre-training gain over random init\n\nmIoU points, encoder (no intermediate stage) minus random init, "
                      "paired by seed, 95 % t interval:\n\n| pre-training images | fine-tuning images | gain | verdict |\n|---|---|---|---|\n"
                      + "".join(f"| {r.pretrain_images:,} | {r.train_size} | {format_interval(r._asdict())} | {r.verdict} |\n" for r in gain.itertuples()))
        if len(prior):
            extra += ("\n## Baseline control\n\nRandom init (the authors' N(0,1) position embeddings) minus the control (timm init, "
                      "positions with std 0.02), mIoU points, paired by seed:\n\n| fine-tuning images | difference | verdict |\n|---|---|---|\n"
                      + "".join(f"| {r.train_size} | {format_interval(r._asdict())} | {r.verdict} |\n" for r in prior.itertuples()))
        joint, dom = joint_vs_sequential(table), indomain_vs_imagenette(table)
        if len(joint):
            extra += ("\n## Beyond the paper: joint training\n\nFine-tuning with the auxiliary SimMIM loss (weight W, chosen on validation "
                      "images: results/joint_weight) minus sequential fine-tuning (the finetune study's cell, same pre-training, size and seed), "
                      "mIoU points, paired by seed:\n\n| pre-training images | fine-tuning images | W | difference | verdict |\n|---|---|---|---|---|\n"
                      + "".join(f"| {r.pretrain_images:,} | {r.train_size} | {r.aux_mim_weight} | {format_interval(r._asdict())} | {r.verdict} |\n"
                                for r in joint.itertuples()))
        if len(dom):
            extra += ("\n## Beyond the paper: in-domain pre-training\n\nFine-tuning from the shipped simmim_pets400 (SimMIM on the 400 Pets "
                      "images outside the test set) minus Imagenette pre-training, mIoU points, paired by seed (nearest steps: the 2.4k run's "
                      "snapshot closest in image-steps, its fine-tunes from results/along_pretraining/simmim_2368):\n\n| comparison | Imagenette "
                      "encoder | image-steps (in-domain vs Imagenette) | fine-tuning images | fine-tuning epochs | difference | verdict |\n"
                      "|---|---|---|---|---|---|---|\n"
                      + "".join(f"| {r.comparison} | {r.reference} | {r.indomain_steps:,} vs {r.imagenette_steps:,} | {r.train_size} | "
                                f"{r.finetune_epochs} | {format_interval(r._asdict())} | {r.verdict} |\n" for r in dom.itertuples()))
    across = selection_across_cells(table)
    if len(across):
        extra += ("\n## Label-free checkpoint selection along pre-training\n\nFor each measured curve (the SimMIM study): the snapshot "
                  "each label-free score picks, its regret (mIoU points against the run's best snapshot, mean over seeds) and "
                  "Kendall's tau with mIoU (bootstrap 95 % interval); the verdicts, paired over seeds, counted over the (run, "
                  "fine-tuning size) pairs:\n\n" + "".join(f"- {line}\n" for line in verdict_counts(across)) + "\n"
                  + across_runs_markdown(across) + "\n")
    atomic_write_text(dest / "README.md", f"""# Reference results: {grid_out.name}

Made by `{command or 'viny demo --scale ' + grid_out.name + ' --data-root PATH --publish ' + str(dest)}`
at commit {commit}, {done} of {len(table)} grid cells done.

- `report.html`: the report (open in a browser; self-contained, no network needed).
- `results.csv`: one row per grid cell (scores of the fine-tuning cells: dataset-level `miou`,
  `pixel_accuracy`; the paper's per-image `paper_miou`, `paper_pixel_accuracy`; where each encoder came from).
- `summary.csv`: mean and std over seeds per (pre-training images, intermediate, training images).
- `{PUBLISHED_CELLS}/`: each finished cell's own files (`metrics.json`, `status.json`, its figures and tables; not
  the weights, nor the executed notebooks). The command above, rerun on any machine, takes these cells
  as done and runs only the rest of the grid; add `--no-run` to republish what is done.

## The paper's findings at this scale (computed from the results, as in the report)

{verdicts}
{extra}""")
    return dest


def run_demo(out: str | Path | None = None, scale: str = "demo", executor: str = "local", jobs: int = 2, progress: bool = True,
             data_root: str | Path | None = None, publish_to: str | Path | None = None, pretrain: bool = False,
             run: bool = True, rerun: Sequence[str] = ()) -> Path:
    """Run (or finish) the demo grid and build its report; returns the report's path.

    ``data_root`` points every notebook at the full data sets (required for ``staged``);
    ``publish_to`` copies report and tables there when the grid is done (:func:`publish`);
    ``pretrain`` runs ``params/demo_pretrain.yaml`` (pre-training here on the shipped
    sample) instead of starting from the shipped encoders. With ``publish_to``, cells
    already published there are taken as done; failed cells run again, and every cell of
    the studies in ``rerun``; ``run=False`` runs no cell and reports (and publishes) the
    finished ones.
    """
    if rerun and not run:
        raise VinyError(f"--rerun {' '.join(rerun)} runs cells again; it cannot go with --no-run (which runs none)")
    if pretrain:
        if scale != "demo":
            raise VinyError(f"--pretrain goes with --scale demo (the {scale} grid sets its own pre-training)")
        scale = "demo_pretrain"
    from viny.grid import collect, export_cells, import_cells, load_grid, notebook_parameters, run_grid, validate_values, write_table
    from viny.report import build_report

    if scale == "staged" and data_root is None:
        raise VinyError("--scale staged reads the full staged data sets: pass --data-root PATH (a folder with "
                        + ", ".join(DATA_FOLDERS) + ")")
    grid = load_grid(PARAMS / f"{scale}.yaml", out, check_values=False)
    if data_root is not None:
        root = str(check_data_root(data_root))
        for st in grid.studies:
            if "data_root" in notebook_parameters(st.notebook):
                st.fixed["data_root"] = root
    validate_values(grid)
    if publish_to is not None:
        try:
            check_writable(publish_to)
        except OSError as e:
            raise VinyError(f"--publish {publish_to}: cannot write there ({(e.strerror or str(e)).lower()}); "
                            "choose a writable folder. Nothing was run or written") from None
    if publish_to is not None and (Path(publish_to) / PUBLISHED_CELLS).is_dir():
        taken = import_cells(grid, Path(publish_to) / PUBLISHED_CELLS)
        if taken:
            print(f"{taken} finished cell(s) taken from {Path(publish_to) / PUBLISHED_CELLS}")
    if run:
        # a rerun of the demo is how its user retries: failed cells run again (viny grid asks for --retry-failed)
        table = run_grid(grid, executor=executor, jobs=jobs, retry_failed=True, quiet=not progress, rerun=rerun)
    else:
        if not (collect(grid)["status"] == "done").any():
            raise VinyError(f"--no-run: no finished cell in {grid.out} to report; run the grid first (without --no-run)")
        grid.out.mkdir(parents=True, exist_ok=True)
        table = write_table(grid)
    # a report to be published names the data root as the command does, not by this machine's path
    published_data = (f"the staged data sets given as --data-root (its {', '.join(DATA_FOLDERS)})"
                      if publish_to is not None and data_root is not None else None)
    report = build_report(grid.out, data_label=published_data, list_notebooks=publish_to is None)
    ft = finetune_rows(table)
    if len(ft):
        summary = summarize(ft)
        with atomic_path(grid.out / "summary.csv") as tmp:
            summary.to_csv(tmp, index=False)
        print(f"\nViNy {scale} grid: dataset-level mIoU and pixel accuracy in %, mean ± std over seeds:\n")
        print(_format(summary))
    failed = int((table["status"] == "failed").sum())
    if failed:
        print(f"\n{failed} cell(s) failed; see {grid.out / 'results.parquet'} and the cells' notebook.ipynb; "
              "the same command runs them again")
    print(f"\nreport: {report}")
    if publish_to is not None:
        print(f"published: {publish(grid.out, publish_to, command=f'viny demo --scale {scale} --data-root PATH --publish {publish_to}')}")
        export_cells(grid, Path(publish_to) / PUBLISHED_CELLS)
    return report
