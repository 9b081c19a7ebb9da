"""A small version of the paper's grid on the data shipped in the repo (``viny demo``).

Axes: pre-training (none / SimMIM on the shipped Imagenette sample) x intermediate
fine-tuning (none / CLS on the shipped Intel sample) x fine-tune size x seed, with a
fixed held-out Pets test set (``nested`` split, so the sizes are nested). Upstream work
is shared: one pre-training, one intermediate run per pre-training, reused by every
fine-tune cell. Finished cells are skipped on a rerun and an interrupted cell resumes,
so a killed demo continues where it stopped.

Writes ``<out>/results.csv`` (one row per fine-tune cell) and ``<out>/summary.csv``
(mean and std over seeds per cell), and prints the summary.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from viny.config import make_config
from viny.files import atomic_path
from viny.train import RESULTS, STATE, train

__all__ = ["DemoScale", "SCALES", "run_demo", "summarize"]


@dataclass(frozen=True)
class DemoScale:
    model: str
    pretrain_images: int
    pretrain_epochs: int
    intermediate_images: int | None
    intermediate_epochs: int
    finetune_sizes: tuple[int, ...]
    finetune_epochs: int
    test_size: int
    seeds: tuple[int, ...]


SCALES = {
    # about 11 minutes on 2 CPU cores (see README)
    "demo": DemoScale("viny", 1000, 15, None, 10, (100, 250), 10, 200, (0, 1)),
    # seconds: the same grid with the tiny model, for tests and CI
    "smoke": DemoScale("viny_test", 64, 1, 48, 1, (16, 32), 1, 32, (0, 1)),
}


def _run(config, out: Path, progress: bool) -> dict:
    if (out / RESULTS).is_file():
        return json.loads((out / RESULTS).read_text())
    return train(config, out, resume=(out / STATE).is_file(), progress=progress)


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds of each score, per (pretrain, intermediate, train_size)."""
    keys = ["pretrain", "intermediate", "train_size"]
    scores = ["miou", "pixel_accuracy", "paper_miou", "paper_pixel_accuracy"]
    g = results.groupby(keys)[scores]
    out = g.mean().add_suffix("_mean").join(g.std(ddof=1).add_suffix("_std")).join(g.size().rename("seeds"))
    return out.reset_index()


def _format(summary: pd.DataFrame) -> str:
    view = summary[["pretrain", "intermediate", "train_size", "seeds"]].copy()
    for s in ("miou", "pixel_accuracy"):
        view[s] = [f"{100 * m:.1f} ± {100 * (0 if pd.isna(sd) else sd):.1f}" for m, sd in zip(summary[f"{s}_mean"], summary[f"{s}_std"])]
    return view.to_string(index=False)


def run_demo(out: str | Path = "runs/demo", scale: str = "demo", data_root: str | None = None, cache_dir: str | None = None, progress: bool = True) -> pd.DataFrame:
    """Run (or finish) the demo grid in ``out``; returns the per-cell results table."""
    s = SCALES[scale]
    out = Path(out)
    t0 = time.perf_counter()
    common = {"model": s.model, "cache_dir": cache_dir}
    data = (lambda sub: str(Path(data_root) / sub)) if data_root else (lambda sub: None)

    encoders: dict[str, str | None] = {"none": None}
    pre = make_config("pretrain", epochs=s.pretrain_epochs, num_images=s.pretrain_images, data=data("imagenet-subset/train"), **common)
    _run(pre, out / "pretrain" / "simmim", progress)
    encoders["simmim"] = str(out / "pretrain" / "simmim" / "encoder.safetensors")

    upstream: dict[tuple[str, str], str | None] = {}
    for pname, enc in encoders.items():
        upstream[(pname, "none")] = enc
        inter = make_config("intermediate", task="cls_intel", epochs=s.intermediate_epochs, num_images=s.intermediate_images,
                            init_from=enc, data=data("intel-image-classification"), **common)
        _run(inter, out / "intermediate" / f"{pname}-cls_intel", progress)
        upstream[(pname, "cls_intel")] = str(out / "intermediate" / f"{pname}-cls_intel" / "encoder.safetensors")

    rows = []
    for (pname, iname), enc in upstream.items():
        for size in s.finetune_sizes:
            for seed in s.seeds:
                cfg = make_config("finetune", epochs=s.finetune_epochs, train_size=size, test_size=s.test_size, split="nested",
                                  seed=seed, init_from=enc, data=data(""), **common)
                r = _run(cfg, out / "finetune" / f"{pname}-{iname}-n{size}-s{seed}", progress)
                rows.append({"pretrain": pname, "intermediate": iname, "train_size": size, "seed": seed,
                             **{k: r[k] for k in ("miou", "pixel_accuracy", "paper_miou", "paper_pixel_accuracy", "test_images")}})
    results = pd.DataFrame(rows)
    summary = summarize(results)
    for name, df in (("results.csv", results), ("summary.csv", summary)):
        with atomic_path(out / name) as tmp:
            df.to_csv(tmp, index=False)
    minutes = (time.perf_counter() - t0) / 60
    print(f"\nViNy demo ({scale} scale, shipped sample, {len(s.seeds)} seeds, {s.test_size} held-out Pets images), "
          f"dataset-level mIoU and pixel accuracy in %, mean ± std over seeds:\n")
    print(_format(summary))
    print(f"\nwritten: {out / 'results.csv'}, {out / 'summary.csv'} ({minutes:.1f} min)")
    return results
