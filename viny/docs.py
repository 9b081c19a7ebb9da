"""The numbers and tables of the project's markdown, computed from the committed results and the code.

A markdown file marks each computed span, and says what computes it::

    the 9.5k encoder beats random init by <!--viny:gain staged 9469 100-->+4.84 [+4.16, +5.52]<!--/viny--> points

``gain staged 9469 100`` names a function of :data:`VALUES` and its arguments (here: the
paired gain of the 9,469-image encoder over random init at 100 fine-tuning images, from
``results/staged/results.csv``). :func:`render` fills every span; a value of several lines
(a table) goes on lines of its own. ``results/README.md`` is written whole from
:data:`INDEX` (:func:`results_index`). Nothing in a marked span is typed by hand::

    python -m viny.docs            # rewrite every stale file in place
    python -m viny.docs --check    # list the stale files (exit 1 if any), write nothing
    python -m viny.docs --figure   # also render the README's figure from results/staged

``tests/test_docs.py`` renders every committed file and fails when a number in it no longer
matches its results file.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from functools import lru_cache
from pathlib import Path
from typing import Callable

import pandas as pd

__all__ = ["ROOT", "VALUES", "MARK", "render", "marked_files", "results_index", "published_blocks", "stale", "update",
           "snapshot_markdown", "render_figure", "FIGURE", "word_count"]

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
FIGURE = ROOT / "docs" / "figures" / "staged_miou_vs_size.png"

# <!--viny:NAME ARGS-->value<!--/viny-->, spaces inside the comments allowed
MARK = re.compile(r"(?P<open><!--\s*viny:(?P<name>[^>]*?)\s*-->)(?P<body>.*?)(?P<close><!--\s*/viny\s*-->)", re.S)
_INTERVAL = re.compile(r"[+-]\d+\.\d+ \[[+-]\d+\.\d+, [+-]\d+\.\d+\]")

VALUES: dict[str, Callable[..., str]] = {}


def _value(fn: Callable[..., str]) -> Callable[..., str]:
    VALUES[fn.__name__.removeprefix("v_")] = fn
    return fn


def interval(iv: dict) -> str:
    """``+4.84 [+4.16, +5.52]``: a mean and its 95 % interval, in points (no interval: the mean)."""
    if any(isinstance(iv[k], float) and math.isnan(iv[k]) for k in ("lo", "hi")):
        return f"{iv['mean']:+.2f}"
    return f"{iv['mean']:+.2f} [{iv['lo']:+.2f}, {iv['hi']:+.2f}]"


# ---------------------------------------------------------------- a published grid (results/staged, results/pretraining_gain)

@lru_cache(maxsize=None)
def grid_table(folder: str) -> pd.DataFrame:
    """``results/<folder>/results.csv`` with each cell's folder (``cells/<study>/<cell>``) where published."""
    from viny.demo import PUBLISHED_CELLS

    table = pd.read_csv(RESULTS / folder / "results.csv")
    cells = RESULTS / folder / PUBLISHED_CELLS
    table["output_dir"] = [str(cells / s / c) for s, c in zip(table["study"], table["cell"])]
    return table


@lru_cache(maxsize=None)
def grid_findings(folder: str) -> pd.DataFrame:
    from viny.findings import findings

    return findings(grid_table(folder))


def _finding(folder: str, claim: str):
    rows = grid_findings(folder).set_index("claim")
    return rows.loc[claim]


def _gain(folder: str, pretrain_images, train_size) -> dict:
    from viny.findings import pretraining_gain

    gain = pretraining_gain(grid_table(folder))
    row = gain[(gain["pretrain_images"] == int(pretrain_images)) & (gain["train_size"] == int(train_size))]
    if row.empty:
        raise KeyError(f"results/{folder} has no pre-training gain at ({pretrain_images}, {train_size})")
    return row.iloc[0].to_dict()


@_value
def v_gain(folder: str, pretrain_images: str, train_size: str) -> str:
    """Encoder (no intermediate stage) minus random init, mIoU points paired by seed, with its interval."""
    return interval(_gain(folder, pretrain_images, train_size))


@_value
def v_gain_mean(folder: str, pretrain_images: str, train_size: str) -> str:
    return f"{_gain(folder, pretrain_images, train_size)['mean']:+.2f}"


@_value
def v_miou(folder: str, pretrain_images: str, train_size: str, intermediate: str = "none", metric: str = "miou") -> str:
    """Mean mIoU (%) over seeds of one fine-tuning configuration (``metric``: ``miou``, dataset-level,
    or ``paper_miou``, the paper's per-image protocol)."""
    from viny.results import finetune_rows

    ft = finetune_rows(grid_table(folder))
    if "init" in ft:
        ft = ft[ft["init"] == "reference"]
    g = ft[(ft["pretrain_images"] == int(pretrain_images)) & (ft["intermediate"] == intermediate) & (ft["train_size"] == int(train_size))]
    if g.empty:
        raise KeyError(f"results/{folder} has no fine-tuning cells at ({pretrain_images}, {intermediate}, {train_size})")
    return f"{100 * g[metric].mean():.1f}"


@_value
def v_paper(pretrain_images: str, train_size: str, intermediate: str = "none") -> str:
    """The paper's published mIoU (%, per-image protocol; Tables 1, A2, A3: :mod:`viny.paper`)."""
    from viny.paper import segmentation_table

    t = segmentation_table()
    row = t[(t["pretrain_images"] == int(pretrain_images)) & (t["train_size"] == int(train_size)) & (t["intermediate"] == intermediate)]
    return f"{row['miou'].iloc[0]:.1f}"


@_value
def v_verdict(folder: str, claim: str) -> str:
    """The computed verdict of one of :data:`viny.findings.CLAIMS` (supported, contradicted, inconclusive)."""
    return str(_finding(folder, claim)["verdict"])


@_value
def v_evidence(folder: str, claim: str, index: str = "0") -> str:
    """The ``index``-th interval of a finding's evidence, as the report prints it."""
    found = _INTERVAL.findall(str(_finding(folder, claim)["evidence"]))
    return found[int(index)]


