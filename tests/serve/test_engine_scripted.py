"""The engine's TorchScript decode step (serve/scripted.py) is ``decode_step``: the same logits
bit for bit and the same keys and values written, with rows at one position or at several, with
grouped-query attention; the engine takes it for a plain GPT and keeps ``decode_step`` for an int8
model; greedy outputs of the engine are the same with it, without it, and with it only for the
steps of few rows (``script_max_rows``)."""

from __future__ import annotations

from pathlib import Path

import torch

from genloom.models.gpt import GPT, GPTConfig
from genloom.models.text import _load_cached
from genloom.serve.engine import GPTEngine, SamplingParams, decode_step, encode_prompt, quantize_int8
from genloom.serve.scripted import compiled_decode_layers, scripted_decode


def _model(n_kv_head: int) -> GPT:
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=200, n_layer=2, n_head=4, n_kv_head=n_kv_head, n_embd=32, block_size=40)
    return GPT(cfg).eval()


def test_the_scripted_step_gives_decode_steps_logits_and_cache_bit_for_bit() -> None:
    assert compiled_decode_layers() is not None  # this torch build compiles it
    for n_kv_head in (4, 2):
        model = _model(n_kv_head)
        for positions in ([11, 11, 11], [3, 17, 9], [0, 5, 39]):
            k = [torch.randn(4, n_kv_head, 40, 8) for _ in range(2)]
            v = [torch.randn(4, n_kv_head, 40, 8) for _ in range(2)]
            k2, v2 = [t.clone() for t in k], [t.clone() for t in v]
            scripted = scripted_decode(model, k2)
            assert scripted is not None
            tokens = torch.tensor([5, 77, 199])
            pos = torch.tensor(positions)
            with torch.inference_mode():
                want = decode_step(model, k, v, tokens, pos, positions)
                for _ in range(3):  # the first calls of a TorchScript function run differently
                    got = scripted(k2, v2, tokens, pos, positions)
                    assert torch.equal(got, want), (n_kv_head, positions)
            assert all(torch.equal(a, b) for a, b in zip(k + v, k2 + v2, strict=True))


def test_the_engine_scripts_a_plain_gpt_and_not_an_int8_one_with_the_same_greedy_outputs(
    tiny_gpt: Path,
) -> None:
    model, tok = _load_cached(tiny_gpt)
    prompts = [encode_prompt(tok, p, None) for p in ("alpha", "beta gamma delta", "gamma alpha beta")]
    # rows of 12, 8 and 4 tokens: the batch shrinks from 3 rows to 1 as they finish
    params = [SamplingParams(max_new_tokens=n, temperature=0.0, ignore_eos=True) for n in (12, 8, 4)]
    outputs = []
    # TorchScript for every step, for none, and (at most 2 rows) only once the batch has shrunk
    for script, max_rows in ((True, 8), (False, 8), (True, 2)):
        engine = GPTEngine(model, tok, max_batch=4, threads=1, script_decode=script, script_max_rows=max_rows)  # type: ignore[arg-type]
        assert (engine.scripted is not None) is script
        engine.start()
        try:
            outputs.append([f.text for f in engine.submit(prompts, params).results(60)])
        finally:
            engine.stop()
    assert outputs[0] == outputs[1] == outputs[2]
    assert GPTEngine(quantize_int8(model), tok, max_batch=2, threads=1).scripted is None  # type: ignore[arg-type]
