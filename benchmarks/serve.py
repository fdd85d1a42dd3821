"""Serving speed of genloom's GPT engine, next to Hugging Face transformers on the same weights.

(a) Single-stream greedy decoding, tokens/s: genloom's engine (serve/engine.py, one request) and
    ``GPT.generate`` (the KV-cache loop that models.text.generate runs), against transformers'
    ``generate`` on the model exported with ``genloom export`` (models/export.py:
    LlamaForCausalLM). Every run decodes exactly ``--tokens`` tokens (``ignore_eos``; transformers: ``min_new_tokens``).
(b) 1, 8 and 32 concurrent streaming clients against a live server (uvicorn in a subprocess,
    OpenAI completions with ``stream: true``): aggregate tokens/s, p50/p99 request latency and
    p99 time to the first token.

    Then the engine alone decoding 8 and 32 rows together, and llama.cpp (llama-cpp-python in
    ``.venv-bench``, ``make bench-venv``; its own ``llama_decode`` loop, greedy) on the model's
    f32 GGUF (``genloom export --format gguf``): the same prompt ids, one sequence and 8 and 32
    sequences together, in the same run.

Each model has a GPT preset's shape (``--preset``, comma-separated; default ``mini,30m``: ``mini``
is what the quickstart's ``preset: auto`` picks for its 4-minute budget on 2 cores, ``30m`` a
30.0M-parameter shape) with a BPE tokenizer of 2,048 tokens trained on tiny Shakespeare and 3
training steps from random init: speed depends on the shape, not on what was learned.

``--quick`` (under 100 s: 48 s with llama.cpp, 28 s without, at load 9-12 on the 2-core AMD EPYC
with other work running) keeps every comparison of the first model, side by side in the same
run, on less work: ``mini`` only (the 30M model is skipped, and said so; ``--preset mini,30m``
adds its single stream, about 70 s more under that load), 48 tokens per single-stream run, one
repeat after the warm-up, one request per client, and the model built on 1 torch thread. What was skipped (a model, llama.cpp without
its bench venv) is printed and listed under ``skipped`` in the last line.

Run:  .venv/bin/python benchmarks/serve.py [--preset mini,30m] [--threads 1] [--tokens 100]
      .venv/bin/python benchmarks/serve.py --quick          # the quickstart model only, 48 tokens: under 100 s
      .venv/bin/python benchmarks/serve.py --soak 600       # 8 clients for 10 minutes: errors, memory
      .venv/bin/python benchmarks/serve.py --single-only --compile DIR   # part (a), the engine with
                                   # its AOTInductor-compiled step (serve/compiled.py), packages in DIR

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "ROMEO:\nBut soft, what light"
#: --quick: tokens per single-stream run (the full run: 100)
QUICK_TOKENS = 48


def cpu() -> dict[str, Any]:
    """The CPU model, its core count and whether it has AVX-512 BF16 (the DESIGN notes' split)."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next(
        (line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), ""
    )
    flags = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return {
        "model": model,
        "cores": os.cpu_count(),
        "avx512_bf16": "avx512_bf16" in flags,
        "avx512f": "avx512f" in flags,
        "avx2": "avx2" in flags,
    }


#: shapes beside the GPT presets: "30m" is the issue's 30M-parameter model (9 layers, 512 wide,
#: 8 heads, block 256: 30.0M parameters with the 2,048-token vocabulary)
SHAPES: dict[str, dict[str, Any]] = {
    "30m": {"preset": "base", "n_layer": 9, "n_embd": 512, "n_head": 8, "block_size": 256},
}


def build_model(out: Path, preset: str, steps: int = 3, threads: int = 2) -> Path:
    """A genloom GPT folder (config.json, model.safetensors, tokenizer.json) of ``preset``'s shape
    (a GPT preset or a name of ``SHAPES``), trained for ``steps`` steps from its random init on
    ``threads`` torch threads (--quick: 1; with other work on the 2 cores, 2 threads took the
    quickstart shape's 3 steps from 1.0 s to 31.7 s)."""
    from genloom.models.tokenizer import TokenizerConfig, train_tokenizer
    from genloom.models.tokens import pack_tokens
    from genloom.train.config import TrainConfig
    from genloom.train.loop import train

    data = Path(os.environ.get("GENLOOM_SHARED_DATA") or ROOT.parent / "shared" / "data")
    text = (data / "tinyshakespeare.txt").read_text(encoding="utf-8")[:300_000]
    docs = [p for p in text.split("\n\n") if p.strip()]
    tok = train_tokenizer(iter(docs), TokenizerConfig(vocab_size=2048))
    model_dir = out / "model"
    model_dir.mkdir(parents=True)
    tok.save(str(model_dir / "tokenizer.json"))
    pack_tokens(tok, docs[:-50], out / "train.bin")
    pack_tokens(tok, docs[-50:], out / "val.bin")
    model = {"type": "gpt", **SHAPES.get(preset, {"preset": preset})}
    cfg = TrainConfig(model=model, max_steps=steps, batch_size=2, precision="fp32", threads=threads)
    train(cfg, out / "train.bin", out / "val.bin", model_dir)
    return model_dir


