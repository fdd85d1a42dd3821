"""The engine's decode step as one TorchScript call (``ScriptedDecode``).

``engine.decode_step`` dispatches about 150 ATen operations from Python for one token of the
quickstart's ``mini`` GPT, and torch releases and retakes the GIL around each of them. Inside the
server the engine's thread shares the GIL with the event loop that streams the tokens, so each
release can hand the GIL over and each retake can wait for it: the engine's thread cost two to
three times more CPU per token inside the server than alone (docs/serving.md, runs 6 and 7).
The same computation compiled with ``torch.jit.script`` runs the whole step in TorchScript's
interpreter, in C++, with the GIL released once for the step.

The graph is the same operations as ``decode_step`` on the same numbers (so the same logits;
tested bit for bit), for a GPT whose projections are plain bias-free ``nn.Linear`` modules and
whose KV caches are contiguous, which is what the engine allocates. A quantised model
(``--quantize int8``) keeps ``decode_step``. It runs without the graph executor's optimisations
(no profiling, no shape specialisation: every step has its own batch and key lengths), and where
TorchScript cannot compile it (a torch without it, sources not shipped) the engine keeps
``decode_step``.
"""

import logging
import threading
import warnings
from typing import Any, List, Optional, cast  # noqa: UP035 - TorchScript reads these annotations

import torch
import torch.nn.functional as F

from genloom.models.gpt import GPT, Block

log = logging.getLogger("genloom.serve")


