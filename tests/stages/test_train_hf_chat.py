"""Chat fine-tuning of a local Hugging Face model with its own chat template, through ``genloom run``."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
import yaml
from typer.testing import CliRunner

from genloom.cli import app
from genloom.models.text import generate_chat
from genloom.models.tokenizer import TokenizerConfig, train_tokenizer
from genloom.pipeline import Pipeline

transformers = pytest.importorskip("transformers")

COLOURS = {"sky": "blue", "grass": "green", "snow": "white", "coal": "black", "blood": "red"}
TEMPLATE = (
    "{% for m in messages %}{{ '[' + m['role'] + '] ' + m['content'] + eos_token + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '[assistant] ' }}{% endif %}"
)


def _conversation(thing: str) -> list[dict[str, str]]:
    return [
        {"role": "user", "content": f"What colour is {thing}?"},
        {"role": "assistant", "content": f"{thing.capitalize()} is {COLOURS[thing]}."},
    ]


def _base(folder: Path, template: str | None) -> None:
    """A random 2-layer Llama with a byte-level BPE tokenizer and (optionally) a chat template."""
    texts = [
        f"[user] What colour is {t}?\n[assistant] {t.capitalize()} is {c}.\n" for t, c in COLOURS.items()
    ]
    tok = train_tokenizer(iter(texts * 20), TokenizerConfig(vocab_size=300))
    eos = "<|endoftext|>"
    assert tok.token_to_id(eos) is not None
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, bos_token=eos)
    if template:
        fast.chat_template = template
    cfg = transformers.LlamaConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=128,
        eos_token_id=tok.token_to_id(eos),
    )
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(cfg).save_pretrained(str(folder))
    fast.save_pretrained(str(folder))


def _project(tmp_path: Path, template: str | None) -> Path:
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    rng = random.Random(0)
    lines = [json.dumps({"messages": _conversation(rng.choice(sorted(COLOURS)))}) for _ in range(300)]
    (project / "data" / "chats.jsonl").write_text("\n".join(lines) + "\n")
    _base(project / "base", template)
    cfg = {
        "name": "hfchat",
        "sources": [{"type": "json", "paths": ["data"], "text_field": "messages"}],
        "split": {"val_fraction": 0.1},
        "train": {
            "chat": {"messages_field": "text"},
            "model": {"type": "hf_causal_lm", "path": "base", "lora": None, "block_size": 64},
            "max_steps": 150,
            "batch_size": 8,
            "lr": 3e-3,
            "eval_interval": 150,
            "eval_tokens": 2048,
            "threads": 1,
            "precision": "fp32",
        },
    }
    (project / "pipeline.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return project


@pytest.mark.slow
def test_hf_chat_uses_the_models_own_template_in_training_generation_and_export(tmp_path: Path) -> None:
    project = _project(tmp_path, TEMPLATE)
    runner = CliRunner()
    res = runner.invoke(app, ["run", str(project / "pipeline.yaml")])
    assert res.exit_code == 0, res.output

    p = Pipeline.from_file(project / "pipeline.yaml")
    try:
        plan = {sp.stage: sp for sp in p.plan()}
        prepared = p.store.local_path(p.store.artifact_dir("prepare", plan["prepare"].key))
        model_dir = p.champion_dir()
        metrics = p.catalog.champion("hfchat")["metrics"]
    finally:
        p.close()
    # training text is the base model's template as transformers renders it, not genloom's
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(project / "base"), local_files_only=True)
    texts = pq.read_table(prepared / "val_texts.parquet").column("text").to_pylist()
    assert texts and all(t.startswith("[user] What colour is ") for t in texts)
    expected = {hf_tok.apply_chat_template(_conversation(t), tokenize=False) for t in COLOURS}
    assert set(texts) <= expected
    assert metrics["val_loss"] < 1.0, metrics  # from ln(300) = 5.7 for the random base

    # generation writes the prompt with the same template and stops at the model's end of sequence
    answers = {
        t: generate_chat(model_dir, _conversation(t)[:1], max_new_tokens=20, temperature=0.1, seed=0)
        for t in COLOURS
    }
    right = sum(COLOURS[t] in a for t, a in answers.items())
    assert right >= 4, answers
    assert all("[user]" not in a for a in answers.values()), answers  # stopped at the end of its turn

    # the export carries the template: transformers applies it to the exported folder
    res = runner.invoke(app, ["export", str(project / "pipeline.yaml"), "--out", str(tmp_path / "hf")])
    assert res.exit_code == 0, res.output
    exported = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"), local_files_only=True)
    msgs = _conversation("sky")[:1]
    assert exported.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True) == (
        "[user] What colour is sky?<|endoftext|>\n[assistant] "
    )


def test_hf_chat_without_a_template_fails_naming_the_field(tmp_path: Path) -> None:
    project = _project(tmp_path, None)
    res = CliRunner().invoke(app, ["run", str(project / "pipeline.yaml")])
    assert res.exit_code != 0
    assert "no chat template" in res.output and "train.chat" in res.output
