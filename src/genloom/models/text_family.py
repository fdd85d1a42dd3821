"""What the two text families (``gpt``, ``hf_causal_lm``) share: preparing records into token files,
evaluating on held-out text, sampling, the data profile.

``prepare`` splits the records by id, gets a tokenizer (``prepare_tokenizer``: the GPT trains one
on the training split, a pretrained model brings its own), and packs train and validation token
memmaps, plus the validation texts (so another model can be scored on the same data with its own
tokenizer). With ``train.chat``, each record's conversation (``messages_field``) is written with
the chat template; a record that holds no valid conversation is left out and listed in the
artifact's ``rejected.parquet`` (reason ``not_a_conversation``) and counted in the manifest. With
``train.controls``, each record's values of those fields (a column, else a meta key; a column a
feature step writes, such as ``sentiment_label``, works like a source's) become control tokens
before its text (``<|label=1|>Great food.``): the tokenizer learns one special token per value
seen in the training split, so generation can ask for them; a control no training record has a
value for fails the stage.

``evaluate`` reports the held-out loss (``evaluate_text_model``) and the figures of a seeded
sample of generations (``evaluate_generations``: diversity, memorisation against the training
split, MiniLM distance to real text, control accuracy; the metrics are in ``text_metrics.py``),
each with its direction (``TEXT_DIRECTIONS``). docs/evaluation.md lists them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genloom.core.errors import ConfigError, StageError
from genloom.core.records import REJECTED_SCHEMA, load_meta
from genloom.models.base import Direction, Metric, ModelFamily, Prepared, PrepareInput

if TYPE_CHECKING:
    import pyarrow as pa
    import tokenizers

    from genloom.models.text import TextData

#: evaluation figures of a text model and which way is better
TEXT_DIRECTIONS = {"val_loss": "min", "val_ppl": "min", "val_bpc": "min"}
#: the family profile counts tokens in the first this many of the training split
PROFILE_TOKEN_SAMPLE = 5_000_000
#: most frequent tokens the family profile lists
PROFILE_TOP_TOKENS = 100
#: percentiles of tokens per document in the family profile
PROFILE_QUANTILES = (0, 1, 5, 25, 50, 75, 95, 99, 100)


class TextFamily(ModelFamily):
    """A causal language model over a tokenizer: the prepare, evaluate, sample and profile of text."""

    model_files = ("tokenizer.json",)
    generates_text = True

    # -- prepare --------------------------------------------------------------------------------

    def tokenizer_key(
        self, train_cfg: Any, file_digests: Callable[[list[str]], dict[str, str]]
    ) -> dict[str, Any]:
        """What the tokenizer depends on (the GPT: its settings; a pretrained model: its file)."""
        return dict(train_cfg.tokenizer.model_dump(mode="json"))

    def prepare_tokenizer(
        self, inp: PrepareInput, train_cfg: Any, texts: Iterator[str], control_tokens: list[str]
    ) -> tokenizers.Tokenizer:
        """The tokenizer of the prepared data: trained on ``texts`` (the training split) with the
        ``control_tokens`` added, unless the model brings its own."""
        from genloom.models.tokenizer import train_tokenizer

        tok_cfg = train_cfg.tokenizer
        if control_tokens:
            tok_cfg = tok_cfg.model_copy(
                update={"control_tokens": [*tok_cfg.control_tokens, *control_tokens]}
            )
        return train_tokenizer(texts, tok_cfg)

    def prepare_key(
        self, train_cfg: Any, file_digests: Callable[[list[str]], dict[str, str]]
    ) -> dict[str, Any]:
        return {
            "tokenizer": self.tokenizer_key(train_cfg, file_digests),
            "controls": list(train_cfg.controls),
            "chat": train_cfg.chat.model_dump(mode="json") if train_cfg.chat else None,
        }

    def prepare(self, inp: PrepareInput, train_cfg: Any, out_dir: Path) -> Prepared:
        import pyarrow as pa
        import pyarrow.parquet as pq

        from genloom.models.tokenizer import control_token, format_controls
        from genloom.models.tokens import pack_tokens

        controls = list(train_cfg.controls)
        chat = train_cfg.chat
        fmt = self.chat_formatter(inp, train_cfg) if chat else None
        bad: dict[str, str] = {}  # record id -> why it is not a conversation (chat only)
        wanted = list(
            dict.fromkeys(["id", "text", "meta", *controls, *([chat.messages_field] if chat else [])])
        )

        def records(want: str) -> Iterator[tuple[str, dict[str, str]]]:
            for batch in inp.batches(wanted):
                splits = inp.split(batch)
                values = control_values(batch, controls)
                docs = (
                    chat_documents(batch, chat.messages_field, bad, fmt)
                    if chat
                    else batch.column("text").to_pylist()
                )
                for text, part, ctl in zip(docs, splits, values, strict=True):
                    if part == want and text:
                        yield text, ctl

        def texts(want: str) -> Iterator[str]:
            for text, ctl in records(want):
                yield format_controls(ctl) + text

        seen: dict[str, dict[str, int]] = {k: {} for k in controls}
        if controls:  # one control token per value the training split holds
            for _, ctl in records("train"):
                for k, v in ctl.items():
                    seen[k][v] = seen[k].get(v, 0) + 1
            missing = [k for k in controls if not seen[k]]
            if missing:  # else the model would silently learn no token for them
                raise StageError(
                    f"train.controls {missing}: no training record has a value for them, as a column or a"
                    f" meta key (columns: {', '.join(inp.columns)}); a feature's column exists once its step"
                    " runs (sentiment_label: features: [{type: sentiment}]; topic: features: [{type: topics}])"
                )
        found = [control_token(k, v) for k in controls for v in sorted(seen[k])]
        tokenizer = self.prepare_tokenizer(inp, train_cfg, (t for t, _ in records("train")), found)
        tokenizer.save(str(out_dir / "tokenizer.json"))
        inp.advance()
        train_info = pack_tokens(tokenizer, texts("train"), out_dir / "train.bin")
        inp.advance()
        val_info = pack_tokens(tokenizer, texts("val"), out_dir / "val.bin")
        table = pa.table({"text": pa.array(list(texts("val")), pa.string())})
        pq.write_table(table, out_dir / "val_texts.parquet", compression="zstd")
        # the test split (split.test_fraction > 0), apart: only the evaluate stage reads it
        test_info = pack_tokens(tokenizer, texts("test"), out_dir / "test.bin") if inp.test else {}
        if inp.test:
            table = pa.table({"text": pa.array(list(texts("test")), pa.string())})
            pq.write_table(table, out_dir / "test_texts.parquet", compression="zstd")
        inp.advance()
        if not train_info.get("n_tokens") or not val_info.get("n_tokens"):
            raise StageError("the train or validation split is empty: add data or change split.val_fraction")
        if inp.test and not test_info.get("n_tokens"):
            raise StageError("the test split is empty: add data or raise split.test_fraction")
        stats: dict[str, Any] = {
            "vocab_size": tokenizer.get_vocab_size(),
            "train_tokens": train_info.get("n_tokens"),
            "val_tokens": val_info.get("n_tokens"),
        }
        if inp.test:
            stats["test_tokens"] = test_info.get("n_tokens")
        if controls:
            stats["controls"] = seen
        if chat is not None:
            rejected = [
                {"id": k, "step": "prepare", "reason": v, "location": "", "detail": ""}
                for k, v in bad.items()
            ]
            pq.write_table(
                pa.Table.from_pylist(rejected, schema=REJECTED_SCHEMA), out_dir / "rejected.parquet"
            )
            stats["rejected"] = len(rejected)
        manifest = {
            "train": train_info,
            "val": val_info,
            **({"test": test_info} if inp.test else {}),
            "vocab_size": tokenizer.get_vocab_size(),
            "controls": seen,
            "rejected": len(bad),
        }
        return Prepared(train_info.get("n_docs"), manifest, stats)

    def profile(self, prepared_dir: Path) -> dict[str, Any]:
        """The training split as the model sees it, in its own tokens: documents, tokens and
        characters, tokens per document (quantiles, from the document index; the end-of-document
        token included) and the ``PROFILE_TOP_TOKENS`` most frequent tokens of the first
        ``PROFILE_TOKEN_SAMPLE`` (id, text from the tokenizer, count). JSON, bounded in size."""
        import numpy as np

        from genloom.models.tokens import load_tokens, read_sidecar

        prepared_dir = Path(prepared_dir)
        meta = read_sidecar(prepared_dir / "train.bin")
        tokens = load_tokens(prepared_dir / "train.bin")
        n_tokens = int(meta.get("n_tokens") or 0)
        n_chars = meta.get("n_chars")
        docs = int(meta.get("n_docs") or 0)
        sample = np.asarray(tokens[:PROFILE_TOKEN_SAMPLE], dtype=np.int64)
        counts = np.bincount(sample) if len(sample) else np.zeros(0, dtype=np.int64)
        top = np.argsort(-counts, kind="stable")[:PROFILE_TOP_TOKENS]
        names = _token_names(prepared_dir / "tokenizer.json", [int(t) for t in top])
        lengths: dict[str, Any] | None = None
        index = prepared_dir / str(meta.get("doc_index") or "train.docs.npy")
        if index.exists() and n_tokens:
            starts = np.load(index).astype(np.int64)
            per_doc = np.diff(np.append(starts, n_tokens))  # (docs,) tokens of each document
            if len(per_doc):
                qs = np.percentile(per_doc, PROFILE_QUANTILES)
                lengths = {
                    "mean": float(per_doc.mean()),
                    "quantiles": {f"p{q}": float(v) for q, v in zip(PROFILE_QUANTILES, qs, strict=True)},
                }
        return {
            "kind": "text",
            "documents": docs,
            "tokens": n_tokens,
            "chars": int(n_chars) if n_chars is not None else None,
            "vocab_size": meta.get("vocab_size"),
            "chars_per_document": n_chars / docs if n_chars is not None and docs else None,
            "tokens_per_document": n_tokens / docs if docs else None,
            "document_tokens": lengths,
            "sampled_tokens": len(sample),
            "top_tokens": [
                {"id": int(t), "token": name, "count": int(counts[t])}
                for t, name in zip(top, names, strict=True)
                if counts[t]
            ],
        }

    def chat_formatter(self, inp: PrepareInput, train_cfg: Any) -> Callable[[list[dict[str, str]]], str]:
        """How a conversation becomes training text: genloom's template (``<|user|>...<|end|>``)."""
        from genloom.models.tokenizer import format_chat

        return format_chat

    def chat_prompt(self, model_dir: Path, messages: list[dict[str, str]]) -> str:
        """A conversation written with the template the model was trained with, ending where the
        assistant's reply starts."""
        from genloom.models.tokenizer import format_chat

        return format_chat(messages, add_generation_prompt=True)

    def gguf_pre_tokenizer(self, model_dir: Path) -> str:
        """The llama.cpp pre-tokenizer name the GGUF converter should write ("": let it recognise
        the tokenizer, as it does for published models)."""
        return ""

    # -- train ----------------------------------------------------------------------------------

    def open_data(self, prepared_dir: Path, model_dir: Path) -> TextData:
        from genloom.models.text import TextData

        return TextData(prepared_dir / "train.bin", prepared_dir / "val.bin", self.vocab_size(model_dir))

    def vocab_size(self, out_dir: Path) -> int:
        """The vocabulary the model is built for (0: the model brings its own)."""
        return 0

    # -- use ------------------------------------------------------------------------------------

    def evaluate(self, model_dir: Path, prepared_dir: Path, eval_cfg: Any) -> dict[str, Metric]:
        figures = evaluate_text_model(model_dir, prepared_dir / "val.bin", eval_cfg.max_tokens)
        figures.update(_generation_figures(model_dir, prepared_dir, eval_cfg))
        return _metrics(figures)

    def evaluate_champion(self, model_dir: Path, prepared_dir: Path, eval_cfg: Any) -> dict[str, Metric]:
        """The champion on this run's validation texts, tokenised with its own tokenizer (compare in bpc)."""
        import pyarrow.parquet as pq

        def texts() -> Iterator[str]:  # streamed: a batch of the held-out texts in memory at a time
            for batch in pq.ParquetFile(prepared_dir / "val_texts.parquet").iter_batches(columns=["text"]):
                yield from batch.column(0).to_pylist()

        figures = evaluate_on_texts(model_dir, texts(), eval_cfg.max_tokens)
        figures.update(_generation_figures(model_dir, prepared_dir, eval_cfg))
        return _metrics(figures)

    def sample(
        self,
        model_dir: Path,
        n: int,
        conditions: dict[str, Any] | None = None,
        seed: int | None = None,
        **options: Any,
    ) -> pa.Table:
        """``n`` texts generated from nothing (the start of a document), under control values."""
        import pyarrow as pa

        from genloom.models.text import generate

        controls = {k: str(v) for k, v in (conditions or {}).items()} or None
        texts = generate(model_dir, [""] * n, seed=seed, controls=controls, **options)
        return pa.table({"text": pa.array(texts, pa.string())})


