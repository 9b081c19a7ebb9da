"""When does pre-training pay, and does DSE pick the checkpoint that segments best?

    .venv/bin/python benchmarks/along_pretraining.py RUN --data-root PATH [--every 20 | --at 10 20 ...] [--sizes 100]
        [--seeds 0 1 2] [--epochs 50] [--test-size 198] [--out RUN/along]

For one pre-training run with SimMIM snapshots (``--save-encoder-every``): fine-tunes from
every ``--every``-th snapshot (or those of the epochs given with ``--at``) and from random init (sizes x seeds, nested split, the same
held-out Pets images), scores each snapshot without labels (DSE with the adaptive lambda,
effective rank, held-out reconstruction ratio; the patch probe for reference), and writes
``downstream.csv``, ``scores.csv``, ``selection.csv`` (Kendall's tau with bootstrap
interval and the regret of each score's pick, per size) and prints them. Runs are reused,
so the script can be stopped and rerun.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from viny.config import make_config
from viny.data import augment as A
from viny.diagnostics import diagnostic_images
from viny.figures import pretraining_curve, selection_chart
from viny.selection import DOWNSTREAM_CSV, SCORES_CSV, downstream_along_pretraining, label_free_scores, selection_summary, selection_verdicts
from viny.tasks import heldout_images


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--data-root", type=Path, required=True)
    ap.add_argument("--every", type=int, default=20, help="use snapshots at multiples of this epoch")
    ap.add_argument("--at", type=int, nargs="+", default=None, help="use the snapshots of exactly these epochs (instead of --every)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[100])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=50, help="fine-tuning epochs")
    ap.add_argument("--test-size", type=int, default=198)
    ap.add_argument("--images", type=int, default=600, help="Pets images for the label-free scores")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    root = args.data_root.expanduser()
    out = args.out or args.run / "along"
    out.mkdir(parents=True, exist_ok=True)
    down = downstream_along_pretraining(args.run, out / "finetune", args.sizes, args.seeds, every=1 if args.at else args.every, at=args.at, epochs=args.epochs,
                                        test_size=args.test_size, split="nested", data=str(root / "oxford-iiit-pet"))
    down.to_csv(out / DOWNSTREAM_CSV, index=False)
    print((down.groupby(["epoch", "train_size"])["miou"].agg(["mean", "std", "count"]) * [100, 100, 1]).round(2).to_string())
    data = diagnostic_images(str(root / "oxford-iiit-pet"), args.images)
    held = A.normalize(A.to_float(heldout_images(make_config("pretrain"), str(root / "intel-image-classification"))))
    scores = label_free_scores(args.run, data, held, every=1 if args.at else args.every, at=args.at)
    scores.to_csv(out / SCORES_CSV, index=False)
    cols = [c for c in ("epoch", "dse", "m_inter", "m_intra", "m_dim", "effective_rank", "reconstruction_ratio", "probe_accuracy") if c in scores]
    print(scores[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    import pandas as pd

    sel = pd.concat([selection_summary(scores, down, n) for n in args.sizes], ignore_index=True)
    sel.to_csv(out / "selection.csv", index=False)
    print(sel.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    verdicts = pd.concat([selection_verdicts(scores, down, n) for n in args.sizes], ignore_index=True)
    verdicts.to_csv(out / "verdicts.csv", index=False)
    for r in verdicts.itertuples():
        print(f"- {r.claim}: {r.verdict} ({r.evidence})")
    pretraining_curve(down).save(str(out / "pretraining_curve.png"))
    selection_chart(scores, down, args.sizes[0]).save(str(out / "selection.png"))


if __name__ == "__main__":
    main()
