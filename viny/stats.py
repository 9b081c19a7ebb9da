"""Small statistics for seed-level results (no SciPy needed)."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["t_quantile_975", "mean_interval", "paired_difference"]

# two-sided 95 % Student t quantiles, t_{0.975, df}, df = 1..30
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


def t_quantile_975(df: int) -> float:
    if df < 1:
        return float("nan")
    return _T975[df - 1] if df <= 30 else 1.960 + 2.4 / df  # within 0.002 of the exact value for df > 30


def mean_interval(values) -> dict[str, float]:
    """Mean, std and the 95 % t interval of the mean (NaN bounds with one value)."""
    v = np.asarray(values, dtype=float)
    n = len(v)
    mean = float(v.mean()) if n else float("nan")
    sd = float(v.std(ddof=1)) if n > 1 else float("nan")
    half = t_quantile_975(n - 1) * sd / math.sqrt(n) if n > 1 else float("nan")
    return {"mean": mean, "std": sd, "lo": mean - half, "hi": mean + half, "n": n}


def paired_difference(a, b) -> dict[str, float]:
    """``a - b`` paired by index (e.g. seed): mean, std and 95 % interval of the differences."""
    import pandas as pd

    a, b = pd.Series(a), pd.Series(b)
    common = a.index.intersection(b.index)
    return mean_interval((a[common] - b[common]).to_numpy())
