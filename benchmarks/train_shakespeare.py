"""genloom's GPT against nanoGPT's CPU recipe on tiny Shakespeare, measured in one run.

    python benchmarks/train_shakespeare.py                 # (a) recipe compute, (b) 5 and 15 minute budgets
    python benchmarks/train_shakespeare.py --quick         # (a) only, under 2 minutes on a quiet 2-core machine
    python benchmarks/train_shakespeare.py --budgets 5m    # (a) and the 5-minute budget only
    python benchmarks/train_shakespeare.py --split tune    # score on the validation slice (for tuning)

The data is ../shared/data/tinyshakespeare.txt. Reported figures (``--split test``, the default)
train on the first 90% of characters, as nanoGPT does, and are scored on the last 10% (nanoGPT's
val split, here the *test* split): no configuration below was chosen on it. Tuning
(``--split tune``) trains on the first 81% and scores on the slice from 81% to 90%, a validation
slice of the first 90% that the test split never overlaps. Scores are bits per character over
the whole scored text (total loss in bits / characters), so a BPE model and a character model
compare directly.

Precision: the machine's best, from genloom's matmul probe (``genloom.train.precision``): bf16
autocast on CPUs with native bf16 (AVX-512 BF16), fp32 on AVX2-only CPUs where bf16 is emulated;
Muon's Newton-Schulz iterations follow the same probe. The script prints the CPU's vector
extensions, the fp32 and bf16 matmul peaks it measured (a bounded probe, about a second per
dtype, on the benchmark's threads) and the precision each run used.

(a) "recipe compute": no more parameters (795,904 counted as nanoGPT counts them), no more FLOPs per
    token (5,168,640) and no more training characters (2000 x 12 x 64 = 1,536,000) than nanoGPT's
    README CPU recipe, whose val loss is 1.886 nats/char = 2.72 bits/char.
(b) 5 and 15 minute wall-clock budgets (time_budget in TrainConfig; nanoGPT: 1.58-1.60 nats = 2.29 bpc).

The reference is nanoGPT's model and loop (GPT-2 layout: learned positions, LayerNorm, GELU, fp32,
AdamW 1e-3, betas 0.9/0.99, warmup 100, cosine to 1e-4, batch 12 x 64) rewritten in plain PyTorch
below and timed in the same process, so speed is a ratio on one machine state. The full run also
trains it for the whole 2000 steps to check that it reproduces nanoGPT's 1.886.

MFU = model FLOPs per token (6N + 12 L C T, nanoGPT's formula) x tokens/s / the matmul peak
measured here for the precision the run used (fp32 for the reference). The last line printed is
one JSON object with every number.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from genloom.train.precision import MachineProbe, fast_bf16

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "tinyshakespeare.txt"
RECIPE = dict(n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=12, max_iters=2000)
RECIPE_PARAMS = 795_904  # nanoGPT's count: all parameters but the position embedding
RECIPE_FLOPS_PER_TOKEN = 6 * RECIPE_PARAMS + 12 * 4 * 128 * 64  # 5,168,640
RECIPE_CHARS = 2000 * 12 * 64  # 1,536,000 training characters
NANOGPT_RECIPE_NATS = 1.886


# --------------------------------------------------------------------------------------------
# the machine


def cpu_load() -> tuple[float, float, float]:
    """1, 5 and 15-minute load averages (other sessions share these cores)."""
    return os.getloadavg()


class LoadMeter:
    """Busy cores over an interval, from /proc/stat: how much of the machine others used meanwhile."""

    def __init__(self) -> None:
        self.t0, self.busy0, self.own0 = time.monotonic(), self._busy(), time.process_time()

    @staticmethod
    def _busy() -> float:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")

    def others(self) -> float:
        """Cores busy with other processes since creation (busy cores minus this process's)."""
        dt = time.monotonic() - self.t0
        return max(0.0, ((self._busy() - self.busy0) - (time.process_time() - self.own0)) / max(dt, 1e-9))


def measure_peaks(threads: int, cache: Path | None) -> MachineProbe:
    """fp32 and bf16 matmul peaks on the benchmark's threads, measured afresh (bounded: about a
    second per dtype; an emulated bf16 matmul is not grown, so it costs no more)."""
    from genloom.train.precision import probe_machine

    return probe_machine(cache, threads=threads, budget_s=1.0, max_n=1024, refresh=True)


def mfu(run: dict, peaks: dict[str, float]) -> float:
    """Model FLOPs per second of a run over the matmul peak of the precision it computed in."""
    return run["flops_per_token"] * run["tokens_per_s"] / 1e9 / peaks[run["precision"]]


# --------------------------------------------------------------------------------------------
# the reference: nanoGPT's recipe in plain PyTorch


class RefBlock(nn.Module):
    def __init__(self, C: int, H: int) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(C, bias=False), nn.LayerNorm(C, bias=False)
        self.qkv, self.proj = nn.Linear(C, 3 * C, bias=False), nn.Linear(C, C, bias=False)
        self.fc, self.out = nn.Linear(C, 4 * C, bias=False), nn.Linear(4 * C, C, bias=False)
        self.H = H

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.H, C // self.H).transpose(1, 2) for t in (q, k, v))  # (B, H, T, hd)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
        x = x + self.proj(y)
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class RefGPT(nn.Module):
    """nanoGPT's GPT (bias=False, dropout=0) at the recipe's size."""

    def __init__(self, vocab: int, L: int = 4, H: int = 4, C: int = 128, T: int = 64) -> None:
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, C), nn.Embedding(T, C)
        self.blocks = nn.ModuleList(RefBlock(C, H) for _ in range(L))
        self.ln_f = nn.LayerNorm(C, bias=False)
        self.head = nn.Linear(C, vocab, bias=False)
        self.head.weight = self.wte.weight
        self.apply(
            lambda m: nn.init.normal_(m.weight, 0, 0.02) if isinstance(m, nn.Linear | nn.Embedding) else None
        )
        for n, p in self.named_parameters():
            if n.endswith(("proj.weight", "out.weight")):
                nn.init.normal_(p, 0, 0.02 / math.sqrt(2 * L))

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx) + self.wpe(torch.arange(idx.size(1)))
        for b in self.blocks:
            x = b(x)
        logits = self.head(self.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))


