"""The genloom GPT: a decoder-only transformer with the Llama layout.

RMSNorm before each sub-layer, rotary position embeddings (RoPE, the rotate-half form used by
Hugging Face Llama), SwiGLU feed-forward, optional grouped-query attention, no biases, tied input and
output embeddings, and ``F.scaled_dot_product_attention``. Weights map one to one onto
``LlamaForCausalLM`` (see ``genloom.models.export``), so transformers, vLLM and llama.cpp can load it.

References: Touvron et al. 2023 (Llama), Su et al. 2021 (RoFormer), Shazeer 2020 (GLU variants),
Ainslie et al. 2023 (GQA); the code follows nanoGPT's model.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from genloom.core.registry import MODELS
from genloom.models.base import TrainData, TrainPlan
from genloom.models.text_family import TextFamily

# Named sizes. tiny: tests; small: minutes on 2 CPU cores; base: an hour on CPU, minutes on a GPU;
# medium and large: GPUs (GPT-2 small and medium scale).
PRESETS: dict[str, dict[str, int]] = {
    "tiny": dict(n_layer=2, n_head=2, n_embd=16, block_size=64),
    "mini": dict(n_layer=4, n_head=4, n_embd=96, block_size=128),
    "small": dict(n_layer=6, n_head=6, n_embd=192, block_size=256),
    "base": dict(n_layer=8, n_head=8, n_embd=384, block_size=256),
    "medium": dict(n_layer=12, n_head=12, n_kv_head=4, n_embd=768, block_size=1024),
    "large": dict(n_layer=24, n_head=16, n_kv_head=8, n_embd=1024, block_size=2048),
}


@dataclass
class GPTConfig:
    """Shape of a GPT. ``n_kv_head < n_head`` turns on grouped-query attention."""

    vocab_size: int = 256
    block_size: int = 256  # longest context
    n_layer: int = 4
    n_head: int = 4
    n_kv_head: int | None = None  # None: n_head (plain multi-head attention)
    n_embd: int = 128
    ffn_hidden: int | None = None  # None: about 8/3 * n_embd, as in Llama
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    dropout: float = 0.0  # on the embeddings and the residual branches
    attn_dropout: float | None = None  # on the attention probabilities; None: dropout
    tie_embeddings: bool = True

    def __post_init__(self) -> None:
        if self.n_kv_head is None:
            self.n_kv_head = self.n_head
        if self.ffn_hidden is None:
            multiple = 64 if self.n_embd >= 256 else 16
            self.ffn_hidden = multiple * math.ceil(8 * self.n_embd / 3 / multiple)
        if self.n_embd % self.n_head or self.n_head % self.n_kv_head or (self.n_embd // self.n_head) % 2:
            raise ValueError(
                f"n_embd={self.n_embd} must split into n_head={self.n_head} even-sized heads, "
                f"and n_head into n_kv_head={self.n_kv_head} groups"
            )

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> GPTConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    @classmethod
    def from_preset(cls, name: str, **overrides: object) -> GPTConfig:
        return cls(**{**PRESETS[name], **{k: v for k, v in overrides.items() if v is not None}})


class RMSNorm(nn.Module):
    """x / rms(x) * g, computed in float32 (Zhang and Sennrich 2019)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.float()
        y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * y.type_as(x)