def _token_names(tokenizer_file: Path, ids: list[int]) -> list[str | None]:
    """Each id's token text in the prepared tokenizer (None: no tokenizer file, or an unknown id)."""
    if not tokenizer_file.exists():
        return [None] * len(ids)
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_file))
    return [tok.id_to_token(i) for i in ids]


def _metrics(figures: dict[str, Any]) -> dict[str, Metric]:
    return {k: Metric(v, TEXT_DIRECTIONS.get(k)) for k, v in figures.items()}  # type: ignore[arg-type]


def _generation_figures(model_dir: Path, prepared_dir: Path, eval_cfg: Any) -> dict[str, Any]:
    """The figures of ``evaluate_generations`` (``evaluate.samples: 0`` turns them off); a skipped
    metric is None and its reason is logged."""
    import logging

    settings = GenerationSettings.from_config(eval_cfg)
    if settings.samples <= 0:
        return {}
    result = evaluate_generations(model_dir, prepared_dir, settings)
    for name, why in result.skipped.items():
        logging.getLogger("genloom.evaluate").warning("%s skipped: %s", name, why)
    return result.figures


def evaluate_text_model(model_dir: Path, val_bin: Path, max_tokens: int | None = None) -> dict[str, Any]:
    """Loss of the model in ``model_dir`` on ``val_bin``, over non-overlapping context windows
    (deterministic): nats per token, perplexity, bits per character (the total loss in bits over
    the characters of the validation text, so models with different tokenizers compare)."""
    import torch

    from genloom.models.text import evaluate_loss, load_model, read_model_config
    from genloom.models.tokens import load_tokens, read_sidecar

    model, _ = load_model(model_dir)
    cfg = read_model_config(model_dir)
    block = int(cfg["plan"]["block_size"])
    data = load_tokens(val_bin)
    meta = read_sidecar(val_bin)
    precision = "fp32"  # evaluation in full precision: comparable across runs and machines
    with torch.inference_mode():
        loss, n_pred = evaluate_loss(model, data, block, max_tokens, batch_size=16, precision=precision)
    out: dict[str, Any] = {
        "val_loss": loss,
        "val_ppl": math.exp(loss) if loss < 700 else float("inf"),
        "val_tokens": n_pred,
    }
    n_chars, n_tokens = meta.get("n_chars"), meta.get("n_tokens")
    # characters covered by the predicted tokens; exact when every token is evaluated
    out["val_bpc"] = loss / math.log(2) * n_tokens / n_chars if n_chars and n_tokens else None
    return out


