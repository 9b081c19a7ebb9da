"""Label-free checkpoint selection along pre-training (the DSE paper's question, for ViNy).

A pre-training run with ``--save-encoder-every N`` keeps SimMIM snapshots
``checkpoints/encoder_epoch{E}.safetensors``. For each snapshot:

* :func:`label_free_scores`: DSE (the paper's adaptive lambda across the run's
  snapshots, and its parts), effective rank (RankMe) of the patch tokens, the
  reconstruction yardstick on held-out Intel images (lower is better, so its score is
  ``-ratio``), and, for reference, the held-out patch probe (which uses labels);
* :func:`downstream_along_pretraining`: the ground truth, segmentation mIoU after
  fine-tuning from the snapshot on Pets (sizes x seeds), next to random init;
* :func:`selection_summary`: per score, Kendall's tau with the ground truth (bootstrap
  interval over snapshots) and the regret of choosing by it (mIoU of its pick minus the
  best snapshot's) next to "take the last checkpoint".

``viny select RUN --by dse`` writes the chosen snapshot as an encoder file with a card.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from viny.config import make_config
from viny.diagnostics import diagnose, kendall_tau, kendall_tau_rows, layer_tokens
from viny.errors import VinyError
from viny.findings import format_interval, interval_verdict
from viny.geometry import dse_scores, effective_rank
from viny.simmim import reconstruction_yardstick
from viny.stats import paired_difference
from viny.train import train
from viny.weights import load_encoder, load_simmim, load_weights, read_metadata, save_weights, snapshots

__all__ = ["DOWNSTREAM_CSV", "SCORES_CSV", "curve_folder", "read_along_pretraining", "label_free_scores", "downstream_along_pretraining", "kendall_tau_interval", "choose", "selection_summary",
           "selection_verdicts", "SCORES", "REFERENCE_SCORES", "select_snapshot", "along_table", "per_seed", "gains_over_random",
           "selection_across_runs", "across_runs_display", "across_runs_markdown", "verdict_counts"]

# label-free scores (higher = predicted better), and the reference that uses labels
SCORES = {"dse": "DSE (adaptive lambda)", "effective_rank": "effective rank (RankMe)", "reconstruction": "-(held-out reconstruction ratio)",
          "last": "take the last checkpoint"}
# scores that use labels, for reference (higher = better): the linear patch probe, the nearest-neighbour (Hummingbird) probe
REFERENCE_SCORES = {"probe_accuracy": "held-out patch probe (uses labels)",
                    "nn_probe_miou": "nearest-neighbour patch probe, mIoU (uses labels, no training)"}


def label_free_scores(run_dir: str | Path, data, heldout: torch.Tensor | None = None, dse_images: int = 512,
                      device: str = "auto", precision: str = "auto", seed: int = 0, every: int = 1,
                      at: Sequence[int] | None = None) -> pd.DataFrame:
    """One row per snapshot: ``epoch``, DSE parts and ``dse`` (adaptive lambda across the
    snapshots), ``effective_rank`` (of up to 4,096 patch tokens), ``probe_accuracy`` (uses
    labels: reference only) and, with ``heldout`` (normalised images), ``reconstruction_ratio``."""

    rows = []
    for epoch, path in snapshots(run_dir, every, at):
        enc = load_encoder(path)
        toks = layer_tokens(enc, data.images, device=device, precision=precision)[len(enc.blocks)]
        row = {"epoch": epoch, **diagnose(toks, data, dse_images, seed)}
        flat = toks.reshape(-1, toks.shape[-1])
        pick = torch.randperm(len(flat), generator=torch.Generator().manual_seed(seed))[:4096]
        row["effective_rank"] = effective_rank(flat[pick])
        if heldout is not None and read_metadata(path).get("kind") == "simmim":
            row["reconstruction_ratio"] = reconstruction_yardstick(load_simmim(path), heldout, seed=seed)["ratio"]
        rows.append(row)
    table = pd.DataFrame(rows)
    table["dse_lambda1"] = table["dse"]
    table["dse"] = dse_scores(table)
    return table


def downstream_along_pretraining(run_dir: str | Path, out_dir: str | Path, train_sizes: Sequence[int] = (100, 250),
                                 seeds: Sequence[int] = (0, 1, 2), random_init: bool = True, progress: bool = False,
                                 every: int = 1, at: Sequence[int] | None = None, **finetune) -> pd.DataFrame:
    """Fine-tune from every snapshot (and from random init) at each size and seed:
    one row per run with ``epoch`` (0: random init), ``train_size``, ``seed`` and the scores.
    ``finetune`` holds the fine-tuning options (e.g. ``epochs``, ``data``, ``test_size``,
    ``split``). Runs are kept in ``out_dir`` and reused, so the call can be repeated."""

    starts = ([(0, None)] if random_init else []) + [(e, str(p)) for e, p in snapshots(run_dir, every, at)]
    rows = []
    for epoch, init in starts:
        for n in train_sizes:
            for seed in seeds:
                out = Path(out_dir) / f"e{epoch}-n{n}-s{seed}"
                if (out / "results.json").is_file():
                    res = json.loads((out / "results.json").read_text())
                else:
                    cfg = make_config("finetune", train_size=n, seed=seed, init_from=init, **finetune)
                    res = train(cfg, out, resume=(out / "state.pt").is_file(), progress=progress)
                rows.append({"epoch": epoch, "train_size": n, "seed": seed, "miou": res["miou"], "paper_miou": res["paper_miou"]})
    return pd.DataFrame(rows)


DOWNSTREAM_CSV = "downstream.csv"  # benchmarks/along_pretraining.py: one row per fine-tune (epoch 0: random init)
SCORES_CSV = "scores.csv"  # the label-free scores of the same snapshots


def curve_folder(curve_results: str, pretrain_images: int) -> str:
    """``curve_results`` with ``{pretrain_images}`` filled in, so one grid study can show the
    measured curve of each pre-training size (``results/along_pretraining/simmim_{pretrain_images}``)."""
    try:
        return curve_results.format(pretrain_images=pretrain_images)
    except (KeyError, IndexError, ValueError) as e:
        raise VinyError(f"invalid curve_results {curve_results!r}: the only placeholder it may hold is {{pretrain_images}} ({e})") from None


def read_along_pretraining(folder: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A measured curve along pre-training (``benchmarks/along_pretraining.py``'s output):
    ``(downstream runs, label-free scores)``, checked for the columns the figures need."""
    folder = Path(folder)
    need = {DOWNSTREAM_CSV: {"epoch", "train_size", "seed", "miou"}, SCORES_CSV: {"epoch", "dse", "effective_rank"}}
    tables = []
    for name, cols in need.items():
        path = folder / name
        if not path.is_file():
            raise VinyError(f"{path} does not exist: curve_results must be a folder written by benchmarks/along_pretraining.py "
                            f"(with {DOWNSTREAM_CSV} and {SCORES_CSV})")
        table = pd.read_csv(path)
        missing = sorted(cols - set(table.columns))
        if missing:
            raise VinyError(f"{path}: missing column(s) {', '.join(missing)}; rewrite it with benchmarks/along_pretraining.py")
        tables.append(table)
    return tables[0], tables[1]


