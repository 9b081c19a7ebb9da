"""How many fine-tuning epochs do random init and a pre-trained encoder need? Validation learning curves.

    .venv/bin/python benchmarks/finetune_epochs.py --data-root PATH
        [--encoders random simmim_imagenette9k] [--sizes 100 250]
        [--seeds 0 1 2] [--epochs 100] [--every 10] [--validation-size 150] [--tolerance 0.5]
        [--out runs/finetune_epochs]

Fine-tunes each encoder (``random``: viny's random init, the authors' N(0,1) positions; a
shipped encoder's name; or an encoder file) at
each size and seed for ``--epochs`` epochs (Table A1's schedule, milestones at 70/90/95 %),
scoring the *validation* images (the end of the nested Pets training pool, disjoint from the
test images and from every training prefix) every ``--every`` epochs (``eval_every``).
Writes ``curve.csv`` (one row per run and scored epoch) and ``curve.png``, and prints mean ±
std validation mIoU per encoder, size and epoch, the paired difference of each encoder
against the first one per size and epoch, and the first scored epoch at which every curve
is within ``--tolerance`` points of its own best: the epochs to choose. Runs are reused,
so the script can be stopped and rerun.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import pandas as pd

from viny.config import make_config
from viny.pretrained import SHIPPED, weights_path
from viny.stats import paired_difference
from viny.train import train


def label(encoder: str) -> str:
    return "random init" if encoder == "random" else Path(encoder).stem


def init_from(encoder: str) -> str | None:
    if encoder == "random":
        return None
    return str(weights_path(encoder)) if encoder in SHIPPED else encoder


def curve_rows(run: Path) -> list[dict]:
    """The scored epochs of one run's ``metrics.csv`` (validation mIoU in points)."""
    with open(run / "metrics.csv") as f:
        return [{"epoch": int(r["epoch"]), "val_miou": 100 * float(r["val_miou"])} for r in csv.DictReader(f) if r.get("val_miou")]


def converged_epoch(summary: pd.DataFrame, tolerance: float) -> int:
    """First scored epoch at which every (encoder, size) mean curve is within ``tolerance`` of its best."""
    best = summary.groupby(["encoder", "train_size"])["mean"].transform("max")
    by_epoch = (summary["mean"] >= best - tolerance).groupby(summary["epoch"]).all()
    return int(by_epoch[by_epoch].index.min())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", type=Path, required=True)
    ap.add_argument("--encoders", nargs="+", default=["random", "simmim_imagenette9k"])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 250])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--validation-size", type=int, default=150)
    ap.add_argument("--test-size", type=int, default=198, help="held out as in the staged grid (never scored here)")
    ap.add_argument("--tolerance", type=float, default=0.5, help="mIoU points below a curve's best that count as converged")
    ap.add_argument("--out", type=Path, default=Path("runs/finetune_epochs"))
    args = ap.parse_args()
    data = str(args.data_root.expanduser() / "oxford-iiit-pet")
    rows = []
    for enc in args.encoders:
        for n in args.sizes:
            for seed in args.seeds:
                run = args.out / "runs" / f"{label(enc)}-n{n}-s{seed}"
                if not (run / "results.json").is_file():
                    cfg = make_config("finetune", data=data, train_size=n, seed=seed, epochs=args.epochs, split="nested",
                                      test_size=args.test_size, validation_size=args.validation_size, eval_every=args.every,
                                      init_from=init_from(enc))
                    res = train(cfg, run, resume=(run / "state.pt").is_file(), progress=False)
                    print(f"{label(enc)} n={n} seed={seed}: validation mIoU {100 * res['miou']:.2f}", flush=True)
                rows += [{"encoder": label(enc), "train_size": n, "seed": seed, **r} for r in curve_rows(run)]
    curve = pd.DataFrame(rows)
    curve.to_csv(args.out / "curve.csv", index=False)
    summary = curve.groupby(["encoder", "train_size", "epoch"])["val_miou"].agg(["mean", "std", "count"]).reset_index()
    print(summary.pivot_table(index="epoch", columns=["train_size", "encoder"], values="mean").round(2).to_string())
    base = label(args.encoders[0])
    for enc in {label(e) for e in args.encoders} - {base}:
        for n in args.sizes:
            print(f"\n{enc} minus {base}, {n} images (paired over seeds, validation mIoU points):")
            for e in sorted(curve["epoch"].unique()):
                a = curve[(curve.encoder == enc) & (curve.train_size == n) & (curve.epoch == e)].sort_values("seed")["val_miou"]
                b = curve[(curve.encoder == base) & (curve.train_size == n) & (curve.epoch == e)].sort_values("seed")["val_miou"]
                d = paired_difference(a.to_numpy(), b.to_numpy())
                print(f"  epoch {e:>3}: {d['mean']:+.2f} [{d['lo']:+.2f}, {d['hi']:+.2f}]")
    chosen = converged_epoch(summary, args.tolerance)
    print(f"\nfirst scored epoch at which every curve is within {args.tolerance} points of its best: {chosen}")
    (args.out / "chosen.json").write_text(json.dumps({"epochs": chosen, "tolerance": args.tolerance, "schedule_epochs": args.epochs}))
    import altair as alt

    summary["lo"], summary["hi"] = summary["mean"] - summary["std"], summary["mean"] + summary["std"]
    band = alt.Chart(summary).mark_errorband().encode(x="epoch:Q", y=alt.Y("lo:Q", title="validation mIoU (%, mean ± std over seeds)", scale=alt.Scale(zero=False)), y2="hi:Q", color="encoder:N")
    line = alt.Chart(summary).mark_line(point=True).encode(x=alt.X("epoch:Q", title="fine-tuning epoch"), y=alt.Y("mean:Q", scale=alt.Scale(zero=False)), color="encoder:N")
    (band + line).facet(column=alt.Column("train_size:N", title="fine-tuning images")).save(str(args.out / "curve.png"))


if __name__ == "__main__":
    main()