def rope_tables(head_dim: int, n_pos: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of each (position, frequency), shape (n_pos, head_dim), in float32."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    freqs = torch.outer(torch.arange(n_pos, dtype=torch.int64).float(), inv_freq)  # (n_pos, hd/2)
    emb = torch.cat((freqs, freqs), dim=-1)  # (n_pos, hd)
    return emb.cos(), emb.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotates the halves of each head: x (B, H, T, hd), cos/sin (T, hd)."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


class KVCache:
    """Keys and values of the tokens seen so far, one (B, n_kv_head, max_len, hd) pair per layer."""

    def __init__(
        self, cfg: GPTConfig, batch: int, max_len: int, dtype: torch.dtype, device: torch.device
    ) -> None:
        shape = (batch, cfg.n_kv_head, max_len, cfg.head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(cfg.n_layer)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(cfg.n_layer)]
        self.max_len = max_len


def causal_attention_with_dropout(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, p: float
) -> torch.Tensor:
    """Causal attention of q, k, v (B, H, T, hd) with dropout on the probabilities, for CPU training.

    On CPU, ``scaled_dot_product_attention`` with ``dropout_p > 0`` takes PyTorch's reference path
    and draws its mask with ``bernoulli_``: a step of the 5-minute Shakespeare model took 1.5x as
    long as without attention dropout. Here the scores are formed explicitly (B x H x T x T floats,
    small at CPU sizes) and the mask is cut from 64-bit random words, 16 bits per score (several
    times cheaper to draw): a layer's forward and backward took 11.8 ms instead of 34 ms
    (B 8, H 4, T 256, hd 32).
    """
    T = q.size(-2)
    att = (q @ k.transpose(-2, -1)) * q.size(-1) ** -0.5  # (B, H, T, T)
    future = torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1)
    att = att.masked_fill(future, float("-inf")).softmax(dim=-1)
    n = att.numel()
    words = torch.empty(n // 4 + 1, dtype=torch.int64, device=q.device).random_(-(2**63), 2**63 - 1)
    bits = words.view(torch.int16)[:n].view(att.shape)  # uniform over [-32768, 32767]
    keep = (bits >= round(p * 65536) - 32768).to(att.dtype) * (1.0 / (1.0 - p))
    return (att * keep) @ v  # (B, H, T, hd)


class CausalSelfAttention(nn.Module):
    """Multi-head (or grouped-query) causal attention with RoPE and an optional KV cache."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.n_head, self.n_kv_head, self.hd = cfg.n_head, cfg.n_kv_head, cfg.head_dim
        kv_dim = cfg.n_kv_head * cfg.head_dim
        self.qkv = nn.Linear(cfg.n_embd, cfg.n_embd + 2 * kv_dim, bias=False)  # q, k, v in one matmul
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)
        self.dropout = cfg.dropout if cfg.attn_dropout is None else cfg.attn_dropout

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        cache: KVCache | None,
        layer: int,
        pos: int,
    ) -> torch.Tensor:
        B, T, C = x.shape  # batch, time (tokens), channels (n_embd)
        kv_dim = self.n_kv_head * self.hd
        q, k, v = self.qkv(x).split([C, kv_dim, kv_dim], dim=-1)
        q = q.view(B, T, self.n_head, self.hd).transpose(1, 2)  # (B, H, T, hd)
        k = k.view(B, T, self.n_kv_head, self.hd).transpose(1, 2)  # (B, Hkv, T, hd)
        v = v.view(B, T, self.n_kv_head, self.hd).transpose(1, 2)  # (B, Hkv, T, hd)
        cos, sin = cos.to(q.dtype), sin.to(q.dtype)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        mask, causal = None, True
        if cache is not None:
            cache.k[layer][:, :, pos : pos + T] = k
            cache.v[layer][:, :, pos : pos + T] = v
            k, v = cache.k[layer][:, :, : pos + T], cache.v[layer][:, :, : pos + T]  # (B, Hkv, pos+T, hd)
            if pos > 0:  # new queries see every cached key, and the new keys causally
                causal = False
                i = torch.arange(T, device=x.device)[:, None]
                mask = torch.arange(pos + T, device=x.device)[None, :] <= pos + i  # (T, pos+T)
        if self.n_kv_head != self.n_head:  # GQA: each kv head serves n_head / n_kv_head query heads
            k = k.repeat_interleave(self.n_head // self.n_kv_head, dim=1)
            v = v.repeat_interleave(self.n_head // self.n_kv_head, dim=1)
        if self.training and self.dropout > 0 and cache is None and x.device.type == "cpu":
            y = causal_attention_with_dropout(q, k, v, self.dropout)
        else:
            y = F.scaled_dot_product_attention(
                q,
                k,
                v,
                attn_mask=mask,
                is_causal=causal and mask is None,
                dropout_p=self.dropout if self.training else 0.0,
            )  # (B, H, T, hd)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # heads side by side again
        return self.proj(y)


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)); gate and up share one matmul."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.gate_up = nn.Linear(cfg.n_embd, 2 * cfg.ffn_hidden, bias=False)
        self.down = nn.Linear(cfg.ffn_hidden, cfg.n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)  # (B, T, ffn_hidden) each
        return self.down(F.silu(gate) * up)


class Block(nn.Module):
    """x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(cfg.n_embd, cfg.norm_eps)
        self.attn = CausalSelfAttention(cfg)
        self.mlp_norm = RMSNorm(cfg.n_embd, cfg.norm_eps)
        self.mlp = SwiGLU(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        cache: KVCache | None,
        layer: int,
        pos: int,
    ) -> torch.Tensor:
        x = x + self.drop(self.attn(self.attn_norm(x), cos, sin, cache, layer, pos))
        return x + self.drop(self.mlp(self.mlp_norm(x)))


def decay_groups(params: list[nn.Parameter], weight_decay: float) -> list[dict]:
    """Optimizer groups: matrices (and embeddings) decay, vectors (norm gains) do not."""
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


class GPT(nn.Module):
    """Token embedding, n_layer blocks, a final RMSNorm, and the (tied) output projection."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.norm = RMSNorm(cfg.n_embd, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.wte.weight
        cos, sin = rope_tables(cfg.head_dim, cfg.block_size, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: scale residual projections by 1/sqrt(2 * n_layer)
            if name.endswith(("attn.proj.weight", "mlp.down.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    def _init_weights(self, m: nn.Module) -> None:
        if isinstance(m, nn.Linear | nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameter count (tied weights once); ``non_embedding`` leaves out the token embedding."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.wte.weight.numel() if non_embedding else n

    def flops_per_token(self, seq_len: int | None = None) -> int:
        """Training FLOPs per token: 6N for the matmuls (forward + backward) + 12 L C T for attention (PaLM)."""
        T = seq_len or self.cfg.block_size
        return 6 * self.num_params() + 12 * self.cfg.n_layer * self.cfg.n_embd * T

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        cache: KVCache | None = None,
        pos: int = 0,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B, T, vocab) of ``idx`` (B, T), and the mean cross-entropy if ``targets`` are given.

        With a ``cache``, ``idx`` holds the tokens at positions pos..pos+T-1 and their keys and values
        are added to the cache. Targets of -1 are ignored.
        """
        B, T = idx.shape
        if pos + T > self.cfg.block_size:
            raise ValueError(f"sequence of {pos + T} tokens is longer than block_size {self.cfg.block_size}")
        cos, sin = self.rope_cos[pos : pos + T], self.rope_sin[pos : pos + T]  # (T, hd)
        x = self.drop(self.wte(idx))  # (B, T, C)
        for i, block in enumerate(self.blocks):
            x = block(x, cos, sin, cache, i, pos)
        x = self.norm(x)
        if targets is None:
            return self.lm_head(x), None
        logits = self.lm_head(x)  # (B, T, vocab)
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        sample: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        done: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Extends ``idx`` (B, T) by up to ``max_new_tokens`` tokens, with a KV cache.

        ``sample(logits (B, vocab), seq (B, t)) -> (B,)`` picks the next tokens; ``done(seq) -> (B,) bool``
        stops early once every row is done. Past ``block_size``, the cache is rebuilt from the last
        half-block of tokens (a sliding window), so generation can run longer than the context.
        """
        self.eval()
        dtype = self.wte.weight.dtype
        cache = KVCache(self.cfg, idx.size(0), self.cfg.block_size, dtype, idx.device)
        seq = idx
        ctx = seq[:, -self.cfg.block_size :]
        logits, _ = self(ctx, cache=cache, pos=0)  # prefill: (B, T, vocab)
        pos = ctx.size(1)
        for _ in range(max_new_tokens):
            nxt = sample(logits[:, -1, :].float(), seq)  # (B,)
            seq = torch.cat((seq, nxt[:, None]), dim=1)
            if done is not None and bool(done(seq).all()):
                break
            if pos == self.cfg.block_size:  # cache full: restart from the last half-block
                ctx = seq[:, -(self.cfg.block_size // 2) :]
                logits, _ = self(ctx, cache=cache, pos=0)
                pos = ctx.size(1)
            else:
                logits, _ = self(nxt[:, None], cache=cache, pos=pos)
                pos += 1
        return seq

    def optimizer_groups(self, weight_decay: float) -> list[dict]:
        """AdamW groups: matrices (and the embedding) decay, norm gains do not."""
        return decay_groups([p for p in self.parameters() if p.requires_grad], weight_decay)

    def muon_groups(self, weight_decay: float) -> tuple[list[dict], list[dict]]:
        """Muon groups (the blocks' matrices; fused q/k/v and gate/up split into their parts) and
        AdamW groups (embeddings and output projection decay, norm gains do not)."""
        c = self.cfg
        kv = c.n_kv_head * c.head_dim  # type: ignore[operator]
        muon = [
            {"params": [b.attn.qkv.weight for b in self.blocks], "split": [c.n_embd, kv, kv]},
            {"params": [b.mlp.gate_up.weight for b in self.blocks], "split": [c.ffn_hidden] * 2},
            {"params": [w for b in self.blocks for w in (b.attn.proj.weight, b.mlp.down.weight)]},
        ]
        for g in muon:
            g["weight_decay"] = weight_decay
        in_muon = {id(p) for g in muon for p in g["params"]}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in in_muon]
        return muon, decay_groups(rest, weight_decay)


# ---------------------------------------------------------------------------------------------
# the family: how the pipeline plans, builds, saves and loads a GPT

#: dropout chosen when the model's is not set and training repeats the data ``AUTO_DROPOUT_EPOCHS``+
#: times: on tiny Shakespeare (10 passes in 5 minutes) 0.1 gave 2.097 bits/char, 0.05 2.121,
#: 0.15 2.124 and 0 2.173 (benchmarks/train_shakespeare.py, 2300 steps of 2048 tokens).
AUTO_DROPOUT, AUTO_DROPOUT_EPOCHS = 0.1, 4.0


def choose_preset(n_train_tokens: int, budget_s: float | None, device: torch.device) -> str:
    """The largest preset that the compute (Chinchilla: ~20 tokens per parameter) and the data support."""
    flops_per_s = 4e13 if device.type == "cuda" else 1.2e11  # sustained, conservative
    order = ["tiny", "mini", "small", "base", "medium", "large"]
    best = "mini"
    for name in order[1:]:
        cfg = GPTConfig.from_preset(name, vocab_size=1)
        n = cfg.n_layer * (4 * cfg.n_embd**2 + 3 * cfg.n_embd * cfg.ffn_hidden)
        tokens_needed = 20 * n
        if budget_s is not None and 6 * n * tokens_needed > flops_per_s * budget_s:
            break
        if tokens_needed > 8 * n_train_tokens:  # more than ~8 epochs of data: it would overfit
            break
        best = name
    assert best in PRESETS
    return best


def round_vocab(v: int) -> int:
    """Vocabulary rows padded to a multiple of 64 (faster matmuls; the extra ids are never produced)."""
    return 64 * math.ceil(v / 64)


@MODELS.register("gpt")
class GPTFamily(TextFamily):
    """A genloom GPT trained from scratch on a tokenizer trained on the corpus."""

    name = "gpt"

    def plan(
        self, cfg: Any, data: TrainData, budget_s: float | None, device: torch.device
    ) -> tuple[dict[str, Any], int]:
        from genloom.core.errors import ConfigError

        vocab_size = data.vocab_size
        preset = cfg.preset if cfg.preset != "auto" else choose_preset(data.n_train, budget_s, device)
        try:
            gcfg = GPTConfig.from_preset(
                preset,
                vocab_size=round_vocab(vocab_size),
                n_layer=cfg.n_layer,
                n_head=cfg.n_head,
                n_kv_head=cfg.n_kv_head,
                n_embd=cfg.n_embd,
                ffn_hidden=cfg.ffn_hidden,
                block_size=cfg.block_size,
                dropout=cfg.dropout,
                attn_dropout=cfg.attn_dropout,
                rope_theta=cfg.rope_theta,
                tie_embeddings=cfg.tie_embeddings,
            )
        except ValueError as e:
            raise ConfigError(str(e), path="train.model", hint="pick n_embd divisible by n_head") from e
        plan: dict[str, Any] = {"preset": preset, "gpt": gcfg.to_dict()}
        if cfg.dropout is None:  # a time budget measures its steps with dropout on (the slower case)
            plan["gpt"]["dropout"] = AUTO_DROPOUT
        plan["block_size"] = gcfg.block_size
        return plan, gcfg.n_embd

    def set_dropout(self, plan: TrainPlan, cfg: Any, epochs: float) -> None:
        if cfg.dropout is None:
            plan.model["gpt"]["dropout"] = AUTO_DROPOUT if epochs >= AUTO_DROPOUT_EPOCHS else 0.0

    def vocab_size(self, out_dir: Path) -> int:
        from tokenizers import Tokenizer

        from genloom.core.errors import NotFoundError

        tok_path = Path(out_dir) / "tokenizer.json"
        if not tok_path.exists():
            raise NotFoundError(
                f"no tokenizer.json in {out_dir}: the train stage needs the tokenizer beside the model"
            )
        return int(Tokenizer.from_file(str(tok_path)).get_vocab_size())

    def build(self, plan: TrainPlan, cfg: Any, device: torch.device, compute_dtype: torch.dtype) -> nn.Module:
        return GPT(GPTConfig.from_dict(plan.model["gpt"])).to(device)

    def save(self, model: nn.Module, plan: TrainPlan, out_dir: Path) -> dict[str, Any]:
        from safetensors.torch import save_file

        from genloom.models.weights import trainable_state

        save_file(trainable_state(model), str(Path(out_dir) / "model.safetensors"))
        return {"gpt": plan.model["gpt"]}

    def load(self, model_dir: Path, config: dict[str, Any]) -> tuple[nn.Module, Any]:
        from safetensors.torch import load_file
        from tokenizers import Tokenizer

        from genloom.models.weights import load_trainable_state

        model = GPT(GPTConfig.from_dict(config["gpt"]))
        load_trainable_state(model, load_file(str(Path(model_dir) / "model.safetensors")))
        return model, Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))

    def gguf_pre_tokenizer(self, model_dir: Path) -> str:
        from genloom.models.export import byte_level_pre_tokenizer

        return byte_level_pre_tokenizer(Path(model_dir) / "tokenizer.json")

    def export_hf(self, model_dir: Path, out_dir: Path) -> Path:
        from genloom.models.export import export_hf

        return export_hf(model_dir, out_dir)