def kendall_tau_interval(x: Sequence[float], y: Sequence[float], n_boot: int = 2000, seed: int = 0) -> dict[str, float]:
    """Kendall's tau-b of ``x`` and ``y`` with a 95 % percentile bootstrap interval over the
    pairs (resampled with replacement; resamples with fewer than 3 distinct pairs skipped)."""

    x, y = np.asarray(x, float), np.asarray(y, float)
    tau = kendall_tau(x, y)
    idx = np.random.default_rng(seed).integers(0, len(x), (n_boot, len(x)))
    distinct = (np.diff(np.sort(idx, axis=1), axis=1) > 0).sum(1) + 1
    idx = idx[distinct >= 3]
    boots = kendall_tau_rows(x[idx], y[idx]) if len(idx) else np.array([])
    boots = boots[~np.isnan(boots)]
    lo, hi = np.percentile(boots, [2.5, 97.5]) if len(boots) else (float("nan"), float("nan"))
    return {"tau": tau, "lo": float(lo), "hi": float(hi), "n": len(x)}


def choose(scores: pd.Series) -> int:
    """The epoch a score picks: the highest score (ties: the later epoch)."""
    s = scores.dropna()
    if s.empty:
        raise VinyError("no snapshot has this score")
    best = s.max()
    return int(max(e for e, v in s.items() if v == best))