def evaluate_on_texts(model_dir: Path, texts: Iterable[str], max_tokens: int | None = None) -> dict[str, Any]:
    """Evaluate a model on raw texts, tokenised with its own tokenizer (so a champion and a
    challenger with different tokenizers are scored on the same data; compare them in bpc).

    ``texts`` is streamed; with ``max_tokens`` only the texts up to the one that completes the
    first ``max_tokens + 1`` packed tokens (the scored ones) are packed, so bits per character
    use the characters and tokens of those texts."""
    import tempfile

    from tokenizers import Tokenizer

    from genloom.models.tokens import pack_tokens

    tokenizer = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
    with tempfile.TemporaryDirectory() as tmp:
        stream = iter(texts) if max_tokens is None else _covering(tokenizer, texts, max_tokens + 1)
        pack_tokens(tokenizer, stream, Path(tmp) / "val.bin")
        return evaluate_text_model(Path(model_dir), Path(tmp) / "val.bin", max_tokens=max_tokens)


def _covering(tokenizer: Any, texts: Iterable[str], n_tokens: int, batch: int = 256) -> Iterator[str]:
    """The texts, in order, up to the one whose packed tokens (its ids and an end-of-document token,
    as ``pack_tokens`` writes them) complete ``n_tokens``."""
    import itertools

    covered = 0
    it = iter(texts)
    while covered < n_tokens:
        pending = list(itertools.islice(it, batch))
        if not pending:
            return
        for t, enc in zip(pending, tokenizer.encode_batch(pending, add_special_tokens=False), strict=True):
            yield t
            covered += len(enc.ids) + 1
            if covered >= n_tokens:
                return
        batch = min(batch * 2, 8192)


