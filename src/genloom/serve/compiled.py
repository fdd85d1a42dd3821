"""The engine's decode step compiled ahead of time by AOTInductor (``CompiledDecode``), opt-in.

``torch.export`` traces the step (``DecodeGraph``: the same operations as ``engine.decode_step``)
into one graph, and ``torch._inductor.aoti_compile_and_package`` compiles it, with its weights
frozen into it, to one C++ shared library in a ``.pt2`` package. A step is then one call into
that library: no Python per operation, no TorchScript interpreter, no guards. On the 2-core AMD
EPYC one row's step cost 0.10 ms of CPU on ``mini`` (TorchScript: 0.53) and 5.5 ms on the 30M
model (TorchScript: 15.2, MKL's one-row products being the slow part there; docs/serving.md,
run 9).

One graph serves every step: the batch (1 to the number of KV-cache slots) is a dynamic
dimension, and the keys attended over are always the whole block, with a mask that hides every
position past a row's own (the Python step attends over the longest row's positions only; the
masked keys add exactly zero, so the logits agree up to float rounding: within 6e-6 on the
benchmark shapes at random init, 1e-5 in the tests, and the same greedy tokens). The KV caches are inputs that the step writes in
place, so the engine's prefill (the model's own forward) and the compiled step share them.

Compiling takes about 50 s for either benchmark model on 2 shared cores, so the engine builds it
only when asked (``GPTEngine(compile_dir=...)``), and the package is kept in ``compile_dir`` under
a key of the weights, the shape, the slots, the CPU, torch's version and this step's version: the next
start with the same model loads it in about a second. Inductor's own caches (kernels, FX graphs)
live in ``TORCHINDUCTOR_CACHE_DIR``, by default ``/tmp/torchinductor_<user>``. Where export or the
compiler fail (no C++ compiler, a torch without Inductor) the engine keeps its other steps.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F

from genloom.models.gpt import GPT, Block

log = logging.getLogger("genloom.serve")

#: bumped when DecodeGraph computes something else: packages of an older step are not loaded
STEP_VERSION = 1

_build_lock = threading.Lock()


class DecodeGraph(torch.nn.Module):
    """``engine.decode_step`` written for ``torch.export``: fixed shapes but the batch, every key
    of the block attended over with a mask, the caches as inputs written in place."""

    def __init__(self, model: GPT) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        tokens: torch.Tensor,
        pos: torch.Tensor,
        k_cache: list[torch.Tensor],
        v_cache: list[torch.Tensor],
    ) -> torch.Tensor:
        """Logits (B, vocab) of ``tokens`` (B,) at positions ``pos`` (B,) of slots 0..B-1."""
        m, cfg = self.model, self.model.cfg
        B = tokens.size(0)
        H, Hkv, hd, C = cfg.n_head, int(cfg.n_kv_head or cfg.n_head), cfg.head_dim, cfg.n_embd
        T, half, eps = cfg.block_size, hd // 2, cfg.norm_eps
        dtype = m.wte.weight.dtype
        cos = cast(torch.Tensor, m.rope_cos)[pos].to(dtype)[:, None, :]  # (B, 1, hd)
        s = cast(torch.Tensor, m.rope_sin)[pos].to(dtype)
        sin = torch.cat((-s[:, :half], s[:, half:]), dim=-1)[:, None, :]  # (B, 1, hd)
        ahead = torch.arange(T, device=pos.device)[None, :] > pos[:, None]  # (B, T)
        mask = torch.zeros((B, 1, 1, T), dtype=dtype, device=pos.device).masked_fill(
            ahead[:, None, None, :], float("-inf")
        )
        rows = torch.arange(B, device=pos.device)
        x = F.embedding(tokens, m.wte.weight)  # (B, C)
        for layer, module in enumerate(m.blocks):
            block = cast(Block, module)
            qkv = F.linear(F.rms_norm(x, (C,), block.attn_norm.weight, eps), block.attn.qkv.weight)
            qk = qkv[:, : C + Hkv * hd].view(B, H + Hkv, hd)
            qk = qk * cos + qk.roll(half, dims=-1) * sin
            q, k = qk[:, :H, None, :], qk[:, H:]  # (B, H, 1, hd), (B, Hkv, hd)
            v = qkv[:, C + Hkv * hd :].view(B, Hkv, hd)
            kc, vc = k_cache[layer], v_cache[layer]
            kc[rows, :, pos] = k
            vc[rows, :, pos] = v
            keys, values = kc[:B], vc[:B]  # (B, Hkv, T, hd)
            if Hkv != H:
                keys = keys.repeat_interleave(H // Hkv, dim=1)
                values = values.repeat_interleave(H // Hkv, dim=1)
            y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)  # (B, H, 1, hd)
            x = x + F.linear(y.reshape(B, C), block.attn.proj.weight)
            h = F.rms_norm(x, (C,), block.mlp_norm.weight, eps)
            gate, up = F.linear(h, block.mlp.gate_up.weight).chunk(2, dim=-1)
            x = x + F.linear(F.silu(gate) * up, block.mlp.down.weight)
        return F.linear(F.rms_norm(x, (C,), m.norm.weight, eps), m.lm_head.weight)  # (B, vocab)


class CompiledDecode:
    """The compiled step of one model: ``__call__(k_cache, v_cache, tokens, pos, positions)`` ->
    logits (B, vocab), the signature of ``ScriptedDecode``."""

    def __init__(self, loader: Any, path: Path, build_s: float, load_s: float) -> None:
        self.loader = loader  # torch._C._aoti.AOTIModelPackageLoader
        self.path = path
        self.build_s = build_s  # export + compile; 0.0: the package was already there
        self.load_s = load_s

    def __call__(
        self,
        k_cache: list[torch.Tensor],
        v_cache: list[torch.Tensor],
        tokens: torch.Tensor,
        pos: torch.Tensor,
        positions: list[int],
    ) -> torch.Tensor:
        # the loader's boxed_run with the flat inputs directly: AOTICompiledModel.__call__ parses
        # the package's input spec (JSON) again at every call
        out = self.loader.boxed_run([tokens, pos, *k_cache, *v_cache])
        return cast(torch.Tensor, out[0])


def package_key(model: GPT, slots: int, autotune: bool = True) -> str:
    """What a compiled package depends on: the weights, the shape, the KV slots, whether its
    matrix products were autotuned, the device type and the CPU (its kernels are compiled for this
    CPU's instructions and its GEMMs picked by timing them here), torch's version and
    ``STEP_VERSION`` (hex sha256, 16 digits)."""
    h = hashlib.sha256()
    meta = {
        "cfg": model.cfg.to_dict(),
        "slots": slots,
        "autotune": autotune,
        "torch": torch.__version__,
        "step": STEP_VERSION,
        "device": model.wte.weight.device.type,
        "cpu": [platform.machine(), _cpu_model(), torch.backends.cpu.get_cpu_capability()],
    }
    h.update(json.dumps(meta, sort_keys=True).encode())
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    text = cpuinfo.read_text() if cpuinfo.exists() else ""
    return next(
        (line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), ""
    )


def compiled_decode(
    model: GPT,
    k_cache: list[torch.Tensor],
    v_cache: list[torch.Tensor],
    cache_dir: Path,
    autotune: bool = True,
) -> CompiledDecode | None:
    """The compiled step for ``model`` over caches shaped like ``k_cache`` (built into
    ``cache_dir``, or loaded from it), or None where the model or the machine does not allow it
    (projections that are not plain bias-free Linear modules, non-contiguous caches, not on the
    CPU, export or compile failing: logged). ``autotune``: Inductor times its own C++ GEMM
    kernels (weights packed for them) against ATen's (MKL) for each matrix product and keeps the
    faster; on the AMD EPYC its kernels were 1.5-2.5x faster than MKL's for one row (run 9), and
    the build takes about twice as long."""
    linears: list[torch.nn.Module] = [model.lm_head]
    for module in model.blocks:
        block = cast(Block, module)
        linears += [block.attn.qkv, block.attn.proj, block.mlp.gate_up, block.mlp.down]
    if any(type(m) is not torch.nn.Linear or m.bias is not None for m in linears):
        return None
    if not all(t.is_contiguous() for t in (*k_cache, *v_cache)) or model.wte.weight.device.type != "cpu":
        return None
    slots = k_cache[0].size(0)
    path = Path(cache_dir) / f"decode-{package_key(model, slots, autotune)}.pt2"
    with _build_lock:
        try:
            build_s = 0.0
            if not path.exists():
                t0 = time.perf_counter()
                _build(model, k_cache, v_cache, path, autotune)
                build_s = time.perf_counter() - t0
                log.info("compiled the decode step in %.1f s: %s", build_s, path)
            t0 = time.perf_counter()
            from torch._inductor import aoti_load_package

            with warnings.catch_warnings():  # torch's own deprecation notes from its pytree
                warnings.simplefilter("ignore")
                loader = aoti_load_package(str(path)).loader
            return CompiledDecode(loader, path, build_s, time.perf_counter() - t0)
        except Exception as e:  # no compiler here, or a graph it cannot take: keep the other steps
            log.warning("the compiled decode step is off (%s: %s)", type(e).__name__, e)
            return None


def _build(
    model: GPT, k_cache: list[torch.Tensor], v_cache: list[torch.Tensor], path: Path, autotune: bool
) -> None:
    """Export ``DecodeGraph`` (a dynamic batch of 1..slots rows) and compile it into ``path``
    (written to a temporary name first, so a package that exists is whole)."""
    from torch._inductor import aoti_compile_and_package

    slots = k_cache[0].size(0)
    n = len(k_cache)
    dev = model.wte.weight.device
    graph = DecodeGraph(model).eval()
    # scratch caches: exporting runs the step on its example inputs, which writes into them
    ks = [torch.zeros_like(t) for t in k_cache]
    vs = [torch.zeros_like(t) for t in v_cache]
    example_rows = min(2, slots)  # torch.export specialises a dimension traced at size 1
    tokens = torch.zeros(example_rows, dtype=torch.long, device=dev)
    pos = torch.arange(example_rows, dtype=torch.long, device=dev)
    dynamic: Any = None
    if slots > 1:
        rows = torch.export.Dim("rows", min=1, max=slots)
        dynamic = {"tokens": {0: rows}, "pos": {0: rows}, "k_cache": [None] * n, "v_cache": [None] * n}
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")  # torch's own deprecation notes from inside export
        program = torch.export.export(graph, (tokens, pos, ks, vs), dynamic_shapes=dynamic, strict=False)
        fd, tmp = tempfile.mkstemp(suffix=".pt2", dir=path.parent)
        os.close(fd)
        try:
            configs: dict[str, Any] = {"freezing": True}  # weights as constants, packed for the GEMMs
            if autotune:
                configs |= {"max_autotune": True, "max_autotune_gemm_backends": "CPP,ATEN"}
            aoti_compile_and_package(program, package_path=tmp, inductor_configs=configs)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