def _score_series(scores: pd.DataFrame, name: str) -> pd.Series:
    s = scores.set_index("epoch")
    if name == "last":
        return pd.Series(s.index.to_numpy(dtype=float), index=s.index)
    if name == "reconstruction":
        return -s["reconstruction_ratio"] if "reconstruction_ratio" in s else pd.Series(dtype=float)
    return s[name]


def selection_summary(scores: pd.DataFrame, downstream: pd.DataFrame, train_size: int, metric: str = "miou") -> pd.DataFrame:
    """Per score: Kendall's tau (with interval) between the score and the mean downstream
    ``metric`` over seeds at ``train_size``, the epoch it picks, and its regret (points:
    mIoU of the pick minus that of the best snapshot; 0 is a perfect pick)."""
    truth = downstream[(downstream["train_size"] == train_size) & (downstream["epoch"] > 0)].groupby("epoch")[metric].mean() * 100
    rows = []
    for name in [*SCORES, *REFERENCE_SCORES]:
        if name not in SCORES and name not in scores:  # e.g. scores computed before the nearest-neighbour probe existed
            continue
        s = _score_series(scores, name) if name in SCORES else scores.set_index("epoch")[name]
        s = s.reindex(truth.index).dropna()
        if len(s) < 2:
            continue
        pick = choose(s)
        iv = kendall_tau_interval(s.to_numpy(), truth.reindex(s.index).to_numpy()) if name != "last" else kendall_tau_interval(s.index, truth.reindex(s.index))
        rows.append({"score": name, "label": SCORES.get(name, REFERENCE_SCORES.get(name)), "train_size": train_size,
                     "tau": iv["tau"], "tau_lo": iv["lo"], "tau_hi": iv["hi"], "snapshots": iv["n"], "picks_epoch": pick,
                     "miou_of_pick": truth[pick], "best_epoch": int(truth.idxmax()), "regret": truth[pick] - truth.max()})
    return pd.DataFrame(rows)


def selection_verdicts(scores: pd.DataFrame, downstream: pd.DataFrame, train_size: int, metric: str = "miou") -> pd.DataFrame:
    """The label-free selection question as computed verdicts (``claim, verdict, evidence``):
    does DSE pick a checkpoint that segments better than the last one, and better than
    effective rank's pick (paired by fine-tuning seed: 95 % t interval of the mIoU
    difference), and does DSE rank the checkpoints like mIoU (Kendall's tau interval)?"""

    seeds = per_seed(downstream, train_size, metric)
    summary = selection_summary(scores, downstream, train_size, metric).set_index("score")

    rows = []
    if "dse" in summary.index:
        pick = int(summary.loc["dse", "picks_epoch"])
        for other, claim in (("last", "DSE picks a better checkpoint than taking the last one"),
                             ("effective_rank", "DSE picks a better checkpoint than effective rank")):
            if other in summary.index:
                o = int(summary.loc[other, "picks_epoch"])
                iv = paired_difference(seeds[pick], seeds[o])
                rows.append({"claim": claim, "verdict": interval_verdict(iv) if pick != o else "inconclusive",
                             "evidence": f"at {train_size} fine-tuning images, DSE picks epoch {pick}, {other} picks {o}: "
                                         f"mIoU difference {format_interval(iv)} points over seeds"})
        t = summary.loc["dse"]
        iv = {"mean": t["tau"], "lo": t["tau_lo"], "hi": t["tau_hi"], "n": int(t["snapshots"])}
        rows.append({"claim": "DSE ranks the checkpoints like downstream mIoU", "verdict": interval_verdict(iv),
                     "evidence": f"Kendall's tau {t['tau']:+.2f}, bootstrap 95 % interval [{t['tau_lo']:+.2f}, {t['tau_hi']:+.2f}] over "
                                 f"{int(t['snapshots'])} snapshots; regret of its pick {t['regret']:+.2f} points"})
    return pd.DataFrame(rows)