def control_values(batch: pa.Table, controls: list[str]) -> list[dict[str, str]]:
    """Each row's control values: the column of that name, else the meta key; missing ones left out."""
    if not controls:
        return [{} for _ in range(batch.num_rows)]
    metas = [load_meta(m) for m in batch.column("meta").to_pylist()] if "meta" in batch.column_names else None
    columns = {k: batch.column(k).to_pylist() for k in controls if k in batch.column_names}
    out: list[dict[str, str]] = []
    for i in range(batch.num_rows):
        row: dict[str, str] = {}
        for k in controls:
            v = columns[k][i] if k in columns else (metas[i].get(k) if metas else None)
            if v is not None and str(v) != "":
                row[k] = str(v)
        out.append(row)
    return out


def chat_messages(batch: pa.Table, field: str) -> list[Any]:
    """Each row's conversation field as read for training: the column ``field``, else that key of
    ``meta``; a JSON string parsed (None when it does not parse), anything else as it is."""
    if field in batch.column_names:
        raw = batch.column(field).to_pylist()
    else:
        raw = [load_meta(m).get(field) for m in batch.column("meta").to_pylist()]
    out: list[Any] = []
    for value in raw:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                value = None
        out.append(value)
    return out


def chat_documents(
    batch: pa.Table, field: str, bad: dict[str, str], fmt: Callable[[list[dict[str, str]]], str] | None = None
) -> list[str | None]:
    """Each row's conversation written with the chat template ``fmt`` (default genloom's; None, and
    noted in ``bad``, when the field holds no list of ``{role, content}`` messages with known roles)."""
    from genloom.models.tokenizer import format_chat

    fmt = fmt or format_chat
    out: list[str | None] = []
    for rid, messages in zip(batch.column("id").to_pylist(), chat_messages(batch, field), strict=True):
        ok = isinstance(messages, list) and messages and all(isinstance(m, dict) for m in messages)
        if ok:
            try:
                out.append(fmt(messages))  # type: ignore[arg-type]
                continue
            except (ConfigError, ValueError, KeyError, TypeError):  # a template rejects the roles
                pass
        bad[rid] = "not_a_conversation"
        out.append(None)
    return out


