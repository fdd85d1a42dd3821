"""Fine-tuning a tiny random Llama saved to disk: LoRA and full, same loop, checkpoints, generate."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from genloom.evaluate.text import evaluate_text_model
from genloom.models.hf_causal_lm import HFCausalLM
from genloom.models.text import evaluate_loss, generate
from genloom.models.tokenizer import TokenizerConfig, train_tokenizer
from genloom.models.tokens import load_tokens, pack_tokens
from genloom.train.checkpoint import latest_checkpoint
from genloom.train.config import TrainConfig
from genloom.train.loop import train

transformers = pytest.importorskip("transformers")
pytest.importorskip("peft")


@pytest.fixture(scope="module")
def base_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A random 2-layer Llama + its tokenizer in a folder, and packed data in its tokenizer."""
    return _make_base(tmp_path_factory.mktemp("hf"), hidden=32)


@pytest.fixture(scope="module")
def base_model_64(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """The same at width 64: bitsandbytes' CPU 4-bit kernels quantise blocks of 64 inputs."""
    return _make_base(tmp_path_factory.mktemp("hf64"), hidden=64)


def _make_base(tmp: Path, hidden: int) -> tuple[Path, Path, Path]:
    from genloom.models.hf_causal_lm import load_hf_tokenizer

    rng = random.Random(0)
    docs = [" ".join(rng.choice(["red", "green", "blue"]) + " fish" for _ in range(12)) for _ in range(200)]
    tok = train_tokenizer(iter(docs), TokenizerConfig(vocab_size=280))
    cfg = transformers.LlamaConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=128,
        initializer_range=0.2,  # LoRA cannot move a near-zero random output head; a wider init can
    )
    base = tmp / "base"
    transformers.LlamaForCausalLM(cfg).save_pretrained(str(base))
    tok.save(str(base / "tokenizer.json"))
    hf_tok = load_hf_tokenizer(base)
    pack_tokens(hf_tok, docs[:180], tmp / "train.bin")
    pack_tokens(hf_tok, docs[180:], tmp / "val.bin")
    return base, tmp / "train.bin", tmp / "val.bin"


@pytest.mark.parametrize("lora", [{"r": 4, "alpha": 8}, None])
def test_fine_tuning_lowers_the_loss(
    base_model: tuple[Path, Path, Path], tmp_path: Path, lora: dict | None
) -> None:
    base, tr, va = base_model
    out = tmp_path / "ft"
    cfg = TrainConfig(
        model={"type": "hf_causal_lm", "path": str(base), "lora": lora, "block_size": 32},
        max_steps=40,
        batch_size=8,
        lr=1e-2 if lora else 3e-3,
        eval_interval=10,
        precision="fp32",
    )
    untrained = HFCausalLM.from_config(cfg.model, torch.device("cpu"))
    before, _ = evaluate_loss(untrained, load_tokens(va), 32, None, 8)
    m = train(cfg, tr, va, out)
    assert m["val_loss"] < before - 1.0  # the loss falls (from about ln(vocab))
    trained = load_file(str(latest_checkpoint(out) / "model.safetensors"))
    if lora:  # only the adapters are trained and checkpointed
        assert trained and all("lora_" in k for k in trained)
    ev = evaluate_text_model(out, va)
    assert abs(ev["val_loss"] - m["val_loss"]) < 0.05
    text = generate(out, ["red fish"], max_new_tokens=8, seed=0, temperature=0)
    assert "fish" in text[0]


def test_qlora_on_a_4bit_base_lowers_the_loss(base_model_64: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """QLoRA: the base loaded in 4-bit NF4 (bitsandbytes' CPU backend), LoRA adapters trained on top,
    the adapters merged into the full-precision base at the end."""
    pytest.importorskip("bitsandbytes")
    base, tr, va = base_model_64
    out = tmp_path / "qlora"
    cfg = TrainConfig(
        model={
            "type": "hf_causal_lm",
            "path": str(base),
            "lora": {"r": 4, "alpha": 8},
            "block_size": 32,
            "quantize": "nf4",
        },
        max_steps=40,
        batch_size=8,
        lr=1e-2,
        eval_interval=10,
        precision="fp32",
    )
    model = HFCausalLM.from_config(cfg.model, torch.device("cpu"))
    assert any(type(m).__name__ == "Linear4bit" for m in model.modules())  # the base really is 4-bit
    before, _ = evaluate_loss(model, load_tokens(va), 32, None, 8)
    m = train(cfg, tr, va, out)
    assert m["val_loss"] < before - 1.0
    assert (out / "hf_model" / "config.json").exists() and not (out / "adapter").exists()
    merged = transformers.LlamaForCausalLM.from_pretrained(str(out / "hf_model"))
    assert not any(type(x).__name__ == "Linear4bit" for x in merged.modules())  # plain weights
    ev = evaluate_text_model(out, va)
    assert ev["val_loss"] < before - 1.0  # the merged full-precision model keeps what was learnt


def test_qlora_needs_lora() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="quantize: nf4"):
        TrainConfig(model={"type": "hf_causal_lm", "path": "x", "lora": None, "quantize": "nf4"})
