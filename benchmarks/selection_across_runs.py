"""Label-free checkpoint selection across pre-training runs: one table from the folders
written by ``benchmarks/along_pretraining.py``.

    .venv/bin/python benchmarks/selection_across_runs.py results/along_pretraining/simmim_* [--out results/along_pretraining/across_runs.csv]

For every run and fine-tuning size: the epoch DSE (adaptive lambda), effective rank, the
reconstruction ratio and "take the last" pick, each pick's regret against the best snapshot
(points of mIoU, mean over seeds), Kendall's tau of DSE and of effective rank with mIoU
(bootstrap interval), and the computed verdicts of ``viny.selection.selection_verdicts``
(``viny.selection.selection_across_runs``). Prints a markdown table and writes it as a csv.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from viny.selection import across_runs_markdown, read_along_pretraining, selection_across_runs, verdict_counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", type=Path, nargs="+")
    ap.add_argument("--out", type=Path, default=None, help="csv to write (default: across_runs.csv beside the first folder)")
    args = ap.parse_args()
    table = selection_across_runs({folder.name: read_along_pretraining(folder) for folder in args.folders})
    out = args.out or args.folders[0].parent / "across_runs.csv"
    table.to_csv(out, index=False)
    print(across_runs_markdown(table) + "\n")
    for line in verdict_counts(table):
        print(f"- {line}")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