@_value
def v_findings(folder: str) -> str:
    from viny.findings import findings_markdown

    return findings_markdown(grid_findings(folder))


@_value
def v_gain_table(folder: str) -> str:
    from viny.findings import format_interval, pretraining_gain

    gain = pretraining_gain(grid_table(folder))
    return ("| pre-training images | fine-tuning images | gain | verdict |\n|---|---|---|---|\n"
            + "\n".join(f"| {r.pretrain_images:,} | {r.train_size} | {format_interval(r._asdict())} | {r.verdict} |" for r in gain.itertuples()))


@_value
def v_prior(folder: str, train_size: str) -> str:
    """viny's random init (the authors' N(0,1) positions) minus the small-position control, mIoU points."""
    from viny.findings import position_prior

    prior = position_prior(grid_table(folder)).set_index("train_size")
    return interval(prior.loc[int(train_size)].to_dict())


@_value
def v_cells(folder: str, status: str = "done") -> str:
    """How many cells of a published grid have ``status``."""
    return str(int((grid_table(folder)["status"] == status).sum()))


@_value
def v_test_images(folder: str) -> str:
    from viny.results import finetune_rows

    return f"{int(finetune_rows(grid_table(folder))['test_size'].max()):,}"


@lru_cache(maxsize=None)
def _selection_across_cells(folder: str) -> pd.DataFrame:
    from viny.report import selection_across_cells

    return selection_across_cells(grid_table(folder))


def published_blocks(folder: str) -> list[str]:
    """What :func:`viny.demo.publish` computed into ``results/<folder>/README.md`` (its findings,
    gain and control tables, label-free selection), recomputed from ``results.csv`` and the
    published cells: each must still appear verbatim in the README."""
    from viny.findings import format_interval, position_prior, pretraining_gain
    from viny.selection import across_runs_markdown

    table = grid_table(folder)
    blocks = [v_findings(folder)]
    blocks += [f"| {r.pretrain_images:,} | {r.train_size} | {format_interval(r._asdict())} | {r.verdict} |" for r in pretraining_gain(table).itertuples()]
    blocks += [f"| {r.train_size} | {format_interval(r._asdict())} | {r.verdict} |" for r in position_prior(table).itertuples()]
    across = _selection_across_cells(folder)
    if len(across):
        blocks.append(across_runs_markdown(across))
    return blocks


# ---------------------------------------------------------------- beyond the paper in a published grid (joint, indomain studies)

def _joint_row(folder: str, pretrain_images: str, train_size: str) -> dict:
    from viny.findings import joint_vs_sequential

    j = joint_vs_sequential(grid_table(folder))
    return j[(j["pretrain_images"] == int(pretrain_images)) & (j["train_size"] == int(train_size))].iloc[0].to_dict()


@_value
def v_joint_diff(folder: str, pretrain_images: str, train_size: str) -> str:
    """Joint minus sequential fine-tuning, mIoU points paired by seed, with its interval."""
    return interval(_joint_row(folder, pretrain_images, train_size))


@_value
def v_joint_verdict(folder: str, pretrain_images: str, train_size: str) -> str:
    """The verdict of "joint beats sequential" at one (pre-training, fine-tuning size)."""
    return str(_joint_row(folder, pretrain_images, train_size)["verdict"])


def _indomain_row(folder: str, reference: str, train_size: str, epochs: str) -> dict:
    from viny.findings import indomain_vs_imagenette

    d = indomain_vs_imagenette(grid_table(folder))
    which = d["comparison"] == "nearest steps" if reference == "nearest" else d["comparison"] == f"as shipped ({int(reference):,} images)"
    return d[which & (d["train_size"] == int(train_size)) & (d["finetune_epochs"] == int(epochs))].iloc[0].to_dict()


@_value
def v_indomain_diff(folder: str, reference: str, train_size: str, epochs: str) -> str:
    """In-domain minus Imagenette pre-training (``nearest``: the 2.4k run's snapshot nearest in
    image-steps; a number: that shipped encoder), mIoU points paired by seed."""
    return interval(_indomain_row(folder, reference, train_size, epochs))


@_value
def v_indomain_verdict(folder: str, reference: str, train_size: str, epochs: str) -> str:
    return str(_indomain_row(folder, reference, train_size, epochs)["verdict"])


# ---------------------------------------------------------------- geometry of the encoders beyond the paper (results/geometry_beyond)

@_value
def v_geometry_table(folder: str) -> str:
    """The last layer's diagnostics per encoder from ``results/<folder>/geometry.csv`` (``viny
    geometry``), with the within-image cosine at grid distances 1 and 4 from ``cosine.csv``."""
    g = pd.read_csv(RESULTS / folder / "geometry.csv")
    g = g[g["layer"] == g["layer"].max()]
    c = pd.read_csv(RESULTS / folder / "cosine.csv")
    cos = c[c["layer"] == c["layer"].max()].set_index(["encoder", "distance"])["within_mean"]
    lines = ["| encoder | within-image variance | across-image variance | patch probe acc. | patch probe mIoU | "
             "nearest-neighbour probe mIoU | DSE | cosine at distance 1 / 4 |", "|---|---|---|---|---|---|---|---|"]
    for r in g.itertuples():
        lines.append(f"| {r.encoder} | {r.within_variance:.3f} | {r.across_variance:.3f} | {100 * r.probe_accuracy:.1f} % | "
                     f"{100 * r.probe_miou:.1f} % | {100 * r.nn_probe_miou:.1f} % | {r.dse:.3f} | "
                     f"{cos[(r.encoder, 1)]:.2f} / {cos[(r.encoder, 4)]:.2f} |")
    return "\n".join(lines)


# ---------------------------------------------------------------- curves along pre-training (results/along_pretraining)

ALONG = RESULTS / "along_pretraining"


