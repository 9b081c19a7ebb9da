"""The joint arm's auxiliary SimMIM weight, chosen on validation images (never the test images).

    .venv/bin/python benchmarks/joint_weight.py --data-root PATH
        [--weights 0 0.5 1 2] [--mask-ratios 0.5] [--encoders random simmim_imagenette9k]
        [--seeds 0] [--train-size 100] [--validation-size 100] [--epochs 100]
        [--out runs/joint_weight]

Fine-tunes each encoder (``random``: viny's random init; a shipped encoder's name; or an
encoder file) on ``--train-size`` nested Pets images for ``--epochs`` epochs (Table A1's
fine-tuning recipe, as the staged grid's finetune study) with the segmentation loss plus
``W`` x SimMIM's masked L1 (``aux_mim_weight``; ``W = 0`` is the plain, sequential
fine-tune), for each ``W`` of ``--weights``, mask ratio of ``--mask-ratios`` and seed, and
scores the *validation* images (``--validation-size`` images from the end of the nested
training pool, disjoint from the 198 test images and from the training prefix). The same
as ``viny finetune --split nested --test-size 198 --validation-size 100 --train-size 100
--epochs 100 --aux-mim-weight W [--init-from ENCODER]``.

Writes ``results/joint_weight`` when every run is done (``--out``/runs.csv meanwhile): ``runs.csv`` (one row per run: validation mIoU and pixel accuracy)
and ``README.md`` generated from it: the mean validation mIoU per (W, mask ratio) over
both encoders (and seeds), each encoder's gain over W = 0 paired by seed, and the chosen
setting: the best mean validation mIoU over the encoders. Runs are reused, so the script
can be stopped and rerun (the README then covers the runs that exist).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd

from viny.config import make_config
from viny.pretrained import SHIPPED, weights_path
from viny.train import train

DEFAULT_OUT = Path("runs/joint_weight")
PUBLISH = Path(__file__).resolve().parents[1] / "results" / "joint_weight"  # read by viny.docs


def label(encoder: str) -> str:
    return "random init" if encoder == "random" else Path(encoder).stem.removeprefix("viny_")


def init_from(encoder: str) -> str | None:
    if encoder == "random":
        return None
    return str(weights_path(encoder)) if encoder in SHIPPED or encoder.startswith("simmim_") else encoder


def run_name(encoder: str, weight: float, ratio: float, seed: int) -> str:
    return f"{label(encoder).replace(' ', '_')}-w{weight:g}-r{ratio:g}-s{seed}"


def config(args, encoder: str, weight: float, ratio: float, seed: int):
    start = {"init_from": init_from(encoder)} if encoder != "random" else {}
    return make_config("finetune", data=str(args.data_root.expanduser()), split="nested", test_size=args.test_size,
                       validation_size=args.validation_size, train_size=args.train_size, epochs=args.epochs, seed=seed,
                       aux_mim_weight=weight, aux_mask_ratio=ratio, **start)


README = """# The joint arm's auxiliary SimMIM weight, chosen on validation images

Written by

    {command}

from `runs.csv`, with the numbers computed by `viny.docs` (rerun the script, or
`python -m viny.docs`, rather than editing them).

**What was measured.** Fine-tuning on {n} nested Pets training images for {epochs} epochs (the
staged grid's finetune recipe: Table A1, lr 0.002, weight decay 1e-4, batch 64) with the
segmentation loss plus W x SimMIM's masked L1 on the same augmented batch (`aux_mim_weight` W;
W = 0 is the plain, sequential fine-tune): <!--viny:joint_scope--><!--/viny-->. Scored on the
{vsize} *validation* images (the end of the nested training pool: disjoint from the {tsize} test
images and from every training prefix); the test images were never scored. Dataset-level mIoU in %.
One run is `viny finetune --data PATH --split nested --test-size {tsize} --validation-size {vsize}
--train-size {n} --epochs {epochs} --aux-mim-weight W --aux-mask-ratio R [--init-from
viny/pretrained/viny_simmim_imagenette9k.safetensors]`.

