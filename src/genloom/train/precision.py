"""Which precision this machine computes fastest in: one short matmul probe, cached per machine.

CPUs of one kind of machine differ: some have AVX-512 BF16, where a bfloat16 matmul runs about 4x
faster than float32; others have only AVX2, where bfloat16 is emulated and over 50x slower. So
every precision choice of the library (``precision: auto`` in training, the dtype of Muon's
Newton-Schulz iterations, the compute dtype of 4-bit quantized layers) follows a measurement, never
the CPU's name: ``probe_machine`` times float32 and bfloat16 matmuls for a bounded time each (about
0.3 s; a matmul that turns out slow is not grown, so an emulated bfloat16 costs no more) and keeps
the result in a small JSON file keyed by what decides the speed (CPU model and flags, torch
version, the vector ISA that ATen and oneDNN use, thread count). The decisions (``fast_bf16``,
``choose_precision``, ``compute_dtype``) are pure functions of a probe result, so tests inject one.

It lives in ``train/`` rather than ``core/`` because it imports torch (``core`` stays torch-free);
the model families below ``train`` receive its decisions as arguments instead of importing it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch

Precision = Literal["fp32", "bf16"]

#: bf16 is chosen only when its measured matmul throughput is at least this multiple of fp32's:
#: autocast adds casts and the non-matmul work does not speed up, so a small gain would be lost.
BF16_MIN_SPEEDUP = 1.5

#: CPU flags printed with every benchmark and part of the cache key (the ones that decide matmul speed).
VECTOR_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx_vnni",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class MachineProbe:
    """Measured matmul throughput of this machine per precision, and what it was measured on."""

    gflops: dict[str, float]
    """Best matmul GFLOP/s per precision ("fp32", "bf16") with ``threads`` threads."""
    cpu: str = ""
    """CPU model name from /proc/cpuinfo (hypervisors often hide the full name)."""
    extensions: tuple[str, ...] = ()
    """The CPU's vector extensions among ``VECTOR_FLAGS``."""
    isa: str = ""
    """The vector ISA ATen dispatches to (``torch.backends.cpu.get_cpu_capability()``)."""
    threads: int = 1
    """Threads the matmuls ran on."""
    torch_version: str = ""
    key: str = ""
    """Cache key: a hash of everything above but the measurement."""
    measured_s: float = 0.0
    """Seconds the measurement took."""
    cached: bool = field(default=False, compare=False)
    """True when read from the cache file rather than measured in this process."""

    def peak(self, precision: str) -> float:
        """The measured matmul peak of ``precision`` in GFLOP/s (what MFU is divided by)."""
        return self.gflops[precision]

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict (the cache file's entry, and what benchmarks print)."""
        d = asdict(self)
        d["extensions"] = list(self.extensions)
        return d


def cpu_model_and_flags() -> tuple[str, tuple[str, ...]]:
    """(model name, every flag) of the first CPU in /proc/cpuinfo; ("", ()) where there is none."""
    name = ""
    flags: tuple[str, ...] = ()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not name:
                name = value.strip()
            elif key.strip() in ("flags", "Features") and not flags:
                flags = tuple(sorted(value.split()))
            if flags and name:
                break
    name = name or platform.processor() or platform.machine()
    return name, flags


def vector_extensions(flags: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """The CPU's vector extensions that matter for matmul speed, in ``VECTOR_FLAGS`` order."""
    have = set(cpu_model_and_flags()[1] if flags is None else flags)
    return tuple(f for f in VECTOR_FLAGS if f in have)


def machine_key(threads: int) -> tuple[str, dict[str, object]]:
    """(cache key, what it is made of): the CPU, torch, the ISA in use and the thread count."""
    cpu, flags = cpu_model_and_flags()
    parts: dict[str, object] = {
        "cpu": cpu,
        "flags": hashlib.sha256(" ".join(flags).encode()).hexdigest()[:16],
        "torch": torch.__version__,
        "isa": torch.backends.cpu.get_cpu_capability(),
        # oneDNN runs the bf16 matmuls; its ISA cap is process state set by the runtime's own
        # variable (used to emulate an AVX2-only CPU), so a capped process gets its own entry
        "onednn_max_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", ""),
        "threads": threads,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20], parts


def measure_matmul_gflops(dtype: torch.dtype, budget_s: float = 0.3, max_n: int = 512) -> float:
    """Best GFLOP/s of square matmuls in ``dtype``, bounded by about ``budget_s``.

    Starts at 256 x 256 and doubles the size while a call at the next size (8x the work) would
    take under a third of the budget, then repeats calls at that size until the budget is spent
    (at least 3; the best counts, so a call slowed by another process does not): a slow (emulated)
    dtype stops growing early, so it costs no more time than a fast one.
    """
    deadline = time.perf_counter() + budget_s
    n = 256
    while True:
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        # ``a @ b``, not ``matmul(..., out=c)``: on torch 2.13 the ``out=`` form measured 3-100x slower
        torch.matmul(a, b)  # warm-up: kernel selection, first touch of the memory
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            torch.matmul(a, b)
            best = min(best, time.perf_counter() - t)
        if n < max_n and 8 * best < budget_s / 3 and time.perf_counter() + 8 * best < deadline:
            n *= 2
            continue
        while time.perf_counter() + best < deadline:
            t = time.perf_counter()
            torch.matmul(a, b)
            best = min(best, time.perf_counter() - t)
        return 2 * n**3 / max(best, 1e-12) / 1e9


def default_cache_path() -> Path:
    """Where ``probe_machine`` keeps its results unless the caller names a file."""
    return Path.home() / ".cache" / "genloom" / "machine_probe.json"


def probe_machine(
    cache_path: Path | None = None,
    *,
    threads: int = 1,
    budget_s: float = 0.3,
    max_n: int = 512,
    refresh: bool = False,
) -> MachineProbe:
    """This machine's matmul throughput in fp32 and bf16: from the cache file, else measured and stored.

    ``cache_path``: the JSON file (default ``default_cache_path()``); ``threads``: the count to
    measure with, set for the measurement and restored. The default, one thread, is what the
    decisions use: the bf16/fp32 ratio is a property of the vector unit, and a one-thread matmul
    is not stalled by another process on the other core (a two-thread one waits on both cores; on
    a shared 2-core VM that made a 128 x 128 fp32 matmul measure 0.35 GFLOP/s). Benchmarks ask
    for their own thread count to get the peaks MFU is divided by. ``budget_s`` and ``max_n``
    bound each dtype's measurement (seconds, largest matrix side: 512 keeps one fp32 call near
    2 ms on one core, short enough to fit between another process's time slices). ``refresh``: measure even when
    the cache has an entry, and store the new result.
    """
    path = Path(cache_path) if cache_path is not None else default_cache_path()
    key, parts = machine_key(threads)
    entries: dict[str, dict[str, object]] = {}
    with contextlib.suppress(OSError, ValueError):
        loaded = json.loads(path.read_text())
        if isinstance(loaded, dict):
            entries = loaded
    if not refresh and isinstance(entries.get(key), dict):
        with contextlib.suppress(KeyError, TypeError, ValueError):
            e = entries[key]
            gflops = {str(k): float(v) for k, v in e["gflops"].items()}  # type: ignore[attr-defined]
            if set(gflops) >= set(_DTYPES):
                return MachineProbe(
                    gflops=gflops,
                    cpu=str(e.get("cpu", "")),
                    extensions=tuple(e.get("extensions", ())),  # type: ignore[arg-type]
                    isa=str(e.get("isa", "")),
                    threads=int(e.get("threads", threads)),  # type: ignore[call-overload]
                    torch_version=str(e.get("torch_version", "")),
                    key=key,
                    measured_s=float(e.get("measured_s", 0.0)),  # type: ignore[arg-type]
                    cached=True,
                )
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    try:
        gflops = {name: measure_matmul_gflops(dt, budget_s, max_n) for name, dt in _DTYPES.items()}
    finally:
        torch.set_num_threads(before)
    probe = MachineProbe(
        gflops=gflops,
        cpu=str(parts["cpu"]),
        extensions=vector_extensions(),
        isa=str(parts["isa"]),
        threads=threads,
        torch_version=torch.__version__,
        key=key,
        measured_s=time.perf_counter() - t0,
    )
    with contextlib.suppress(OSError):  # a read-only home only costs a re-measurement next time
        path.parent.mkdir(parents=True, exist_ok=True)
        entries[key] = {k: v for k, v in probe.to_dict().items() if k != "cached"}
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(entries, indent=1, sort_keys=True))
        tmp.replace(path)
    return probe