# ----------------------------------------------------------------------------------------------
# generated text: diversity, memorisation, distance to real text, control accuracy

#: which way is better for the figures of ``evaluate_generations`` (None: shown, never decides)
GENERATION_DIRECTIONS: dict[str, Direction | None] = {
    "distinct_1": "max",
    "distinct_2": "max",
    "distinct_3": "max",
    "self_bleu": "min",
    "repetition_4": "min",
    "len_ks": "min",
    "len_wasserstein": "min",
    "ngram_overlap": "min",
    "longest_copy_words": "min",
    "copy_rate": "min",
    "embed_frechet": "min",
    "mauve": "max",
    "ref_bleu": "max",
    "ref_chrf": "max",
    "ref_rouge_l": "max",
    "control_accuracy": "max",
}
TEXT_DIRECTIONS.update({k: v for k, v in GENERATION_DIRECTIONS.items() if v is not None})

#: labelled validation records (per control) the control classifier trains on, at most
LABELLED_RESERVOIR = 20_000
_CONTROL_PREFIX = re.compile(r"^(?:<\|([^|=<>]+)=([^|<>]*)\|>)+")
_CONTROL = re.compile(r"<\|([^|=<>]+)=([^|<>]*)\|>")


@dataclass(frozen=True)
class GenerationSettings:
    """How ``evaluate_generations`` samples: read from ``evaluate`` where the config has the field
    (``evaluate.samples``...), else these defaults."""

    samples: int = 64  # generations scored (each continues the first tokens of a validation record)
    prompt_tokens: int = 8  # tokens of the validation record given as the prompt
    max_new_tokens: int = 64
    temperature: float = 0.8
    top_k: int | None = 50
    seed: int = 0
    ngram: int = 8  # word n-grams of the memorisation index
    min_copy_chars: int = 50  # a generated span found in training this long is a verbatim copy
    index_max_bytes: int = 256 << 20  # bound of the training n-gram index (hash-sampled beyond)
    max_train_tokens: int | None = None  # index at most this many training tokens (None: all)
    embeddings: bool = True  # MiniLM Fréchet distance and MAUVE (skipped, with a reason, if absent)
    control_samples: int = 32  # generations per control value
    references: str | None = None  # a JSONL file of {prompt, reference} records

    @classmethod
    def from_config(cls, eval_cfg: Any) -> GenerationSettings:
        names = [f.name for f in dataclasses.fields(cls)]
        return cls(**{n: getattr(eval_cfg, n) for n in names if getattr(eval_cfg, n, None) is not None})


