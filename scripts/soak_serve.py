"""The serving soak: `genloom serve` on a pipeline's champion under steady load for 10 minutes.

Starts ``genloom serve FILE`` in a child process (optionally after ``genloom run FILE`` trains
the champion, ``--train``), waits for ``/readyz``, then ``--clients`` clients send completions
one after another without pause for ``--seconds``: streaming and plain requests in turn, ``n`` 1
or 2, some with log-probabilities or a stop string. Every few seconds (``--interval``) it samples
the server's resident memory (the process and its children, from /proc). An error is a status
other than 200, a stream that ends without ``data: [DONE]`` or with an error event, a reply
without its usage, or a failed connection.

Memory growth is measured from the first sample after ``--warmup`` seconds (the allocator, the
tokenizer's caches, the prefix cache and the KV pool are warm by then) to the last one, and the
output says so. The last line printed is one JSON object.

Run (the quickstart, trained first in a folder of its own; the soak itself is not part of CI):

    mkdir -p /tmp/soak && cp examples/quickstart/pipeline.yaml /tmp/soak/
    .venv/bin/python scripts/soak_serve.py /tmp/soak/pipeline.yaml --train \\
        --set train.model.preset=mini --set train.time_budget=2m --seconds 600
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

PROMPTS = ("The json module", "def main():\n", "Return the", "class Queue:")


def genloom_command() -> list[str]:
    """How to run the `genloom` CLI of this interpreter's environment."""
    beside = Path(sys.executable).with_name("genloom")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("genloom")
    return [found] if found else [sys.executable, "-c", "from genloom.cli import main; main()"]


def free_port() -> int:
    """A TCP port free on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tree_rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` and its descendants, in MB (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, []))
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
        except OSError:
            continue
    return total


def request_body(model: str, w: int, k: int) -> dict[str, Any]:
    """The k-th request of client ``w``: four kinds in turn."""
    kind = k % 4
    body: dict[str, Any] = {
        "model": model,
        "prompt": PROMPTS[(w + k) % len(PROMPTS)],
        "max_tokens": 64,
        "temperature": 0.8,
        "seed": w * 1_000_000 + k,
        "stream": kind in (0, 2),
        "n": 2 if kind == 1 else 1,
    }
    if body["stream"]:
        body["stream_options"] = {"include_usage": True}
    if kind == 2:
        body["logprobs"] = 2
    if kind == 3:
        body["stop"] = ["\n\n"]
    return body


def completion_tokens(body: dict[str, Any], status: int, text: str) -> tuple[int, str | None]:
    """(completion tokens, None) for a good reply, else (0, what was wrong)."""
    if status != 200:
        return 0, f"{status} {text[:200]}"
    if not body["stream"]:
        return int(json.loads(text)["usage"]["completion_tokens"]), None
    events = [e[6:] for e in text.split("\n\n") if e.startswith("data: ")]
    if not events or events[-1] != "[DONE]":
        return 0, f"stream without [DONE]: {text[-200:]!r}"
    failed = [e for e in events if e.startswith('{"error"')]
    if failed:
        return 0, f"error event: {failed[0][:200]}"
    usage = json.loads(events[-2]).get("usage")
    if not usage:
        return 0, "stream without its usage chunk"
    return int(usage["completion_tokens"]), None


async def drive(
    base: str, model: str, clients: int, seconds: float, interval: float, pid: int
) -> dict[str, Any]:
    """``clients`` clients without pause for ``seconds``, the server's memory sampled meanwhile."""
    samples: list[tuple[float, float]] = []
    errors: list[str] = []
    ok = tokens = 0
    start = time.monotonic()

    async def client(http: httpx.AsyncClient, w: int) -> None:
        nonlocal ok, tokens
        k = 0
        while time.monotonic() - start < seconds:
            body = request_body(model, w, k)
            k += 1
            try:
                r = await http.post(f"{base}/v1/completions", json=body)
                n, error = completion_tokens(body, r.status_code, r.text)
            except (httpx.HTTPError, ValueError, KeyError) as e:
                n, error = 0, repr(e)
            if error is None:
                ok += 1
                tokens += n
            else:
                errors.append(error)

    async def sampler() -> None:
        while time.monotonic() - start < seconds:
            samples.append((round(time.monotonic() - start, 1), round(tree_rss_mb(pid), 1)))
            await asyncio.sleep(interval)

    async with httpx.AsyncClient(timeout=180) as http:
        await asyncio.gather(sampler(), *(client(http, w) for w in range(clients)))
    samples.append((round(time.monotonic() - start, 1), round(tree_rss_mb(pid), 1)))
    return {
        "wall_s": round(time.monotonic() - start, 1),
        "requests_ok": ok,
        "errors": len(errors),
        "first_errors": errors[:5],
        "completion_tokens": tokens,
        "samples": samples,
    }


