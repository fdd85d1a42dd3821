"""What the two text families (``gpt``, ``hf_causal_lm``) share: preparing records into token files,
evaluating on held-out text, sampling, the data profile.

``prepare`` splits the records by id, gets a tokenizer (``prepare_tokenizer``: the GPT trains one
on the training split, a pretrained model brings its own), and packs train and validation token
memmaps, plus the validation texts (so another model can be scored on the same data with its own
tokenizer). With ``train.chat``, each record's conversation (``messages_field``) is written with
the chat template; a record that holds no valid conversation is left out and listed in the
artifact's ``rejected.parquet`` (reason ``not_a_conversation``) and counted in the manifest. With
``train.controls``, each record's values of those fields (a column, else a meta key) become
control tokens before its text (``<|label=1|>Great food.``): the tokenizer learns one special
token per value seen in the training split, so generation can ask for them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genloom.core.errors import ConfigError, StageError
from genloom.core.records import REJECTED_SCHEMA, load_meta
from genloom.models.base import Metric, ModelFamily, Prepared, PrepareInput

if TYPE_CHECKING:
    import pyarrow as pa
    import tokenizers

    from genloom.models.text import TextData

#: evaluation figures of a text model and which way is better
TEXT_DIRECTIONS = {"val_loss": "min", "val_ppl": "min", "val_bpc": "min"}


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
        found = [control_token(k, v) for k in controls for v in sorted(seen[k])]
        tokenizer = self.prepare_tokenizer(inp, train_cfg, (t for t, _ in records("train")), found)
        tokenizer.save(str(out_dir / "tokenizer.json"))
        inp.advance()
        train_info = pack_tokens(tokenizer, texts("train"), out_dir / "train.bin")
        inp.advance()
        val_info = pack_tokens(tokenizer, texts("val"), out_dir / "val.bin")
        table = pa.table({"text": pa.array(list(texts("val")), pa.string())})
        pq.write_table(table, out_dir / "val_texts.parquet", compression="zstd")
        inp.advance()
        if not train_info.get("n_tokens") or not val_info.get("n_tokens"):
            raise StageError("the train or validation split is empty: add data or change split.val_fraction")
        stats: dict[str, Any] = {
            "vocab_size": tokenizer.get_vocab_size(),
            "train_tokens": train_info.get("n_tokens"),
            "val_tokens": val_info.get("n_tokens"),
        }
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
            "vocab_size": tokenizer.get_vocab_size(),
            "controls": seen,
            "rejected": len(bad),
        }
        return Prepared(train_info.get("n_docs"), manifest, stats)

    def profile(self, prepared_dir: Path) -> dict[str, Any]:
        """Document lengths (characters and tokens) and the most frequent tokens of the training split."""
        import numpy as np

        from genloom.models.tokens import load_tokens, read_sidecar

        meta = read_sidecar(prepared_dir / "train.bin")
        tokens = load_tokens(prepared_dir / "train.bin")
        sample = np.asarray(tokens[:5_000_000])
        counts = np.bincount(sample.astype(np.int64))
        top = np.argsort(counts)[::-1][:100]
        docs = max(1, int(meta.get("n_docs") or 1))
        return {
            "kind": "text",
            "documents": docs,
            "tokens": int(meta.get("n_tokens") or 0),
            "chars_per_document": (meta.get("n_chars") or 0) / docs,
            "tokens_per_document": (meta.get("n_tokens") or 0) / docs,
            "top_tokens": {int(t): int(counts[t]) for t in top if counts[t]},
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
        return _metrics(figures)

    def evaluate_champion(self, model_dir: Path, prepared_dir: Path, eval_cfg: Any) -> dict[str, Metric]:
        """The champion on this run's validation texts, tokenised with its own tokenizer (compare in bpc)."""
        import pyarrow.parquet as pq

        texts = pq.read_table(prepared_dir / "val_texts.parquet").column("text").to_pylist()
        return _metrics(evaluate_on_texts(model_dir, texts, eval_cfg.max_tokens))

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


def _metrics(figures: dict[str, Any]) -> dict[str, Metric]:
    return {k: Metric(v, TEXT_DIRECTIONS.get(k)) for k, v in figures.items()}  # type: ignore[arg-type]


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


def evaluate_on_texts(model_dir: Path, texts: list[str], max_tokens: int | None = None) -> dict[str, Any]:
    """Evaluate a model on raw texts, tokenised with its own tokenizer (so a champion and a
    challenger with different tokenizers are scored on the same data; compare them in bpc)."""
    import tempfile

    from tokenizers import Tokenizer

    from genloom.models.tokens import pack_tokens

    tokenizer = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
    with tempfile.TemporaryDirectory() as tmp:
        pack_tokens(tokenizer, iter(texts), Path(tmp) / "val.bin")
        return evaluate_text_model(Path(model_dir), Path(tmp) / "val.bin", max_tokens=max_tokens)


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


def chat_documents(
    batch: pa.Table, field: str, bad: dict[str, str], fmt: Callable[[list[dict[str, str]]], str] | None = None
) -> list[str | None]:
    """Each row's conversation written with the chat template ``fmt`` (default genloom's; None, and
    noted in ``bad``, when the field holds no list of ``{role, content}`` messages with known roles)."""
    from genloom.models.tokenizer import format_chat

    fmt = fmt or format_chat
    if field in batch.column_names:
        raw = batch.column(field).to_pylist()
    else:
        raw = [load_meta(m).get(field) for m in batch.column("meta").to_pylist()]
    out: list[str | None] = []
    for rid, value in zip(batch.column("id").to_pylist(), raw, strict=True):
        messages = value
        if isinstance(value, str):
            try:
                messages = json.loads(value)
            except ValueError:
                messages = None
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
