"""The tables of a curve folder's README, computed from its csvs.

    .venv/bin/python benchmarks/along_tables.py results/along_pretraining/simmim_2368

Reads ``downstream.csv`` and ``scores.csv`` (written by ``benchmarks/along_pretraining.py``)
and prints, as markdown: mIoU per snapshot and fine-tuning size (mean ± std over seeds)
next to the label-free scores; each snapshot's gain over random init, paired by seed (95 %
t interval); the later half of the run (last snapshot minus the one nearest half-way); and
each score's Kendall's tau and pick (``selection.csv``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from viny.docs import snapshot_markdown
from viny.findings import format_interval
from viny.selection import gains_over_random, per_seed, read_along_pretraining, selection_summary
from viny.stats import paired_difference


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    args = ap.parse_args()
    down, scores = read_along_pretraining(args.folder)
    sizes = sorted(int(n) for n in down["train_size"].unique())
    print(snapshot_markdown(scores, down))  # the table of the folder's README (viny.docs fills it there)
    epochs = sorted(int(e) for e in down["epoch"].unique() if e > 0)
    last, half = epochs[-1], min(epochs, key=lambda e: abs(e - epochs[-1] / 2))
    for n in sizes:
        print(f"\nGain over random init at {n} images (points, paired by seed):")
        for r in gains_over_random(down, n).itertuples():
            print(f"- epoch {r.epoch}: {format_interval(r._asdict())}")
        seeds = per_seed(down, n)
        print(f"- epoch {last} minus epoch {half}: {format_interval(paired_difference(seeds[last], seeds[half]))}")
        sel = selection_summary(scores, down, n)
        for r in sel.itertuples():
            print(f"- {r.label}: tau {r.tau:+.2f} [{r.tau_lo:+.2f}, {r.tau_hi:+.2f}], picks epoch {r.picks_epoch} "
                  f"(regret {r.regret:+.2f}; best epoch {r.best_epoch})")


if __name__ == "__main__":
    main()