def along_table(scores: pd.DataFrame, downstream: pd.DataFrame, metric: str = "miou") -> pd.DataFrame:
    """One row per snapshot (epoch 0 = random init): downstream ``metric`` (%, mean and std
    over seeds) per fine-tuning size, next to the snapshot's label-free scores; the table
    of a curve's README."""
    d = downstream.assign(value=downstream[metric] * 100).groupby(["epoch", "train_size"])["value"].agg(["mean", "std"]).unstack("train_size")
    table = pd.DataFrame(index=d.index)
    for n in sorted(downstream["train_size"].unique()):
        table[f"{metric}_{n}_mean"] = d[("mean", n)]
        table[f"{metric}_{n}_std"] = d[("std", n)]
    cols = [c for c in ("reconstruction_ratio", "dse", "effective_rank", "probe_accuracy") if c in scores]
    return table.join(scores.set_index("epoch")[cols], how="left").reset_index()


def per_seed(downstream: pd.DataFrame, train_size: int, metric: str = "miou") -> pd.DataFrame:
    """Downstream ``metric`` in points at ``train_size``: one row per fine-tuning seed, one
    column per pre-training epoch (0: random init), for comparisons paired by seed."""
    return downstream[downstream["train_size"] == train_size].pivot_table(index="seed", columns="epoch", values=metric) * 100


def gains_over_random(downstream: pd.DataFrame, train_size: int, metric: str = "miou") -> pd.DataFrame:
    """Per snapshot: its downstream ``metric`` minus random init's (epoch 0), in points,
    paired by fine-tuning seed (mean and 95 % t interval)."""
    seeds = per_seed(downstream, train_size, metric)
    if 0 not in seeds:
        raise VinyError(f"no random-init runs (epoch 0) at {train_size} fine-tuning images: rerun benchmarks/along_pretraining.py")
    rows = [{"epoch": int(e), "train_size": train_size, **paired_difference(seeds[e], seeds[0])} for e in seeds if e > 0]
    return pd.DataFrame(rows)


PICKS = ("dse", "effective_rank", "reconstruction", "last")  # the label-free picks compared across runs


def selection_across_runs(curves: dict[str, tuple[pd.DataFrame, pd.DataFrame]]) -> pd.DataFrame:
    """One row per (run, fine-tuning size) of ``curves`` (``{run name: (downstream runs,
    label-free scores)}``): the best snapshot, each label-free pick and its regret (points),
    Kendall's tau of DSE and of effective rank (with interval), and each computed verdict of
    :func:`selection_verdicts` as a ``verdict: CLAIM`` column."""
    rows = []
    for run, (down, scores) in curves.items():
        for n in sorted(int(v) for v in down["train_size"].unique()):
            summary = selection_summary(scores, down, n).set_index("score")
            verdicts = selection_verdicts(scores, down, n).set_index("claim")["verdict"]
            row = {"run": run, "train_size": n, "snapshots": int(summary.loc["last", "snapshots"]),
                   "best_epoch": int(summary.loc["last", "best_epoch"]), "seeds": int(down[down["train_size"] == n]["seed"].nunique())}
            for s in PICKS:
                if s in summary.index:
                    row[f"{s}_epoch"] = int(summary.loc[s, "picks_epoch"])
                    row[f"{s}_regret"] = float(summary.loc[s, "regret"])
            for s in ("dse", "effective_rank"):
                row[f"{s}_tau"], row[f"{s}_tau_lo"], row[f"{s}_tau_hi"] = (float(summary.loc[s, k]) for k in ("tau", "tau_lo", "tau_hi"))
            row.update({f"verdict: {c}": v for c, v in verdicts.items()})
            rows.append(row)
    return pd.DataFrame(rows)