@dataclass
class GenerationEvaluation:
    """What ``evaluate_generations`` found: the figures (JSON numbers), the verbatim copies and a
    few samples for the report, and why a metric was skipped."""

    figures: dict[str, float | None]
    copies: list[dict[str, Any]]
    samples: list[dict[str, str]]
    skipped: dict[str, str]
    seconds: dict[str, float]


def strip_controls(text: str) -> tuple[str, dict[str, str]]:
    """(the text without its leading control tokens, their values)."""
    m = _CONTROL_PREFIX.match(text)
    if not m:
        return text, {}
    return text[m.end() :], dict(_CONTROL.findall(m.group(0)))


def iter_texts(path: Path, batch_size: int = 1024) -> Iterator[str]:
    """The ``text`` column of a Parquet file, streamed a row group batch at a time."""
    import pyarrow.parquet as pq

    for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_size, columns=["text"]):
        yield from (t for t in batch.column(0).to_pylist() if t)


def iter_documents(
    bin_path: Path, tokenizer: tokenizers.Tokenizer, max_tokens: int | None = None
) -> Iterator[str]:
    """The documents of a packed token file decoded back to text (special tokens, controls
    included, left out), streamed a few hundred documents at a time."""
    import numpy as np

    from genloom.models.tokens import load_tokens, read_sidecar

    meta = read_sidecar(bin_path)
    data = load_tokens(bin_path)
    limit = len(data) if max_tokens is None else min(len(data), max_tokens)
    docs_file = bin_path.with_name(str(meta.get("doc_index") or ""))
    starts = np.load(docs_file).astype(np.int64) if meta.get("doc_index") and docs_file.exists() else None
    if starts is None:
        starts = np.zeros(1, dtype=np.int64)
    starts = starts[starts < limit]
    ends = np.append(starts[1:], limit)
    for i in range(0, len(starts), 256):
        ids = [data[a:b].tolist() for a, b in zip(starts[i : i + 256], ends[i : i + 256], strict=True)]
        yield from tokenizer.decode_batch(ids, skip_special_tokens=True)


