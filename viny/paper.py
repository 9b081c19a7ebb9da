"""The paper's published numbers (arXiv 2512.03862 v2), as data, to set beside ours.

Tables 1, A2 and A3: test pixel accuracy and mIoU (%, mean ± std over 3 runs; the
paper's per-image protocol = our ``paper_pixel_accuracy`` / ``paper_miou``) by
pre-training images and fine-tuning images, without (1, A2) and with (A3) the
intermediate CLS stage on Intel. Table 2: patch diagnostics of four encoders.
"""

from __future__ import annotations

import pandas as pd

__all__ = ["segmentation_table", "diagnostics_table", "comparison_table"]

_SIZES = [250, 500, 1000, 2000, 4000, 6000]
# (accuracy mean, std, mIoU mean, std) per fine-tune size
_TABLE_1 = [(70.33, 0.89, 43.73, 1.02), (73.71, 0.08, 47.41, 0.21), (77.81, 0.56, 53.28, 0.43),
            (80.03, 0.42, 56.87, 0.51), (84.16, 0.06, 62.99, 0.16), (85.60, 0.03, 65.07, 0.01)]
_TABLE_A2 = {
    45_000: [(77.44, 0.06, 52.73, 0.25), (79.67, 0.20, 55.57, 0.19), (81.92, 0.20, 58.68, 0.20),
             (83.38, 0.03, 61.36, 0.05), (85.41, 0.13, 64.42, 0.19), (86.40, 0.11, 65.98, 0.19)],
    100_000: [(79.67, 0.35, 55.91, 0.32), (81.62, 0.62, 58.44, 0.93), (83.60, 0.14, 61.59, 0.16),
              (84.99, 0.18, 64.17, 0.18), (86.81, 0.12, 66.97, 0.25), (87.53, 0.08, 68.00, 0.14)],
    200_000: [(80.49, 0.18, 57.14, 0.42), (82.31, 0.04, 59.47, 0.13), (84.17, 0.15, 62.37, 0.08),
              (85.38, 0.11, 64.74, 0.14), (87.23, 0.06, 67.62, 0.12), (87.93, 0.04, 68.76, 0.13)],
}
_TABLE_A3 = {
    45_000: [(74.65, 0.97, 48.92, 0.66), (77.86, 0.32, 52.72, 0.39), (79.80, 0.11, 55.70, 0.13),
             (82.08, 0.57, 59.38, 0.88), (84.86, 0.28, 63.31, 0.68), (85.70, 0.42, 64.76, 0.62)],
    100_000: [(75.72, 0.49, 50.20, 0.29), (78.59, 0.25, 53.85, 0.44), (81.13, 0.19, 57.80, 0.10),
              (83.77, 0.26, 61.62, 0.11), (86.13, 0.11, 65.29, 0.61), (87.32, 0.48, 67.79, 0.43)],
    200_000: [(75.83, 0.66, 49.93, 0.56), (78.49, 0.69, 54.15, 0.77), (80.96, 0.26, 57.30, 0.57),
              (83.96, 0.40, 61.75, 0.62), (85.88, 0.48, 65.02, 0.77), (87.18, 0.14, 67.47, 0.15)],
}
_TABLE_2 = [
    ("Pretrained (SimMIM)", 0.10, 0.02, 79.5),
    ("CLS-Intermediate (Intel)", 0.18, 0.11, 76.1),
    ("CLS-Intermediate (Pets)", 0.58, 0.29, 78.6),
    ("Spatial Intermediate", 0.32, 0.06, 93.3),
]


def segmentation_table() -> pd.DataFrame:
    """Tables 1, A2, A3 as one tidy table: pretrain_images, intermediate, train_size,
    accuracy, accuracy_std, miou, miou_std (percent), source table."""
    rows = []
    for size, (a, sa, m, sm) in zip(_SIZES, _TABLE_1):
        rows.append((0, "none", size, a, sa, m, sm, "Table 1"))
    for table, inter, name in ((_TABLE_A2, "none", "Table A2"), (_TABLE_A3, "cls_intel", "Table A3")):
        for pre, vals in table.items():
            for size, (a, sa, m, sm) in zip(_SIZES, vals):
                rows.append((pre, inter, size, a, sa, m, sm, name))
    return pd.DataFrame(rows, columns=["pretrain_images", "intermediate", "train_size", "accuracy", "accuracy_std", "miou", "miou_std", "table"])


def diagnostics_table() -> pd.DataFrame:
    """Table 2: within / across-image variance and patch-probe accuracy (%, the authors'
    training-set number) per encoder."""
    return pd.DataFrame(_TABLE_2, columns=["encoder", "within_variance", "across_variance", "probe_accuracy"])


def _pm(mean: float, std: float) -> str:
    return "" if pd.isna(mean) else f"{mean:.1f} ± {0 if pd.isna(std) else std:.1f}"


def comparison_table(results: pd.DataFrame) -> pd.DataFrame:
    """Our fine-tuning results beside the paper's Tables 1, A2, A3 wherever the fine-tuning
    size matches (%, mean ± std over seeds).

    Ours in both protocols: ``per-image`` (the paper's: each image's mIoU, then averaged;
    ``paper_miou``) and ``dataset`` (one confusion matrix over all held-out pixels; the
    figures' and findings' ``miou``). The paper's cell has the same intermediate stage and
    fine-tuning size; for pre-training it is the same size where the paper has it, else its
    smallest (45,000 images) for a pre-trained encoder and Table 1 for none, named in
    ``paper cell``."""
    g = results.groupby(["pretrain_images", "intermediate", "train_size"])
    ours = pd.DataFrame({
        "m_img": 100 * g["paper_miou"].mean(), "s_img": 100 * g["paper_miou"].std(ddof=1),
        "m_ds": 100 * g["miou"].mean(), "s_ds": 100 * g["miou"].std(ddof=1), "seeds": g.size(),
    }).reset_index()
    paper = segmentation_table()
    sizes = sorted(set(paper["pretrain_images"]) - {0})
    rows = []
    for r in ours.itertuples():
        pre = r.pretrain_images if r.pretrain_images in sizes or r.pretrain_images == 0 else sizes[0]
        match = paper[(paper["pretrain_images"] == pre) & (paper["intermediate"] == r.intermediate) & (paper["train_size"] == r.train_size)]
        p = match.iloc[0] if len(match) else None
        rows.append({
            "pretrain_images": int(r.pretrain_images), "intermediate": r.intermediate, "train_size": int(r.train_size), "seeds": int(r.seeds),
            "ours mIoU per-image": _pm(r.m_img, r.s_img), "ours mIoU dataset": _pm(r.m_ds, r.s_ds),
            "paper mIoU per-image": _pm(p["miou"], p["miou_std"]) if p is not None else "",
            "paper cell": f"{p['table']}, {int(p['pretrain_images']):,} pre-training images" if p is not None else "no cell at this size",
        })
    return pd.DataFrame(rows)