def across_runs_display(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`selection_across_runs`'s table as text, one column per shown heading: each
    pick with its regret, each tau with its interval."""
    def pick(r, s):
        return f"{int(r[f'{s}_epoch'])} ({r[f'{s}_regret']:+.2f})" if pd.notna(r.get(f"{s}_epoch")) else ""

    def tau(r, s):
        return f"{r[f'{s}_tau']:+.2f} [{r[f'{s}_tau_lo']:+.2f}, {r[f'{s}_tau_hi']:+.2f}]"

    return pd.DataFrame([{"run": str(r["run"]), "fine-tuning images": str(r["train_size"]), "snapshots": str(r["snapshots"]),
                          "best epoch": str(r["best_epoch"]), "DSE picks (regret)": pick(r, "dse"),
                          "effective rank picks (regret)": pick(r, "effective_rank"), "reconstruction picks (regret)": pick(r, "reconstruction"),
                          "last (regret)": pick(r, "last"), "tau DSE": tau(r, "dse"), "tau eff. rank": tau(r, "effective_rank")}
                         for r in table.to_dict("records")])


def across_runs_markdown(table: pd.DataFrame) -> str:
    """:func:`selection_across_runs`'s table as markdown (:func:`across_runs_display`)."""
    shown = across_runs_display(table)
    lines = ["| " + " | ".join(shown.columns) + " |", "|" + "---|" * len(shown.columns)]
    lines += ["| " + " | ".join(row) + " |" for row in shown.itertuples(index=False)]
    return "\n".join(lines)


def verdict_counts(table: pd.DataFrame) -> list[str]:
    """Per claim of :func:`selection_across_runs`'s table: how many (run, size) pairs support,
    contradict or leave it inconclusive, as one sentence each."""
    out = []
    for c in (c for c in table.columns if c.startswith("verdict: ")):
        counts = table[c].value_counts()
        out.append(f"{c[len('verdict: '):]}: " + ", ".join(f"{k} in {v}" for k, v in counts.items()) + f" of {len(table)} (run, size) pairs")
    return out


def select_snapshot(run_dir: str | Path, by: str, data, heldout: torch.Tensor | None, out: str | Path, **kw) -> tuple[Path, pd.DataFrame]:
    """Score a run's snapshots label-free, pick one ``by`` a score, and write it to ``out``
    (a ``.safetensors`` with JSON sidecar and a ``.md`` card); returns ``(out, scores)``."""

    if by not in SCORES:
        raise VinyError(f"--by {by!r}: use one of {', '.join(SCORES)}")
    table = label_free_scores(run_dir, data, heldout, **kw)
    epoch = choose(_score_series(table, by))
    path = dict(snapshots(run_dir))[epoch]
    sd, meta = load_weights(path)
    out = Path(out)
    row = table.set_index("epoch").loc[epoch].to_dict()
    save_weights(sd, out, **{**{k: v for k, v in meta.items() if k != "viny_version"}, "selected_by": by, "selected_epoch": epoch,
                             "source": str(path), "label_free_scores": row})
    lines = "\n".join(f"| {int(r.epoch)} | {r.dse:.4f} | {r.effective_rank:.2f} | "
                      f"{getattr(r, 'reconstruction_ratio', float('nan')):.3f} | {r.probe_accuracy:.4f} |" for r in table.itertuples())
    out.with_suffix(".md").write_text(
        f"# Snapshot chosen by {SCORES[by]}\n\nEpoch **{epoch}** of `{Path(run_dir).name}` ({path.name}), chosen without labels by "
        f"`viny select --by {by}` among {len(table)} snapshots.\n\n| epoch | DSE | effective rank | reconstruction ratio | probe accuracy |\n"
        f"|---|---|---|---|---|\n{lines}\n")
    return out, table
