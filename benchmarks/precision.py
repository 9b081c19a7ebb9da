"""Does bf16 change the science? A short fine-tune in fp32 and in bf16 autocast, several seeds.

    .venv/bin/python benchmarks/precision.py [--encoder random] [--seeds 0 1 2]
        [--train-size 200] [--epochs 15] [--data PATH]

Fine-tunes the per-patch segmentation head + encoder on the shipped Pets sample (or
``--data``) from a shipped encoder (``--encoder random`` for none) with viny's default
path in both precisions, the same seeds, data order and test set (split nested), and
prints the dataset-level mIoU of each run, the mean ± std per precision, the paired
difference with its 95 % t interval, and the time per run. The fast path should change
speed, not results: the interval should contain zero, or the difference be well inside
the seed-to-seed spread. The defaults (random init, 200 images x 15 epochs, about 5 min on
2 CPU cores) keep the runs away from the degenerate regime of very short fine-tunes from a
pre-trained encoder, where every run predicts the majority class and nothing is compared.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd

from viny.config import make_config
from viny.pretrained import weights_path
from viny.stats import paired_difference
from viny.train import train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoder", default="random", help="random (no pre-training), or a shipped encoder name")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--train-size", type=int, default=200)
    ap.add_argument("--test-size", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--data", default=None)
    args = ap.parse_args()
    init = None if args.encoder == "random" else str(weights_path(args.encoder))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for precision in ("fp32", "bf16"):
            for seed in args.seeds:
                config = make_config("finetune", epochs=args.epochs, train_size=args.train_size, test_size=args.test_size, split="nested",
                                     seed=seed, init_from=init, precision=precision, data=args.data)
                t = time.perf_counter()
                res = train(config, Path(tmp) / f"{precision}-{seed}", progress=False)
                rows.append({"precision": precision, "seed": seed, "miou": 100 * res["miou"], "pixel_accuracy": 100 * res["pixel_accuracy"],
                             "seconds": time.perf_counter() - t})
                print(f"{precision} seed {seed}: mIoU {rows[-1]['miou']:.2f}  pixel acc {rows[-1]['pixel_accuracy']:.2f}  "
                      f"({rows[-1]['seconds']:.0f} s)", flush=True)
    df = pd.DataFrame(rows)
    print(f"\nencoder {args.encoder}, {args.train_size} training images x {args.epochs} epochs, {args.test_size} test images:")
    print(df.groupby("precision")[["miou", "pixel_accuracy", "seconds"]].agg(["mean", "std"]).round(2).to_string())
    wide = df.pivot(index="seed", columns="precision", values="miou")
    diff = paired_difference(wide["bf16"].to_numpy(), wide["fp32"].to_numpy())
    print(f"\nbf16 - fp32 mIoU, paired over {diff['n']} seeds: {diff['mean']:+.2f} points, 95 % interval "
          f"[{diff['lo']:+.2f}, {diff['hi']:+.2f}]; seed-to-seed std in fp32 {wide['fp32'].std(ddof=1):.2f}")


if __name__ == "__main__":
    main()
