"""``quantize: int8``: the engine on a GPT whose Linear layers are dynamically quantised."""

from __future__ import annotations

from pathlib import Path

import torch

from genloom.core.catalog import Catalog
from genloom.models.text import load_model
from genloom.serve.app import create_app
from genloom.serve.engine import Finish, GPTEngine, SamplingParams, encode_prompt, quantize_int8
from genloom.serve.schemas import ServeSettings
from tests.serve.conftest import ready_client, served


def test_int8_model_is_a_quantised_copy_close_to_the_original(tiny_gpt: Path) -> None:
    model, tok = load_model(tiny_gpt)
    q = quantize_int8(model)  # type: ignore[arg-type]
    assert type(q.blocks[0].attn.qkv).__module__.startswith("torch.ao.nn.quantized.dynamic")
    assert type(q.lm_head).__module__.startswith("torch.ao.nn.quantized.dynamic")
    assert isinstance(model.blocks[0].attn.qkv, torch.nn.Linear)  # type: ignore[index,union-attr]
    ids = torch.tensor([encode_prompt(tok, "alpha beta gamma delta alpha", None)])
    with torch.inference_mode():
        full = model(ids)[0][0, -1]
        low = q(ids)[0][0, -1]
    # int8 weights move the logits a little, not their ranking of the likeliest tokens
    assert torch.allclose(full.softmax(-1), low.softmax(-1), atol=0.02)
    assert full.argmax() == low.argmax()


def test_the_engine_runs_int8_and_the_app_serves_it(tiny_gpt: Path, catalog: Catalog) -> None:
    model, tok = load_model(tiny_gpt)
    engine = GPTEngine(quantize_int8(model), tok, max_batch=2)  # type: ignore[arg-type]
    engine.start()
    try:
        params = SamplingParams(max_new_tokens=8, temperature=0, ignore_eos=True)
        job = engine.submit([encode_prompt(tok, "alpha beta", None)] * 2, [params, params])
        finishes = job.results(timeout=60)
    finally:
        engine.stop(10)
    assert all(isinstance(f, Finish) and f.error is None and f.completion_tokens == 8 for f in finishes)
    assert finishes[0].text == finishes[1].text and finishes[0].text.strip()
    assert finishes[0].text == tok.decode(tok.encode(finishes[0].text, add_special_tokens=False).ids)

    app = create_app(lambda: served(tiny_gpt), catalog, settings=ServeSettings(quantize="int8"))
    with ready_client(app) as client:
        engine_model = client.app.state.genloom.engine.model  # type: ignore[attr-defined]
        assert type(engine_model.lm_head).__module__.startswith("torch.ao.nn.quantized.dynamic")
        r = client.post("/v1/completions", json={"prompt": "alpha", "max_tokens": 5, "temperature": 0})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] > 0
