"""Which cheap score predicts downstream mIoU? The selection study across encoders (#34).

    .venv/bin/python benchmarks/encoder_selection.py --data-root PATH [--results results/staged]
        [--along results/along_pretraining] [--store ~/viny-runs/selection-store] [--out results/encoder_selection]

Scores every encoder of the staged grid (random init with both inits, the shipped SimMIM
encoders, the encoders after the intermediate CLS stage, the in-domain encoder) with each
cheap score (:mod:`viny.encoder_selection`), on the Pets images outside the fine-tuning test
set, and compares the scores with the encoders' fine-tuned mIoU in ``--results`` (100 epochs,
3 seeds, 100 and 250 images); then does the same for the snapshot pool of ``--along``. The
intermediate encoders are the staged cells' chains (10 epochs of CLS on the Intel images,
upstream seed 0), trained in ``--store`` if it does not hold them (about 15 minutes each on
2 CPU cores). Writes ``scores.csv``, ``encoders.csv`` (mean mIoU and scores per encoder),
``selection.csv``, ``verdicts.csv`` and ``selection.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch


def encoders(root: Path, store: Path):
    """``{name: (encoder, simmim or None)}`` for :data:`viny.encoder_selection.STAGED_ENCODERS`."""
    from viny.pretrained import weights_path
    from viny.registry import create_encoder
    from viny.simmim import SimMIM
    from viny.upstream import Upstream
    from viny.weights import load_encoder, load_simmim

    out = {}
    for init, name in (("reference", "random init (reference)"), ("timm", "random init (timm)")):
        torch.manual_seed(0)  # the fine-tunes' random inits are seeded by their seeds 0-2; seed 0 stands for them
        enc = create_encoder("viny", init=init)
        out[name] = (enc, SimMIM(enc))  # an untrained decoder: what a random model reconstructs
    for images, label in ((2368, "2.4k"), (4734, "4.7k"), (9469, "9.5k")):
        path = weights_path(Upstream(pretrain_images=images).shipped_name)
        out[f"SimMIM {label}"] = (load_encoder(path), load_simmim(path))
    path = weights_path(Upstream(pretrain_images=400, pretrain_data="pets").shipped_name)
    out["SimMIM Pets 400"] = (load_encoder(path), load_simmim(path))
    for images, label in ((0, "random init"), (2368, "SimMIM 2.4k"), (4734, "SimMIM 4.7k"), (9469, "SimMIM 9.5k")):
        chain = Upstream(pretrain_images=images, intermediate="cls_intel", intermediate_epochs=10, seed=0, data_root=str(root))
        t0 = time.perf_counter()
        path = chain.resolve(store, progress=False)
        print(f"{chain.describe()}: {path} ({time.perf_counter() - t0:.0f} s)", flush=True)
        out[f"{label} + CLS"] = (load_encoder(path), None)
    return out


def main() -> None:
    from viny.config import make_config
    from viny.data import augment as A
    from viny.data.datasets import load_pets, split_indices
    from viny.diagnostics import diagnostic_images
    from viny.encoder_selection import encoder_truth, rank_table, score_encoder, selection_study, snapshot_pool, study_verdicts, with_pool_dse
    from viny.figures import encoder_selection_chart
    from viny.results import read_results
    from viny.tasks import heldout_images

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", type=Path, required=True)
    ap.add_argument("--results", type=Path, default=Path("results/staged"))
    ap.add_argument("--along", type=Path, default=Path("results/along_pretraining"))
    ap.add_argument("--store", type=Path, default=Path.home() / "viny-runs" / "selection-store")
    ap.add_argument("--out", type=Path, default=Path("results/encoder_selection"))
    ap.add_argument("--test-size", type=int, default=198, help="the fine-tuning test set, left out of the probes' images")
    ap.add_argument("--split-seed", type=int, default=42)
    args = ap.parse_args()
    root = args.data_root.expanduser()
    args.out.mkdir(parents=True, exist_ok=True)
    pets = str(root / "oxford-iiit-pet")
    n = len(load_pets(pets).arrays)
    _, test = split_indices(n, n - args.test_size, args.test_size, "nested", args.split_seed)
    data = diagnostic_images(pets, num_images=n, exclude=test)
    print(f"probe images: {len(data.index)} Pets images outside the {len(test)} test images", flush=True)
    held = A.normalize(A.to_float(heldout_images(make_config("pretrain"), str(root / "intel-image-classification"))))

    rows = []
    for name, (enc, simmim) in encoders(root, args.store.expanduser()).items():
        t0 = time.perf_counter()
        rows.append({"encoder": name, **score_encoder(enc, data, simmim, held)})
        print(f"scored {name} in {time.perf_counter() - t0:.0f} s", flush=True)
    scores = with_pool_dse(pd.DataFrame(rows))
    scores.to_csv(args.out / "scores.csv", index=False)

    truth = encoder_truth(read_results(args.results)[0])
    snap_scores, snap_truth = snapshot_pool(args.along)
    table = pd.concat([selection_study(scores, truth, "encoders"), selection_study(snap_scores, snap_truth, "snapshots")], ignore_index=True)
    table.to_csv(args.out / "selection.csv", index=False)
    rank_table(scores, truth).to_csv(args.out / "encoders.csv", index=False)
    verdicts = study_verdicts(table)
    verdicts.to_csv(args.out / "verdicts.csv", index=False)
    encoder_selection_chart(rank_table(scores, truth)).save(str(args.out / "selection.png"), scale_factor=2)
    with pd.option_context("display.width", 200, "display.max_colwidth", 60):
        print(table[["pool", "train_size", "score", "encoders", "tau", "tau_lo", "tau_hi", "picks", "regret", "verdict"]].round(2).to_string(index=False))
        print(verdicts[["claim", "verdict"]].to_string(index=False))


if __name__ == "__main__":
    main()
