"""The embedding reference of a text model: MiniLM embeddings of a uniform sample of its
training split, their centroid and the median-distance bandwidth, stored as the
``embedding_reference`` artifact (``prompts.npy``, ``outputs.npy`` for chat models, ``reference.json``,
manifest last), keyed by the model's artifact key and the settings, registered in the catalog
with lineage from the model and its data. ``genloom monitor``'s embedding drift
(``monitor/embedding_drift.py``) compares windows of served texts with it; it is computed on the
first monitor round of a champion, or by the register stage when ``monitor.embedding_reference:
train`` asks for it at training time.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow.compute as pc

from genloom.core.catalog import Catalog
from genloom.core.errors import GenloomError
from genloom.core.store import ArtifactStore, content_key
from genloom.stages.profile import TrainingData, _chat_sides, _train_batches, training_data

#: bumped when the reference's content changes, so older cached ones are recomputed
EMBEDDING_VERSION = 1
ENCODER = "all-MiniLM-L6-v2"
ENCODER_MAX_TOKENS = 128
#: characters of a text given to the encoder (its 128 tokens are under 1,000 characters of prose)
MAX_CHARS = 1000
REFERENCE_SAMPLE = 2000
SEED = 0
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