def run_reference(train_ids: torch.Tensor, val_ids: torch.Tensor, vocab: int, iters: int) -> dict:
    """nanoGPT's loop: AdamW(1e-3, 0.9/0.99, wd 0.1), warmup 100, cosine to 1e-4 at 2000, clip 1."""
    torch.manual_seed(1337)
    model = RefGPT(vocab)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
        lr=1e-3,
        betas=(0.9, 0.99),
        fused=True,
    )
    B, T = RECIPE["batch_size"], RECIPE["block_size"]
    g = torch.Generator().manual_seed(1337)
    step_times = []
    t_start = time.monotonic()
    for it in range(iters):
        lr = (
            1e-3 * (it + 1) / 101
            if it < 100
            else 1e-4 + 0.5 * (1 + math.cos(math.pi * (it - 100) / 1900)) * 9e-4
        )
        for grp in opt.param_groups:
            grp["lr"] = lr
        t = time.perf_counter()
        ix = torch.randint(len(train_ids) - T - 1, (B,), generator=g)
        x = torch.stack([train_ids[i : i + T] for i in ix])
        y = torch.stack([train_ids[i + 1 : i + T + 1] for i in ix])
        loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step_times.append(time.perf_counter() - t)
    wall = time.monotonic() - t_start
    steady = sorted(step_times[5:])
    out = {
        "iters": iters,
        "median_step_ms": 1000 * steady[len(steady) // 2],
        "wall_s": wall,
        "tokens_per_s": B * T / steady[len(steady) // 2],
    }
    if iters == RECIPE["max_iters"]:  # full val: every non-overlapping 64-token window
        with torch.no_grad():
            n = (len(val_ids) - 1) // T * T
            x, y = val_ids[:n].view(-1, T), val_ids[1 : n + 1].view(-1, T)
            out["val_nats"] = float(
                sum(
                    model(x[i : i + 256], y[i : i + 256]) * len(x[i : i + 256]) for i in range(0, len(x), 256)
                )
                / len(x)
            )
    return out


# --------------------------------------------------------------------------------------------
# genloom


def split_text(text: str, split: str) -> tuple[str, str, str]:
    """(train, validation slice, scored text) of ``split``.

    test: train on the first 90%, score on the last 10% (nanoGPT's split); tune: train on the
    first 81%, score on 81-90% (a validation slice of the first 90%). The validation slice is
    also what the training loop's own evaluation reads in both cases, so the test split is read
    once, for the reported score, and nothing during training ever sees it.
    """
    n90 = int(len(text) * 0.9)
    n81 = int(n90 * 0.9)
    if split == "tune":
        return text[:n81], text[n81:n90], text[n81:n90]
    return text[:n90], text[n81:n90], text[n90:]


def prepare(
    workdir: Path, text: str, kind: str, vocab_size: int | None, split: str
) -> tuple[Path, Path, Path, Path]:
    """Tokenizer trained on the training text; packed train, validation and scored files; an output folder."""
    from genloom.models.tokenizer import TokenizerConfig, train_tokenizer
    from genloom.models.tokens import pack_tokens

    train_text, val_text, scored_text = split_text(text, split)
    tag = f"{kind}{vocab_size or ''}-{split}"
    out = workdir / tag
    out.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer(iter([train_text]), TokenizerConfig(kind=kind, vocab_size=vocab_size))
    tok.save(str(out / "tokenizer.json"))
    pack_tokens(tok, [train_text], out / "train.bin")
    pack_tokens(tok, [val_text], out / "val.bin")
    pack_tokens(tok, [scored_text], out / "scored.bin")
    return out / "train.bin", out / "val.bin", out / "scored.bin", out


def run_genloom(data: tuple[Path, Path, Path, Path], name: str, train_cfg: dict, probe: MachineProbe) -> dict:
    """Trains with genloom's train() into a fresh folder and scores it on the whole scored split."""
    import shutil

    from genloom.evaluate.text import evaluate_text_model
    from genloom.models.gpt import GPT, GPTConfig
    from genloom.models.text import read_model_config
    from genloom.models.tokens import read_sidecar
    from genloom.train.config import TrainConfig
    from genloom.train.loop import train

    train_bin, val_bin, scored_bin, base = data
    out = base / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    shutil.copy(base / "tokenizer.json", out / "tokenizer.json")
    cfg = TrainConfig.model_validate(train_cfg)
    meter = LoadMeter()
    t0 = time.monotonic()
    metrics = train(cfg, train_bin, val_bin, out, probe=probe)
    wall = time.monotonic() - t0
    others = meter.others()
    ev = evaluate_text_model(out, scored_bin)
    plan = read_model_config(out)["plan"]
    gcfg = GPTConfig.from_dict(plan["gpt"])
    model = GPT(gcfg)
    meta = read_sidecar(train_bin)
    chars_per_token = meta["n_chars"] / meta["n_tokens"]
    flops_per_token = model.flops_per_token(gcfg.block_size)
    return {
        "name": name,
        "bpc": ev["val_bpc"],
        "nats_per_char": ev["val_bpc"] * math.log(2),
        "steps": metrics["steps"],
        "train_tokens": metrics["tokens"],
        "train_chars": round(metrics["tokens"] * chars_per_token),
        "params": model.num_params(),
        "flops_per_token": flops_per_token,
        "train_flops": flops_per_token * metrics["tokens"],
        "wall_s": wall,
        "tokens_per_s": metrics["tokens"] / wall,
        "chars_per_s": metrics["tokens"] * chars_per_token / wall,
        "precision": metrics["precision"],
        "muon_precision": metrics.get("muon_precision"),
        "threads": metrics["threads"],
        "others_cores": others,
        "model": {
            k: plan["gpt"][k]
            for k in ("n_layer", "n_head", "n_kv_head", "n_embd", "ffn_hidden", "block_size", "vocab_size")
        },
        "batch_size": plan["batch_size"],
        "lr": plan["lr"],
    }


# What every run shares: 8 windows a step, AdamW (beta2 0.99) with 100 warmup steps and a cosine
# decay, the machine's best precision (bf16 autocast only where the probe measured bf16 fast), and
# no evaluation before the end (the script scores the whole split).
COMMON = dict(
    batch_size=8,
    warmup_steps=100,
    schedule="cosine",
    beta2=0.99,
    eval_interval=10_000,
    eval_tokens=4096,
    precision="auto",
)
# The recipe-compute configuration: BPE with 512 tokens, 4 layers of 128, context 128 tokens
# (about 280 characters), within the recipe's parameters, FLOPs per token and characters.
RECIPE_RUN = dict(
    tokenizer=("bpe", 512),
    train=dict(
        COMMON,
        model=dict(
            type="gpt", preset="small", n_layer=4, n_head=4, n_embd=128, ffn_hidden=256, block_size=128
        ),
        lr=3e-3,
        min_lr_ratio=0.1,
        weight_decay=0.1,
    ),
)
# Time budgets: BPE with 1024 tokens, a context of 256 tokens (~580 characters) and a model sized
# for the budget: at 5 minutes the recipe's width trained with Muon and heavy weight decay, light
# dropout (attention and residual), an output projection of its own and a weight average (more
# passes over the data beat more parameters on 2 cores; see docs/models.md for what else was
# tried), at 15 minutes the `small` preset with dropout (it sees the text ~6 times).
BUDGET_RUNS = {
    "5m": dict(
        tokenizer=("bpe", 1024),
        train=dict(
            COMMON,
            model=dict(
                type="gpt",
                preset="small",
                n_layer=4,
                n_head=4,
                n_embd=128,
                block_size=256,
                dropout=0.05,
                tie_embeddings=False,
            ),
            optimizer="muon",
            lr=3e-3,
            weight_decay=0.6,
            min_lr_ratio=0.05,
            ema_decay=0.998,
        ),
    ),
    "15m": dict(
        tokenizer=("bpe", 1024),
        train=dict(
            COMMON,
            model=dict(
                type="gpt", preset="small", n_layer=6, n_head=6, n_embd=192, block_size=256, dropout=0.1
            ),
            lr=2e-3,
            min_lr_ratio=0.05,
        ),
    ),
}


def check_recipe_limits(r: dict) -> list[str]:
    """What, if anything, exceeds the recipe's parameters, FLOPs per token or training characters."""
    bad = []
    if r["params"] > RECIPE_PARAMS:
        bad.append(f"params {r['params']} > {RECIPE_PARAMS}")
    if r["flops_per_token"] > RECIPE_FLOPS_PER_TOKEN:
        bad.append(f"flops/token {r['flops_per_token']} > {RECIPE_FLOPS_PER_TOKEN}")
    if r["train_chars"] > RECIPE_CHARS:
        bad.append(f"train chars {r['train_chars']} > {RECIPE_CHARS}")
    return bad


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="run (a) only (under 2 minutes on a quiet machine)")
    ap.add_argument("--data", type=Path, default=DATA, help="the tiny Shakespeare text")
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for every run; default: the cores other processes leave free at the start"
        " (2 on a quiet 2-core machine; 1 when another job runs: a 2-thread step waits on the busy core)",
    )
    ap.add_argument("--budgets", default="5m,15m", help="(b) time budgets, comma-separated")
    ap.add_argument(
        "--split",
        choices=["test", "tune"],
        default="test",
        help="test: train on the first 90%%, score the last 10%% (reported); tune: score a validation slice of the first 90%%",
    )
    ap.add_argument(
        "--override",
        type=json.loads,
        default={},
        help='JSON merged into the budget runs\' train config (its "model" key into the model), to try a'
        ' candidate with --split tune, e.g. \'{"optimizer": "adamw", "model": {"dropout": 0.1}}\'',
    )
    ap.add_argument(
        "--probe-cache",
        type=Path,
        default=None,
        help="genloom's machine-probe cache file (default: the user cache)",
    )
    ap.add_argument(
        "--workdir", type=Path, default=None, help="keep the models here (default: a temp folder)"
    )
    args = ap.parse_args(argv)
    if not args.data.exists():
        print(f"SKIP: {args.data} not found (the tiny Shakespeare corpus; see ../shared/data/SOURCES.md)")
        print(json.dumps({"skipped": True, "reason": f"missing {args.data}"}))
        return 0
    from genloom.train.plan import pick_threads

    args.threads = pick_threads(args.threads)
    torch.set_num_threads(args.threads)
    text = args.data.read_text()
    t_all = time.monotonic()

    from genloom.train.precision import probe_machine

    peaks = measure_peaks(args.threads, args.probe_cache)
    probe = probe_machine(args.probe_cache)  # the one-thread probe that decides precision (cached)
    best = "bf16" if fast_bf16(probe) else "fp32"
    machine = {
        "cpu": peaks.cpu,
        "vector_extensions": list(peaks.extensions),
        "aten_isa": peaks.isa,
        "onednn_max_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", ""),
        "threads": args.threads,
        "cores": os.cpu_count(),
        "load_at_start": cpu_load(),
        "fp32_matmul_gflops": peaks.gflops["fp32"],
        "bf16_matmul_gflops": peaks.gflops["bf16"],
        "peak_probe_s": peaks.measured_s,
        "decision_probe": {"threads": probe.threads, "gflops": probe.gflops, "cached": probe.cached},
        "best_precision": best,
        "torch": torch.__version__,
    }
    result: dict = {"machine": machine, "split": args.split}
    print(
        f"cpu: {peaks.cpu}; vector extensions: {' '.join(peaks.extensions) or '?'}; ATen ISA: {peaks.isa}",
        flush=True,
    )
    print(
        f"matmul peak ({args.threads} threads, {peaks.measured_s:.1f} s): fp32 {peaks.gflops['fp32']:.0f} GFLOP/s,"
        f" bf16 {peaks.gflops['bf16']:.1f} GFLOP/s; 1-thread probe bf16/fp32 = "
        f"{probe.gflops['bf16'] / probe.gflops['fp32']:.2f}x -> best precision {best}",
        flush=True,
    )

    train_text, _, scored_text = split_text(text, args.split)
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    train_ids = torch.tensor([stoi[c] for c in train_text], dtype=torch.long)
    val_ids = torch.tensor([stoi[c] for c in scored_text], dtype=torch.long)
    meter = LoadMeter()
    ref = run_reference(train_ids, val_ids, len(chars), 200 if args.quick else RECIPE["max_iters"])
    ref["others_cores"] = meter.others()
    result["reference"] = ref
    print(f"reference (nanoGPT recipe, plain PyTorch fp32): {ref}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        kind, vocab = RECIPE_RUN["tokenizer"]
        data = prepare(work, text, kind, vocab, args.split)
        # as many steps as the recipe's 1,536,000 training characters allow with this tokenizer
        from genloom.models.tokens import read_sidecar

        meta = read_sidecar(data[0])
        t = RECIPE_RUN["train"]
        chars_per_step = t["batch_size"] * t["model"]["block_size"] * meta["n_chars"] / meta["n_tokens"]
        train_cfg = {**t, "max_steps": int(RECIPE_CHARS // chars_per_step), "threads": args.threads}
        a = run_genloom(data, "recipe", train_cfg, probe)
        a["within_recipe_limits"] = not check_recipe_limits(a)
        a["limit_violations"] = check_recipe_limits(a)
        result["recipe"] = a
        print(f"(a) recipe compute: {a}", flush=True)

        budgets = {}
        if not args.quick:
            for b in [s for s in args.budgets.split(",") if s]:
                run = BUDGET_RUNS.get(b, BUDGET_RUNS["5m"])
                kind, vocab = run["tokenizer"]
                data = prepare(work, text, kind, vocab, args.split)
                over = dict(args.override)
                model = {**run["train"]["model"], **over.pop("model", {})}
                r = run_genloom(
                    data,
                    f"budget{b}",
                    {**run["train"], **over, "model": model, "time_budget": b, "threads": args.threads},
                    probe,
                )
                r["override"] = args.override
                r["load_after"] = cpu_load()
                budgets[b] = r
                print(f"(b) budget {b}: {r}", flush=True)
        result["budgets"] = budgets

    # MFU against the peak of the precision each run used (the reference: fp32). Under load a
    # two-thread matmul stalls on the busy core, so the peaks are measured again at the end and
    # the higher of the two counts (printed both).
    again = measure_peaks(args.threads, args.probe_cache)
    top = {k: max(peaks.gflops[k], again.gflops[k]) for k in peaks.gflops}
    machine.update(
        fp32_matmul_gflops=top["fp32"],
        bf16_matmul_gflops=top["bf16"],
        peaks_at_start=peaks.gflops,
        peaks_at_end=again.gflops,
    )
    ref["mfu"] = RECIPE_FLOPS_PER_TOKEN * ref["tokens_per_s"] / 1e9 / top["fp32"]
    for r in [a, *budgets.values()]:
        r["mfu"] = mfu(r, top)
    print(
        f"matmul peak again at the end: fp32 {again.gflops['fp32']:.0f}, bf16 {again.gflops['bf16']:.1f} GFLOP/s;"
        f" MFU vs the {a['precision']} peak: recipe {a['mfu']:.0%}"
        + "".join(f", {b} {r['mfu']:.0%}" for b, r in budgets.items())
        + f"; reference vs fp32 {ref['mfu']:.0%}",
        flush=True,
    )

    recipe_bpc = NANOGPT_RECIPE_NATS / math.log(2)
    summary = {
        "split": args.split,
        "scored_on": "last 10% (test)" if args.split == "test" else "81-90% (validation slice)",
        "recipe_bpc": a["bpc"],
        "budget5_bpc": budgets["5m"]["bpc"] if "5m" in budgets else None,
        "budget5_steps": budgets["5m"]["steps"] if "5m" in budgets else None,
        "budget15_bpc": budgets["15m"]["bpc"] if "15m" in budgets else None,
        "nanogpt_recipe_bpc": recipe_bpc,
        "nanogpt_5min_bpc": 1.59 / math.log(2),
        "reference_bpc": ref["val_nats"] / math.log(2) if "val_nats" in ref else None,
        "tokens_per_s": a["tokens_per_s"],
        "chars_per_s": a["chars_per_s"],
        "reference_tokens_per_s": ref["tokens_per_s"],
        "speed_ratio_chars": a["chars_per_s"] / ref["tokens_per_s"],
        "precision": a["precision"],
        "mfu": a["mfu"],
        "reference_mfu": ref["mfu"],
        "cpu": machine["cpu"],
        "vector_extensions": machine["vector_extensions"],
        "aten_isa": machine["aten_isa"],
        "fp32_matmul_gflops": machine["fp32_matmul_gflops"],
        "bf16_matmul_gflops": machine["bf16_matmul_gflops"],
        "within_recipe_limits": a["within_recipe_limits"],
        "others_cores_during_recipe": a["others_cores"],
        "load_at_start": machine["load_at_start"],
        "load_at_end": cpu_load(),
        "wall_s": time.monotonic() - t_all,
        "details": result,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
