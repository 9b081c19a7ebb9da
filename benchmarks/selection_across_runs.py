"""Label-free checkpoint selection across pre-training runs: one table from the folders
written by ``benchmarks/along_pretraining.py``.

    .venv/bin/python benchmarks/selection_across_runs.py results/along_pretraining/simmim_* [--out results/along_pretraining/across_runs.csv]

For every run and fine-tuning size: the epoch DSE (adaptive lambda), effective rank, the
reconstruction ratio and "take the last" pick, each pick's regret against the best snapshot
(points of mIoU, mean over seeds), Kendall's tau of DSE and of effective rank with mIoU
(bootstrap interval), and the computed verdicts of ``viny.selection.selection_verdicts``.
Prints a markdown table and writes it as a csv.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from viny.selection import read_along_pretraining, selection_summary, selection_verdicts

PICKS = ("dse", "effective_rank", "reconstruction", "last")


def across_runs(folders: list[Path]) -> pd.DataFrame:
    rows = []
    for folder in folders:
        down, scores = read_along_pretraining(folder)
        for n in sorted(int(v) for v in down["train_size"].unique()):
            summary = selection_summary(scores, down, n).set_index("score")
            verdicts = selection_verdicts(scores, down, n).set_index("claim")["verdict"]
            row = {"run": folder.name, "train_size": n, "snapshots": int(summary.loc["last", "snapshots"]),
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


def markdown(table: pd.DataFrame) -> str:
    head = ("| run | fine-tuning images | snapshots | best epoch | DSE picks (regret) | effective rank picks (regret) | "
            "reconstruction picks (regret) | last (regret) | tau DSE | tau eff. rank |\n|" + "---|" * 10 + "\n")
    lines = []
    for r in table.itertuples(index=False):
        r = r._asdict()
        picks = [f"{r[f'{s}_epoch']} ({r[f'{s}_regret']:+.2f})" if f"{s}_epoch" in r and pd.notna(r[f"{s}_epoch"]) else "" for s in PICKS]
        taus = [f"{r[f'{s}_tau']:+.2f} [{r[f'{s}_tau_lo']:+.2f}, {r[f'{s}_tau_hi']:+.2f}]" for s in ("dse", "effective_rank")]
        lines.append(f"| {r['run']} | {r['train_size']} | {r['snapshots']} | {r['best_epoch']} | " + " | ".join(picks + taus) + " |")
    return head + "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", type=Path, nargs="+")
    ap.add_argument("--out", type=Path, default=None, help="csv to write (default: across_runs.csv beside the first folder)")
    args = ap.parse_args()
    table = across_runs(args.folders)
    out = args.out or args.folders[0].parent / "across_runs.csv"
    table.to_csv(out, index=False)
    print(markdown(table))
    verdicts = [c for c in table.columns if c.startswith("verdict: ")]
    print()
    for c in verdicts:
        counts = table[c].value_counts().to_dict()
        print(f"- {c[len('verdict: '):]}: " + ", ".join(f"{k} in {v}" for k, v in counts.items()) + f" of {len(table)} (run, size) pairs")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
