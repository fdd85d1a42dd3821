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

import json
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow.compute as pc

from genloom.core.catalog import Catalog
from genloom.core.errors import GenloomError
from genloom.core.store import ArtifactStore, content_key
from genloom.monitor.signals import Check, Thresholds, WindowAccumulator, _skip, window_texts
from genloom.stages.profile import TrainingData, _chat_sides, _train_batches, training_data

#: bumped when the reference's content changes, so older cached ones are recomputed
EMBEDDING_VERSION = 1
ENCODER = "all-MiniLM-L6-v2"
ENCODER_MAX_TOKENS = 128
#: characters of a text given to the encoder (its 128 tokens are under 1,000 characters of prose)
MAX_CHARS = 1000
REFERENCE_SAMPLE = 2000
WINDOW_SAMPLE = 1000
PERMUTATIONS = 200
SEED = 0
# A breach needs the permutation p-value under ``Thresholds.embedding_alpha`` (0.01) and MMD^2 at
# least ``Thresholds.embedding_min_mmd2`` (0.005; both ``monitor.thresholds`` keys). Measured at
# the median bandwidth (about 1.3), 150 texts against 400: Python-docs sentences against other
# such sentences -0.0007 (null sd 0.0005), against lines of Python code 0.039, against a window of
# 20% code 0.0011; MMD^2 grows about as the square of the share of shifted traffic, so 0.005 is a
# third or more of it off-topic.
STAGE = "embedding_reference"
#: distinct texts whose embeddings a process keeps (384 float32 each: 15 MB)
CACHED_TEXTS = 10_000


@dataclass
class EmbeddingReference:
    """The training split's embedding sample: ``prompts`` (M, 384), and for chat models the
    assistant side ``outputs`` (None: the records serve both sides)."""

    key: str
    prompts: np.ndarray
    outputs: np.ndarray | None
    bandwidth: float
    meta: dict[str, Any]

    def side(self, name: str) -> np.ndarray:
        """The reference of the ``prompt`` or ``output`` side."""
        return self.outputs if name == "output" and self.outputs is not None else self.prompts


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


class EmbeddingCache:
    """The embeddings of the last ``size`` distinct texts encoded in this process (least recently
    used first out): windows of successive rounds (``genloom monitor --watch``) overlap."""

    def __init__(self, size: int = CACHED_TEXTS) -> None:
        self.size = size
        self.vectors: OrderedDict[str, np.ndarray] = OrderedDict()

    def get(self, text: str) -> np.ndarray | None:
        """The text's vector, or None."""
        v = self.vectors.get(text)
        if v is not None:
            self.vectors.move_to_end(text)
        return v

    def put(self, text: str, vector: np.ndarray) -> None:
        """Keep ``vector`` for ``text``, dropping the least recently used beyond ``size``."""
        self.vectors[text] = vector
        self.vectors.move_to_end(text)
        while len(self.vectors) > self.size:
            self.vectors.popitem(last=False)


_CACHE = EmbeddingCache()


def encode(texts: Sequence[str], cache: EmbeddingCache | None = _CACHE) -> np.ndarray:
    """(N, 384) float32 MiniLM embeddings, L2-normalised; each distinct text is encoded once (and
    not again while ``cache`` holds it). Raises MissingDependencyError (with the install hint)
    without the MiniLM package or transformers."""
    from genloom.models.text_metrics import TextEncoder

    encoder = TextEncoder.load()
    clipped = [t[:MAX_CHARS] for t in texts]
    found: dict[str, np.ndarray] = {}
    new = []
    for t in dict.fromkeys(clipped):
        v = cache.get(t) if cache is not None else None
        if v is None:
            new.append(t)
        else:
            found[t] = v
    if new:
        vectors = encoder.encode(new, batch_size=32).astype(np.float32)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        for t, v in zip(new, vectors, strict=True):
            found[t] = v
            if cache is not None:
                cache.put(t, v)
    if not clipped:
        return np.zeros((0, 384), dtype=np.float32)
    return np.stack([found[t] for t in clipped])


def _sq_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances between the rows of ``a`` (N, d) and ``b`` (M, d): (N, M)."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    d = (a64**2).sum(1)[:, None] + (b64**2).sum(1)[None, :] - 2.0 * a64 @ b64.T
    return np.maximum(d, 0.0)


def median_bandwidth(x: np.ndarray) -> float:
    """The median heuristic: the median distance between two distinct rows of ``x``."""
    if len(x) < 2:
        return 1.0
    d = _sq_distances(x, x)[np.triu_indices(len(x), k=1)]
    sigma = float(np.sqrt(np.median(d)))
    return sigma if sigma > 0 else 1.0


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
# the reference artifact


def reference_key(model_key: str) -> str:
    """The reference's artifact key: the model's artifact key and the reference's settings."""
    return content_key({"stage": STAGE, "model": model_key, "version": EMBEDDING_VERSION, **_settings()})


