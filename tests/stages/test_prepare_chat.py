"""Chat fine-tuning from records with roles, through ``genloom run``, and its Hugging Face export."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from genloom.cli import app
from genloom.models.text import generate_chat
from genloom.models.tokenizer import format_chat
from genloom.pipeline import Pipeline

COLOURS = {"sky": "blue", "grass": "green", "snow": "white", "coal": "black", "blood": "red"}


def _conversation(rng: random.Random) -> list[dict[str, str]]:
    thing = rng.choice(sorted(COLOURS))
    return [
        {"role": "user", "content": f"What colour is {thing}?"},
        {"role": "assistant", "content": f"{thing.capitalize()} is {COLOURS[thing]}."},
    ]


@pytest.mark.slow
def test_chat_fine_tuning_answers_in_turn_and_exports_its_template(tmp_path: Path) -> None:
    rng = random.Random(0)
    project = tmp_path / "chat"
    (project / "data").mkdir(parents=True)
    lines = [json.dumps({"messages": _conversation(rng)}) for _ in range(400)]
    lines.append(json.dumps({"messages": [{"role": "narrator", "content": "no such role"}]}))
    (project / "data" / "chats.jsonl").write_text("\n".join(lines) + "\n")
    cfg = {
        "name": "chat",
        "sources": [{"type": "json", "paths": ["data"], "text_field": "messages"}],
        "split": {"val_fraction": 0.1},
        "train": {
            "chat": {"messages_field": "text"},
            "tokenizer": {"kind": "char"},
            "model": {"type": "gpt", "preset": "mini"},
            "max_steps": 250,
            "batch_size": 16,
            "eval_interval": 250,
            "eval_tokens": 4096,
            "threads": 1,
            "precision": "fp32",  # the same numbers whatever the machine probe finds
        },
    }
    (project / "pipeline.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    runner = CliRunner()
    res = runner.invoke(app, ["run", str(project / "pipeline.yaml")])
    assert res.exit_code == 0, res.output

    p = Pipeline.from_file(project / "pipeline.yaml")
    try:
        model_dir = p.champion_dir()
        plan = {pl.stage: pl for pl in p.plan()}
        prepared = p.store.local_path(p.store.artifact_dir("prepare", plan["prepare"].key))
    finally:
        p.close()
    rejected = pq.read_table(prepared / "rejected.parquet").to_pylist()
    assert [r["reason"] for r in rejected] == ["not_a_conversation"]  # the narrator's record

    question = [{"role": "user", "content": "What colour is grass?"}]
    reply = generate_chat(model_dir, question, max_new_tokens=40, temperature=0)
    assert reply.strip() == "Grass is green.", reply  # one turn, ended by <|end|>

    transformers = pytest.importorskip("transformers")
    out = tmp_path / "exported"
    res = runner.invoke(app, ["export", str(project / "pipeline.yaml"), "--format", "hf", "--out", str(out)])
    assert res.exit_code == 0, res.output
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(out))
    text = hf_tok.apply_chat_template(question, tokenize=False, add_generation_prompt=True)
    assert text == format_chat(question, add_generation_prompt=True)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(out))
    ids = hf_tok(text, return_tensors="pt", add_special_tokens=False).input_ids
    bos = hf_tok.convert_tokens_to_ids("<|endoftext|>")
    import torch

    ids = torch.cat([torch.tensor([[bos]]), ids], dim=1)  # genloom's documents follow <|endoftext|>
    gen = model.generate(ids, max_new_tokens=40, do_sample=False)
    answer = hf_tok.decode(gen[0, ids.shape[1] :], skip_special_tokens=True)
    assert answer.strip() == "Grass is green.", answer  # transformers stops at <|end|> too
