"""Time the geometry study: diagnostics over N images for E encoders on this machine.

    .venv/bin/python benchmarks/geometry.py [--images 2000] [--encoders 5] [--layers final|all]

The shipped sample has 598 Pets images; they are repeated to reach --images, which
changes no cost. Prints seconds for token extraction and for each diagnostic.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from viny.diagnostics import diagnose, diagnostic_images, layer_tokens
from viny.geometry import cosine_vs_distance
from viny.registry import create_encoder


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--encoders", type=int, default=5)
    ap.add_argument("--layers", default="final")
    ap.add_argument("--dse-images", type=int, default=512)
    args = ap.parse_args()
    data = diagnostic_images(num_images=10_000)
    reps = int(np.ceil(args.images / len(data.images)))
    data.images = np.concatenate([data.images] * reps)[: args.images]
    data.patch_labels = torch.cat([data.patch_labels] * reps)[: args.images]
    data.probe_train = np.concatenate([data.probe_train] * reps)[: args.images]
    t_tok = t_diag = t_cos = 0.0
    t0 = time.perf_counter()
    for e in range(args.encoders):
        torch.manual_seed(e)
        enc = create_encoder("viny")
        layers = None if args.layers == "final" else list(range(1, 13))
        t = time.perf_counter()
        toks = layer_tokens(enc, data.images, layers)
        t_tok += time.perf_counter() - t
        for tok in toks.values():
            t = time.perf_counter()
            diagnose(tok, data, args.dse_images)
            t_diag += time.perf_counter() - t
            t = time.perf_counter()
            cosine_vs_distance(tok)
            t_cos += time.perf_counter() - t
    total = time.perf_counter() - t0
    print(f"{args.images} images x {args.encoders} encoders, layers={args.layers}, {torch.get_num_threads()} threads")
    print(f"tokens {t_tok:.1f} s | variance+probe+DSE {t_diag:.1f} s | cosine curves {t_cos:.1f} s | total {total:.1f} s")


if __name__ == "__main__":
    main()
