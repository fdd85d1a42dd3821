"""Precision choices follow the machine probe: decisions from injected probe results, the cache file."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from genloom.models.tokenizer import TokenizerConfig, train_tokenizer
from genloom.models.tokens import pack_tokens
from genloom.train import precision as P
from genloom.train.config import TrainConfig
from genloom.train.loop import train
from genloom.train.optim import Muon, build_optimizer, orthogonalize
from genloom.train.plan import make_plan

DATA = SimpleNamespace(n_train=10_000, n_val=1_000, vocab_size=256, unit="tokens")

CPU = torch.device("cpu")
# what the two CPUs of this project's machines measure (../shared/notes/machines.md)
AVX512_BF16 = P.MachineProbe(gflops={"fp32": 220.0, "bf16": 900.0}, isa="AVX512")
AVX2_ONLY = P.MachineProbe(gflops={"fp32": 175.0, "bf16": 0.9}, isa="AVX2")
TINY = {"type": "gpt", "preset": "tiny", "block_size": 32}


def never() -> P.MachineProbe:
    raise AssertionError("the probe was run for a choice that does not need it")


@pytest.mark.parametrize(
    ("probe", "expected"),
    [
        (AVX512_BF16, "bf16"),
        (AVX2_ONLY, "fp32"),
        (P.MachineProbe(gflops={"fp32": 200.0, "bf16": 260.0}), "fp32"),  # 1.3x: not worth the casts
        (P.MachineProbe(gflops={"fp32": 200.0, "bf16": 300.0}), "bf16"),  # exactly the 1.5x threshold
    ],
)
def test_auto_picks_bf16_only_where_it_measured_fast(probe: P.MachineProbe, expected: str) -> None:
    assert P.choose_precision("auto", CPU, lambda: probe) == expected
    assert P.fastest_precision(CPU, lambda: probe) == expected


def test_an_explicit_precision_stands_and_needs_no_probe() -> None:
    assert P.choose_precision("fp32", CPU, never) == "fp32"
    assert P.choose_precision("bf16", CPU, never) == "bf16"
    with pytest.raises(ValueError, match="unknown precision"):
        P.choose_precision("fp16", CPU, never)


def test_the_plan_takes_autocast_and_muon_precision_from_the_probe() -> None:
    muon = TrainConfig(model=TINY, max_steps=10, optimizer="muon")
    fast = make_plan(muon, DATA, CPU, lambda: AVX512_BF16)
    slow = make_plan(muon, DATA, CPU, lambda: AVX2_ONLY)
    assert (fast.precision, fast.muon_precision) == ("bf16", "bf16")
    assert (slow.precision, slow.muon_precision) == ("fp32", "fp32")
    # fp32 training asked for: Muon's Newton-Schulz still follows the machine
    asked = TrainConfig(model=TINY, max_steps=10, optimizer="muon", precision="fp32")
    assert make_plan(asked, DATA, CPU, lambda: AVX512_BF16).muon_precision == "bf16"
    assert not make_plan(TrainConfig(model=TINY, max_steps=10), DATA, CPU, lambda: AVX2_ONLY).muon_precision
    # nothing to decide: the probe is not run
    make_plan(TrainConfig(model=TINY, max_steps=10, precision="fp32"), DATA, CPU, never)


def test_newton_schulz_runs_in_the_dtype_it_is_given() -> None:
    g = torch.randn(3, 48, 32, generator=torch.Generator().manual_seed(0))
    x32 = orthogonalize(g, dtype=torch.float32)
    x16 = orthogonalize(g, dtype=torch.bfloat16)
    assert x32.dtype == x16.dtype == torch.float32
    s = torch.linalg.svdvals(x32)
    assert s.min() > 0.5 and s.max() < 1.3  # still (approximately) orthogonal in float32
    assert not torch.equal(x32, x16) and torch.allclose(x32, x16, atol=0.05)

    from genloom.models.gpt import GPT, GPTConfig

    model = GPT(GPTConfig.from_preset("tiny", vocab_size=64, block_size=16))
    opt = build_optimizer(model, "muon", 1e-2, 0.1, (0.9, 0.99), fused=False, ns_dtype=torch.float32)
    assert isinstance(opt.optimizers[0], Muon) and opt.optimizers[0].ns_dtype == torch.float32


def test_training_on_an_avx2_machine_never_uses_bf16(tmp_path: Path) -> None:
    docs = [f"the cat sees the moon {i % 7}. a dog eats bread." for i in range(120)]
    tok = train_tokenizer(iter(docs), TokenizerConfig(kind="char"))
    runs = {}
    for name, probe in (("avx2", AVX2_ONLY), ("avx512", AVX512_BF16)):
        out = tmp_path / name
        out.mkdir()
        tok.save(str(out / "tokenizer.json"))
        pack_tokens(tok, docs[:100], tmp_path / "train.bin")
        pack_tokens(tok, docs[100:], tmp_path / "val.bin")
        cfg = TrainConfig(model=TINY, max_steps=4, batch_size=2, optimizer="muon", threads=1)
        runs[name] = train(cfg, tmp_path / "train.bin", tmp_path / "val.bin", out, probe=probe)
    assert (runs["avx2"]["precision"], runs["avx2"]["muon_precision"]) == ("fp32", "fp32")
    assert (runs["avx512"]["precision"], runs["avx512"]["muon_precision"]) == ("bf16", "bf16")


def test_a_resumed_run_takes_the_precision_of_the_machine_it_resumes_on(tmp_path: Path) -> None:
    docs = [f"a dog finds a hat {i % 5}." for i in range(120)]
    tok = train_tokenizer(iter(docs), TokenizerConfig(kind="char"))
    out = tmp_path / "model"
    out.mkdir()
    tok.save(str(out / "tokenizer.json"))
    pack_tokens(tok, docs[:100], tmp_path / "train.bin")
    pack_tokens(tok, docs[100:], tmp_path / "val.bin")
    first = TrainConfig(model=TINY, max_steps=4, batch_size=2, threads=1, optimizer="muon")
    assert (
        train(first, tmp_path / "train.bin", tmp_path / "val.bin", out, probe=AVX512_BF16)["precision"]
        == "bf16"
    )
    more = first.model_copy(update={"max_steps": 6})
    m = train(more, tmp_path / "train.bin", tmp_path / "val.bin", out, probe=AVX2_ONLY)
    assert (m["precision"], m["muon_precision"]) == ("fp32", "fp32")


def test_the_probe_is_cached_per_machine_in_the_file_the_caller_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "sub" / "probe.json"
    calls: list[torch.dtype] = []

    def fake_measure(dtype: torch.dtype, budget_s: float, max_n: int) -> float:
        calls.append(dtype)
        return {torch.float32: 200.0, torch.bfloat16: 1.0}[dtype]

    monkeypatch.setattr(P, "measure_matmul_gflops", fake_measure)
    first = P.probe_machine(cache)
    assert not first.cached and first.gflops == {"fp32": 200.0, "bf16": 1.0} and len(calls) == 2
    assert first.isa == torch.backends.cpu.get_cpu_capability() and first.threads == 1
    entry = json.loads(cache.read_text())[first.key]
    assert entry["gflops"] == {"fp32": 200.0, "bf16": 1.0} and "cached" not in entry

    again = P.probe_machine(cache)
    assert again.cached and again.gflops == first.gflops and len(calls) == 2  # not measured again
    assert P.probe_machine(cache, threads=2).key != first.key and len(calls) == 4  # threads: own entry
    assert P.probe_machine(cache, refresh=True).cached is False and len(calls) == 6

    cache.write_text("{not json")
    assert not P.probe_machine(cache).cached  # a damaged cache is measured again and rewritten
    assert first.key in json.loads(cache.read_text())


def test_a_different_isa_gets_its_own_cache_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    key, parts = P.machine_key(1)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    capped, capped_parts = P.machine_key(1)
    assert key != capped and capped_parts["onednn_max_isa"] == "AVX2"
    assert parts["torch"] == torch.__version__ and P.machine_key(2)[0] != key


def test_the_measurement_reports_a_positive_rate_for_both_dtypes() -> None:
    # a real, very short measurement: only that it runs and returns a rate, never how fast
    for dtype in (torch.float32, torch.bfloat16):
        assert P.measure_matmul_gflops(dtype, budget_s=0.01, max_n=256) > 0


def test_vector_extensions_are_listed_in_a_fixed_order() -> None:
    flags = ("fma", "avx512_bf16", "avx2", "sse4_2", "unrelated")
    assert P.vector_extensions(flags) == ("sse4_2", "avx2", "fma", "avx512_bf16")