def decode_layers(
    tokens: torch.Tensor,
    pos: torch.Tensor,
    keys_len: int,
    masked: bool,
    wte: torch.Tensor,
    rope_cos: torch.Tensor,
    rope_sin: torch.Tensor,
    weights: List[torch.Tensor],  # noqa: UP006
    k_cache: List[torch.Tensor],  # noqa: UP006
    v_cache: List[torch.Tensor],  # noqa: UP006
    norm_weight: torch.Tensor,
    head_weight: torch.Tensor,
    n_head: int,
    n_kv_head: int,
    head_dim: int,
    eps: float,
) -> torch.Tensor:
    """Logits (B, vocab) of ``tokens`` (B,) at positions ``pos`` (B,): ``engine.decode_step``
    written over tensors only (``weights``: six per layer, attn_norm, qkv, proj, mlp_norm, gate_up,
    down), attending over the first ``keys_len`` positions, with the mask when ``masked`` (the rows
    are not all at position keys_len - 1)."""
    B = tokens.size(0)
    H, Hkv, hd = n_head, n_kv_head, head_dim
    C = H * hd
    half = hd // 2
    dev, dtype = tokens.device, wte.dtype
    cos = rope_cos[pos].to(dtype).unsqueeze(1)  # (B, 1, hd)
    s = rope_sin[pos].to(dtype)
    sin = torch.cat((-s[:, :half], s[:, half:]), dim=-1).unsqueeze(1)  # (B, 1, hd)
    mask: Optional[torch.Tensor] = None  # noqa: UP045
    if masked:
        ahead = torch.arange(keys_len, device=dev)[None, :] > pos[:, None]  # (B, L)
        mask = torch.zeros((B, 1, 1, keys_len), dtype=dtype, device=dev).masked_fill_(
            ahead[:, None, None, :], float("-inf")
        )
    S, T = k_cache[0].size(0), k_cache[0].size(2)
    flat = (
        (torch.arange(B, device=dev)[:, None] * Hkv + torch.arange(Hkv, device=dev)[None, :]) * T
        + pos[:, None]
    ).reshape(-1)  # (B * Hkv,)
    x = F.embedding(tokens, wte)  # (B, C)
    for layer in range(len(k_cache)):
        attn_norm, qkv_w, proj_w = weights[6 * layer], weights[6 * layer + 1], weights[6 * layer + 2]
        mlp_norm, gate_up_w, down_w = weights[6 * layer + 3], weights[6 * layer + 4], weights[6 * layer + 5]
        qkv = F.linear(torch.rms_norm(x, [C], attn_norm, eps), qkv_w)  # (B, C + 2 kv)
        qk = qkv[:, : C + Hkv * hd].view(B, H + Hkv, hd)
        qk = qk * cos + qk.roll(half, dims=-1) * sin
        q, k = qk[:, :H, None, :], qk[:, H:]  # (B, H, 1, hd), (B, Hkv, hd)
        v = qkv[:, C + Hkv * hd :].reshape(B * Hkv, hd)
        kc, vc = k_cache[layer], v_cache[layer]
        kc.view(S * Hkv * T, hd).index_copy_(0, flat, k.reshape(B * Hkv, hd))
        vc.view(S * Hkv * T, hd).index_copy_(0, flat, v)
        keys, values = kc[:B, :, :keys_len], vc[:B, :, :keys_len]  # (B, Hkv, L, hd)
        if Hkv != H:
            keys = keys.repeat_interleave(H // Hkv, dim=1)
            values = values.repeat_interleave(H // Hkv, dim=1)
        y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)  # (B, H, 1, hd)
        x = x + F.linear(y.reshape(B, C), proj_w)
        h = torch.rms_norm(x, [C], mlp_norm, eps)
        gate_up = F.linear(h, gate_up_w).chunk(2, dim=-1)
        x = x + F.linear(F.silu(gate_up[0]) * gate_up[1], down_w)
    return F.linear(torch.rms_norm(x, [C], norm_weight, eps), head_weight)  # (B, vocab)


_compiled: Any = None
_compile_lock = threading.Lock()


def compiled_decode_layers() -> Any:
    """``decode_layers`` compiled by ``torch.jit.script``, once per process (None: it failed)."""
    global _compiled
    with _compile_lock:
        if _compiled is None:
            try:
                with warnings.catch_warnings():  # torch 2.9+ marks TorchScript deprecated
                    warnings.simplefilter("ignore")
                    _compiled = torch.jit.script(decode_layers)
            except Exception as e:  # no TorchScript here: the engine keeps decode_step
                log.info("the TorchScript decode step is off (%s: %s)", type(e).__name__, e)
                _compiled = False
        return _compiled or None


class ScriptedDecode:
    """``engine.decode_step`` for one model as one TorchScript call: ``__call__(k_cache, v_cache,
    tokens, pos, positions)`` -> logits (B, vocab)."""

    def __init__(self, model: GPT, fn: Any) -> None:
        cfg = model.cfg
        self.fn = fn
        self.n_head, self.n_kv_head = int(cfg.n_head), int(cfg.n_kv_head or cfg.n_head)
        self.head_dim, self.eps = int(cfg.head_dim), float(cfg.norm_eps)
        self.weights: list[torch.Tensor] = []
        for block in _blocks(model):
            self.weights += [
                block.attn_norm.weight.detach(),
                block.attn.qkv.weight.detach(),
                block.attn.proj.weight.detach(),
                block.mlp_norm.weight.detach(),
                block.mlp.gate_up.weight.detach(),
                block.mlp.down.weight.detach(),
            ]
        self.wte = model.wte.weight.detach()
        self.norm = model.norm.weight.detach()
        self.head = model.lm_head.weight.detach()
        self.rope_cos = cast(torch.Tensor, model.rope_cos)
        self.rope_sin = cast(torch.Tensor, model.rope_sin)

    def __call__(
        self,
        k_cache: list[torch.Tensor],
        v_cache: list[torch.Tensor],
        tokens: torch.Tensor,
        pos: torch.Tensor,
        positions: list[int],
    ) -> torch.Tensor:
        keys_len = max(positions) + 1
        with torch.jit.optimized_execution(False):
            return self.fn(  # type: ignore[no-any-return]
                tokens,
                pos,
                keys_len,
                min(positions) != keys_len - 1,
                self.wte,
                self.rope_cos,
                self.rope_sin,
                self.weights,
                k_cache,
                v_cache,
                self.norm,
                self.head,
                self.n_head,
                self.n_kv_head,
                self.head_dim,
                self.eps,
            )


def _blocks(model: GPT) -> list[Block]:
    return [cast(Block, b) for b in model.blocks]


def scripted_decode(model: GPT, k_cache: list[torch.Tensor]) -> ScriptedDecode | None:
    """A ``ScriptedDecode`` for ``model`` when its projections are plain bias-free Linear modules
    and the caches are contiguous (else None: the engine keeps ``decode_step``)."""
    linears: list[torch.nn.Module] = [model.lm_head]
    for block in _blocks(model):
        linears += [block.attn.qkv, block.attn.proj, block.mlp.gate_up, block.mlp.down]
    if any(type(m) is not torch.nn.Linear or m.bias is not None for m in linears):
        return None
    if not all(t.is_contiguous() for t in k_cache):
        return None
    fn = compiled_decode_layers()
    return ScriptedDecode(model, fn) if fn is not None else None
