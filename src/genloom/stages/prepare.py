"""prepare: the data stage's records turned into what the model family trains on.

For text models: the split by record id, a tokenizer (trained on the training split, or the
pretrained model's own), and token memmaps for train and validation, plus the validation texts
(so another model can be scored on the same data with its own tokenizer). With ``train.chat``,
each record's conversation (``messages_field``) is written with the chat template; a record
that holds no valid conversation is left out and listed in the artifact's ``rejected.parquet``
(reason ``not_a_conversation``) and counted in the manifest. With
``train.controls``, each record's values of those fields (a column, else a meta key) become
control tokens before its text (``<|label=1|>Great food.``): the tokenizer learns one special
token per value seen in the training split, so generation can ask for them.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from genloom.core.errors import StageError
from genloom.core.records import REJECTED_SCHEMA, load_meta
from genloom.core.store import content_key
from genloom.stages.base import (
    RunContext,
    Stage,
    StagePlan,
    StageResult,
    plan_for,
    resolve_data_stage,
    shards_of,
    split_of,
)


class PrepareStage(Stage):
    """Records -> the model family's training data (tokenizer + token memmaps for text)."""

    name = "prepare"
    needs_train = True

    def plan(self, ctx: RunContext, plans: list[StagePlan]) -> StagePlan:
        data_key = plans[-1].key or ""
        ingredients = {
            "stage": "prepare",
            "tokenizer": self._tokenizer_ingredients(ctx),
            "split": ctx.cfg.split.model_dump(mode="json"),
            "controls": list(ctx.cfg.train.controls),
            "chat": ctx.cfg.train.chat.model_dump(mode="json") if ctx.cfg.train.chat else None,
            "input": data_key,
            "version": 1,
        }
        return StagePlan("prepare", content_key(ingredients), [data_key], ingredients)

    def _tokenizer_ingredients(self, ctx: RunContext) -> dict[str, Any]:
        model = ctx.cfg.train.model
        path = getattr(model, "path", None)
        if isinstance(path, str):  # a pretrained model brings its own tokenizer
            digest = ctx.file_digests([f"{path}/tokenizer.json"])
            return {"pretrained": path, "sha256": next(iter(digest.values()), "")}
        return ctx.cfg.train.tokenizer.model_dump(mode="json")

    def run(self, ctx: RunContext, plan: StagePlan, plans: list[StagePlan], reason: str) -> StageResult:
        from genloom.models.tokenizer import control_token, format_controls, train_tokenizer
        from genloom.models.tokens import pack_tokens

        assert plan.key is not None
        in_stage, in_shards = shards_of(ctx.store, plan_for(plans, resolve_data_stage(plans, "features")))
        out = ctx.local_artifact("prepare", plan.key)
        if out.exists():
            shutil.rmtree(out)  # a partial, killed prepare: it is one unit, redo it
        out.mkdir(parents=True)
        ctx.reporter.stage_start("prepare", 3, unit="steps")
        split = ctx.cfg.split

        controls = list(ctx.cfg.train.controls)
        chat = ctx.cfg.train.chat
        bad: dict[str, str] = {}  # record id -> why it is not a conversation (chat only)

        wanted = {"id", "text", "meta", *controls, *([chat.messages_field] if chat else [])}

        def records(want_val: bool) -> Iterator[tuple[str, dict[str, str]]]:
            want = "val" if want_val else "train"
            for s in in_shards:
                columns = [c for c in ctx.store.shard_columns(in_stage, s) if c in wanted]
                for batch in ctx.store.iter_batches(in_stage, s, columns=columns):
                    splits = split_of(batch, split.val_fraction, split.seed)
                    values = control_values(batch, controls)
                    docs = (
                        chat_documents(batch, chat.messages_field, bad)
                        if chat
                        else batch.column("text").to_pylist()
                    )
                    for text, part, ctl in zip(docs, splits, values, strict=True):
                        if part == want and text:
                            yield text, ctl

        def texts(want_val: bool) -> Iterator[str]:
            for text, ctl in records(want_val):
                yield format_controls(ctl) + text

        pretrained = plan.ingredients["tokenizer"].get("pretrained")
        seen: dict[str, dict[str, int]] = {k: {} for k in controls}
        if pretrained is not None:
            from genloom.models.hf_causal_lm import load_hf_tokenizer

            tokenizer = load_hf_tokenizer(ctx.resolve(pretrained))
        else:
            tok_cfg = ctx.cfg.train.tokenizer
            if controls:  # one control token per value the training split holds
                for _, ctl in records(False):
                    for k, v in ctl.items():
                        seen[k][v] = seen[k].get(v, 0) + 1
                found = [control_token(k, v) for k in controls for v in sorted(seen[k])]
                tok_cfg = tok_cfg.model_copy(update={"control_tokens": [*tok_cfg.control_tokens, *found]})
            tokenizer = train_tokenizer((t for t, _ in records(False)), tok_cfg)
        tokenizer.save(str(out / "tokenizer.json"))
        ctx.reporter.stage_advance("prepare")
        train_info = pack_tokens(tokenizer, texts(False), out / "train.bin")
        ctx.reporter.stage_advance("prepare")
        val_info = pack_tokens(tokenizer, texts(True), out / "val.bin")
        table = pa.table({"text": pa.array(list(texts(True)), pa.string())})
        pq.write_table(table, out / "val_texts.parquet", compression="zstd")
        ctx.reporter.stage_advance("prepare")
        if not train_info.get("n_tokens") or not val_info.get("n_tokens"):
            raise StageError("the train or validation split is empty: add data or change split.val_fraction")
        ctx.store.write_manifest(
            "prepare",
            plan.key,
            {
                "stage": "prepare",
                "key": plan.key,
                "train": train_info,
                "val": val_info,
                "vocab_size": tokenizer.get_vocab_size(),
                "controls": seen,
                "rejected": len(bad),
                "ingredients": plan.ingredients,
                "rows": train_info.get("n_docs"),
            },
        )
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
            pq.write_table(pa.Table.from_pylist(rejected, schema=REJECTED_SCHEMA), out / "rejected.parquet")
            stats["rejected"] = len(rejected)
        return StageResult("prepare", "ran", plan.key, reason, 0.0, train_info.get("n_docs"), stats)


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


def chat_documents(batch: pa.Table, field: str, bad: dict[str, str]) -> list[str | None]:
    """Each row's conversation written with the chat template (None, and noted in ``bad``, when the
    field holds no list of ``{role, content}`` messages with known roles)."""
    from genloom.core.errors import ConfigError
    from genloom.models.tokenizer import format_chat

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
                out.append(format_chat(messages))  # type: ignore[arg-type]
                continue
            except ConfigError:
                pass
        bad[rid] = "not_a_conversation"
        out.append(None)
    return out
