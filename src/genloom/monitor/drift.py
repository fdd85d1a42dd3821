"""Drift statistics between a reference sample and a current one, vectorised numpy.

Numeric columns: PSI (on the reference's quantile bins) and the two-sample Kolmogorov-Smirnov test
(scipy.stats.ks_2samp). Categories (languages, labels): Jensen-Shannon distance (base 2, in [0, 1])
and Pearson's chi-square test of homogeneity. Each returns a ``DriftResult``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from genloom.core.errors import GenloomError

EPS = 1e-4  # floor of a bin's share in PSI, so an empty bin gives a large but finite term


@dataclass
class DriftResult:
    """One statistic: its score, p-value where the method has one, and what it was computed from."""

    method: str
    score: float
    p_value: float | None = None
    evidence: dict[str, Any] = field(default_factory=dict)


def _numeric(values: Any, name: str) -> np.ndarray:
    a = np.asarray(values, dtype=float).ravel()
    a = a[np.isfinite(a)]
    if a.size == 0:
        raise GenloomError(f"the {name} sample has no finite values to compare")
    return a


def quantile_edges(reference: Any, bins: int = 10) -> np.ndarray:
    """Inner bin edges: the reference's quantiles, duplicates removed (bins are (-inf, e0], ...)."""
    ref = _numeric(reference, "reference")
    edges = np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1])
    return np.unique(edges)


def bin_counts(values: Any, edges: np.ndarray) -> np.ndarray:
    """Counts of ``values`` in the bins (-inf, e0], (e0, e1], ..., (e_last, inf)."""
    a = _numeric(values, "binned")
    idx = np.searchsorted(edges, a, side="left")
    return np.bincount(idx, minlength=len(edges) + 1)


def psi_from_counts(expected: Sequence[float] | np.ndarray, actual: Sequence[float] | np.ndarray) -> float:
    """Population stability index sum((a - e) * ln(a / e)) over bin shares (floored at EPS)."""
    e = np.asarray(expected, dtype=float)
    a = np.asarray(actual, dtype=float)
    if e.shape != a.shape or e.sum() <= 0 or a.sum() <= 0:
        raise GenloomError("PSI needs two non-empty count vectors over the same bins")
    p = np.maximum(e / e.sum(), EPS)
    q = np.maximum(a / a.sum(), EPS)
    return float(np.sum((q - p) * np.log(q / p)))


def psi(reference: Any, current: Any, bins: int = 10) -> DriftResult:
    """PSI of ``current`` against ``reference`` on the reference's quantile bins."""
    edges = quantile_edges(reference, bins)
    e = bin_counts(reference, edges)
    a = bin_counts(current, edges)
    score = psi_from_counts(e, a)
    return DriftResult(
        "psi", score, None, {"edges": edges.tolist(), "reference_counts": e.tolist(), "counts": a.tolist()}
    )


def ks(reference: Any, current: Any) -> DriftResult:
    """Two-sample Kolmogorov-Smirnov statistic (largest gap of the empirical CDFs) and p-value."""
    from scipy.stats import ks_2samp

    ref = _numeric(reference, "reference")
    cur = _numeric(current, "current")
    res = ks_2samp(ref, cur)
    return DriftResult(
        "ks", float(res.statistic), float(res.pvalue), {"reference_n": int(ref.size), "n": int(cur.size)}
    )


def _category_counts(
    reference: dict[str, float], current: dict[str, float]
) -> tuple[list[str], np.ndarray, np.ndarray]:
    cats = sorted(set(reference) | set(current), key=str)
    e = np.array([float(reference.get(c, 0)) for c in cats])
    a = np.array([float(current.get(c, 0)) for c in cats])
    if e.sum() <= 0 or a.sum() <= 0:
        raise GenloomError("category drift needs two non-empty count tables")
    return cats, e, a


def category_counts(values: Sequence[Any]) -> dict[str, int]:
    """Counts of each value (as a string)."""
    cats, counts = np.unique(np.asarray([str(v) for v in values], dtype=object), return_counts=True)
    return {str(c): int(n) for c, n in zip(cats, counts, strict=True)}


def js(reference: dict[str, float], current: dict[str, float]) -> DriftResult:
    """Jensen-Shannon distance (sqrt of the divergence, base 2: 0 same, 1 disjoint) of two count tables."""
    cats, e, a = _category_counts(reference, current)
    p, q = e / e.sum(), a / a.sum()
    m = (p + q) / 2

    def kl(x: np.ndarray) -> float:
        nz = x > 0
        return float(np.sum(x[nz] * np.log2(x[nz] / m[nz])))

    div = max((kl(p) + kl(q)) / 2, 0.0)
    return DriftResult(
        "js", float(np.sqrt(div)), None, {"categories": cats, "reference": p.tolist(), "current": q.tolist()}
    )


def chi2(reference: dict[str, float], current: dict[str, float]) -> DriftResult:
    """Chi-square test of homogeneity of two count tables (2 x k contingency table) and p-value."""
    from scipy.stats import chi2 as chi2_dist

    cats, e, a = _category_counts(reference, current)
    table = np.vstack([e, a])
    keep = table.sum(axis=0) > 0
    table = table[:, keep]
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    stat = float(np.sum((table - expected) ** 2 / expected))
    dof = max(table.shape[1] - 1, 1)
    p = float(chi2_dist.sf(stat, dof))
    return DriftResult("chi2", stat, p, {"categories": cats, "dof": dof})


#: the largest sample ks_2samp tests exactly by default; above it, its asymptotic p-value
KS_EXACT_N = 10_000


def ks_from_counts(reference_values: Any, reference_counts: Any, values: Any, counts: Any) -> DriftResult:
    """KS of two samples given as histograms (distinct values and their counts), so a stored
    reference and a window's counts are compared without the rows. The statistic is exact (ties
    as ks_2samp treats them); the p-value is ks_2samp's: exact when both samples have at most
    ``KS_EXACT_N`` values (expanded), else Smirnov's asymptotic one (kstwo at n*m/(n+m))."""
    rv, rc = np.asarray(reference_values, dtype=float), np.asarray(reference_counts, dtype=np.int64)
    cv, cc = np.asarray(values, dtype=float), np.asarray(counts, dtype=np.int64)
    n, m = int(rc.sum()), int(cc.sum())
    if n <= 0 or m <= 0:
        raise GenloomError("KS needs two non-empty samples")
    if max(n, m) <= KS_EXACT_N:
        res = ks(np.repeat(rv, rc), np.repeat(cv, cc))
        res.evidence["mode"] = "exact"
        return res
    from scipy.stats import kstwo

    ro, co = np.argsort(rv), np.argsort(cv)
    rv, rc, cv, cc = rv[ro], rc[ro], cv[co], cc[co]
    support = np.union1d(rv, cv)
    r_cum = np.concatenate([[0], np.cumsum(rc)]) / n
    c_cum = np.concatenate([[0], np.cumsum(cc)]) / m
    f = r_cum[np.searchsorted(rv, support, side="right")]
    g = c_cum[np.searchsorted(cv, support, side="right")]
    d = float(np.max(np.abs(f - g)))
    big, small = max(n, m), min(n, m)
    p = float(np.clip(kstwo.sf(d, np.round(big * small / (big + small))), 0.0, 1.0))
    return DriftResult("ks", d, p, {"reference_n": n, "n": m, "mode": "asymptotic"})
