"""A soak test of ``genloom serve``: steady load for a while, then errors and memory growth.

    .venv/bin/python scripts/soak_serve.py examples/quickstart/pipeline.yaml --minutes 10 --clients 8

The pipeline must have a champion (``genloom run`` first). The script starts ``genloom serve`` on a
free loopback port in a child process, waits for ``/readyz``, then keeps ``--clients`` clients
busy, each sending streaming and plain completions one after another (the official ``openai``
client, a fixed mix of prompts and lengths), for ``--minutes``. Every ``--sample-s`` seconds it
reads the server's resident memory (``/proc/<pid>/status``). At the end it prints what it
measured and, on its last line, one JSON object: requests, errors by kind, tokens, aggregate
tokens/s, p50/p99 latency, the server's RSS after warm-up (the first 10% of the run) and at the
end, and their growth. It exits 1 when a request failed or memory grew by 10% or more.

Not part of the test suite (it runs for minutes by design); the closing notes report its result.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

PROMPTS = ["The ", "Once upon a time", "KING:\n", "What is the matter", "\n\nFirst Citizen:\n"]


def free_port() -> int:
    """A TCP port free on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mib(pid: int) -> float:
    """Resident memory of a process, MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def wait_ready(base: str, proc: subprocess.Popen[bytes], timeout_s: float = 300) -> None:
    """Until ``/readyz`` answers 200 (the model is loaded); fails if the server exits."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"genloom serve exited with {proc.returncode} before it was ready")
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise SystemExit("genloom serve was not ready in time")


def client_loop(base: str, model: str, index: int, stop: threading.Event, results: list[dict]) -> None:
    """One client: completions one after another until ``stop``; every outcome appended to ``results``."""
    import openai

    client = openai.OpenAI(base_url=f"{base}/v1", api_key="soak", max_retries=0, timeout=120)
    i = 0
    while not stop.is_set():
        prompt = PROMPTS[(index + i) % len(PROMPTS)]
        max_tokens = (16, 32, 64)[i % 3]
        stream = i % 2 == 0
        t0 = time.perf_counter()
        try:
            if stream:
                tokens = 0
                for chunk in client.completions.create(
                    model=model, prompt=prompt, max_tokens=max_tokens, stream=True, seed=i
                ):
                    tokens += 1 if chunk.choices and chunk.choices[0].text else 0
            else:
                done = client.completions.create(model=model, prompt=prompt, max_tokens=max_tokens, seed=i)
                tokens = done.usage.completion_tokens if done.usage else 0
            results.append({"ok": True, "s": time.perf_counter() - t0, "tokens": tokens})
        except openai.APIStatusError as e:
            results.append({"ok": False, "kind": f"http_{e.status_code}", "s": time.perf_counter() - t0})
        except openai.APIError as e:
            results.append({"ok": False, "kind": type(e).__name__, "s": time.perf_counter() - t0})
        i += 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pipeline", type=Path, help="pipeline file whose champion is served")
    ap.add_argument("--minutes", type=float, default=10.0, help="how long the load lasts (default 10)")
    ap.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    ap.add_argument("--sample-s", type=float, default=5.0, help="seconds between memory readings")
    ap.add_argument("--serve-arg", action="append", default=[], help="extra argument of genloom serve")
    args = ap.parse_args()

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    genloom = Path(sys.executable).with_name("genloom")
    cmd = [str(genloom), "serve", str(args.pipeline), "--port", str(port), *args.serve_arg]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_ready(base, proc)
        import httpx

        model = httpx.get(f"{base}/v1/models", timeout=10).json()["data"][0]["id"]
        print(f"serving {model} on {base} (pid {proc.pid}); {args.clients} clients for {args.minutes:g} min")
        stop = threading.Event()
        results: list[dict] = []
        threads = [
            threading.Thread(target=client_loop, args=(base, model, i, stop, results), daemon=True)
            for i in range(args.clients)
        ]
        memory: list[tuple[float, float]] = []
        t0 = time.monotonic()
        for t in threads:
            t.start()
        end = t0 + args.minutes * 60
        while time.monotonic() < end:
            if proc.poll() is not None:
                raise SystemExit(f"genloom serve died during the soak (exit {proc.returncode})")
            memory.append((time.monotonic() - t0, rss_mib(proc.pid)))
            time.sleep(min(args.sample_s, max(0.0, end - time.monotonic())))
        memory.append((time.monotonic() - t0, rss_mib(proc.pid)))
        stop.set()
        for t in threads:
            t.join(timeout=180)
        wall = time.monotonic() - t0
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()

    ok = [r for r in results if r["ok"]]
    errors = Counter(r["kind"] for r in results if not r["ok"])
    latencies = sorted(r["s"] for r in ok)
    warm = next((m for s, m in memory if s >= 0.1 * args.minutes * 60), memory[0][1])
    final = memory[-1][1]
    growth = (final - warm) / warm
    out = {
        "minutes": args.minutes,
        "clients": args.clients,
        "requests": len(results),
        "errors": dict(errors),
        "tokens": sum(r["tokens"] for r in ok),
        "tokens_per_s": round(sum(r["tokens"] for r in ok) / wall, 1),
        "p50_s": round(statistics.median(latencies), 3) if latencies else None,
        "p99_s": round(latencies[int(0.99 * (len(latencies) - 1))], 3) if latencies else None,
        "rss_warm_mib": round(warm, 1),
        "rss_end_mib": round(final, 1),
        "rss_max_mib": round(max(m for _, m in memory), 1),
        "rss_growth": round(growth, 4),
        "cpu": os.uname().machine,
        "avx512_bf16": "avx512_bf16" in Path("/proc/cpuinfo").read_text(),
    }
    print(
        f"{out['requests']} requests, {sum(errors.values())} errors {dict(errors)}, {out['tokens_per_s']} tokens/s,"
        f" p50 {out['p50_s']} s, p99 {out['p99_s']} s; server RSS {warm:.0f} MiB after warm-up,"
        f" {final:.0f} MiB at the end ({100 * growth:+.1f}%)"
    )
    print(json.dumps(out))
    if errors or growth >= 0.10:
        sys.exit(1)


if __name__ == "__main__":
    main()
