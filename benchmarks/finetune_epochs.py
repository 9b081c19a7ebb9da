"""How many fine-tuning epochs do random init and a pre-trained encoder need? Validation learning curves.

    .venv/bin/python benchmarks/finetune_epochs.py --data-root PATH
        [--encoders random simmim_imagenette9k] [--sizes 100 250]
        [--seeds 0 1 2] [--schedules 100 50] [--every 10] [--validation-size 150] [--tolerance 0.5]
        [--out runs/finetune_epochs]

Fine-tunes each encoder (``random``: viny's random init, the authors' N(0,1) positions; a
shipped encoder's name; or an encoder file) at each size and seed with each schedule of
``--schedules`` (Table A1's, milestones at 70/90/95 % of its length) and scores the
*validation* images (the end of the nested Pets training pool, disjoint from the test
images and from every training prefix): every ``--every`` epochs along the first (longest)
schedule (``eval_every``), at the end of the others. Writes ``curve.csv`` (the longest
schedule, one row per run and scored epoch), ``endpoints.csv`` (every run's final score)
and ``curve.png``; prints the curves, the end-points, each encoder's paired difference
against the first encoder, and the shortest schedule whose end-point is within
``--tolerance`` points of the longest one's for every encoder and size (paired over
seeds): the fine-tuning epochs to choose. Runs are reused, so the script can be stopped
and rerun.
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", type=Path, required=True)
    ap.add_argument("--encoders", nargs="+", default=["random", "simmim_imagenette9k"])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 250])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--schedules", type=int, nargs="+", default=[100, 50],
                    help="fine-tuning lengths in epochs (milestones scaled to each); the first is scored every --every epochs")
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--validation-size", type=int, default=150)
    ap.add_argument("--test-size", type=int, default=198, help="held out as in the staged grid (never scored here)")
    ap.add_argument("--tolerance", type=float, default=0.5, help="mIoU points a shorter schedule may lose against the longest")
    ap.add_argument("--out", type=Path, default=Path("runs/finetune_epochs"))
    args = ap.parse_args()
    data = str(args.data_root.expanduser() / "oxford-iiit-pet")
    longest = args.schedules[0]
    rows, ends = [], []
    for epochs in args.schedules:
        for enc in args.encoders:
            for n in args.sizes:
                for seed in args.seeds:
                    run = args.out / "runs" / f"{label(enc)}-n{n}-s{seed}-e{epochs}"
                    if (run / "results.json").is_file():
                        res = json.loads((run / "results.json").read_text())
                    else:
                        cfg = make_config("finetune", data=data, train_size=n, seed=seed, epochs=epochs, split="nested",
                                          test_size=args.test_size, validation_size=args.validation_size,
                                          eval_every=args.every if epochs == longest else epochs, init_from=init_from(enc))
                        res = train(cfg, run, resume=(run / "state.pt").is_file(), progress=False)
                        print(f"{label(enc)} n={n} seed={seed} {epochs} epochs: validation mIoU {100 * res['miou']:.2f}", flush=True)
                    ends.append({"encoder": label(enc), "train_size": n, "seed": seed, "schedule": epochs, "val_miou": 100 * res["miou"]})
                    if epochs == longest:
                        rows += [{"encoder": label(enc), "train_size": n, "seed": seed, **r} for r in curve_rows(run)]
    curve, ends = pd.DataFrame(rows), pd.DataFrame(ends)
    curve.to_csv(args.out / "curve.csv", index=False)
    ends.to_csv(args.out / "endpoints.csv", index=False)
    summary = curve.groupby(["encoder", "train_size", "epoch"])["val_miou"].agg(["mean", "std", "count"]).reset_index()
    print(f"validation mIoU along the {longest}-epoch schedule (mean over seeds):")
    print(summary.pivot_table(index="epoch", columns=["train_size", "encoder"], values="mean").round(2).to_string())
    print("\nend of each schedule (mean ± std over seeds):")
    table = ends.groupby(["schedule", "encoder", "train_size"])["val_miou"].agg(["mean", "std"]).round(2)
    print(table.to_string())

    def scores(enc: str, n: int, epochs: int):
        """Final validation mIoU of ``enc`` at ``n`` images with ``epochs``, ordered by seed."""
        return ends[(ends.encoder == enc) & (ends.train_size == n) & (ends.schedule == epochs)].sort_values("seed")["val_miou"].to_numpy()

    base = label(args.encoders[0])
    print()
    for enc in [label(e) for e in args.encoders[1:]]:
        for n in args.sizes:
            for epochs in args.schedules:
                d = paired_difference(scores(enc, n, epochs), scores(base, n, epochs))
                print(f"{enc} minus {base}, {n} images, {epochs} epochs: {d['mean']:+.2f} [{d['lo']:+.2f}, {d['hi']:+.2f}] points")
    enough = []
    for epochs in args.schedules:
        worst = min(paired_difference(scores(label(e), n, epochs), scores(label(e), n, longest))["mean"] for e in args.encoders for n in args.sizes)
        print(f"{epochs} epochs minus {longest}: worst paired mean {worst:+.2f} points over encoders and sizes")
        if worst >= -args.tolerance:
            enough.append(epochs)
    chosen = min(enough)
    print(f"\nshortest schedule within {args.tolerance} points of the {longest}-epoch one for every encoder and size: {chosen} epochs")
    (args.out / "chosen.json").write_text(json.dumps({"epochs": chosen, "tolerance": args.tolerance, "schedules": args.schedules}))
    import altair as alt

    summary["lo"], summary["hi"] = summary["mean"] - summary["std"], summary["mean"] + summary["std"]
    y = alt.Y("mean:Q", title="validation mIoU (%, mean ± std over seeds)", scale=alt.Scale(zero=False))
    band = alt.Chart(summary).mark_errorband().encode(x="epoch:Q", y=alt.Y("lo:Q", title="", scale=alt.Scale(zero=False)), y2="hi:Q", color="encoder:N")
    line = alt.Chart(summary).mark_line(point=True).encode(x=alt.X("epoch:Q", title=f"fine-tuning epoch ({longest}-epoch schedule)"), y=y, color="encoder:N")
    (band + line).facet(column=alt.Column("train_size:N", title="fine-tuning images")).save(str(args.out / "curve.png"))


if __name__ == "__main__":
    main()