@lru_cache(maxsize=None)
def along(run: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(downstream fine-tunes, label-free scores)`` of ``results/along_pretraining/<run>``."""
    from viny.selection import read_along_pretraining

    return read_along_pretraining(ALONG / run)


def _epoch(run: str, epoch: str) -> int:
    down, _ = along(run)
    return int(down["epoch"].max()) if epoch == "last" else int(epoch)


@_value
def v_along_gain(run: str, train_size: str, epoch: str = "last") -> str:
    """A snapshot's mIoU minus random init's, points paired by seed (``last``: the run's last snapshot)."""
    from viny.selection import per_seed
    from viny.stats import paired_difference

    seeds = per_seed(along(run)[0], int(train_size))
    return interval(paired_difference(seeds[_epoch(run, epoch)], seeds[0]))


@_value
def v_along_gain_mean(run: str, train_size: str, epoch: str = "last") -> str:
    from viny.selection import per_seed

    seeds = per_seed(along(run)[0], int(train_size))
    return f"{(seeds[_epoch(run, epoch)] - seeds[0]).mean():+.2f}"


@_value
def v_along_diff(run: str, train_size: str, later: str, earlier: str) -> str:
    """mIoU after snapshot ``later`` minus after ``earlier``, points paired by seed."""
    from viny.selection import per_seed
    from viny.stats import paired_difference

    seeds = per_seed(along(run)[0], int(train_size))
    return interval(paired_difference(seeds[_epoch(run, later)], seeds[_epoch(run, earlier)]))


@_value
def v_along_diff_mean(run: str, train_size: str, later: str, earlier: str, digits: str = "2") -> str:
    from viny.selection import per_seed

    seeds = per_seed(along(run)[0], int(train_size))
    return f"{(seeds[_epoch(run, later)] - seeds[_epoch(run, earlier)]).mean():+.{int(digits)}f}"


@_value
def v_along_miou(run: str, train_size: str, epoch: str = "last") -> str:
    """Mean mIoU (%) over seeds after fine-tuning from a snapshot (``0``: random init)."""
    down, _ = along(run)
    g = down[(down["train_size"] == int(train_size)) & (down["epoch"] == _epoch(run, epoch))]
    return f"{100 * g['miou'].mean():.2f}"


@_value
def v_along_std(run: str, train_size: str, epoch: str = "0", digits: str = "1") -> str:
    """The std over seeds of mIoU (points) after fine-tuning from a snapshot (``0``: random init)."""
    down, _ = along(run)
    g = down[(down["train_size"] == int(train_size)) & (down["epoch"] == _epoch(run, epoch))]
    return f"{100 * g['miou'].std(ddof=1):.{int(digits)}f}"


@_value
def v_along_ratio(run: str, epoch: str = "last") -> str:
    """A snapshot's held-out reconstruction ratio (masked-patch L1 over the mean-colour predictor's)."""
    _, scores = along(run)
    s = scores.set_index("epoch")["reconstruction_ratio"]
    return f"{s.loc[int(s.index.max()) if epoch == 'last' else int(epoch)]:.3f}"


@_value
def v_along_best(run: str, train_size: str) -> str:
    """The snapshot with the highest mean mIoU."""
    down, _ = along(run)
    g = down[(down["train_size"] == int(train_size)) & (down["epoch"] > 0)].groupby("epoch")["miou"].mean()
    return str(int(g.idxmax()))


@lru_cache(maxsize=None)
def _selection(run: str) -> pd.DataFrame:
    return pd.read_csv(ALONG / run / "selection.csv")


@_value
def v_along_tau(run: str, train_size: str, score: str = "dse") -> str:
    """Kendall's tau of a score with mIoU along a run, with its bootstrap interval (``selection.csv``)."""
    s = _selection(run)
    r = s[(s["score"] == score) & (s["train_size"] == int(train_size))].iloc[0]
    return f"{r['tau']:+.2f} [{r['tau_lo']:+.2f}, {r['tau_hi']:+.2f}]"


@_value
def v_along_tau_mean(run: str, train_size: str, score: str = "dse") -> str:
    s = _selection(run)
    return f"{s[(s['score'] == score) & (s['train_size'] == int(train_size))].iloc[0]['tau']:+.2f}"


@_value
def v_along_score(run: str, column: str, epoch: str = "last", digits: str = "3") -> str:
    """One label-free score of a snapshot (``scores.csv``), e.g. ``dse``, ``m_inter``, ``effective_rank``."""
    _, scores = along(run)
    s = scores.set_index("epoch")[column]
    return f"{s.loc[int(s.index.max()) if epoch == 'last' else int(epoch)]:.{int(digits)}f}"


def snapshot_markdown(scores: pd.DataFrame, down: pd.DataFrame) -> str:
    """mIoU per snapshot and fine-tuning size (mean ± std over seeds) next to its label-free scores."""
    from viny.selection import along_table

    sizes = sorted(int(n) for n in down["train_size"].unique())
    table = along_table(scores, down)
    head = ("| pre-training epoch | " + " | ".join(f"mIoU, {n} images" for n in sizes)
            + " | reconstruction ratio | DSE (adaptive λ) | effective rank | probe acc. |\n|" + "---|" * (len(sizes) + 5) + "\n")
    lines = []
    for r in table.to_dict("records"):
        miou = [f"{r[f'miou_{n}_mean']:.2f} ± {r[f'miou_{n}_std']:.2f}" for n in sizes]
        cols = ["" if pd.isna(r.get(c)) else fmt.format(r[c]) for c, fmt in
                (("reconstruction_ratio", "{:.3f}"), ("dse", "{:.3f}"), ("effective_rank", "{:.1f}"), ("probe_accuracy", "{:.3f}"))]
        lines.append(f"| {'random init' if r['epoch'] == 0 else int(r['epoch'])} | " + " | ".join(miou + cols) + " |")
    return head + "\n".join(lines)


@_value
def v_along_table(run: str) -> str:
    down, scores = along(run)
    return snapshot_markdown(scores, down)


@lru_cache(maxsize=None)
def across_runs() -> pd.DataFrame:
    return pd.read_csv(ALONG / "across_runs.csv")


def _across(run: str, train_size: str) -> dict:
    t = across_runs()
    return t[(t["run"] == run) & (t["train_size"] == int(train_size))].iloc[0].to_dict()


@_value
def v_across_table() -> str:
    from viny.selection import across_runs_markdown

    return across_runs_markdown(across_runs())


@_value
def v_across_counts() -> str:
    from viny.selection import verdict_counts

    return "\n".join(f"- {line}" for line in verdict_counts(across_runs()))


@_value
def v_pick(run: str, train_size: str, score: str) -> str:
    """The snapshot a label-free score picks (``across_runs.csv``)."""
    return str(int(_across(run, train_size)[f"{score}_epoch"]))


@_value
def v_regret(run: str, train_size: str, score: str) -> str:
    """mIoU of a score's pick minus the best snapshot's, points (mean over seeds)."""
    return f"{_across(run, train_size)[f'{score}_regret']:+.2f}"


SELECTION_CLAIMS = {"last": "DSE picks a better checkpoint than taking the last one",
                    "effective_rank": "DSE picks a better checkpoint than effective rank",
                    "ranks": "DSE ranks the checkpoints like downstream mIoU"}


@_value
def v_across_verdict(run: str, train_size: str, claim: str = "last") -> str:
    """The computed verdict of a label-free selection claim (:data:`SELECTION_CLAIMS`) on one (run, size)."""
    return str(_across(run, train_size)[f"verdict: {SELECTION_CLAIMS[claim]}"])


@_value
def v_pick_diff(run: str, train_size: str, other: str = "last") -> str:
    """mIoU of DSE's pick minus that of ``other``'s pick, points paired by seed."""
    from viny.selection import per_seed
    from viny.stats import paired_difference

    row = _across(run, train_size)
    seeds = per_seed(along(run)[0], int(train_size))
    return interval(paired_difference(seeds[int(row["dse_epoch"])], seeds[int(row[f"{other}_epoch"])]))


@_value
def v_tau_range(score: str) -> str:
    """Kendall's tau of a score with mIoU, lowest to highest over the (run, size) pairs."""
    t = across_runs()[f"{score}_tau"]
    return f"{t.min():+.2f} to {t.max():+.2f}"


@_value
def v_across_pairs() -> str:
    return str(len(across_runs()))


# ---------------------------------------------------------------- the selection study across encoders (results/encoder_selection)

ENCODER_SELECTION = RESULTS / "encoder_selection"


@lru_cache(maxsize=None)
def encoder_selection() -> pd.DataFrame:
    return pd.read_csv(ENCODER_SELECTION / "selection.csv")


def _encsel(pool: str, train_size: str, score: str) -> dict:
    t = encoder_selection()
    return t[(t["pool"] == pool) & (t["train_size"] == int(train_size)) & (t["score"] == score)].iloc[0].to_dict()


@_value
def v_encsel_table(pool: str = "encoders") -> str:
    """Per fine-tuning size and score: Kendall's tau with mIoU (bootstrap 95 % interval), the
    pick, its regret (points, paired by seed) and the verdict."""
    t = encoder_selection()
    t = t[t["pool"] == pool]
    lines = ["| fine-tuning images | score | encoders | tau [95 % interval] | picks | regret (points) | verdict |", "|---|---|---|---|---|---|---|"]
    for r in t.itertuples():
        regret = interval({"mean": r.regret, "lo": r.regret_lo, "hi": r.regret_hi}) if r.regret != 0 else "0 (the best)"
        lines.append(f"| {r.train_size} | {r.label} | {r.encoders} | {r.tau:+.2f} [{r.tau_lo:+.2f}, {r.tau_hi:+.2f}] | {r.picks} | {regret} | {r.verdict} |")
    return "\n".join(lines)


@_value
def v_encsel_tau(pool: str, train_size: str, score: str) -> str:
    """Kendall's tau of one score with fine-tuned mIoU over a pool, with its bootstrap interval."""
    r = _encsel(pool, train_size, score)
    return f"{r['tau']:+.2f} [{r['tau_lo']:+.2f}, {r['tau_hi']:+.2f}]"


@_value
def v_encsel_pick(pool: str, train_size: str, score: str) -> str:
    """The encoder a score picks in a pool, and its regret (points, paired by seed)."""
    r = _encsel(pool, train_size, score)
    regret = "the best one" if r["regret"] == 0 else f"regret {interval({'mean': r['regret'], 'lo': r['regret_lo'], 'hi': r['regret_hi']})} points"
    return f"{r['picks']} ({regret})"


@_value
def v_encsel_n(pool: str, train_size: str, score: str) -> str:
    """How many encoders of a pool have a score and fine-tuned mIoU at a size."""
    return str(int(_encsel(pool, train_size, score)["encoders"]))


@_value
def v_encsel_verdicts() -> str:
    """Per score, its verdict over every (pool, fine-tuning size) of the study."""
    from viny.encoder_selection import study_verdicts

    return "\n".join(f"- {r.claim}: **{r.verdict}**" for r in study_verdicts(encoder_selection()).itertuples())


# ---------------------------------------------------------------- fine-tuning epochs on validation (results/finetune_epochs)

@lru_cache(maxsize=None)
def _validation_curve() -> pd.DataFrame:
    return pd.read_csv(RESULTS / "finetune_epochs" / "curve.csv")


@_value
def v_val_gain(train_size: str, epoch: str = "100") -> str:
    """The 9k encoder minus random init on the validation images, points paired by seed."""
    from viny.stats import paired_difference

    c = _validation_curve()
    c = c[(c["train_size"] == int(train_size)) & (c["epoch"] == int(epoch))].pivot_table(index="seed", columns="encoder", values="val_miou")
    return interval(paired_difference(c["simmim_imagenette9k"], c["random init"]))


@_value
def v_val_gain_mean(train_size: str, epoch: str = "100", digits: str = "2") -> str:
    c = _validation_curve()
    c = c[(c["train_size"] == int(train_size)) & (c["epoch"] == int(epoch))].pivot_table(index="seed", columns="encoder", values="val_miou")
    return f"{(c['simmim_imagenette9k'] - c['random init']).mean():+.{int(digits)}f}"


@_value
def v_val_miou(encoder: str, train_size: str, epoch: str = "100") -> str:
    c = _validation_curve()
    enc = "random init" if encoder == "random" else encoder
    g = c[(c["encoder"] == enc) & (c["train_size"] == int(train_size)) & (c["epoch"] == int(epoch))]
    return f"{g['val_miou'].mean():.2f}"


@_value
def v_val_table() -> str:
    """Validation mIoU (%) per scored epoch, mean over seeds (± std at the last epoch), per size and encoder."""
    c = _validation_curve()
    g = c.groupby(["train_size", "encoder", "epoch"])["val_miou"]
    mean, std = g.mean(), g.std(ddof=1)
    cols = [(n, e) for n in sorted(c["train_size"].unique()) for e in ("random init", "simmim_imagenette9k")]
    name = {"random init": "random init", "simmim_imagenette9k": "9k"}
    epochs = sorted(c["epoch"].unique())
    lines = ["| epoch | " + " | ".join(f"{n} imgs, {name[e]}" for n, e in cols) + " |", "|---|" + "---|" * len(cols)]
    for ep in epochs:
        cells = [f"{mean[(n, e, ep)]:.2f}" + (f" ± {std[(n, e, ep)]:.2f}" if ep == epochs[-1] else "") for n, e in cols]
        lines.append(f"| {ep} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------- the joint arm's weight on validation (results/joint_weight)

def joint_weight_summary(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """``(per setting, gain over W = 0, chosen)`` of ``benchmarks/joint_weight.py``'s runs: the
    mean validation mIoU per (W, mask ratio) and encoder, each W's gain over W = 0 paired by
    seed per encoder, and the setting with the best mean over the encoders (judged on the
    settings that every encoder has run: a sweep still running is judged on what is complete)."""
    from viny.stats import paired_difference

    keys = ["aux_mim_weight", "aux_mask_ratio"]
    per = runs.groupby(keys + ["encoder"])["val_miou"].mean().unstack("encoder")
    setting = pd.DataFrame({"mean_val_miou": per.mean(axis=1), "encoders": per.notna().sum(axis=1), "runs": runs.groupby(keys).size()})
    for enc in per.columns:
        setting[f"val_miou {enc}"] = per[enc]
    setting = setting.reset_index()
    complete = setting[setting["encoders"] == runs["encoder"].nunique()]
    gains = []
    base = runs[runs["aux_mim_weight"] == 0]
    for (w, r, enc), g in runs[runs["aux_mim_weight"] > 0].groupby(keys + ["encoder"]):
        d = paired_difference(g.groupby("seed")["val_miou"].mean(), base[base["encoder"] == enc].groupby("seed")["val_miou"].mean())
        gains.append({"aux_mim_weight": w, "aux_mask_ratio": r, "encoder": enc, **d})
    if not len(complete):
        return setting, pd.DataFrame(gains), {}
    best = complete.loc[complete["mean_val_miou"].idxmax()]
    return setting, pd.DataFrame(gains), {"aux_mim_weight": float(best["aux_mim_weight"]), "aux_mask_ratio": float(best["aux_mask_ratio"]),
                                          "mean_val_miou": float(best["mean_val_miou"])}


@lru_cache(maxsize=None)
def _joint_runs() -> pd.DataFrame:
    path = RESULTS / "joint_weight" / "runs.csv"
    return pd.read_csv(path) if path.is_file() else pd.DataFrame(columns=["encoder", "aux_mim_weight", "aux_mask_ratio", "seed", "val_miou"])


@_value
def v_joint_chosen() -> str:
    """The chosen weight (and mask ratio) of the joint arm, from results/joint_weight/runs.csv."""
    if _joint_runs().empty:
        return "not measured yet"
    chosen = joint_weight_summary(_joint_runs())[2]
    return f"W = {chosen['aux_mim_weight']:g} (mask ratio {chosen['aux_mask_ratio']:g})" if chosen else "none yet"


@_value
def v_joint_scope() -> str:
    """What the sweep covers: encoders, seeds, runs."""
    runs = _joint_runs()
    seeds = sorted(int(s) for s in runs["seed"].unique())
    return (f"{len(runs)} runs: {' and '.join(sorted(runs['encoder'].unique()))}, seed{'s' if len(seeds) > 1 else ''} "
            f"{', '.join(map(str, seeds))}, W in {{{', '.join(f'{w:g}' for w in sorted(runs['aux_mim_weight'].unique()))}}}")


@_value
def v_joint_table() -> str:
    """Validation mIoU (%) per (W, mask ratio): the mean over the encoders, and each encoder's (mean over seeds)."""
    setting = joint_weight_summary(_joint_runs())[0]
    encs = [c.removeprefix("val_miou ") for c in setting.columns if c.startswith("val_miou ")]
    lines = ["| W (aux_mim_weight) | mask ratio | mean over encoders | " + " | ".join(encs) + " | runs |", "|---|---|---|" + "---|" * len(encs) + "---|"]
    for _, r in setting.iterrows():
        mean = f"{r['mean_val_miou']:.2f}" if r["encoders"] == len(encs) else "-"
        lines.append(f"| {r['aux_mim_weight']:g} | {r['aux_mask_ratio']:g} | {mean} | "
                     + " | ".join("-" if pd.isna(r[f'val_miou {e}']) else f"{r[f'val_miou {e}']:.2f}" for e in encs) + f" | {int(r['runs'])} |")
    return "\n".join(lines)


@_value
def v_joint_gains() -> str:
    """Each W's validation gain over W = 0, per encoder, paired by seed."""
    gains = joint_weight_summary(_joint_runs())[1]
    lines = ["| W | mask ratio | encoder | gain over W = 0 (points) | seeds |", "|---|---|---|---|---|"]
    lines += [f"| {g.aux_mim_weight:g} | {g.aux_mask_ratio:g} | {g.encoder} | {interval(g._asdict())} | {g.n} |" for g in gains.itertuples()]
    return "\n".join(lines)


# ---------------------------------------------------------------- the shipped encoders (viny.pretrained.SHIPPED and their cards)

def _preset_of(cfg: dict) -> str:
    from viny.config import PRESETS, make_config

    for name in PRESETS:
        want = make_config("pretrain", name, epochs=cfg["epochs"])
        if all(cfg.get(k) == v for k, v in (("lr", want.lr), ("gamma", want.gamma), ("divide_loss_by_masked", want.divide_loss_by_masked))):
            return name
    return "custom"


@_value
def v_ratio(name: str) -> str:
    """A shipped encoder's held-out reconstruction ratio, from its card."""
    from viny.pretrained import card

    return f"{card(name)['metrics']['yardstick_ratio']:.3f}"


@_value
def v_shipped_table() -> str:
    from viny.pretrained import SHIPPED, card

    lines = ["| timm name | SimMIM on | epochs | recipe | held-out reconstruction ratio | trained in |", "|---|---|---|---|---|---|"]
    for name, images in SHIPPED.items():
        c = card(name)
        cfg = c["config"]
        lines.append(f"| `viny.{name}` | {images:,} Imagenette images | {cfg['epochs']} | `{_preset_of(cfg)}` (lr {cfg['lr']:g}, "
                     f"x{cfg['gamma']:g} at epochs {' / '.join(map(str, cfg['milestones']))}) | {c['metrics']['yardstick_ratio']:.3f} | "
                     f"{c['train_minutes']:.0f} min |")
    return "\n".join(lines)


@_value
def v_shipped_mb() -> str:
    """The size of the shipped weight files (MB, rounded; a range if they differ)."""
    from viny.pretrained import SHIPPED, weights_path

    sizes = sorted({round(weights_path(n).stat().st_size / 1e6) for n in SHIPPED})
    return "-".join(map(str, [sizes[0], sizes[-1]] if len(sizes) > 1 else sizes))


# ---------------------------------------------------------------- tables of the code (presets, intermediate tasks)

def _schedule(cfg) -> str:
    steps = ", ".join(map(str, cfg.milestones))
    return f"{cfg.optimizer.replace('adamw', 'AdamW').replace('adam', 'Adam')} lr {cfg.lr:g}, wd {cfg.weight_decay:g}, x{cfg.gamma:g} at {{{steps}}}, {cfg.epochs} epochs"


def _option(key: str, value) -> str:
    if isinstance(value, bool):
        return f"`--{key.replace('_', '-')}`" if value else f"`--no-{key.replace('_', '-')}`"
    return f"`--{key.replace('_', '-')} {value:g}`" if isinstance(value, float) else f"`--{key.replace('_', '-')} {value}`"


@_value
def v_presets_table() -> str:
    """:data:`viny.config.PRESETS`: the paper's values per phase, and what each other preset changes."""
    from viny.config import PHASES, PRESETS, make_config

    others = [p for p in PRESETS if p != "paper"]
    lines = ["| phase | `paper` (default: Table A1) | " + " | ".join(f"`{p}`" for p in others) + " |", "|---|---|" + "---|" * len(others)]
    for phase in PHASES:
        cells = [", ".join(_option(k, v) for k, v in PRESETS[p][phase].items()) or "as `paper`" for p in others]
        lines.append(f"| {phase} | {_schedule(make_config(phase))}, batch {make_config(phase).batch_size} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


@_value
def v_tasks_table() -> str:
    """:data:`viny.study.INTERMEDIATE_TASKS`."""
    from viny.study import INTERMEDIATE_TASKS

    labels = {"class": "scene class", "breed": "breed (37 classes)", "trimap": "each patch's majority trimap class",
              "clusters": "each patch's k-means cluster of the initial tokens (label-free)"}
    data = {"intel": "Intel scenes", "pets": "Oxford-IIIT Pet"}
    head = {"cls": "CLS token", "patch": "every patch token"}
    lines = ["| `intermediate` | data | head on | target | spatial | shown as |", "|---|---|---|---|---|---|"]
    for t in INTERMEDIATE_TASKS.values():
        lines.append(f"| `{t.name}` | {data.get(t.data, t.data)} | {head.get(t.head, t.head)} | {labels.get(t.labels, t.labels)} | "
                     f"{'yes' if t.spatial else 'no'} | {t.label} |")
    return "\n".join(lines)


# ---------------------------------------------------------------- measured times (results/timings.csv)

@lru_cache(maxsize=None)
def timings() -> pd.DataFrame:
    return pd.read_csv(RESULTS / "timings.csv").set_index("key")


def _span(lo: float, hi: float, unit: float) -> str:
    a = f"{lo / unit:.0f}" if lo / unit >= 10 or unit == 1 else f"{lo / unit:.1f}".removesuffix(".0")
    if pd.isna(hi):
        return a
    b = f"{hi / unit:.0f}" if hi / unit >= 10 or unit == 1 else f"{hi / unit:.1f}".removesuffix(".0")
    return f"{a}-{b}"


@_value
def v_minutes(key: str) -> str:
    r = timings().loc[key]
    return _span(r["seconds"], r["seconds_max"], 60)


@_value
def v_hours(key: str) -> str:
    r = timings().loc[key]
    return _span(r["seconds"], r["seconds_max"], 3600)


@_value
def v_seconds(key: str) -> str:
    r = timings().loc[key]
    return _span(r["seconds"], r["seconds_max"], 1)


@_value
def v_ratio_of(faster: str, slower: str) -> str:
    t = timings()
    return f"{t.loc[slower, 'seconds'] / t.loc[faster, 'seconds']:.2f}"


@_value
def v_timings_table() -> str:
    t = timings()
    lines = ["| what | CPU (2 cores) | cells at a time | time | note |", "|---|---|---|---|---|"]
    for key, r in t.iterrows():
        s = r["seconds"]
        unit, name = (3600, "h") if s >= 3 * 3600 else (60, "min") if s >= 180 else (1, "s")
        jobs = "" if pd.isna(r["jobs"]) else str(int(r["jobs"]))
        lines.append(f"| {r['what']} | {r['cpu']} | {jobs} | {_span(s, r['seconds_max'], unit)} {name} | {'' if pd.isna(r['note']) else r['note']} |")
    return "\n".join(lines)


# ---------------------------------------------------------------- rendering

def _call(name: str) -> str:
    fn, *args = name.split()
    if fn not in VALUES:
        raise KeyError(f"unknown viny value {fn!r} (known: {', '.join(sorted(VALUES))})")
    return VALUES[fn](*args)


def render(text: str, keep_marks: bool = True) -> str:
    """``text`` with every marked span filled from the results and the code; ``keep_marks=False``
    leaves the marks out (a file written whole, like ``results/README.md``)."""
    def fill(m: re.Match) -> str:
        value = _call(m["name"].strip())
        if "\n" in value:
            value = f"\n{value}\n"
        return f"{m['open']}{value}{m['close']}" if keep_marks else value

    return MARK.sub(fill, text)


def marked_files(root: Path = ROOT) -> list[Path]:
    """The markdown files that :func:`render` fills: README.md, docs/, the results READMEs."""
    files = [root / "README.md", *sorted((root / "docs").glob("*.md")), *sorted((root / "results").glob("*/README.md")),
             *sorted((root / "results").glob("*/*/README.md"))]
    return [f for f in files if f.is_file()]


INDEX = """# Reference results

Written by `python -m viny.docs` from the files in each folder (do not edit: every number
below is computed, and `tests/test_docs.py` fails when one no longer matches its files).
Intervals are 95 % t intervals over 3 seeds of paired differences, in mIoU points on the
<!--viny:test_images staged--><!--/viny--> held-out Pets test images; where they differ from the paper: `docs/deviations.md`.

- [`staged/`](staged/README.md): the paper's grid at the scale of the staged data (the three
  shipped encoders and random init, with and without the 10-epoch CLS stage, fine-tuned for 100
  epochs on 100 / 250 / 400 Pets images; the small-position control; geometry; the SimMIM
  curves; <!--viny:cells staged--><!--/viny--> cells). `viny demo --scale staged --data-root PATH --publish results/staged`.
  The 9.5k encoder beats random init by <!--viny:gain staged 9469 100--><!--/viny--> points at 100 images; the
  CLS stage changes mIoU by <!--viny:evidence staged cls_hurts--><!--/viny--> points (<!--viny:verdict staged cls_hurts--><!--/viny-->).
- [`pretraining_gain/`](pretraining_gain/README.md): the staged grid's pre-training arm run first
  (random init and the 9.5k encoder, no intermediate stage). `viny grid` + `viny report` on that
  part of `params/staged.yaml`. Gain at 100 / 250 / 400 images: <!--viny:gain_mean pretraining_gain 9469 100--><!--/viny--> /
  <!--viny:gain_mean pretraining_gain 9469 250--><!--/viny--> / <!--viny:gain_mean pretraining_gain 9469 400--><!--/viny--> points.
- [`finetune_epochs/`](../docs/epochs.md): how many fine-tuning epochs, chosen on 150 validation
  images. `benchmarks/finetune_epochs.py --data-root PATH --schedules 100`. At epoch 100 the 9k
  encoder beats random init by <!--viny:val_gain 100--><!--/viny--> points at 100 images.
- [`along_pretraining/`](along_pretraining/README.md): downstream mIoU and label-free scores along
  the shipped encoders' pre-training runs, and label-free checkpoint selection.
  `benchmarks/along_pretraining.py RUN --data-root PATH`. The 9.5k run's last snapshot beats random
  init by <!--viny:along_gain simmim_9469 100--><!--/viny--> points at 100 images (50 fine-tuning epochs); DSE's pick is
  <!--viny:pick_diff simmim_9469 100--><!--/viny--> points against the last snapshot's.
- [`joint_weight/`](joint_weight/README.md): the joint arm's auxiliary SimMIM weight (beyond the
  paper), chosen on 100 validation images of the training pool: <!--viny:joint_chosen--><!--/viny-->.
  `benchmarks/joint_weight.py --data-root PATH`.
- [`encoder_selection/`](encoder_selection/README.md): which cheap score predicts fine-tuned mIoU
  across the staged grid's 10 encoders (random inits, SimMIM on Imagenette and on Pets, after the
  CLS stage) and across the snapshots along pre-training: Kendall's tau, regret and a verdict per
  score. `benchmarks/encoder_selection.py --data-root PATH`.
- [`geometry_beyond/`](geometry_beyond/README.md): the geometry diagnostics of the in-domain encoder
  and of the 9.5k encoder after sequential and after joint fine-tuning. `viny geometry NAME=PATH ...`.
- [`timings.csv`](timings.csv): measured wall times per CPU kind (`docs/performance.md`).

## What they show

- **Pre-training helps at this scale**: over random init at 100 / 250 / 400 fine-tuning images,
  the 2.4k encoder gains <!--viny:gain_mean staged 2368 100--><!--/viny--> / <!--viny:gain_mean staged 2368 250--><!--/viny--> / <!--viny:gain_mean staged 2368 400--><!--/viny-->,
  the 4.7k <!--viny:gain_mean staged 4734 100--><!--/viny--> / <!--viny:gain_mean staged 4734 250--><!--/viny--> / <!--viny:gain_mean staged 4734 400--><!--/viny-->,
  the 9.5k <!--viny:gain_mean staged 9469 100--><!--/viny--> / <!--viny:gain_mean staged 9469 250--><!--/viny--> / <!--viny:gain_mean staged 9469 400--><!--/viny--> points
  (random init <!--viny:miou staged 0 100--><!--/viny--> / <!--viny:miou staged 0 250--><!--/viny--> / <!--viny:miou staged 0 400--><!--/viny--> % mIoU,
  the 9.5k encoder <!--viny:miou staged 9469 100--><!--/viny--> / <!--viny:miou staged 9469 250--><!--/viny--> / <!--viny:miou staged 9469 400--><!--/viny--> %).
- **"Pre-training helps most when data is small"** is <!--viny:verdict staged pretraining_small_data--><!--/viny-->: the
  gain at 100 minus at 400 images is <!--viny:evidence staged pretraining_small_data 1--><!--/viny--> points; the curves
  run nearly parallel and still rise steeply at 400.
- **"More fine-tuning data, with diminishing returns"** is <!--viny:verdict staged diminishing_finetune--><!--/viny-->:
  from the 9.5k encoder <!--viny:evidence staged diminishing_finetune 0--><!--/viny--> points per doubling from 100 to
  250 images, and the next doubling's minus that <!--viny:evidence staged diminishing_finetune 1--><!--/viny-->.
- **"More pre-training data, with diminishing returns"** is <!--viny:verdict staged diminishing_pretrain--><!--/viny-->
  here: per doubling from 2.4k to 4.7k images <!--viny:evidence staged diminishing_pretrain 0--><!--/viny--> points, from
  4.7k to 9.5k <!--viny:evidence staged diminishing_pretrain 1--><!--/viny--> more. The encoders differ in compute per
  image (150, 100 and 100 epochs), so this compares them as shipped, not data at a fixed number of steps.
- **The CLS stage lowers mIoU** (<!--viny:verdict staged cls_hurts--><!--/viny-->, <!--viny:evidence staged cls_hurts--><!--/viny--> points
  over the (encoder, size) cells), the paper's interference finding; it is not shown to be larger where
  pre-training helps most (<!--viny:evidence staged cls_hurts_where_pretraining_helps--><!--/viny-->).
- **The authors' N(0,1) position embeddings** beat the small-position control by
  <!--viny:prior staged 100--><!--/viny--> points at 100 images, <!--viny:prior staged 250--><!--/viny--> at 250 and
  <!--viny:prior staged 400--><!--/viny--> at 400: the position prior matters with the least data.
- **Label-free checkpoint selection**: over the <!--viny:across_pairs--><!--/viny--> (run, size) pairs of
  `along_pretraining/`, DSE never picks better than "take the last snapshot"; its rank correlation with
  mIoU is <!--viny:tau_range dse--><!--/viny-->, effective rank's <!--viny:tau_range effective_rank--><!--/viny-->.
- **Joint training** (beyond the paper): from the 9.5k encoder at 100 images, fine-tuning with the
  auxiliary SimMIM loss beats sequential fine-tuning by <!--viny:joint_diff staged 9469 100--><!--/viny--> points
  (<!--viny:joint_verdict staged 9469 100--><!--/viny-->); from random init the difference is <!--viny:joint_diff staged 0 100--><!--/viny-->
  (<!--viny:joint_verdict staged 0 100--><!--/viny-->). Both fine-tuned encoders have the same geometry (`geometry_beyond/`).
- **In-domain pre-training** (SimMIM on the 400 Pets images outside the test set): at nearly
  equal pre-training steps it is <!--viny:indomain_diff staged nearest 100 50--><!--/viny--> points against the
  2.4k Imagenette run's snapshot at 100 images (<!--viny:indomain_verdict staged nearest 100 50--><!--/viny-->); the shipped
  Imagenette encoders, with many times its steps, are better (in-domain minus the 9.5k encoder:
  <!--viny:indomain_diff staged 9469 100 100--><!--/viny--> points at 100 images). Its patch tokens are nearly all alike (`geometry_beyond/`).
- **Which cheap score predicts fine-tuned mIoU across encoders** (`encoder_selection/`): the linear
  patch probe (tau <!--viny:encsel_tau encoders 100 probe_accuracy--><!--/viny--> over the encoders at 100 images) and, where it
  exists, the reconstruction ratio; effective rank, which ranks the snapshots of a run well
  (<!--viny:encsel_tau snapshots 100 effective_rank--><!--/viny-->), fails across recipes (<!--viny:encsel_tau encoders 100 effective_rank--><!--/viny-->).

The earlier full publication (75 cells, 25-epoch encoders that had learned little beyond colour
means, 15 fine-tuning epochs) is in git at commit 03357aa.
"""


def results_index() -> str:
    """``results/README.md``: one line per result folder (what, command, headline number) and what they show."""
    return render(INDEX, keep_marks=False)


def stale(root: Path = ROOT) -> list[Path]:
    """The files whose committed text differs from what :func:`render` computes now."""
    out = [f for f in marked_files(root) if render(f.read_text()) != f.read_text()]
    index = root / "results" / "README.md"
    if not index.is_file() or index.read_text() != results_index():
        out.append(index)
    return out


def update(root: Path = ROOT) -> list[Path]:
    """Rewrite every stale file; returns those written."""
    from viny.files import atomic_write_text

    written = []
    for f in marked_files(root):
        text = f.read_text()
        new = render(text)
        if new != text:
            atomic_write_text(f, new)
            written.append(f)
    index = root / "results" / "README.md"
    new = results_index()
    if not index.is_file() or index.read_text() != new:
        atomic_write_text(index, new)
        written.append(index)
    return written


def render_figure(path: Path = FIGURE, scale: float = 1.5) -> Path:
    """The README's figure: mIoU vs fine-tuning images on the staged data (Fig. 3), as a PNG."""
    import vl_convert

    from viny.figures import miou_vs_size
    from viny.results import control_rows, finetune_rows

    table = grid_table("staged")
    chart = miou_vs_size(finetune_rows(table), control=control_rows(table))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(vl_convert.vegalite_to_png(chart.to_json(), scale=scale))
    return path


def word_count(text: str) -> int:
    """Words as ``wc -w`` counts them (marks included)."""
    return len(text.split())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m viny.docs", description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only list the stale files; exit 1 if any")
    ap.add_argument("--figure", action="store_true", help=f"also render {FIGURE.relative_to(ROOT)} from results/staged")
    args = ap.parse_args(argv)
    if args.check:
        files = stale()
        for f in files:
            print(f"stale: {f.relative_to(ROOT)}")
        return 1 if files else 0
    for f in update():
        print(f"wrote {f.relative_to(ROOT)}")
    if args.figure:
        print(f"wrote {render_figure().relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
