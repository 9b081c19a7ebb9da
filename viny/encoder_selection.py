"""Which cheap score predicts downstream mIoU? One selection study across encoders (#34).

Along one pre-training run, "take the last checkpoint" was already optimal
(:mod:`viny.selection`), so scores could not be told apart. Here the candidates are every
encoder the project has, made by different recipes: random init (both inits), the shipped
SimMIM encoders (2.4k / 4.7k / 9.5k Imagenette images, 400 Pets images), the encoders after
the intermediate CLS stage, and (a second pool, its own fine-tuning protocol) the snapshots
along the three pre-training runs. Per pool, fine-tuning size and score:

* Kendall's tau between the score and the mean fine-tuned mIoU over seeds, with a 95 %
  bootstrap interval over encoders (:func:`viny.selection.kendall_tau_interval`);
* the regret of choosing by the score: mIoU of its pick minus the best encoder's, paired by
  fine-tuning seed (mean and 95 % t interval);
* a computed verdict for "the score ranks the encoders like downstream mIoU": supported
  when the tau interval lies above 0, contradicted below, else inconclusive.

Scores (higher = predicted better; :data:`SCORES`): the held-out reconstruction ratio
(negated; only encoders with a SimMIM decoder have one), effective rank (RankMe), DSE with
the adaptive lambda across the pool and with lambda 1, and two probes that use labels but no
fine-tuning: the linear patch probe and the nearest-neighbour (Hummingbird) probe. The
probes' images are the Pets images outside the fine-tuning test set.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from viny.errors import VinyError
from viny.findings import interval_verdict
from viny.geometry import dse_scores
from viny.selection import kendall_tau_interval
from viny.stats import paired_difference

__all__ = ["SCORES", "score_encoder", "with_pool_dse", "encoder_truth", "snapshot_pool", "selection_study", "study_verdicts",
           "STAGED_ENCODERS", "rank_table"]

SCORES = {
    "reconstruction": "-(held-out reconstruction ratio)",
    "effective_rank": "effective rank (RankMe)",
    "dse": "DSE (adaptive lambda across the pool)",
    "dse_lambda1": "DSE (lambda 1)",
    "probe_accuracy": "linear patch probe (labels, no fine-tuning)",
    "nn_probe_miou": "nearest-neighbour patch probe (labels, no training)",
}
LABEL_FREE = ("reconstruction", "effective_rank", "dse", "dse_lambda1")

# the staged grid's encoders: name -> (study, the cells' parameters that pick it)
STAGED_ENCODERS: dict[str, tuple[str, dict]] = {
    "random init (reference)": ("finetune", {"pretrain_images": 0, "intermediate": "none"}),
    "random init (timm)": ("control", {}),
    "SimMIM 2.4k": ("finetune", {"pretrain_images": 2368, "intermediate": "none"}),
    "SimMIM 4.7k": ("finetune", {"pretrain_images": 4734, "intermediate": "none"}),
    "SimMIM 9.5k": ("finetune", {"pretrain_images": 9469, "intermediate": "none"}),
    "random init + CLS": ("finetune", {"pretrain_images": 0, "intermediate": "cls_intel"}),
    "SimMIM 2.4k + CLS": ("finetune", {"pretrain_images": 2368, "intermediate": "cls_intel"}),
    "SimMIM 4.7k + CLS": ("finetune", {"pretrain_images": 4734, "intermediate": "cls_intel"}),
    "SimMIM 9.5k + CLS": ("finetune", {"pretrain_images": 9469, "intermediate": "cls_intel"}),
    "SimMIM Pets 400": ("indomain", {"epochs": 100}),
}


@torch.no_grad()
def score_encoder(encoder, data, simmim=None, heldout: torch.Tensor | None = None, dse_images: int = 512, seed: int = 0,
                  device: str = "auto", precision: str = "auto") -> dict[str, float]:
    """Every cheap score of one encoder on ``data`` (:class:`viny.diagnostics.DiagnosticImages`):
    :func:`viny.diagnostics.diagnose` (variance, probes, DSE parts with lambda 1),
    ``effective_rank`` of up to 4,096 patch tokens and, with a SimMIM model and ``heldout``
    images, ``reconstruction_ratio``."""
    from viny.diagnostics import diagnose, layer_tokens
    from viny.geometry import effective_rank
    from viny.simmim import reconstruction_yardstick

    tokens = layer_tokens(encoder, data.images, device=device, precision=precision)[len(encoder.blocks)]
    row = diagnose(tokens, data, dse_images, seed)
    row["dse_lambda1"] = row.pop("dse")
    flat = tokens.reshape(-1, tokens.shape[-1])
    row["effective_rank"] = effective_rank(flat[torch.randperm(len(flat), generator=torch.Generator().manual_seed(seed))[:4096]])
    if simmim is not None and heldout is not None:
        row["reconstruction_ratio"] = reconstruction_yardstick(simmim, heldout, seed=seed)["ratio"]
    return row


def with_pool_dse(scores: pd.DataFrame) -> pd.DataFrame:
    """``scores`` with ``dse``: DSE with the paper's adaptive lambda across this pool's rows
    (:func:`viny.geometry.dse_scores`), beside ``dse_lambda1``."""
    out = scores.copy()
    out["dse"] = dse_scores(out)
    return out


def encoder_truth(results: pd.DataFrame, encoders: dict[str, tuple[str, dict]] = STAGED_ENCODERS,
                  metric: str = "miou") -> pd.DataFrame:
    """The ground truth of the encoder pool from a grid's results table (one row per cell):
    ``encoder, train_size, seed, value`` (points), the finished cells of each encoder."""
    done = results[results["status"] == "done"] if "status" in results else results
    rows = []
    for name, (study, where) in encoders.items():
        sel = done[done["study"] == study]
        for key, value in where.items():
            if key not in sel:
                sel = sel.iloc[0:0]
                break
            sel = sel[sel[key] == value]
        for r in sel.itertuples(index=False):
            rows.append({"encoder": name, "train_size": int(r.train_size), "seed": int(r.seed), "value": float(getattr(r, metric)) * 100})
    return pd.DataFrame(rows, columns=["encoder", "train_size", "seed", "value"])


def snapshot_pool(along: str | Path, runs: list[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The snapshot pool from ``results/along_pretraining``: ``(scores, truth)`` with one
    encoder per (run, epoch) named ``RUN@EPOCH`` (random init, epoch 0, has no scores and is
    left out). Every run there fine-tuned its snapshots with the same protocol."""
    from viny.selection import read_along_pretraining

    along = Path(along)
    names = runs or sorted(p.name for p in along.iterdir() if (p / "scores.csv").is_file())
    scores, truth = [], []
    for run in names:
        down, sc = read_along_pretraining(along / run)
        sc = sc.assign(encoder=[f"{run}@{int(e)}" for e in sc["epoch"]])
        if "dse_lambda1" not in sc:
            raise VinyError(f"{along / run}: no dse_lambda1 column; rewrite it with benchmarks/along_pretraining.py")
        scores.append(sc.drop(columns=["dse"]))
        d = down[down["epoch"] > 0]
        truth.append(pd.DataFrame({"encoder": [f"{run}@{int(e)}" for e in d["epoch"]], "train_size": d["train_size"].astype(int),
                                   "seed": d["seed"].astype(int), "value": d["miou"] * 100}))
    return with_pool_dse(pd.concat(scores, ignore_index=True)), pd.concat(truth, ignore_index=True)


