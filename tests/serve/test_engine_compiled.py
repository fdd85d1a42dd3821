"""The engine's compiled decode step (serve/compiled.py, AOTInductor) against ``decode_step``: the
same logits within float rounding (1e-5) and the same keys and values written, for rows at one
position and at several; the package is built once into the cache folder and loaded from it after;
the engine's greedy outputs are the same with it and without it. A compile takes 10-30 s on 2
cores, so the tests share one package (a module fixture), built without autotuning: timing each
GEMM's kernels took a 2-layer model's build from about 25 s to 92 s on 2 busy cores. The
autotuned build (the engine's default) is checked by ``benchmarks/serve.py --compile``, which
reports whether the engine's greedy text equals ``GPT.generate``'s."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from genloom.core.catalog import Catalog
from genloom.models.gpt import GPT
from genloom.models.text import _load_cached
from genloom.serve.compiled import CompiledDecode, compiled_decode, package_key
from genloom.serve.engine import GPTEngine, SamplingParams, decode_step, encode_prompt, quantize_int8


def _compiler_missing() -> str | None:
    try:
        import torch._inductor  # noqa: F401
    except Exception as e:  # a torch build without Inductor
        return f"torch._inductor is not importable: {e}"
    import shutil

    if shutil.which("g++") is None and shutil.which("c++") is None:
        return "no C++ compiler on PATH (AOTInductor needs one)"
    return None


# slow: the module's two builds took 35-55 s with Inductor's cache warm and about 100 s cold (its
# first build compiles Inductor's C++ headers), on 2 busy cores
pytestmark = [
    pytest.mark.skipif(_compiler_missing() is not None, reason=str(_compiler_missing())),
    pytest.mark.slow,
]


@pytest.fixture(scope="module")
def compiled_tiny(tiny_gpt: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[GPT, Path]:
    """The tiny GPT and a folder holding its compiled step for 4 slots (built here, once)."""
    model, _ = _load_cached(tiny_gpt)
    gpt = model  # type: ignore[assignment]
    cache = tmp_path_factory.mktemp("compiled")
    k = [torch.zeros(4, gpt.cfg.n_kv_head, gpt.cfg.block_size, gpt.cfg.head_dim) for _ in gpt.blocks]  # type: ignore[union-attr]
    step = compiled_decode(gpt, k, [t.clone() for t in k], cache, autotune=False)  # type: ignore[arg-type]
    assert step is not None, "the compiler is installed but the step did not compile (see the log)"
    assert step.build_s > 0 and step.path.exists()
    return gpt, cache  # type: ignore[return-value]


def test_the_compiled_step_gives_decode_steps_logits_and_cache(compiled_tiny: tuple[GPT, Path]) -> None:
    model, cache = compiled_tiny
    cfg = model.cfg
    shape = (4, int(cfg.n_kv_head or cfg.n_head), cfg.block_size, cfg.head_dim)
    torch.manual_seed(1)
    k = [torch.randn(shape) for _ in range(cfg.n_layer)]
    v = [torch.randn(shape) for _ in range(cfg.n_layer)]
    k2, v2 = [t.clone() for t in k], [t.clone() for t in v]
    step = compiled_decode(model, k2, v2, cache, autotune=False)
    assert isinstance(step, CompiledDecode) and step.build_s == 0.0  # loaded, not built again
    last = cfg.block_size - 1
    for positions in ([11, 11, 11], [3, 17, 9], [0, 5, last], [7], [2, 30, 4, 1]):
        tokens = torch.arange(len(positions)) * 37 % cfg.vocab_size
        pos = torch.tensor(positions)
        with torch.inference_mode():
            want = decode_step(model, k, v, tokens, pos, positions)
            got = step(k2, v2, tokens, pos, positions)
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        for a, b in zip(k + v, k2 + v2, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_the_package_key_follows_the_weights_and_the_slots(compiled_tiny: tuple[GPT, Path]) -> None:
    model, _ = compiled_tiny
    key = package_key(model, 4)
    assert package_key(model, 4) == key and package_key(model, 8) != key
    assert package_key(model, 4, autotune=False) != key
    changed = GPT(model.cfg).eval()
    changed.load_state_dict(model.state_dict())
    with torch.no_grad():
        changed.norm.weight[0] += 1e-3
    assert package_key(changed, 4) != key


def test_the_engine_with_the_compiled_step_gives_the_same_greedy_outputs(
    tiny_gpt: Path, compiled_tiny: tuple[GPT, Path]
) -> None:
    model, cache = compiled_tiny
    _, tok = _load_cached(tiny_gpt)
    prompts = [encode_prompt(tok, p, None) for p in ("alpha", "beta gamma delta", "gamma alpha beta")]
    # rows of 12, 8 and 4 tokens: the batch shrinks from 3 rows to 1 as they finish
    params = [SamplingParams(max_new_tokens=n, temperature=0.0, ignore_eos=True) for n in (12, 8, 4)]
    outputs = []
    for compile_dir in (cache, None):
        engine = GPTEngine(
            model, tok, max_batch=4, threads=1, compile_dir=compile_dir, compile_autotune=False
        )
        assert (engine.compiled is not None) is (compile_dir is not None)
        engine.start()
        try:
            outputs.append([f.text for f in engine.submit(prompts, params).results(60)])
        finally:
            engine.stop()
    assert outputs[0] == outputs[1]
    assert all(outputs[0])
    # an int8 model has no plain Linear projections: no compiled step, no build attempted
    int8 = GPTEngine(quantize_int8(model), tok, max_batch=4, threads=1, compile_dir=cache)  # type: ignore[arg-type]
    assert int8.compiled is None


def test_the_app_serves_with_the_compiled_step(
    tiny_gpt: Path, compiled_tiny: tuple[GPT, Path], catalog: Catalog
) -> None:
    """``ServeSettings.compile_dir`` (``genloom serve --compile``) reaches the engine: with the
    module's package in the folder the app loads it instead of compiling, and answers."""
    from genloom.serve.app import create_app
    from genloom.serve.schemas import ServeSettings
    from tests.serve.conftest import ready_client, served

    _, cache = compiled_tiny
    before = sorted(p.name for p in cache.iterdir())
    settings = ServeSettings(compile_dir=cache, compile_autotune=False, max_batch=4)
    app = create_app(lambda: served(tiny_gpt), catalog, settings=settings)
    with ready_client(app) as client:
        engine = client.app.state.genloom.engine  # type: ignore[attr-defined]
        assert engine.compiled is not None
        r = client.post("/v1/completions", json={"prompt": "alpha", "max_tokens": 6, "temperature": 0})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] > 0
    assert sorted(p.name for p in cache.iterdir()) == before  # loaded, not built again


def test_the_compiled_step_of_a_grouped_query_model(tmp_path: Path) -> None:
    from genloom.models.gpt import GPTConfig

    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=200, n_layer=2, n_head=4, n_kv_head=2, n_embd=32, block_size=40)
    model = GPT(cfg).eval()
    k = [torch.randn(3, 2, 40, 8) for _ in range(2)]
    v = [torch.randn(3, 2, 40, 8) for _ in range(2)]
    k2, v2 = [t.clone() for t in k], [t.clone() for t in v]
    step = compiled_decode(model, k2, v2, tmp_path, autotune=False)
    assert step is not None
    for positions in ([3, 17, 9], [39]):
        tokens, pos = torch.tensor([5, 77, 199][: len(positions)]), torch.tensor(positions)
        with torch.inference_mode():
            want = decode_step(model, k, v, tokens, pos, positions)
            got = step(k2, v2, tokens, pos, positions)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for a, b in zip(k + v, k2 + v2, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