**Chosen: <!--viny:joint_chosen--><!--/viny-->**, the setting with the best mean validation
mIoU over the encoders (params/staged.yaml's `joint` study).

## Validation mIoU per setting

<!--viny:joint_table-->
<!--/viny-->

## Gain over W = 0, per encoder

Validation mIoU points, paired by seed (with the 95 % t interval where there are two or more
seeds). A few seeds on {vsize} validation images is a noisy yardstick: this chooses a weight for
the grid, whose test-set cells (3 seeds) then say whether the joint arm helps; it is not itself
that finding.

<!--viny:joint_gains-->
<!--/viny-->
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", type=Path, required=True)
    ap.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.5, 1.0, 2.0])
    ap.add_argument("--mask-ratios", type=float, nargs="+", default=[0.5])
    ap.add_argument("--encoders", nargs="+", default=["random", "simmim_imagenette9k"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--train-size", type=int, default=100)
    ap.add_argument("--validation-size", type=int, default=100)
    ap.add_argument("--test-size", type=int, default=198, help="held out as in the staged grid (never scored here)")
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--no-run", action="store_true", help="train nothing; write the README from the runs that exist")
    args = ap.parse_args()
    rows = []
    for seed in args.seeds:  # seed-major: a stopped sweep has whole seeds
        for ratio in args.mask_ratios:
            for w in args.weights:
                if w == 0 and ratio != args.mask_ratios[0]:
                    continue  # W = 0 ignores the ratio: one plain fine-tune
                for enc in args.encoders:
                    run = args.out / run_name(enc, w, ratio, seed)
                    if not (run / "results.json").is_file():
                        if args.no_run:
                            continue
                        start = time.perf_counter()
                        train(config(args, enc, w, ratio, seed), run, resume=(run / "state.pt").is_file(), progress=False)
                        print(f"{label(enc)} W={w:g} r={ratio:g} seed={seed}: {time.perf_counter() - start:.0f} s", flush=True)
                    res = json.loads((run / "results.json").read_text())
                    cfg = json.loads((run / "config.json").read_text())
                    rows.append({"encoder": label(enc), "aux_mim_weight": w, "aux_mask_ratio": ratio if w else args.mask_ratios[0],
                                 "seed": seed, "train_size": cfg["train_size"], "epochs": cfg["epochs"],
                                 "validation_size": cfg["validation_size"], "test_size": cfg["test_size"],
                                 "val_miou": 100 * res["miou"], "val_pixel_accuracy": 100 * res["pixel_accuracy"],
                                 "final_train_loss": res.get("final_train_loss")})
                    print(f"  validation mIoU {rows[-1]['val_miou']:.2f}", flush=True)
                    pd.DataFrame(rows).to_csv(args.out / "runs.csv", index=False)  # progress; results/ only when the sweep is done
    _write(args, rows)


def _write(args, rows: list[dict]) -> None:
    from viny import docs

    if not rows:
        return
    runs = pd.DataFrame(rows)
    PUBLISH.mkdir(parents=True, exist_ok=True)
    runs.to_csv(PUBLISH / "runs.csv", index=False)
    docs._joint_runs.cache_clear()
    command = "python benchmarks/joint_weight.py --data-root PATH " + " ".join(
        f"--{k} {' '.join(f'{v:g}' if isinstance(v, float) else str(v) for v in vals)}" for k, vals in
        (("weights", args.weights), ("mask-ratios", args.mask_ratios), ("encoders", args.encoders), ("seeds", args.seeds)))
    r = runs.iloc[0]
    text = README.format(command=command, n=int(r["train_size"]), epochs=int(r["epochs"]), vsize=int(r["validation_size"]), tsize=int(r["test_size"]))
    (PUBLISH / "README.md").write_text(docs.render(text))
    (PUBLISH / "chosen.json").write_text(json.dumps(docs.joint_weight_summary(runs)[2], indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
