"""The genloom GPT: shapes, causality, KV cache, grouped-query attention, presets."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from genloom.models.gpt import GPT, PRESETS, GPTConfig


def tiny(**kw) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig.from_preset("tiny", vocab_size=50, **kw)).eval()


def test_forward_shapes_and_loss() -> None:
    model = tiny()
    idx = torch.randint(0, 50, (3, 10))
    logits, loss = model(idx)
    assert logits.shape == (3, 10, 50) and loss is None
    _, loss = model(idx, idx)
    assert loss.ndim == 0 and 3.0 < float(loss.detach()) < 5.0  # about ln(50) at init
    assert model.lm_head.weight is model.wte.weight  # tied


def test_attention_is_causal() -> None:
    model = tiny()
    a = torch.randint(0, 50, (1, 12))
    b = a.clone()
    b[0, 8:] = (b[0, 8:] + 1) % 50
    with torch.no_grad():
        la, lb = model(a)[0], model(b)[0]
    assert torch.allclose(la[:, :8], lb[:, :8], atol=1e-6)
    assert not torch.allclose(la[:, 8:], lb[:, 8:])


@pytest.mark.parametrize("n_kv_head", [2, 1])
def test_kv_cache_matches_full_forward(n_kv_head: int) -> None:
    model = tiny(n_kv_head=n_kv_head)
    seq = torch.randint(0, 50, (2, 20))
    full = model(seq)[0]
    greedy = []

    def sample(logits: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        greedy.append(logits)
        return seq[:, s.size(1)] if s.size(1) < 20 else logits.argmax(-1)

    model.generate(seq[:, :5], 15, sample)
    cached = torch.stack(greedy[:15], dim=1)  # logits predicting tokens 5..19
    assert torch.allclose(cached, full[:, 4:19], atol=1e-5)


def test_generation_slides_past_the_context() -> None:
    model = tiny(block_size=16)
    out = model.generate(torch.zeros(1, 4, dtype=torch.long), 40, lambda lg, s: lg.argmax(-1))
    assert out.shape == (1, 44)


def test_gqa_has_fewer_kv_weights() -> None:
    full, gqa = tiny(), tiny(n_kv_head=1)
    assert gqa.num_params() < full.num_params()
    with pytest.raises(ValueError):
        GPTConfig(n_embd=30, n_head=4)


def _documented_presets() -> dict[str, dict[str, str]]:
    """The preset table of docs/models.md: one {column: cell} per preset name."""
    lines = (Path(__file__).resolve().parents[2] / "docs" / "models.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| preset |"))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True))
        rows[cells["preset"]] = cells
    return rows


DOCUMENTED = _documented_presets()
UNITS = {"k": 1e3, "M": 1e6}


def test_every_preset_is_documented() -> None:
    assert set(DOCUMENTED) == set(PRESETS)


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_is_valid(name: str) -> None:
    """Each preset builds a model whose shape and parameter count are the ones docs/models.md gives,
    and a forward pass with a loss runs (on the meta device past base: shapes only, no memory)."""
    doc = DOCUMENTED[name]
    cfg = GPTConfig.from_preset(name, vocab_size=64)
    heads, _, kv = doc["heads (kv)"].partition(" ")
    assert (cfg.n_layer, cfg.n_head, cfg.n_kv_head, cfg.n_embd, cfg.block_size) == (
        int(doc["layers"]),
        int(heads),
        int(kv.strip("()") or heads),
        int(doc["width"]),
        int(doc["context"]),
    )
    torch.manual_seed(0)
    device = "cpu" if cfg.n_embd <= 384 else "meta"
    with torch.device(device):
        model = GPT(cfg)
        idx = torch.randint(0, 64, (2, cfg.block_size))
    logits, loss = model(idx, idx)
    assert logits.shape == (2, cfg.block_size, 64) and loss.shape == ()
    if device == "cpu":
        assert torch.isfinite(loss)
    # the documented size, to the digits it is written with ("0.44M": 435k to 445k)
    size = doc["non-embedding params"]
    value, unit = size[:-1], UNITS[size[-1]]
    half_digit = 0.5 * 10.0 ** -len(value.partition(".")[2]) * unit
    assert abs(model.num_params(non_embedding=True) - float(value) * unit) <= half_digit
    assert GPTConfig.from_dict({**cfg.to_dict(), "unknown": 1}) == cfg


def test_cpu_attention_dropout_is_unbiased_and_matches_sdpa_without_drops() -> None:
    import torch.nn.functional as F

    from genloom.models.gpt import causal_attention_with_dropout

    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, 8, 4) for _ in range(3))
    exact = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert torch.allclose(causal_attention_with_dropout(q, k, v, 1e-9), exact, atol=1e-6)
    draws = torch.stack([causal_attention_with_dropout(q, k, v, 0.3) for _ in range(4000)])
    assert not torch.allclose(draws[0], exact, atol=1e-3)  # something was dropped
    assert torch.allclose(draws.mean(0), exact, atol=0.05)  # the 1 / (1 - p) scale keeps the mean


def test_attention_dropout_is_separate_from_residual_dropout() -> None:
    model = GPT(GPTConfig(vocab_size=32, block_size=16, n_layer=1, n_head=2, n_embd=16, attn_dropout=0.2))
    assert model.blocks[0].attn.dropout == 0.2 and model.blocks[0].drop.p == 0.0
    model = GPT(GPTConfig(vocab_size=32, block_size=16, n_layer=1, n_head=2, n_embd=16, dropout=0.1))
    assert model.blocks[0].attn.dropout == 0.1  # None: the same as dropout
