"""Embedding drift: do the window's prompts (and outputs) mean what the training records meant?

Word lengths and vocabulary miss a shift of topic told in the same words, or of register; sentence
embeddings catch it. Both sides are embedded with the offline all-MiniLM-L6-v2 (mean pooling,
L2-normalised: the evaluation's ``TextEncoder``) and compared with a kernel two-sample test:

- **reference**: a uniform sample of at most ``REFERENCE_SAMPLE`` records of the model's training
  split (bottom-k by a seeded random key over the Arrow batches, so one streaming pass, memory one
  batch and the sample), their embeddings and centroid, and the RBF bandwidth by the median
  heuristic (the median distance between two reference embeddings). Chat models keep the user /
  system side and the assistant side of the same sampled conversations; plain-text models one set
  (a record is both what a prompt continues and what an output imitates). It is an artifact
  ``artifacts/embedding_reference/<key>/`` (``prompts.npy``, ``outputs.npy`` for chat,
  ``reference.json``, the manifest last), keyed by the model's artifact key and these settings,
  registered in the catalog with lineage from the model and data artifacts; computed on first use,
  read back afterwards (as ``profile.model_profile``).
- **test**: the unbiased MMD^2 of Gretton et al. (2012), "A Kernel Two-Sample Test", JMLR 13,
  between at most ``WINDOW_SAMPLE`` of the window's texts and the reference, with
  ``k(x, y) = exp(-|x - y|^2 / (2 sigma^2))`` at the reference's bandwidth; its p-value from
  ``PERMUTATIONS`` seeded permutations of the pooled sample, ``(1 + #{null >= observed}) / (1 + P)``
  (so the smallest is 1 / (P + 1)). A breach when p < ``embedding_alpha`` and MMD^2 is at least
  ``embedding_min_mmd2`` (``monitor.thresholds``): with a thousand texts a side the test finds differences too small to
  matter, so the size of the gap decides as well (as ``ks_min_statistic`` does for KS).
  The evidence states the centroid cosine distance, both sample sizes (the sample's share of the
  window) and the sample's distinct texts (a text repeated across requests raises MMD^2: at 1,000
  prompts drawn from 258 distinct in-distribution sentences, 0.0006 to 0.004 with p = 0.005, which
  is why the effect floor is there), and the null's mean, standard deviation and 99th
  percentile: the noise that the sample sizes leave in MMD^2.

Without the MiniLM package or transformers the checks are skipped with the install hint (never a
silent pass).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from genloom.core.catalog import Catalog
from genloom.core.errors import GenloomError
from genloom.core.store import ArtifactStore
from genloom.monitor.signals import Check, Thresholds, WindowAccumulator, _skip, window_texts
from genloom.stages.embedding_reference import (
    ENCODER,
    EmbeddingReference,
    _sq_distances,
    embedding_reference,
    encode,
)

WINDOW_SAMPLE = 1000
PERMUTATIONS = 200
SEED = 0


# A breach needs the permutation p-value under ``Thresholds.embedding_alpha`` (0.01) and MMD^2 at
# least ``Thresholds.embedding_min_mmd2`` (0.005; both ``monitor.thresholds`` keys). Measured at
# the median bandwidth (about 1.3), 150 texts against 400: Python-docs sentences against other
# such sentences -0.0007 (null sd 0.0005), against lines of Python code 0.039, against a window of
# 20% code 0.0011; MMD^2 grows about as the square of the share of shifted traffic, so 0.005 is a
# third or more of it off-topic.
@dataclass
class MMDResult:
    """An MMD two-sample test: the unbiased MMD^2, its permutation p-value and null."""

    mmd2: float
    p_value: float
    permutations: int
    null: np.ndarray
    centroid_distance: float


# ----------------------------------------------------------------------------------------------
# embeddings and the test


def mmd_test(
    x: np.ndarray, y: np.ndarray, bandwidth: float, permutations: int = PERMUTATIONS, seed: int = SEED
) -> MMDResult:
    """Unbiased MMD^2 of samples ``x`` (n, d) and ``y`` (m, d) under the RBF kernel of
    ``bandwidth``, with its p-value from ``permutations`` random splits of the pooled sample."""
    n, m = len(x), len(y)
    if n < 2 or m < 2:
        raise ValueError(f"MMD needs two rows a side (got {n} and {m})")
    pooled = np.concatenate([x, y])
    K = np.exp(-_sq_distances(pooled, pooled) / (2.0 * bandwidth**2))  # (N, N), diagonal 1
    row_sums = K.sum(1)
    total = float(row_sums.sum())

    def statistic(a: np.ndarray) -> np.ndarray:
        # a (N, P): 1 where a row is in the first sample; a'Ka, a'K1 and the total give every block
        s_xx = (a * (K @ a)).sum(0)
        s_x = row_sums @ a
        s_xy = s_x - s_xx
        s_yy = total - 2.0 * s_x + s_xx
        xx = (s_xx - n) / (n * (n - 1))  # the diagonal k(x, x) = 1 left out: the unbiased estimate
        yy = (s_yy - m) / (m * (m - 1))
        return np.asarray(xx + yy - 2.0 * s_xy / (n * m))

    observed = np.zeros((n + m, 1))
    observed[:n] = 1.0
    mmd2 = float(statistic(observed)[0])
    rng = np.random.default_rng(seed)
    null = np.zeros(permutations)
    for start in range(0, permutations, 50):
        count = min(50, permutations - start)
        a = np.zeros((n + m, count))
        for j in range(count):
            a[rng.permutation(n + m)[:n], j] = 1.0
        null[start : start + count] = statistic(a)
    p = (1 + int((null >= mmd2).sum())) / (1 + permutations)
    cx, cy = x.mean(0), y.mean(0)
    cos = float(cx @ cy / max(float(np.linalg.norm(cx) * np.linalg.norm(cy)), 1e-12))
    return MMDResult(mmd2, p, permutations, null, 1.0 - cos)


# ----------------------------------------------------------------------------------------------
# the checks


SIGNALS = {"prompt": "prompt_embedding", "output": "output_embedding"}


def _skipped(why: str, th: Thresholds) -> list[Check]:
    return [_skip("drift", s, "mmd", th.embedding_alpha, why) for s in SIGNALS.values()]


def _subsample(texts: list[str], size: int, seed: int = SEED) -> list[str]:
    """At most ``size`` of ``texts``, drawn uniformly (seeded), in their order."""
    if len(texts) <= size:
        return texts
    keep = np.sort(np.random.default_rng(seed).choice(len(texts), size, replace=False))
    return [texts[i] for i in keep]


def embedding_checks(
    reference: Callable[[], EmbeddingReference],
    prompts: list[str],
    outputs: list[str],
    text_requests: int,
    th: Thresholds,
    sampled_from: int | None = None,
) -> list[Check]:
    """MMD of the window's sampled prompt and output texts against the reference (``reference``
    is called only when there is something to compare, so a quiet window computes nothing)."""
    if text_requests < th.min_requests:
        return _skipped(
            f"{text_requests} text requests in the window (at least {th.min_requests} needed)", th
        )
    sides = {"prompt": [t for t in prompts if t.strip()], "output": [t for t in outputs if t.strip()]}
    if not any(len(v) >= 2 for v in sides.values()):
        return _skipped("the window's texts are empty, or not stored (a server with redact: true)", th)
    try:
        ref = reference()
        picked = {side: _subsample(texts, WINDOW_SAMPLE) for side, texts in sides.items()}
        vectors = encode(picked["prompt"] + picked["output"])  # one call: a text on both sides once
        embedded = {"prompt": vectors[: len(picked["prompt"])], "output": vectors[len(picked["prompt"]) :]}
    except GenloomError as e:
        return _skipped(f"embedding drift unavailable: {e}", th)
    checks = []
    for side, signal in SIGNALS.items():
        x = embedded[side]
        if len(x) < 2:
            why = f"{len(x)} non-empty {side}s in the window's sample (at least 2 needed)"
            checks.append(_skip("drift", signal, "mmd", th.embedding_alpha, why))
            continue
        y = ref.side(side)
        bandwidth = (
            float(ref.meta.get("output_bandwidth", ref.bandwidth)) if side == "output" else ref.bandwidth
        )
        res = mmd_test(x, y, bandwidth)
        breached = res.p_value < th.embedding_alpha and res.mmd2 >= th.embedding_min_mmd2
        evidence = {
            "mmd2": res.mmd2,
            "min_mmd2": th.embedding_min_mmd2,
            "centroid_cosine_distance": res.centroid_distance,
            "sample": len(x),
            # repeated texts raise MMD^2 (a point mass is unlike the training records' spread)
            "distinct_texts": len(set(picked[side])),
            "window_requests": sampled_from,  # the text requests the sample was drawn from
            "reference_sample": len(y),
            "reference_records": ref.meta.get("records"),
            "permutations": res.permutations,
            "p_value_resolution": 1 / (1 + res.permutations),
            "null_mean": float(res.null.mean()),
            "null_sd": float(res.null.std()),
            "null_p99": float(np.quantile(res.null, 0.99)),
            "bandwidth": bandwidth,
            "encoder": ENCODER,
            "reference": ref.key,
        }
        checks.append(
            Check("drift", signal, "mmd", res.mmd2, th.embedding_alpha, breached, res.p_value, evidence)
        )
    return checks


class EmbeddingDriftCheck:
    """The embedding-drift checks of a champion's window (a ``run_checks`` sample check); its
    reference is read or computed on the first window with enough requests."""

    def __init__(
        self, store: ArtifactStore, catalog: Catalog, pipeline: str, version: dict[str, Any]
    ) -> None:
        self.store, self.catalog, self.pipeline, self.version = store, catalog, pipeline, version
        self.computed: bool | None = None

    def reference(self) -> EmbeddingReference:
        """The champion's embedding reference (read, or computed and stored)."""
        ref, computed = embedding_reference(self.store, self.catalog, self.pipeline, self.version)
        self.computed = computed
        return ref

    def __call__(self, acc: WindowAccumulator, th: Thresholds) -> list[Check]:
        prompts, outputs = window_texts(acc.sample)
        checks = embedding_checks(self.reference, prompts, outputs, acc.text_requests, th, acc.sample_seen)
        for c in checks:
            if self.computed is not None:
                c.evidence["reference_computed_now"] = self.computed
        return checks
