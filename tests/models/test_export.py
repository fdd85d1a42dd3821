"""Export of a genloom GPT to Hugging Face LlamaForCausalLM: transformers reproduces the logits."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from genloom.models.tokenizer import TokenizerConfig, format_chat, train_tokenizer
from genloom.models.tokens import pack_tokens
from genloom.train.config import TrainConfig
from genloom.train.loop import train

transformers = pytest.importorskip("transformers")


def trained_gpt(tmp: Path, **model_kw) -> Path:
    rng = random.Random(0)
    docs = [" ".join(rng.choice(["alpha", "beta", "gamma", "delta"]) for _ in range(30)) for _ in range(100)]
    tok = train_tokenizer(iter(docs), TokenizerConfig(vocab_size=300))
    out = tmp / "gpt"
    out.mkdir()
    tok.save(str(out / "tokenizer.json"))
    pack_tokens(tok, docs[:90], tmp / "train.bin")
    pack_tokens(tok, docs[90:], tmp / "val.bin")
    model = {"type": "gpt", "preset": "tiny", "block_size": 32, **model_kw}
    train(
        TrainConfig(model=model, max_steps=5, batch_size=4, precision="fp32"),
        tmp / "train.bin",
        tmp / "val.bin",
        out,
    )
    return out


@pytest.mark.parametrize(("n_kv_head", "tie"), [(None, True), (1, True), (None, False)])
def test_hf_export_round_trips_logits(tmp_path: Path, n_kv_head: int | None, tie: bool) -> None:
    from genloom.models.export import export_hf
    from genloom.models.text import load_model

    src = trained_gpt(tmp_path, n_kv_head=n_kv_head, rope_theta=500.0, tie_embeddings=tie)
    hf_dir = export_hf(src, tmp_path / "hf")
    ours, tok = load_model(src)
    hf = transformers.LlamaForCausalLM.from_pretrained(str(hf_dir)).eval()
    ids = torch.randint(0, tok.get_vocab_size(), (2, 32))
    with torch.no_grad():
        a = ours(ids)[0]
        b = hf(input_ids=ids).logits
    assert torch.allclose(a, b, atol=1e-4), (a - b).abs().max()
    fast = transformers.AutoTokenizer.from_pretrained(str(hf_dir))
    assert fast.encode("alpha beta") == tok.encode("alpha beta").ids
    chat = [{"role": "user", "content": "hi"}]
    assert fast.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) == format_chat(
        chat, True
    )