def evaluate_generations(
    model_dir: Path, prepared_dir: Path, settings: GenerationSettings | None = None
) -> GenerationEvaluation:
    """Score a seeded sample of the model's generations against the prepared data.

    ``settings.samples`` validation records are drawn (a seeded reservoir over
    ``val_texts.parquet``, streamed); each one's first ``prompt_tokens`` tokens are the prompt and
    the model continues it (``max_new_tokens``, fixed seed). The continuations give distinct-1/2/3,
    self-BLEU and the 4-gram repetition rate; prompt + continuation against the real records give
    the word-count distributions (KS statistic, Wasserstein distance) and, in MiniLM's embedding
    space, the Fréchet distance and MAUVE; the continuations against a word n-gram index of the
    training text (streamed from ``train.bin``, bounded by ``index_max_bytes``) give the n-gram
    overlap, the longest shared span and verbatim copies. A model trained with controls is also
    asked for ``control_samples`` texts under each value of each control, which a classifier
    trained on the labelled validation records classifies (``control_accuracy``). With
    ``references``, each prompt's continuation is scored against its reference (BLEU, chrF, ROUGE-L).
    """
    import random
    import time

    from tokenizers import Tokenizer

    from genloom.core.errors import MissingDependencyError
    from genloom.models import text_metrics as tm
    from genloom.models.text import generate

    s = settings or GenerationSettings()
    clock: dict[str, float] = {}
    skipped: dict[str, str] = {}
    figures: dict[str, float | None] = {}
    model_dir, prepared_dir = Path(model_dir), Path(prepared_dir)
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))

    # one pass over the validation texts: a seeded reservoir of records, every word count, the
    # labelled (text, control value) pairs of the control classifier
    t0 = time.perf_counter()
    rng = random.Random(s.seed)
    reservoir: list[str] = []
    real_lengths: list[int] = []
    labelled: dict[str, list[tuple[str, str]]] = {}  # per control: a seeded reservoir of 20k
    seen: dict[str, int] = {}
    for i, raw in enumerate(iter_texts(prepared_dir / "val_texts.parquet")):
        text, ctl = strip_controls(raw)
        real_lengths.append(len(tm.words(text)))
        for k, v in ctl.items():
            pairs = labelled.setdefault(k, [])
            seen[k] = seen.get(k, 0) + 1
            if len(pairs) < LABELLED_RESERVOIR:
                pairs.append((text, v))
            elif (j := rng.randrange(seen[k])) < LABELLED_RESERVOIR:
                pairs[j] = (text, v)
        if len(reservoir) < s.samples:
            reservoir.append(raw)
        else:
            j = rng.randrange(i + 1)
            if j < s.samples:
                reservoir[j] = raw
    prompts, controls_of = [], []
    for raw in reservoir:
        text, ctl = strip_controls(raw)
        ids = tok.encode(text, add_special_tokens=False).ids[: s.prompt_tokens]
        prompts.append(tok.decode(ids, skip_special_tokens=False))
        controls_of.append(ctl)
    sampling = {"max_new_tokens": s.max_new_tokens, "temperature": s.temperature, "top_k": s.top_k}
    continuations = [""] * len(prompts)
    groups: dict[tuple[tuple[str, str], ...], list[int]] = {}  # a record's own controls, as in training
    for i, ctl in enumerate(controls_of):
        groups.setdefault(tuple(sorted(ctl.items())), []).append(i)
    for ctl_items, rows in sorted(groups.items()):
        outs = generate(
            model_dir, [prompts[i] for i in rows], seed=s.seed, controls=dict(ctl_items) or None, **sampling
        )
        for i, out in zip(rows, outs, strict=True):
            continuations[i] = out
    generated = [p + c for p, c in zip(prompts, continuations, strict=True)]
    clock["generate"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    for n in (1, 2, 3):
        figures[f"distinct_{n}"] = tm.distinct_n(continuations, n)
    figures["repetition_4"] = tm.repetition_rate(continuations, 4)
    try:
        figures["self_bleu"] = tm.self_bleu(continuations)
    except MissingDependencyError as e:
        figures["self_bleu"], skipped["self_bleu"] = None, str(e)
    reals = [strip_controls(r)[0] for r in reservoir]
    try:
        lengths = tm.length_stats([len(tm.words(g)) for g in generated], real_lengths)
    except MissingDependencyError as e:
        lengths = dict.fromkeys(("len_ks", "len_wasserstein", "gen_len_mean", "real_len_mean"))
        skipped["len_ks"] = skipped["len_wasserstein"] = str(e)
    figures.update({k: v for k, v in lengths.items() if k in ("len_ks", "len_wasserstein")})
    figures["gen_len_mean"], figures["real_len_mean"] = lengths["gen_len_mean"], lengths["real_len_mean"]
    clock["diversity"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    index = tm.NgramIndex(n=s.ngram, max_bytes=s.index_max_bytes)
    train_tok = Tokenizer.from_file(str(prepared_dir / "tokenizer.json"))
    index.add_all(iter_documents(prepared_dir / "train.bin", train_tok, s.max_train_tokens))
    copies = tm.memorisation(continuations, index, min_copy_chars=s.min_copy_chars)
    figures.update(
        {
            "ngram_overlap": copies.ngram_overlap,
            "longest_copy_words": float(copies.longest_copy_words),
            "copy_rate": copies.copy_rate,
            "index_sample_rate": index.rate,
            "index_mib": index.nbytes / 2**20,
        }
    )
    del index  # freed before MiniLM loads: the two never share the peak
    clock["memorisation"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    figures["embed_frechet"] = figures["mauve"] = None
    if not s.embeddings:
        skipped["embed_frechet"] = skipped["mauve"] = "turned off (evaluate.embeddings: false)"
    elif len(generated) < 2:
        skipped["embed_frechet"] = skipped["mauve"] = "fewer than two generations"
    else:
        try:
            encoder = tm.TextEncoder.load()
        except MissingDependencyError as e:
            skipped["embed_frechet"] = skipped["mauve"] = str(e)
        else:
            real_e, gen_e = encoder.encode(reals), encoder.encode(generated)
            try:
                figures["embed_frechet"] = tm.frechet_distance(real_e, gen_e)
                figures["mauve"] = tm.mauve_score(real_e, gen_e, seed=s.seed)
            except MissingDependencyError as e:
                skipped["embed_frechet"] = skipped["mauve"] = str(e)
    clock["embeddings"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    accuracies = []
    for key, pairs in sorted(labelled.items()):
        values = sorted({v for _, v in pairs})
        if len(values) < 2 or tok.token_to_id(f"<|{key}={values[0]}|>") is None:
            continue
        by_value = {
            v: generate(model_dir, [""] * s.control_samples, seed=s.seed, controls={key: v}, **sampling)
            for v in values
            if tok.token_to_id(f"<|{key}={v}|>") is not None
        }
        try:
            acc = tm.control_accuracy(pairs, by_value, seed=s.seed)
        except MissingDependencyError as e:
            skipped["control_accuracy"] = str(e)
            continue
        accuracies.append(acc.get("control_accuracy"))
        figures.update({k.replace("control_", f"control_{key}_", 1): v for k, v in acc.items()})
    if accuracies:
        known = [a for a in accuracies if a is not None]
        figures["control_accuracy"] = sum(known) / len(known) if known else None
    clock["controls"] = time.perf_counter() - t0

    if s.references:
        t0 = time.perf_counter()
        try:
            figures.update(evaluate_references(model_dir, s.references, s))
        except MissingDependencyError as e:
            skipped["ref_bleu"] = skipped["ref_chrf"] = skipped["ref_rouge_l"] = str(e)
        clock["references"] = time.perf_counter() - t0
    samples = [{"prompt": p, "continuation": c} for p, c in zip(prompts[:8], continuations[:8], strict=True)]
    return GenerationEvaluation(figures, copies.copies, samples, skipped, clock)


def evaluate_references(
    model_dir: Path, references: str | Path, settings: GenerationSettings | None = None
) -> dict[str, float]:
    """BLEU, chrF (sacrebleu) and ROUGE-L (rouge-score) of the model's continuation of each prompt
    of a JSONL file of ``{prompt, reference}`` records, against its reference (seeded sampling)."""
    from genloom.models import text_metrics as tm
    from genloom.models.text import generate

    s = settings or GenerationSettings()
    hyps, refs = [], []
    for i, (prompt, ref) in enumerate(tm.read_references(references)):
        hyps.extend(
            generate(
                model_dir,
                [prompt],
                max_new_tokens=s.max_new_tokens,
                temperature=s.temperature,
                top_k=s.top_k,
                seed=s.seed + i,
            )
        )
        refs.append(ref)
    return tm.reference_scores(hyps, refs)