# ---------------------------------------------------------------------------------------------
# decisions: pure functions of a probe result


def fast_bf16(probe: MachineProbe) -> bool:
    """Whether bf16 matmuls measured at least ``BF16_MIN_SPEEDUP`` times faster than fp32."""
    return probe.gflops.get("bf16", 0.0) >= BF16_MIN_SPEEDUP * probe.gflops.get("fp32", float("inf"))


ProbeSource = Callable[[], MachineProbe]


def fastest_precision(device: torch.device, probe: ProbeSource) -> Precision:
    """bf16 where it is fast here (a bf16 CUDA GPU; a CPU whose probe says so), else fp32.

    ``probe`` is called only for a CPU, so a GPU run never times CPU matmuls.
    """
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type != "cpu":
        return "fp32"
    return "bf16" if fast_bf16(probe()) else "fp32"


def choose_precision(requested: str, device: torch.device, probe: ProbeSource) -> Precision:
    """The training precision: the config's ``fp32``/``bf16`` as asked, ``auto`` the fastest here."""
    if requested == "auto":
        return fastest_precision(device, probe)
    if requested not in _DTYPES:
        raise ValueError(f"unknown precision {requested!r}: use auto, fp32 or bf16")
    return requested  # type: ignore[return-value]


def dtype_of(precision: str) -> torch.dtype:
    """torch dtype of a precision name ("fp32", "bf16")."""
    return _DTYPES[precision]
