"""The paper's claims, checked against a grid's results: supported, contradicted, or
inconclusive given the seed spread. Every verdict is computed here from the numbers;
nothing is written by hand.

Intervals are 95 % Student t intervals over seeds of paired differences (the same seed
with and without a treatment, which shares the data order and the fine-tuning split);
a claim is *supported* when the interval lies on the claimed side of zero, *contradicted*
when it lies on the other side, and *inconclusive* otherwise or when the grid lacks the
cells the claim needs (said so).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from viny.results import control_rows, finetune_rows, study_rows
from viny.stats import mean_interval, paired_difference
from viny.study import FILES, GEOMETRY, INDOMAIN, INTERMEDIATE_TASKS, JOINT, PRETRAINED

__all__ = ["findings", "findings_markdown", "CLAIMS", "interval_verdict", "format_interval", "position_prior", "pretraining_gain",
           "BEYOND_CLAIMS", "beyond_findings", "joint_vs_sequential", "indomain_vs_imagenette", "ALONG_2K"]

CLAIMS = {
    "pretraining_small_data": "Pre-training helps most when fine-tuning data is small.",
    "diminishing_finetune": "More fine-tuning data helps with diminishing returns (smaller gains per doubling).",
    "diminishing_pretrain": "More pre-training data helps with diminishing returns.",
    "cls_hurts": "Intermediate CLS fine-tuning (Intel) lowers downstream mIoU.",
    "cls_hurts_where_pretraining_helps": "The drop from CLS fine-tuning is largest where pre-training helps most.",
    "spatial_probe": "Spatial (patch-aligned) intermediate supervision raises patch-probe accuracy over the pre-trained encoder.",
}


# the paper's spatial task (Pets trimaps) first, then the label-free one on the Intel images
SPATIAL_ENCODERS = tuple(INTERMEDIATE_TASKS[t].label for t in ("spatial", "spatial_intel"))


def interval_verdict(iv: dict, positive_is_claim: bool = True) -> str:
    lo, hi = iv["lo"], iv["hi"]
    if any(math.isnan(v) for v in (lo, hi)):
        return "inconclusive"
    if (lo > 0) if positive_is_claim else (hi < 0):
        return "supported"
    if (hi < 0) if positive_is_claim else (lo > 0):
        return "contradicted"
    return "inconclusive"


def format_interval(iv: dict) -> str:
    if math.isnan(iv["lo"]):
        return f"{iv['mean']:+.2f} (n={iv['n']}, no interval)"
    return f"{iv['mean']:+.2f} [{iv['lo']:+.2f}, {iv['hi']:+.2f}] (n={iv['n']})"


def _miou(ft: pd.DataFrame, pretrain: int, inter: str, size: int, metric: str) -> pd.Series:
    g = ft[(ft["pretrain_images"] == pretrain) & (ft["intermediate"] == inter) & (ft["train_size"] == size)]
    return 100 * g.groupby("seed")[metric].mean()


def _row(key: str, verdict: str, evidence: str) -> dict:
    return {"claim": key, "statement": CLAIMS[key], "verdict": verdict, "evidence": evidence}


def _pretraining_small_data(ft, metric):
    pres = sorted(p for p in ft["pretrain_images"].unique() if p > 0)
    none = ft[ft["intermediate"] == "none"]
    # the fine-tuning sizes at which both the largest encoder and random init were measured
    sizes = sorted(set(none.loc[none["pretrain_images"] == pres[-1], "train_size"]) & set(none.loc[none["pretrain_images"] == 0, "train_size"])) if pres else []
    if not pres or 0 not in set(ft["pretrain_images"]) or len(sizes) < 2:
        return _row("pretraining_small_data", "inconclusive", "needs runs with and without pre-training at two or more fine-tuning sizes")
    p = int(pres[-1])
    small, large = int(sizes[0]), int(sizes[-1])
    g_small = _miou(ft, p, "none", small, metric) - _miou(ft, 0, "none", small, metric)
    g_large = _miou(ft, p, "none", large, metric) - _miou(ft, 0, "none", large, metric)
    gain_small = mean_interval(g_small.dropna())
    diff = paired_difference(g_small, g_large)
    if interval_verdict(gain_small) == "contradicted" or interval_verdict(diff) == "contradicted":
        verdict = "contradicted"
    elif interval_verdict(gain_small) == "supported" and interval_verdict(diff) == "supported":
        verdict = "supported"
    else:
        verdict = "inconclusive"
    return _row("pretraining_small_data", verdict,
                f"gain from {p:,} pre-training images at {small} fine-tuning images: {format_interval(gain_small)} points; "
                f"gain at {small} minus gain at {large}: {format_interval(diff)} points")


def _diminishing(ft, metric, axis: str, key: str):
    # the levels measured at the fixed level of the other axis (a grid still running may lack some)
    if not len(ft):
        return _row(key, "inconclusive", "needs finished fine-tuning cells; this grid has none yet")
    if axis == "train_size":
        cells = ft[(ft["intermediate"] == "none")]
        if not len(cells):
            return _row(key, "inconclusive", "needs finished fine-tuning cells without an intermediate stage; this grid has none yet")
        fixed = cells["pretrain_images"].max()
        cells = cells[cells["pretrain_images"] == fixed]
        levels = sorted(int(v) for v in cells["train_size"].unique())
        what = f"fine-tuning sizes {levels} (pre-training {int(fixed):,})"
    else:
        cells = ft[(ft["intermediate"] == "none") & (ft["pretrain_images"] > 0)]
        fixed = int(cells["train_size"].min()) if len(cells) else None
        cells = cells[cells["train_size"] == fixed]
        levels = sorted(int(v) for v in cells["pretrain_images"].unique())
        what = f"pre-training sizes {levels} (fine-tuning {fixed})"
    if len(levels) < 3:
        return _row(key, "inconclusive", f"needs three or more levels; this grid has {what}")
    per_seed = cells.groupby(["seed", axis])[metric].mean().unstack() * 100
    steps = np.log2(np.asarray(levels, float))
    slopes = per_seed.diff(axis=1).iloc[:, 1:] / np.diff(steps)  # points per doubling, per seed
    first, last = slopes.iloc[:, 0], slopes.iloc[:, -1]
    gain = mean_interval(first.dropna())
    drop = paired_difference(last, first)  # negative = diminishing
    if interval_verdict(gain) == "supported" and interval_verdict(drop, positive_is_claim=False) == "supported":
        verdict = "supported"
    elif interval_verdict(drop, positive_is_claim=False) == "contradicted":
        verdict = "contradicted"
    else:
        verdict = "inconclusive"
    return _row(key, verdict, f"{what}: first gain per doubling {format_interval(gain)} points; last minus first {format_interval(drop)} points")


def _cls_hurts(ft, metric):
    cells = ft[ft["intermediate"].isin(["none", "cls_intel"])]
    diffs = []
    for (p, n), g in cells.groupby(["pretrain_images", "train_size"]):
        a = _miou(g, p, "cls_intel", n, metric)
        b = _miou(g, p, "none", n, metric)
        common = a.index.intersection(b.index)
        if len(common):
            diffs.append((a[common] - b[common]).rename((p, n)))
    if not diffs:
        return _row("cls_hurts", "inconclusive", "needs runs with and without the CLS stage"), None
    # a grid still running has cells with fewer seeds: judged on the complete cells only
    seeds = max(len(d) for d in diffs)
    partial = sum(len(d) < seeds for d in diffs)
    diffs = [d for d in diffs if len(d) == seeds]
    per_seed = pd.concat(diffs, axis=1).mean(axis=1)  # mean over cells, per seed
    iv = mean_interval(per_seed.to_numpy())
    # how far the pooled cells disagree: each cell's own interval, and how many exclude zero either way
    cell_ivs = [mean_interval(d.to_numpy()) for d in diffs]
    lower = sum(c["hi"] < 0 for c in cell_ivs)
    higher = sum(c["lo"] > 0 for c in cell_ivs)
    means = [c["mean"] for c in cell_ivs]
    epochs = sorted({int(v) for v in cells.get("intermediate_epochs", pd.Series(dtype=float)).dropna().unique()})
    stage = f"the CLS stage ({', '.join(map(str, epochs))} epochs)" if epochs else "the CLS stage"
    return _row("cls_hurts", interval_verdict(iv, positive_is_claim=False),
                f"change in {metric} from {stage}, averaged over {len(diffs)} cells: {format_interval(iv)} points; per cell "
                f"{min(means):+.2f} to {max(means):+.2f}, {lower} significantly lower, {higher} significantly higher"
                + (f"; {partial} cell(s) with fewer than {seeds} seeds so far left out" if partial else "")), diffs


def _cls_where_pretraining_helps(ft, metric, diffs):
    if not diffs:
        return _row("cls_hurts_where_pretraining_helps", "inconclusive", "needs runs with and without the CLS stage")
    harms, gains = {}, {}
    for d in diffs:
        p, n = int(d.name[0]), int(d.name[1])
        if p == 0:
            continue
        base = _miou(ft, 0, "none", n, metric)
        if len(base):
            gains[(p, n)] = (_miou(ft, p, "none", n, metric) - base).mean()
            harms[(p, n)] = -d
    if len(gains) < 2:
        return _row("cls_hurts_where_pretraining_helps", "inconclusive",
                    "needs two or more (pre-training, fine-tuning size) cells with pre-training, a baseline and the CLS stage")
    best = max(gains, key=gains.get)
    worst = min(gains, key=gains.get)
    iv = paired_difference(harms[best], harms[worst])
    return _row("cls_hurts_where_pretraining_helps", interval_verdict(iv),
                f"drop where pre-training helps most {best} (gain {gains[best]:+.2f}) minus drop where it helps least {worst} "
                f"(gain {gains[worst]:+.2f}): {format_interval(iv)} points")


def _spatial_probe(table: pd.DataFrame, grid_dir: Path | None):
    geo = study_rows(table, GEOMETRY)
    frames = []
    for _, row in geo.iterrows():
        path = Path(row["output_dir"]) / FILES["geometry"]
        if path.is_file():
            frames.append(pd.read_csv(path).assign(seed=row.get("seed", 0)))
    if not frames:
        return _row("spatial_probe", "inconclusive", "no geometry study in this grid")
    g = pd.concat(frames)
    g = g[g["layer"] == g["layer"].max()]
    # the paper's spatial task (Pets trimaps) if the study has it, else the label-free one on the Intel images
    name = next((e for e in SPATIAL_ENCODERS if e in set(g["encoder"])), None)
    spatial = g[g["encoder"] == name].set_index("seed")["probe_accuracy"] * 100
    pre = g[g["encoder"] == PRETRAINED].set_index("seed")["probe_accuracy"] * 100
    if not len(spatial) or not len(pre):
        return _row("spatial_probe", "inconclusive", "the geometry study lacks the spatial or the pre-trained encoder")
    diff = paired_difference(spatial, pre)
    if diff["n"] >= 2:
        return _row("spatial_probe", interval_verdict(diff), f"held-out probe accuracy, {name} minus pre-trained: {format_interval(diff)} points over seeds")
    # one seed: a binomial standard error over the held-out patches (patches are not independent: optimistic)
    n = float(g["probe_test_patches"].iloc[0]) if "probe_test_patches" in g else float("nan")
    p1, p0 = spatial.iloc[0] / 100, pre.iloc[0] / 100
    se = 100 * math.sqrt(p1 * (1 - p1) / n + p0 * (1 - p0) / n) if n == n else float("nan")
    iv = {"mean": diff["mean"], "lo": diff["mean"] - 1.96 * se, "hi": diff["mean"] + 1.96 * se, "n": 1}
    return _row("spatial_probe", interval_verdict(iv),
                f"held-out probe accuracy, {name} minus pre-trained: {format_interval(iv)} points (one seed; interval from the "
                f"{int(n) if n == n else '?'} held-out patches, which are not independent)")


def findings(table: pd.DataFrame, grid_dir: str | Path | None = None, metric: str = "miou") -> pd.DataFrame:
    """One row per claim: ``claim, statement, verdict, evidence``."""
    ft = finetune_rows(table) if "study" in table else table
    rows = [_pretraining_small_data(ft, metric), _diminishing(ft, metric, "train_size", "diminishing_finetune"),
            _diminishing(ft, metric, "pretrain_images", "diminishing_pretrain")]
    row, diffs = _cls_hurts(ft, metric)
    rows += [row, _cls_where_pretraining_helps(ft, metric, diffs), _spatial_probe(table, Path(grid_dir) if grid_dir else None)]
    return pd.DataFrame(rows)


def position_prior(table: pd.DataFrame, metric: str = "miou") -> pd.DataFrame:
    """The baseline's control, per fine-tuning size: mIoU of viny's random init (the authors'
    N(0,1) position embeddings) minus that of the small-position control (``init: timm``),
    paired by seed, in points (``train_size, mean, lo, hi, n, verdict``; supported = the
    N(0,1) positions help). Empty when the grid has no control cells."""
    ft, ctrl = finetune_rows(table), control_rows(table)
    ft = ft[ft["init"] == "reference"]
    rows = []
    if not len(ctrl):
        return pd.DataFrame(rows)
    for n in sorted(ctrl["train_size"].unique()):
        ref = _miou(ft, 0, "none", n, metric)
        small = 100 * ctrl[ctrl["train_size"] == n].groupby("seed")[metric].mean()
        iv = paired_difference(ref, small)
        rows.append({"train_size": int(n), **iv, "verdict": interval_verdict(iv)})
    return pd.DataFrame(rows)


def pretraining_gain(table: pd.DataFrame, metric: str = "miou") -> pd.DataFrame:
    """What pre-training gives over viny's random init, per pre-training and fine-tuning size:
    mIoU of the pre-trained encoder (no intermediate stage) minus that of random init, paired
    by seed, in points (``pretrain_images, train_size, mean, lo, hi, n, verdict``; supported =
    pre-training helps). Empty when the grid lacks random init or pre-trained cells."""
    ft = finetune_rows(table) if "study" in table else table
    if "init" in ft:
        ft = ft[ft["init"] == "reference"]
    rows = []
    if 0 not in set(ft["pretrain_images"]):
        return pd.DataFrame(rows)
    for p in sorted(v for v in ft["pretrain_images"].unique() if v > 0):
        for n in sorted(ft[(ft["pretrain_images"] == p) & (ft["intermediate"] == "none")]["train_size"].unique()):
            iv = paired_difference(_miou(ft, p, "none", n, metric), _miou(ft, 0, "none", n, metric))
            if iv["n"]:
                rows.append({"pretrain_images": int(p), "train_size": int(n), **iv, "verdict": interval_verdict(iv)})
    return pd.DataFrame(rows)


def findings_markdown(df: pd.DataFrame) -> str:
    icon = {"supported": "✅ supported", "contradicted": "❌ contradicted", "inconclusive": "➖ inconclusive"}
    return "\n".join(f"- **{r.statement}** {icon[r.verdict]}: {r.evidence}" for r in df.itertuples())


# ---- beyond the paper (issue #34): the joint and in-domain arms ------------------------------
BEYOND_CLAIMS = {
    "joint_beats_sequential": "Joint training (fine-tuning with the auxiliary SimMIM loss) beats sequential fine-tuning at 100 images.",
    "indomain_beats_imagenette": "In-domain pre-training (SimMIM on the Pets images) beats Imagenette pre-training at (nearly) equal steps.",
}
# the 2.4k run's snapshots fine-tuned along pre-training (benchmarks/along_pretraining.py): the
# Imagenette encoder whose image-steps can be matched to the in-domain encoder's
ALONG_2K = "results/along_pretraining/simmim_2368"
ALONG_FINETUNE_EPOCHS = 50  # its fine-tunes' length (results/along_pretraining/simmim_2368/README.md)


def _beyond_row(key: str, verdict: str, evidence: str, pretrain_images=None) -> dict:
    return {"claim": key, "statement": BEYOND_CLAIMS[key], "verdict": verdict, "evidence": evidence, "pretrain_images": pretrain_images}


def _reference_finetunes(table: pd.DataFrame) -> pd.DataFrame:
    ft = finetune_rows(table) if "study" in table else table
    return ft[ft["init"] == "reference"] if "init" in ft else ft


def joint_vs_sequential(table: pd.DataFrame, metric: str = "miou") -> pd.DataFrame:
    """The joint arm against sequential fine-tuning, per pre-training and fine-tuning size:
    mIoU of the joint study's cell (fine-tuning + ``aux_mim_weight`` x SimMIM) minus that of
    the finetune study's cell with the same pre-training size, fine-tuning size and seed
    (intermediate none), paired by seed, in points (``pretrain_images, train_size,
    aux_mim_weight, mean, lo, hi, n, verdict``; supported = joint is better). Empty without
    joint cells."""
    joint = study_rows(table, JOINT)
    rows = []
    if not len(joint):
        return pd.DataFrame(rows)
    joint = joint.assign(pretrain_images=joint["pretrain_images"].fillna(0) if "pretrain_images" in joint else 0)
    ft = _reference_finetunes(table)
    for (p, n), g in joint.groupby(["pretrain_images", "train_size"]):
        iv = paired_difference(100 * g.groupby("seed")[metric].mean(), _miou(ft, p, "none", n, metric))
        if iv["n"]:
            w = sorted(g["aux_mim_weight"].dropna().unique()) if "aux_mim_weight" in g else []
            rows.append({"pretrain_images": int(p), "train_size": int(n), "aux_mim_weight": ", ".join(f"{v:g}" for v in w),
                         **iv, "verdict": interval_verdict(iv)})
    return pd.DataFrame(rows)


def _indomain_steps() -> tuple[str, int, int] | None:
    """``(name, images, image-steps)`` of the shipped in-domain encoder (``None``: not shipped)."""
    from viny.pretrained import PRETRAINED_DIR, SHIPPED_INDOMAIN, card

    for name, images in SHIPPED_INDOMAIN.items():
        if (PRETRAINED_DIR / f"viny_{name}.safetensors").is_file():
            return name, images, images * int(card(name)["config"]["epochs"])
    return None


def _along_2k(along: str | Path | None):
    """``(downstream fine-tunes, pre-training images)`` along the 2.4k run (``(None, 0)``: not there)."""
    from viny.files import project_path

    path = project_path(along or ALONG_2K) / "downstream.csv"  # viny.selection.DOWNSTREAM_CSV (which imports this module)
    return (pd.read_csv(path), 2368) if path.is_file() else (None, 0)


def indomain_vs_imagenette(table: pd.DataFrame, metric: str = "miou", along: str | Path | None = None) -> pd.DataFrame:
    """The in-domain encoder (the indomain study's cells) against Imagenette pre-training, per
    fine-tuning size, paired by seed, in points (``comparison, train_size, finetune_epochs,
    indomain_steps, imagenette_steps, mean, lo, hi, n, verdict``; supported = in-domain is
    better):

    - ``nearest steps``: against the snapshot of the shipped 2.4k encoder's run whose
      pre-training image-steps are closest to the in-domain encoder's, fine-tuned for the same
      epochs on the same test images and seeds (``along``: ``results/along_pretraining/simmim_2368``);
    - ``as shipped (<n> images)``: against the finetune study's cells of each shipped Imagenette
      encoder (no intermediate stage), whose pre-training had several times the steps.

    Empty without indomain cells."""
    from viny.pretrained import SHIPPED, card

    dom = study_rows(table, INDOMAIN)
    shipped = _indomain_steps()
    rows = []
    if not len(dom) or shipped is None:
        return pd.DataFrame(rows)
    _, _, steps = shipped
    epochs_col = dom["epochs"] if "epochs" in dom else pd.Series(0, index=dom.index)
    down, along_images = _along_2k(along)
    ft = _reference_finetunes(table)
    ft_epochs = set(ft["epochs"].dropna().astype(int)) if "epochs" in ft else set()
    for (e, n), g in dom.assign(epochs=epochs_col).groupby(["epochs", "train_size"]):
        ours = 100 * g.groupby("seed")[metric].mean()
        e, n = int(e), int(n)
        if down is not None and e == ALONG_FINETUNE_EPOCHS:
            snaps = sorted(int(v) for v in down["epoch"].unique() if v > 0)
            if snaps:
                best = min(snaps, key=lambda ep: abs(ep * along_images - steps))
                ref = 100 * down[(down["epoch"] == best) & (down["train_size"] == n)].groupby("seed")[metric].mean()
                iv = paired_difference(ours, ref)
                if iv["n"]:
                    rows.append({"comparison": "nearest steps", "reference": f"simmim_imagenette2k run, epoch {best}", "train_size": n,
                                 "finetune_epochs": e, "indomain_steps": steps, "imagenette_steps": best * along_images, **iv,
                                 "verdict": interval_verdict(iv)})
        if e in ft_epochs:
            for name, images in SHIPPED.items():
                ref = _miou(ft[ft["epochs"] == e], images, "none", n, metric)
                iv = paired_difference(ours, ref)
                if iv["n"]:
                    rows.append({"comparison": f"as shipped ({images:,} images)", "reference": name, "train_size": n, "finetune_epochs": e,
                                 "indomain_steps": steps, "imagenette_steps": images * int(card(name)["config"]["epochs"]), **iv,
                                 "verdict": interval_verdict(iv)})
    return pd.DataFrame(rows)


def beyond_findings(table: pd.DataFrame, metric: str = "miou", along: str | Path | None = None, train_size: int = 100) -> pd.DataFrame:
    """The two claims beyond the paper at ``train_size`` fine-tuning images, one row per
    pre-training size for the joint arm and one for the in-domain encoder
    (``claim, statement, verdict, evidence, pretrain_images``). Empty rows are left out: a
    grid without the joint or indomain study has no row for it."""
    rows = []
    joint = joint_vs_sequential(table, metric)
    for r in joint[joint["train_size"] == train_size].itertuples() if len(joint) else []:
        what = "random init" if r.pretrain_images == 0 else f"{r.pretrain_images:,} pre-training images"
        rows.append(_beyond_row("joint_beats_sequential", r.verdict,
                                f"{what}, {train_size} fine-tuning images: joint (aux_mim_weight {r.aux_mim_weight}) minus sequential "
                                f"{format_interval(r._asdict())} points", r.pretrain_images))
    dom = indomain_vs_imagenette(table, metric, along)
    dom = dom[dom["train_size"] == train_size] if len(dom) else dom
    if len(dom):
        near = dom[dom["comparison"] == "nearest steps"]
        key = near.iloc[0] if len(near) else dom.iloc[0]
        parts = [f"{r.comparison} ({r.reference}; {r.indomain_steps:,} vs {r.imagenette_steps:,} pre-training image-steps, "
                 f"{r.finetune_epochs} fine-tuning epochs): {format_interval(r._asdict())} points" for r in dom.itertuples()]
        verdict = key["verdict"] if len(near) else "inconclusive"
        rows.append(_beyond_row("indomain_beats_imagenette", verdict,
                                f"in-domain minus Imagenette at {train_size} fine-tuning images: " + "; ".join(parts)
                                + ("" if len(near) else " (no snapshot at nearly equal steps: the shipped encoders had more steps)")))
    return pd.DataFrame(rows, columns=["claim", "statement", "verdict", "evidence", "pretrain_images"])