def wait_ready(base: str, proc: subprocess.Popen[bytes], timeout_s: float) -> str:
    """The served model's name, once ``/readyz`` answers 200."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            r = httpx.get(f"{base}/readyz", timeout=5)
            if r.status_code == 200:
                return str(httpx.get(f"{base}/v1/models", timeout=5).json()["data"][0]["id"])
            if "failed" in r.text:
                raise RuntimeError(f"the server failed to load the model: {r.text[:300]}")
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"genloom serve exited with {proc.returncode} before it was ready")
        if time.monotonic() > deadline:
            raise RuntimeError(f"genloom serve was not ready after {timeout_s:.0f} s")
        time.sleep(0.5)


def cpu_model() -> str:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), "")
    return f"{name}, {os.cpu_count()} cores" + (", avx512_bf16" if "avx512_bf16" in text else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pipeline", type=Path, help="the pipeline file whose champion is served")
    ap.add_argument("--train", action="store_true", help="run `genloom run FILE` first (with --set)")
    ap.add_argument("--set", action="append", default=[], help="override for --train (KEY=VALUE)")
    ap.add_argument("--seconds", type=float, default=600, help="length of the soak (600: 10 minutes)")
    ap.add_argument("--clients", type=int, default=8, help="concurrent clients, each without pause")
    ap.add_argument("--interval", type=float, default=5, help="seconds between two memory samples")
    ap.add_argument("--warmup", type=float, default=60, help="growth is measured from this second on")
    ap.add_argument("--port", type=int, help="port of the server (default: a free one)")
    ap.add_argument(
        "--server-log",
        type=Path,
        help="the server's stderr (its access log; default: soak-serve.log beside FILE)",
    )
    ap.add_argument("serve_args", nargs="*", help="more `genloom serve` options, after --")
    args = ap.parse_args()
    genloom = genloom_command()
    cwd = args.pipeline.resolve().parent
    if args.train:
        overrides = [a for s in args.set for a in ("--set", s)]
        subprocess.run([*genloom, "run", str(args.pipeline.resolve()), *overrides], cwd=cwd, check=True)
    port = args.port or free_port()
    base = f"http://127.0.0.1:{port}"
    load_before = round(os.getloadavg()[0], 2)
    cmd = [*genloom, "serve", str(args.pipeline.resolve()), "--port", str(port), *args.serve_args]
    server_log = args.server_log or cwd / "soak-serve.log"
    log_file = server_log.open("wb")
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        model = wait_ready(base, proc, 300)
        print(f"soak: {model} on {base}, {args.clients} clients for {args.seconds:.0f} s", flush=True)
        result = asyncio.run(drive(base, model, args.clients, args.seconds, args.interval, proc.pid))
        alive = proc.poll() is None
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log_file.close()
    samples = result.pop("samples")
    rss = [mb for _, mb in samples]
    warm = next(((t, mb) for t, mb in samples if t >= args.warmup), samples[0])
    print(
        json.dumps(
            {
                "cpu": cpu_model(),
                "command": " ".join(cmd[len(genloom) :]),
                "clients": args.clients,
                "seconds": args.seconds,
                **result,
                "server_alive_at_end": alive,
                "server_log": str(server_log),
                "rss_mb": {
                    "start": rss[0],
                    "after_warmup": warm[1],
                    "after_warmup_at_s": warm[0],
                    "end": rss[-1],
                    "max": max(rss),
                },
                "rss_growth_pct_after_warmup": round(100 * (rss[-1] / warm[1] - 1), 2),
                "rss_samples": samples,
                "load_average_before_after": [load_before, round(os.getloadavg()[0], 2)],
            }
        )
    )


if __name__ == "__main__":
    main()