def _score(scores: pd.DataFrame, name: str) -> pd.Series:
    s = scores.set_index("encoder")
    if name == "reconstruction":
        return -s["reconstruction_ratio"] if "reconstruction_ratio" in s else pd.Series(dtype=float)
    return s[name] if name in s else pd.Series(dtype=float)


def selection_study(scores: pd.DataFrame, truth: pd.DataFrame, pool: str = "encoders", n_boot: int = 2000,
                    seed: int = 0) -> pd.DataFrame:
    """One row per (fine-tuning size, score): ``tau`` with its interval over the encoders
    that have both, the encoder the score picks and the best one, the ``regret`` (points,
    paired by seed: ``regret_lo``, ``regret_hi``) and the ``verdict`` of "ranks the encoders
    like downstream mIoU"."""
    rows = []
    for n in sorted(truth["train_size"].unique()):
        t = truth[truth["train_size"] == n]
        per_seed = t.pivot_table(index="seed", columns="encoder", values="value")
        mean = t.groupby("encoder")["value"].mean()
        for name, label in SCORES.items():
            s = _score(scores, name).reindex(mean.index).dropna()
            if len(s) < 3:
                continue
            iv = kendall_tau_interval(s.to_numpy(), mean[s.index].to_numpy(), n_boot=n_boot, seed=seed)
            pick, best = s.idxmax(), mean[s.index].idxmax()
            regret = paired_difference(per_seed[pick], per_seed[best]) if pick != best else {"mean": 0.0, "lo": 0.0, "hi": 0.0}
            verdict = interval_verdict({"mean": iv["tau"], "lo": iv["lo"], "hi": iv["hi"], "n": iv["n"]})
            rows.append({"pool": pool, "train_size": int(n), "score": name, "label": label, "uses_labels": name not in LABEL_FREE,
                         "encoders": iv["n"], "tau": iv["tau"], "tau_lo": iv["lo"], "tau_hi": iv["hi"], "picks": pick,
                         "miou_of_pick": float(mean[pick]), "best": best, "best_miou": float(mean[best]),
                         "regret": float(regret["mean"]), "regret_lo": float(regret["lo"]), "regret_hi": float(regret["hi"]),
                         "verdict": verdict})
    return pd.DataFrame(rows)


def study_verdicts(table: pd.DataFrame) -> pd.DataFrame:
    """Per score: the verdicts of :func:`selection_study` over its (pool, size) rows, as
    ``claim, verdict, evidence``: supported when every row supports it, contradicted when
    every row contradicts it, else inconclusive (or mixed)."""
    out = []
    for name, rows in table.groupby("score", sort=False):
        verdicts = set(rows["verdict"])
        verdict = verdicts.pop() if len(verdicts) == 1 else "inconclusive"
        evidence = "; ".join(f"{r.pool} at {r.train_size}: tau {r.tau:+.2f} [{r.tau_lo:+.2f}, {r.tau_hi:+.2f}] over {r.encoders}, "
                             f"regret {r.regret:+.2f} [{r.regret_lo:+.2f}, {r.regret_hi:+.2f}]" for r in rows.itertuples())
        out.append({"claim": f"{SCORES[name]} ranks encoders like fine-tuned mIoU", "score": name, "verdict": verdict,
                    "evidence": evidence})
    return pd.DataFrame(out)


def rank_table(scores: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """One row per encoder: its mean mIoU per fine-tuning size and every score (the table the
    study's figure draws)."""
    mean = truth.groupby(["encoder", "train_size"])["value"].mean().unstack("train_size")
    mean.columns = [f"miou_{int(c)}" for c in mean.columns]
    cols = [c for c in ("reconstruction_ratio", "effective_rank", "dse", "dse_lambda1", "probe_accuracy", "nn_probe_miou") if c in scores]
    return mean.join(scores.set_index("encoder")[cols], how="left").reset_index()

