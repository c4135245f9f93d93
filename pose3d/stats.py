"""Summaries of a figure measured over several seeds: mean, standard deviation and a Student-t
confidence interval, alone or as the paired difference of two configurations run with the same
seeds (docs/conventions.md, Seeds)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Spread:
    """A figure over ``n`` runs: mean, sample standard deviation (ddof 1) and the half-width of
    its ``level`` t-interval (NaN for n < 2: one run says nothing about the spread)."""

    mean: float
    std: float
    half_width: float
    n: int
    level: float = 0.95

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width

    def excludes_zero(self) -> bool:
        """Whether the interval lies on one side of 0 (for a difference: a real effect at ``level``)."""
        return math.isfinite(self.half_width) and (self.low > 0 or self.high < 0)

    def format(self, digits: int = 1) -> str:
        """``mean ± half-width`` (``mean (n=1)`` for a single run)."""
        if self.n < 2:
            return f"{self.mean:.{digits}f} (n={self.n})"
        return f"{self.mean:.{digits}f} ± {self.half_width:.{digits}f}"


def spread(values: Sequence[float], level: float = 0.95) -> Spread:
    """The ``Spread`` of the finite ``values`` (NaN ones, e.g. a run that diverged, are left out
    and so counted out of n)."""
    x = np.asarray(values, np.float64)
    x = x[np.isfinite(x)]
    n = len(x)
    if n == 0:
        return Spread(math.nan, math.nan, math.nan, 0, level)
    if n == 1:
        return Spread(float(x[0]), math.nan, math.nan, 1, level)
    std = float(x.std(ddof=1))
    t = float(stats.t.ppf(0.5 + level / 2, n - 1))
    return Spread(float(x.mean()), std, t * std / math.sqrt(n), n, level)


def paired_difference(a: dict[int, float], b: dict[int, float], level: float = 0.95) -> Spread:
    """The ``Spread`` of a - b over the seeds both were run with (``{seed: value}``): pairing by
    seed removes what the two share (the same stage 1, file orders and augmentation)."""
    common = sorted(set(a) & set(b))
    return spread([a[s] - b[s] for s in common], level)