def _settings() -> dict[str, Any]:
    return {
        "settings": {
            "encoder": ENCODER,
            "max_tokens": ENCODER_MAX_TOKENS,
            "max_chars": MAX_CHARS,
            "sample": REFERENCE_SAMPLE,
            "seed": SEED,
        }
    }


def sample_records(
    store: ArtifactStore, src: TrainingData, size: int = REFERENCE_SAMPLE, seed: int = SEED
) -> tuple[list[str], list[str] | None, int]:
    """(prompt-side texts, assistant-side texts of the same records or None for plain text, the
    records seen): a uniform sample of at most ``size`` training records with text, the ``size``
    smallest of a seeded random key per record, kept batch by batch."""
    chat = src.train.get("chat")
    field = str((chat or {}).get("messages_field") or "text")
    rng = np.random.default_rng(seed)
    keys = np.zeros(0)
    prompts: list[str] = []
    outputs: list[str] = []
    seen = 0
    for batch in _train_batches(store, src, [field, "text"]):
        if chat:
            p, o = _chat_sides(batch, field)
            keep = [i for i, (a, b) in enumerate(zip(p, o, strict=True)) if a or b]
            p, o = [p[i] for i in keep], [o[i] for i in keep]
        else:
            text = pc.fill_null(batch.column("text").combine_chunks(), "")
            p = pc.filter(text, pc.greater(pc.utf8_length(text), 0)).to_pylist()
            o = []
        seen += len(p)
        keys = np.concatenate([keys, rng.random(len(p))])
        prompts += p
        outputs += o
        if len(keys) > size:
            kept = np.sort(np.argpartition(keys, size)[:size])
            keys = keys[kept]
            prompts = [prompts[i] for i in kept]
            outputs = [outputs[i] for i in kept] if chat else []
    return prompts, (outputs if chat else None), seen


def compute_reference(store: ArtifactStore, src: TrainingData, key: str) -> EmbeddingReference:
    """The embedding reference of a model's training split (not stored)."""
    prompts, outputs, seen = sample_records(store, src)
    if len(prompts) < 2:
        raise GenloomError(
            f"the training split of {src.data_stage} artifact {src.data_key} has {len(prompts)} "
            "records with text (an embedding reference needs two)"
        )
    p = encode(prompts)
    o = encode(outputs) if outputs is not None else None
    bandwidth = median_bandwidth(p)
    meta = {
        "version": EMBEDDING_VERSION,
        **_settings(),
        "records": seen,
        "sample": len(prompts),
        "chat": outputs is not None,
        "bandwidth": bandwidth,
        "output_bandwidth": median_bandwidth(o) if o is not None else bandwidth,
        "centroid": p.mean(0).tolist(),
        "output_centroid": o.mean(0).tolist() if o is not None else None,
        "split": "train",
        "sources": {"model": src.model_key, "data": src.data_key, "data_stage": src.data_stage},
    }
    return EmbeddingReference(key, p, o, bandwidth, meta)


def embedding_reference(
    store: ArtifactStore, catalog: Catalog, pipeline: str, version: dict[str, Any]
) -> tuple[EmbeddingReference, bool]:
    """(the embedding reference of a model version, whether it was computed now): read from its
    artifact, else computed from the version's training split, written (manifest last) and
    registered in the catalog."""
    model_key = str(version["artifact_key"])
    key = reference_key(model_key)
    folder = store.artifact_dir(STAGE, key)
    if store.has_artifact(STAGE, key):
        with store.fs.open(f"{folder}/reference.json", "r") as f:
            meta = json.load(f)
        with store.fs.open(f"{folder}/prompts.npy", "rb") as f:
            p = np.load(f)
        o = None
        if meta.get("chat"):
            with store.fs.open(f"{folder}/outputs.npy", "rb") as f:
                o = np.load(f)
        return EmbeddingReference(key, p, o, float(meta["bandwidth"]), meta), False
    src = training_data(store, catalog, model_key)
    ref = compute_reference(store, src, key)
    ref.meta["model"] = {"name": version["name"], "version": version["version"], "artifact_key": model_key}
    store.fs.makedirs(folder, exist_ok=True)
    with store.fs.open(f"{folder}/prompts.npy", "wb") as f:
        np.save(f, ref.prompts)
    if ref.outputs is not None:
        with store.fs.open(f"{folder}/outputs.npy", "wb") as f:
            np.save(f, ref.outputs)
    with store.fs.open(f"{folder}/reference.json", "w") as f:  # the manifest, after them, marks it done
        json.dump(ref.meta, f, sort_keys=True)
    ingredients = {"stage": STAGE, "model": model_key, "version": EMBEDDING_VERSION, **_settings()}
    rows = int(ref.meta["sample"])
    store.write_manifest(STAGE, key, {"stage": STAGE, "key": key, "ingredients": ingredients, "rows": rows})
    catalog.add_artifact(
        key, STAGE, pipeline, "embeddings", folder, "", rows, ingredients, [model_key, src.data_key]
    )
    return ref, True


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