def single_stream(
    model_dir: Path,
    tokens: int,
    threads: int,
    repeats: int,
    batches: tuple[int, ...] = (8, 32),
    python_decode: bool = False,
    compile_dir: Path | None = None,
) -> dict[str, Any]:
    """Greedy decoding of one sequence: the engine, GPT.generate and transformers, tokens/s; then
    the engine alone (no HTTP) decoding ``batches`` rows of the same prompt together.
    ``compile_dir``: the engine with its AOTInductor-compiled step (serve/compiled.py), its
    package built into (or loaded from) that folder."""
    import torch
    from transformers import LlamaForCausalLM

    from genloom.models.export import export_hf
    from genloom.models.text import load_model
    from genloom.serve.engine import Delta, Finish, GPTEngine, SamplingParams, encode_prompt

    torch.set_num_threads(threads)
    model, tok = load_model(model_dir)
    prompt = encode_prompt(tok, PROMPT, None)
    block = model.cfg.block_size  # type: ignore[union-attr]
    tokens = min(tokens, block - len(prompt))
    rss_before = rss_mb(os.getpid())
    engine = GPTEngine(
        model,  # type: ignore[arg-type]
        tok,
        max_batch=max((1, *batches)),
        threads=threads,
        script_decode=not python_decode,
        compile_dir=compile_dir,
    )
    compiled: dict[str, Any] | None = None
    if compile_dir is not None:
        step = engine.compiled
        compiled = {"error": "the compiled step is off (see the log)"}
        if step is not None:
            compiled = {
                "build_s": round(step.build_s, 1),
                "load_s": round(step.load_s, 2),
                "package_mb": round(step.path.stat().st_size / 1e6, 1),
                "rss_mb_before_after_engine": [round(rss_before, 1), round(rss_mb(os.getpid()), 1)],
            }
    engine.start()
    params = SamplingParams(max_new_tokens=tokens, temperature=0, ignore_eos=True)

    engine_text: list[str] = []

    def engine_run() -> tuple[float, float]:
        t0 = time.perf_counter()
        job = engine.submit([prompt], [params])
        first = None
        for event in job.events(120):
            if isinstance(event, Delta) and first is None:
                first = time.perf_counter()
            if isinstance(event, Finish):
                assert event.completion_tokens == tokens, event
                engine_text[:] = [event.text]
        end = time.perf_counter()
        return tokens / (end - t0), (tokens - 1) / (end - (first or t0))

    def engine_batch(rows: int) -> float:
        t0 = time.perf_counter()
        done = engine.submit([prompt] * rows, [params] * rows).results(300)
        assert all(f.completion_tokens == tokens for f in done)
        return rows * tokens / (time.perf_counter() - t0)

    def argmax(logits: torch.Tensor, seq: torch.Tensor) -> torch.Tensor:
        return logits.argmax(-1)

    idx = torch.tensor([prompt])

    greedy: list[int] = []

    def loop_run() -> float:
        t0 = time.perf_counter()
        with torch.inference_mode():
            seq = model.generate(idx, tokens, argmax)  # type: ignore[operator]
        greedy[:] = seq[0, len(prompt) :].tolist()
        return tokens / (time.perf_counter() - t0)

    hf_dir = export_hf(model_dir, model_dir.parent / "hf")
    hf = LlamaForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32).eval()

    def hf_run() -> float:
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = hf.generate(
                idx,
                max_new_tokens=tokens,
                min_new_tokens=tokens,
                do_sample=False,
                use_cache=True,
                pad_token_id=0,
            )
        assert out.shape[1] == idx.shape[1] + tokens
        return tokens / (time.perf_counter() - t0)

    for run in (engine_run, loop_run, hf_run):  # warm-up
        run()
    eng, loop, hfs = [], [], []
    for _ in range(repeats):  # round robin: a burst of other work on the machine hits all three
        eng.append(engine_run())
        loop.append(loop_run())
        hfs.append(hf_run())
    batched = {}
    for rows in batches:
        engine_batch(rows)  # warm-up
        batched[str(rows)] = round(max(engine_batch(rows) for _ in range(max(1, repeats // 2))), 1)
    engine.stop(10)
    best_engine = max(e[0] for e in eng)
    # the same model? the engine's greedy text (its compiled or TorchScript step) and GPT.generate's
    same_text = engine_text == [str(tok.decode(greedy, skip_special_tokens=True))]
    return {
        "tokens": tokens,
        "prompt_ids": prompt,
        "greedy_ids": greedy,
        "engine_tok_s": round(best_engine, 1),
        "engine_decode_tok_s": round(max(e[1] for e in eng), 1),
        "gpt_generate_tok_s": round(max(loop), 1),
        "transformers_tok_s": round(max(hfs), 1),
        "engine_over_transformers": round(best_engine / max(hfs), 2),
        "engine_batch_tok_s": batched,
        "engine_greedy_text_same_as_gpt_generate": same_text,
        **({"compiled_step": compiled} if compiled is not None else {}),
    }


def bench_python() -> Path:
    """The Python of the bench venv (``make bench-venv``: llama-cpp-python lives there)."""
    return Path(os.environ.get("GENLOOM_BENCH_PYTHON") or ROOT / ".venv-bench" / "bin" / "python")


def llama_cpp_compare(
    model_dir: Path, prompt: list[int], tokens: int, threads: int, repeats: int, batches: tuple[int, ...]
) -> dict[str, Any]:
    """llama.cpp (llama-cpp-python in the bench venv, in a child process) on the model's f32 GGUF
    (``genloom export --format gguf``): greedy decoding of the same prompt ids, one sequence and
    ``batches`` sequences decoded together, tokens/s. A dict with ``error`` when it cannot run."""
    python = bench_python()
    if not python.exists():
        return {"error": f"no bench venv ({python}): make bench-venv"}
    probe = subprocess.run([str(python), "-c", "import llama_cpp"], capture_output=True, text=True)
    if probe.returncode != 0:
        return {"error": f"llama-cpp-python is not installed in {python.parent.parent}: make bench-venv"}
    from genloom.models.export import export_gguf

    t0 = time.perf_counter()
    gguf = export_gguf(model_dir, model_dir.parent / "model-f32.gguf", "f32")
    export_s = time.perf_counter() - t0
    cmd = [
        str(python),
        __file__,
        "--llama-cpp",
        str(gguf),
        "--threads",
        str(threads),
        "--tokens",
        str(tokens),
        "--llama-spec",
        json.dumps({"prompt": prompt, "repeats": repeats, "batches": list(batches)}),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        return {"error": "llama.cpp run failed: " + " | ".join(done.stderr.strip().splitlines()[-3:])}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["gguf_export_s"] = round(export_s, 1)
    return result


def llama_cpp_run(gguf: Path, threads: int, tokens: int, spec: dict[str, Any]) -> dict[str, Any]:
    """In the bench venv: llama.cpp's own decode loop through llama-cpp-python's low-level API
    (``llama_decode`` on a ``llama_batch``, greedy argmax of each sequence's logits in numpy).
    Batch b: b sequences of the same prompt, prefilled in one batch, then one token per sequence
    per ``llama_decode`` (what llama.cpp's batched example does). Runs only the stdlib, numpy and
    llama_cpp, so it needs no genloom in that venv."""
    import ctypes

    import llama_cpp as lc
    import numpy as np

    lc.llama_backend_init()
    mparams = lc.llama_model_default_params()
    # the export writes llama.cpp's name of GPT-2's pre-tokenizer ("gpt-2"); the override keeps a
    # GGUF exported before that fix (named "gpt2", which llama.cpp refuses) loadable
    overrides = (lc.llama_model_kv_override * 2)()
    overrides[0].key = b"tokenizer.ggml.pre"
    overrides[0].tag = lc.LLAMA_KV_OVERRIDE_TYPE_STR
    overrides[0].value.val_str = b"gpt-2"
    overrides[1].key = b""
    mparams.kv_overrides = overrides
    model = lc.llama_model_load_from_file(str(gguf).encode(), mparams)
    if not model:
        raise RuntimeError(f"llama.cpp could not load {gguf}")
    vocab = lc.llama_model_get_vocab(model)
    n_vocab = lc.llama_vocab_n_tokens(vocab)
    prompt: list[int] = spec["prompt"]
    n_ctx_train = lc.llama_model_n_ctx_train(model)
    tokens = min(tokens, n_ctx_train - len(prompt))

    first_row: list[int] = []  # the greedy tokens of sequence 0 in the last run

    def run(rows: int) -> float:
        cparams = lc.llama_context_default_params()
        cparams.n_ctx = rows * (len(prompt) + tokens) + 16
        cparams.n_batch = max(rows * len(prompt), 512)
        cparams.n_ubatch = cparams.n_batch
        cparams.n_seq_max = rows
        cparams.n_threads = threads
        cparams.n_threads_batch = threads
        ctx = lc.llama_init_from_model(model, cparams)
        batch = lc.llama_batch_init(max(rows * len(prompt), rows), 0, rows)

        def put(i: int, tok: int, pos: int, seq: int, logits: bool) -> None:
            batch.token[i] = tok
            batch.pos[i] = pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = logits

        t0 = time.perf_counter()
        n = 0
        first_row.clear()
        for seq in range(rows):
            for j, tok in enumerate(prompt):
                put(n, tok, j, seq, j == len(prompt) - 1)
                n += 1
        batch.n_tokens = n
        if lc.llama_decode(ctx, batch) != 0:
            raise RuntimeError("llama_decode failed on the prompt")
        outs = [(seq + 1) * len(prompt) - 1 for seq in range(rows)]
        for step in range(tokens):
            nxt = []
            for i in outs:
                logits = np.ctypeslib.as_array(
                    ctypes.cast(lc.llama_get_logits_ith(ctx, i), ctypes.POINTER(ctypes.c_float)),
                    shape=(n_vocab,),
                )
                nxt.append(int(logits.argmax()))
            first_row.append(nxt[0])
            if step == tokens - 1:
                break
            for seq, tok in enumerate(nxt):
                put(seq, tok, len(prompt) + step, seq, True)
            batch.n_tokens = rows
            if lc.llama_decode(ctx, batch) != 0:
                raise RuntimeError("llama_decode failed")
            outs = list(range(rows))
        rate = rows * tokens / (time.perf_counter() - t0)
        lc.llama_batch_free(batch)
        lc.llama_free(ctx)
        return rate

    out: dict[str, Any] = {"llama_cpp_version": getattr(lc, "__version__", "?"), "tokens": tokens}
    run(1)  # warm-up
    out["single_tok_s"] = round(max(run(1) for _ in range(spec["repeats"])), 1)
    out["greedy_ids"] = list(first_row)
    out["batch_tok_s"] = {
        str(b): round(max(run(b) for _ in range(max(1, spec["repeats"] // 2))), 1) for b in spec["batches"]
    }
    lc.llama_model_free(model)
    return out


def quantized(model_dir: Path, tokens: int, threads: int, repeats: int) -> dict[str, Any]:
    """The engine on fp32 weights and on int8 (``quantize_int8``): single-stream greedy tokens/s,
    how far greedy outputs agree, and perplexity on the held-out documents (val.bin)."""
    import numpy as np
    import torch

    from genloom.models.text import load_model
    from genloom.serve.engine import Finish, GPTEngine, SamplingParams, encode_prompt, quantize_int8

    torch.set_num_threads(threads)
    model, tok = load_model(model_dir)
    q = quantize_int8(model)  # type: ignore[arg-type]
    block = model.cfg.block_size  # type: ignore[union-attr]
    prompts = [
        "ROMEO:\nBut soft, what light",
        "KING HENRY:\nOnce more",
        "First Citizen:\nWe are",
        "JULIET:\nO",
    ]
    encoded = [encode_prompt(tok, p, None) for p in prompts]
    tokens = min(tokens, block - max(len(e) for e in encoded))
    engines = {
        "fp32": GPTEngine(model, tok, max_batch=1, threads=threads),  # type: ignore[arg-type]
        "int8": GPTEngine(q, tok, max_batch=1, threads=threads),
    }
    for e in engines.values():
        e.start()

    def greedy(name: str, prompt: list[int]) -> tuple[list[str], float]:
        ids: list[str] = []
        t0 = time.perf_counter()
        job = engines[name].submit(
            [prompt], [SamplingParams(max_new_tokens=tokens, temperature=0, ignore_eos=True, logprobs=0)]
        )
        for event in job.events(300):
            if not isinstance(event, Finish):
                ids.extend(lp.token for lp in event.logprobs)
        return ids, tokens / (time.perf_counter() - t0)

    for name in engines:  # warm-up
        greedy(name, encoded[0])
    speed: dict[str, list[float]] = {"fp32": [], "int8": []}
    for _ in range(repeats):  # round robin, so a burst of other work hits both
        for name in engines:
            speed[name].append(greedy(name, encoded[0])[1])
    same, first_diff = [], []
    for prompt in encoded:
        a, b = greedy("fp32", prompt)[0], greedy("int8", prompt)[0]
        same.append(sum(x == y for x, y in zip(a, b, strict=True)) / len(a))
        first_diff.append(next((i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y), len(a)))
    for e in engines.values():
        e.stop(10)

    val = np.memmap(
        model_dir.parent / "val.bin",
        dtype=json.loads((model_dir.parent / "val.json").read_text())["dtype"],
        mode="r",
    )
    windows = torch.from_numpy(np.array(val[: (len(val) - 1) // block * block + 1], dtype=np.int64))
    n = min(32, (len(windows) - 1) // block)

    def perplexity(net: Any) -> float:
        losses = []
        with torch.inference_mode():
            for i in range(n):
                x = windows[i * block : (i + 1) * block][None]
                y = windows[i * block + 1 : (i + 1) * block + 1][None]
                losses.append(float(net(x, y)[1]))
        return float(np.exp(np.mean(losses)))

    ppl32, ppl8 = perplexity(model), perplexity(q)
    size32 = sum(p.numel() * p.element_size() for p in model.parameters())
    return {
        "tokens": tokens,
        "fp32_tok_s": round(max(speed["fp32"]), 1),
        "int8_tok_s": round(max(speed["int8"]), 1),
        "int8_over_fp32": round(max(speed["int8"]) / max(speed["fp32"]), 2),
        "greedy_same_token_fraction": [round(x, 3) for x in same],
        "greedy_first_divergence": first_diff,
        "heldout_tokens": n * block,
        "perplexity_fp32": round(ppl32, 3),
        "perplexity_int8": round(ppl8, 3),
        "perplexity_change_pct": round(100 * (ppl8 / ppl32 - 1), 2),
        "fp32_weights_mb": round(size32 / 1e6, 1),
    }


def serve_forever(
    model_dir: Path, port: int, threads: int, max_batch: int, h11: bool = False, python_decode: bool = False
) -> None:
    """The server of part (b), in its own process: the app over the model folder, on loopback
    (uvicorn's defaults: httptools and uvloop when they are installed; ``h11``: h11 and asyncio;
    ``python_decode``: the engine's Python decode step instead of the TorchScript one)."""
    import uvicorn

    if python_decode:  # this process only: every engine it builds keeps decode_step
        import genloom.serve.engine

        genloom.serve.engine.scripted_decode = lambda *args: None  # type: ignore[assignment]

    from genloom.core.catalog import Catalog
    from genloom.models.base import family_of
    from genloom.models.text import read_model_config
    from genloom.serve.app import ServedModel, create_app
    from genloom.serve.schemas import ServeSettings

    catalog = Catalog(f"sqlite:///{model_dir.parent / 'catalog.db'}")
    model = ServedModel("bench", 1, model_dir, family_of(model_dir), read_model_config(model_dir))
    settings = ServeSettings(threads=threads, max_batch=max_batch, max_queue=256, max_tokens_cap=4096)
    app = create_app(lambda: model, catalog, settings=settings)
    stack = {"http": "h11", "loop": "asyncio"} if h11 else {}
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, **stack)


class SSEConnection:
    """One keep-alive HTTP/1.1 connection that POSTs JSON and reads a server-sent event stream:
    the benchmark's client, a few lines of asyncio instead of httpx (whose HTTP machinery took
    a quarter of the CPU that a token cost on the 2 cores the server shares)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def events(self, path: str, body: dict[str, Any]) -> AsyncIterator[bytes]:
        """The ``data:`` payloads of the stream that ``POST path`` answers (raw bytes)."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        data = json.dumps(body).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
        )
        self.writer.write(head.encode() + data)
        status = await self.reader.readline()
        headers = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if not status.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"{status.decode().strip()}: {await self.reader.read(2000)!r}")
        if headers.get("transfer-encoding") != "chunked":
            raise RuntimeError(f"expected a chunked event stream, got headers {headers}")
        pending = b""
        while True:
            size = int((await self.reader.readline()).split(b";")[0], 16)
            if size == 0:
                await self.reader.readline()  # the empty trailer
                break
            pending += (await self.reader.readexactly(size + 2))[:-2]
            *complete, pending = pending.split(b"\n\n")
            for event in complete:
                if event.startswith(b"data: "):
                    yield event[6:]
        if headers.get("connection") == "close":
            await self.close()

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.reader = self.writer = None


async def clients(base: str, concurrency: int, requests_each: int, tokens: int) -> dict[str, Any]:
    """``concurrency`` clients, each streaming ``requests_each`` completions one after another on
    its own connection. A chunk is parsed as JSON only until the stream's first text (its time to
    first token) and for the usage chunk at the end (the token count)."""
    host, _, port = base.removeprefix("http://").partition(":")
    ttfts: list[float] = []
    latencies: list[float] = []
    generated = 0

    async def one(conn: SSEConnection, i: int) -> None:
        nonlocal generated
        body = {
            "prompt": "ROMEO:\nBut soft, what light",
            "max_tokens": tokens,
            "temperature": 0.8,
            "seed": i,
            "stream": True,
            "stream_options": {"include_usage": True},
            "ignore_eos": True,
        }
        t0 = time.perf_counter()
        first = None
        usage = None
        async for data in conn.events("/v1/completions", body):
            if data == b"[DONE]":
                continue
            if data.startswith(b'{"error"'):
                raise RuntimeError(json.loads(data)["error"])
            if first is None:
                chunk = json.loads(data)
                if chunk["choices"] and chunk["choices"][0]["text"]:
                    first = time.perf_counter()
            if b'"usage": {' in data:
                usage = json.loads(data)["usage"]
        end = time.perf_counter()
        if usage is None:
            raise RuntimeError("the stream ended without its usage chunk")
        generated += usage["completion_tokens"]
        ttfts.append((first or end) - t0)
        latencies.append(end - t0)

    async def worker(w: int) -> None:
        conn = SSEConnection(host, int(port))
        try:
            for k in range(requests_each):
                await one(conn, w * 1000 + k)
        finally:
            await conn.close()

    cpu0 = sum(os.times()[:2])
    t0 = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    wall = time.perf_counter() - t0
    client_cpu = sum(os.times()[:2]) - cpu0

    def pct(xs: list[float], q: float) -> float:
        xs = sorted(xs)
        return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]

    return {
        "clients": concurrency,
        "requests": len(latencies),
        "tokens": generated,
        "aggregate_tok_s": round(generated / wall, 1),
        "latency_p50_s": round(statistics.median(latencies), 3),
        "latency_p99_s": round(pct(latencies, 0.99), 3),
        "ttft_p50_s": round(statistics.median(ttfts), 3),
        "ttft_p99_s": round(pct(ttfts, 0.99), 3),
        "client_cpu_ms_per_token": round(1000 * client_cpu / max(generated, 1), 4),
    }


def process_cpu_s(pid: int) -> dict[str, float]:
    """User + system CPU seconds that process ``pid`` has used (Linux /proc): ``event_loop`` (its
    main thread, where uvicorn and the app run), ``other_threads`` (the engine's thread, the
    thread pool's) and ``total``."""

    def seconds(stat: Path) -> float:
        fields = stat.read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    total = seconds(Path(f"/proc/{pid}/stat"))
    loop = seconds(Path(f"/proc/{pid}/task/{pid}/stat"))
    return {"event_loop": loop, "other_threads": total - loop, "total": total}


def http_stack() -> str:
    """What uvicorn's defaults pick here: httptools or h11, uvloop or asyncio."""
    import importlib.util

    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    return f"{http}, {loop}"


def concurrent(
    model_dir: Path,
    threads: int,
    max_batch: int,
    tokens: int,
    requests_each: int,
    h11: bool = False,
    python_decode: bool = False,
) -> list[dict[str, Any]]:
    """Part (b): a live server in a subprocess and 1, 8, 32 concurrent streaming clients."""
    import httpx

    from genloom.serve.engine import SCRIPT_MAX_ROWS

    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    cmd = [
        sys.executable,
        __file__,
        "--serve",
        str(model_dir),
        "--port",
        str(port),
        "--threads",
        str(threads),
    ]
    flags = [*(["--h11"] if h11 else []), *(["--python-decode"] if python_decode else [])]
    proc = subprocess.Popen([*cmd, "--max-batch", str(max_batch), *flags], env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the benchmark server did not start")
            time.sleep(0.2)
        asyncio.run(clients(base, 2, 1, 8))  # warm-up
        results = []
        for c in (1, 8, 32):
            cpu0 = process_cpu_s(proc.pid)
            result = asyncio.run(clients(base, c, requests_each, tokens))
            cpu1 = process_cpu_s(proc.pid)
            per_token = {k: round(1000 * (cpu1[k] - cpu0[k]) / max(result["tokens"], 1), 4) for k in cpu1}
            result["server_cpu_ms_per_token"] = per_token
            result["http"] = "h11, asyncio" if h11 else http_stack()
            result["decode_step"] = "python" if python_decode else f"torchscript up to {SCRIPT_MAX_ROWS} rows"
            result["load_average"] = round(os.getloadavg()[0], 2)
            results.append(result)
            print(json.dumps(results[-1]), flush=True)
        return results
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def free_port() -> int:
    """A TCP port free on loopback."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def soak(model_dir: Path, threads: int, max_batch: int, seconds: float, concurrency: int) -> dict[str, Any]:
    """``concurrency`` clients streaming without pause for ``seconds``: errors, tokens and the
    server's resident memory over time (growth is measured from the end of the first minute,
    after the allocator and caches have warmed up)."""
    import httpx

    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    cmd = [
        sys.executable,
        __file__,
        "--serve",
        str(model_dir),
        "--port",
        str(port),
        "--threads",
        str(threads),
    ]
    proc = subprocess.Popen([*cmd, "--max-batch", str(max_batch)], env=env)
    base = f"http://127.0.0.1:{port}"
    samples: list[tuple[float, float]] = []
    errors: list[str] = []
    done = 0
    tokens = 0
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the soak server did not start")
            time.sleep(0.2)

        async def run() -> None:
            nonlocal done, tokens
            start = time.monotonic()

            async def worker(client: httpx.AsyncClient, w: int) -> None:
                nonlocal done, tokens
                k = 0
                while time.monotonic() - start < seconds:
                    k += 1
                    body = {
                        "prompt": "ROMEO:\nBut soft, what light",
                        "max_tokens": 64,
                        "temperature": 0.8,
                        "seed": w * 100_000 + k,
                        "stream": k % 2 == 0,
                        "stream_options": {"include_usage": True},
                        "n": 1 + k % 2,
                    }
                    try:
                        r = await client.post(f"{base}/v1/completions", json=body)
                        if r.status_code != 200 or '"error"' in r.text[-300:]:
                            errors.append(f"{r.status_code} {r.text[:200]}")
                        else:
                            done += 1
                            if body["stream"]:  # the usage chunk just before [DONE]
                                usage = json.loads(r.text.rsplit("data: ", 2)[-2])["usage"]
                            else:
                                usage = r.json()["usage"]
                            tokens += usage["completion_tokens"]
                    except httpx.HTTPError as e:
                        errors.append(repr(e))

            async def sampler() -> None:
                while time.monotonic() - start < seconds:
                    samples.append((round(time.monotonic() - start, 1), round(rss_mb(proc.pid), 1)))
                    await asyncio.sleep(10)

            async with httpx.AsyncClient(timeout=120) as client:
                await asyncio.gather(sampler(), *(worker(client, w) for w in range(concurrency)))

        asyncio.run(run())
        samples.append((seconds, round(rss_mb(proc.pid), 1)))
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    warm = next((mb for t, mb in samples if t >= 60), samples[0][1])
    return {
        "soak_s": seconds,
        "clients": concurrency,
        "requests_ok": done,
        "errors": len(errors),
        "first_errors": errors[:3],
        "tokens": tokens,
        "rss_mb_start_warm_end": [samples[0][1], warm, samples[-1][1]],
        "rss_growth_after_warmup": round(samples[-1][1] / warm - 1, 4),
        "rss_samples": samples,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--quick",
        action="store_true",
        help=f"under 100 s: the first model only, {QUICK_TOKENS} tokens per single-stream run, one "
        "repeat, one request per client (a model named in --preset after the first: single stream only)",
    )
    ap.add_argument(
        "--preset",
        help="GPT presets (or 30m) of the benchmark models, comma-separated (default mini,30m; "
        "--quick: mini; mini: the quickstart's)",
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=max(1, (os.cpu_count() or 1) - 1),
        help="torch threads (engine default)",
    )
    ap.add_argument(
        "--tokens", type=int, help=f"tokens per single-stream run (default 100; --quick: {QUICK_TOKENS})"
    )
    ap.add_argument("--max-batch", type=int, default=32, help="engine slots of the server")
    ap.add_argument(
        "--soak", type=float, help="instead: stream without pause for this many seconds (600: the soak)"
    )
    ap.add_argument(
        "--quantize",
        action="store_true",
        help="instead: the engine on fp32 against int8 weights (speed, outputs)",
    )
    ap.add_argument("--steps", type=int, default=3, help="training steps of the benchmark model")
    ap.add_argument(
        "--no-llama-cpp", action="store_true", help="skip llama.cpp (it runs in .venv-bench when installed)"
    )
    ap.add_argument(
        "--h11",
        action="store_true",
        help="serve part (b) with uvicorn's h11 and asyncio even where httptools and uvloop are installed",
    )
    ap.add_argument(
        "--python-decode",
        action="store_true",
        help="the engine's Python decode step (decode_step) instead of the TorchScript one, everywhere",
    )
    ap.add_argument(
        "--compile",
        type=Path,
        metavar="DIR",
        help="part (a): the engine with its AOTInductor-compiled decode step (serve/compiled.py), "
        "the package built into DIR or loaded from it (tens of seconds per model the first time)",
    )
    ap.add_argument(
        "--single-only",
        action="store_true",
        help="part (a) only: no concurrent clients (said so under skipped)",
    )
    ap.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--llama-cpp", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--llama-spec", type=json.loads, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    quick_default_presets = args.quick and args.preset is None
    args.preset = args.preset or ("mini" if args.quick else "mini,30m")
    if args.serve:
        serve_forever(args.serve, args.port, args.threads, args.max_batch, args.h11, args.python_decode)
        return
    if args.llama_cpp:
        print(json.dumps(llama_cpp_run(args.llama_cpp, args.threads, args.tokens, args.llama_spec)))
        return
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # the fewer tokens of --quick are the clients' benchmark's; --quantize --quick keeps 100
    args.tokens = args.tokens or (QUICK_TOKENS if args.quick and not args.quantize else 100)
    started = time.perf_counter()
    machine = cpu()
    load_before = round(os.getloadavg()[0], 2)  # other work on the machine skews every figure
    print(f"cpu: {machine}; threads {args.threads}", flush=True)
    if args.quantize:
        with tempfile.TemporaryDirectory() as tmp:
            result = quantized(
                build_model(Path(tmp), args.preset.split(",")[0], args.steps),
                args.tokens,
                args.threads,
                3 if args.quick else 5,
            )
        load = [load_before, round(os.getloadavg()[0], 2)]
        print(
            json.dumps(
                {
                    "cpu": machine,
                    "threads": args.threads,
                    "preset": args.preset.split(",")[0],
                    "steps": args.steps,
                    **result,
                    "load_average_before_after": load,
                }
            )
        )
        return
    if args.soak:
        with tempfile.TemporaryDirectory() as tmp:
            model_dir = build_model(Path(tmp), args.preset.split(",")[0])
            result = soak(model_dir, args.threads, args.max_batch, args.soak, 8)
        print(
            json.dumps(
                {"cpu": machine, "threads": args.threads, "preset": args.preset.split(",")[0], **result}
            )
        )
        return
    presets = [p for p in args.preset.split(",") if p]
    skipped: list[str] = []
    if quick_default_presets:
        skipped.append("30m: the whole model (--quick; name it in --preset, or run without --quick)")
    if args.quick:
        print(
            f"--quick: {', '.join(presets)}; {args.tokens} tokens per single-stream run, 1 repeat, "
            "1 request per client" + (f"; skipped: {skipped[0]}" if skipped else ""),
            flush=True,
        )
    results = {}
    for i, preset in enumerate(presets):
        with tempfile.TemporaryDirectory() as tmp:
            # --quick: the batched runs and the concurrent clients for the first model only
            full = not args.quick or i == 0
            results[preset] = measure(
                Path(tmp), preset, args, concurrency=full and not args.single_only, batched=full
            )
        if not full:
            skipped.append(f"{preset}: batched decoding and concurrent clients (--quick)")
        elif args.single_only:
            skipped.append(f"{preset}: concurrent clients (--single-only)")
        if "error" in results[preset]["llama_cpp"]:
            skipped.append(f"{preset}: llama.cpp ({results[preset]['llama_cpp']['error']})")
    for line in skipped:
        print(f"skipped: {line}", flush=True)
    summary = {
        "cpu": machine,
        "threads": args.threads,
        "quick": args.quick,
        "tokens": args.tokens,
        "skipped": skipped,
        "models": results,
        "ratios": {
            p: {
                k: r.get(k)
                for k in ("engine_over_transformers", "engine_over_llama_cpp", "aggregate_32_over_1")
            }
            for p, r in results.items()
        },
        "load_average_before_after": [load_before, round(os.getloadavg()[0], 2)],
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(summary))


def measure(
    tmp: Path, preset: str, args: argparse.Namespace, concurrency: bool, batched: bool = True
) -> dict[str, Any]:
    """Parts (a) and (b) for one model: build it, single-stream (and, ``batched``, batched)
    decoding against transformers and llama.cpp, then (``concurrency``) the concurrent clients."""
    from genloom.models.text import read_model_config

    phases: dict[str, float] = {}
    t0 = time.perf_counter()
    model_dir = build_model(tmp, preset, threads=1 if args.quick else 2)
    phases["build"] = time.perf_counter() - t0
    shape = read_model_config(model_dir)["gpt"]
    batches = (8, 32) if batched else ()
    repeats = 1 if args.quick else 5
    t0 = time.perf_counter()
    single = single_stream(
        model_dir, args.tokens, args.threads, repeats, batches, args.python_decode, args.compile
    )
    phases["single_stream"] = time.perf_counter() - t0
    prompt = single.pop("prompt_ids")
    greedy = single.pop("greedy_ids")
    print(json.dumps({"preset": preset, **single}), flush=True)
    out: dict[str, Any] = {
        "model": {
            k: shape[k] for k in ("n_layer", "n_head", "n_kv_head", "n_embd", "block_size", "vocab_size")
        },
        "parameters": n_params(model_dir),
        "single_stream": single,
        "engine_over_transformers": single["engine_over_transformers"],
    }
    if args.no_llama_cpp:
        out["llama_cpp"] = {"error": "skipped (--no-llama-cpp)"}
    else:
        t0 = time.perf_counter()
        llama = llama_cpp_compare(model_dir, prompt, single["tokens"], args.threads, repeats, batches)
        phases["llama_cpp"] = time.perf_counter() - t0
        theirs = llama.pop("greedy_ids", [])
        if theirs:  # the same model? greedy decoding should follow GPT.generate's tokens
            same = next(
                (i for i, (a, b) in enumerate(zip(greedy, theirs, strict=False)) if a != b), len(theirs)
            )
            llama["greedy_same_first_tokens"] = f"{same} of {len(theirs)}"
        print(json.dumps({"preset": preset, "llama_cpp": llama}), flush=True)
        out["llama_cpp"] = llama
        if "single_tok_s" in llama:
            out["engine_over_llama_cpp"] = round(single["engine_tok_s"] / llama["single_tok_s"], 2)
            out["engine_over_llama_cpp_batch"] = {
                b: round(single["engine_batch_tok_s"][b] / r, 2) for b, r in llama["batch_tok_s"].items()
            }
    if concurrency:
        t0 = time.perf_counter()
        many = concurrent(
            model_dir, args.threads, args.max_batch, 64, 1 if args.quick else 3, args.h11, args.python_decode
        )
        phases["concurrent"] = time.perf_counter() - t0
        one = next(r for r in many if r["clients"] == 1)["aggregate_tok_s"]
        top = next(r for r in many if r["clients"] == 32)
        out["concurrent"] = many
        out["aggregate_32_over_1"] = round(top["aggregate_tok_s"] / one, 2) if one else None
        out["ttft_p99_32_s"] = top["ttft_p99_s"]
    out["phase_seconds"] = {k: round(v, 1) for k, v in phases.items()}
    print(json.dumps({"preset": preset, "phase_seconds": out["phase_seconds"]}), flush=True)
    return out


def n_params(model_dir: Path) -> int:
    """Parameters of the saved GPT (the tied output projection counted once)."""
    from genloom.models.text import load_model

    return int(load_model(model_dir)[0].num_params())  # type: ignore[operator]


if __name__ == "__main__":
    main()
