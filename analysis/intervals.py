"""Confidence intervals the study reports share: Wilson for one accuracy, a paired bootstrap for a difference."""
from __future__ import annotations

import math

import numpy as np

Z95 = 1.959964


def wilson(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (fractions in [0, 1]).

    Chosen over the normal interval because it stays inside [0, 1] and keeps its coverage
    near 0 and 1, where small studies (invalid-answer rates, yes-rates) often sit.
    """
    if n <= 0:
        raise ValueError("n must be positive")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_bootstrap(a, b, *, resamples: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """(mean(a - b), low, high): a percentile bootstrap over items scored by both settings.

    `a` and `b` hold one score per item (e.g. a question's correctness, averaged over the
    demonstration seeds of a setting). Pairing removes the items' own difficulty from the
    difference, which is what decides whether two settings evaluated on the same questions
    differ. Seeded, so a rebuilt report gives the same interval.
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape or a.ndim != 1 or not len(a):
        raise ValueError(f"paired scores must be two equal non-empty vectors, got {a.shape} and {b.shape}")
    diff = a - b
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(resamples, len(diff)))].mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(diff.mean()), float(low), float(high)
