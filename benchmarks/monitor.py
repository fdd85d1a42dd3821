"""Drift over a request log: genloom's monitor against Evidently's data drift preset, same data.

    python benchmarks/monitor.py --reference-python .venv-bench/bin/python           # 1,000,000 requests
    python benchmarks/monitor.py --quick --reference-python .venv-bench/bin/python   # 100,000 requests

The log: ``--requests`` completions (half a reference window, half a current one) written to a
SQLite ``requests`` table (genloom serve's schema). Prompts and outputs are real sentences of
../shared/data/text: the reference prompts are review sentences (UCI sentiment sentences, Amazon
Alexa reviews), the current prompts are half review sentences and half sentences of Plato's
Republic (a topic shift); outputs are sentences of Pride and Prejudice in both windows. Latency is
log-normal, 25% slower in the current window; token counts are 1.3 tokens a word with noise.
Shifted columns: prompt, prompt_words, prompt_tokens, latency_s. Not shifted: output,
output_words, completion_tokens.

Each side runs in a child process of its own (its peak RSS is its own):

- genloom (this interpreter): ``signals.window_profile`` of the reference window, then
  ``signals.run_checks`` of the current window against it, both read from SQLite with the
  monitor's streaming query (the words and lengths are computed from the texts as they are read).
  A column drifts when any of its checks breaches (prompt / output: ``*_oov_rate`` JS or chi2;
  the others PSI or KS).
- Evidently (``--reference-python``, Evidently 0.7 in .venv-bench): ``Report([DataDriftPreset()])``
  with prompt and output as text columns (its text drift: a domain classifier, ROC AUC > 0.55)
  and the numeric columns (Wasserstein distance, normed, > 0.1 with more than 1,000 rows), on
  pandas frames read from a Parquet copy of the same rows; the word counts are given to it
  precomputed. Its read time is reported apart and not counted.

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("GENLOOM_SHARED_DATA") or REPO.parent / "shared" / "data") / "text"
MODEL = "bench-model"
COLUMNS = [
    "prompt",
    "output",
    "prompt_words",
    "output_words",
    "prompt_tokens",
    "completion_tokens",
    "latency_s",
]
SHIFTED = {"prompt", "prompt_words", "prompt_tokens", "latency_s"}
#: genloom's signals of each column (a column drifts when one of them breaches)
GENLOOM_SIGNALS = {
    "prompt": "prompt_oov_rate",
    "output": "output_oov_rate",
    "prompt_words": "prompt_words",
    "output_words": "output_words",
    "prompt_tokens": "prompt_tokens",
    "completion_tokens": "completion_tokens",
    "latency_s": "latency_s",
}
DAY1, DAY2, DAY3 = "2026-01-01T00:00:00+00:00", "2026-01-02T00:00:00+00:00", "2026-01-03T00:00:00+00:00"


def _peak_mb() -> float:
    """This process's peak RSS in MiB: VmHWM of /proc/self/status (ru_maxrss is not used: Linux
    keeps it across exec, so a child would report the parent's peak at fork, here the generated log)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------------------------------------
# the data


def sentences() -> dict[str, list[str]]:
    """Review sentences, Republic sentences and Pride and Prejudice sentences."""
    if not DATA.is_dir():
        sys.exit(f"{DATA} is absent: set GENLOOM_SHARED_DATA to the shared data folder")
    reviews: list[str] = []
    for name in ("amazon_cells_labelled.txt", "imdb_labelled.txt", "yelp_labelled.txt"):
        for line in (DATA / name).read_text(encoding="utf-8", errors="replace").splitlines():
            text = line.rsplit("\t", 1)[0].strip()
            if text:
                reviews.append(text)
    for i, line in enumerate(
        (DATA / "amazon_alexa.tsv").read_text(encoding="utf-8", errors="replace").splitlines()
    ):
        cols = line.split("\t")
        if i and len(cols) > 3 and cols[3].strip():
            reviews.append(cols[3].strip())

    def book(name: str) -> list[str]:
        text = re.sub(r"\s+", " ", (DATA / name).read_text(encoding="utf-8", errors="replace"))
        parts = re.split(r"(?<=[.!?])\s+", text)
        return [p for p in parts if 3 <= len(p.split()) <= 80]

    return {
        "reviews": reviews,
        "republic": book("republic_gutenberg_raw.txt"),
        "austen": book("pride_and_prejudice.txt"),
    }


def make_log(n: int, work: Path, seed: int = 0) -> dict:
    """Write the n requests to work/log.db (genloom's requests table) and work/log.parquet."""
    from datetime import datetime, timedelta

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from sqlalchemy import create_engine, insert

    from genloom.serve.traffic import RequestLog, requests
    from genloom.stages.profile import split_words

    rng = np.random.default_rng(seed)
    pools = {k: np.array(v, dtype=object) for k, v in sentences().items()}
    half = n // 2
    ref_p = rng.choice(pools["reviews"], half)
    cur_p = np.where(
        rng.random(n - half) < 0.5,
        rng.choice(pools["reviews"], n - half),
        rng.choice(pools["republic"], n - half),
    )
    prompts = np.concatenate([ref_p, cur_p])
    outputs = rng.choice(pools["austen"], n)
    _, p_words = split_words(pa.array(prompts.tolist(), pa.large_string()))
    _, o_words = split_words(pa.array(outputs.tolist(), pa.large_string()))
    p_tok = np.maximum(1, np.rint(p_words * 1.3 + rng.normal(0, 1.5, n))).astype(np.int64)
    c_tok = np.maximum(1, np.rint(o_words * 1.3 + rng.normal(0, 1.5, n))).astype(np.int64)
    latency = np.concatenate(
        [rng.lognormal(np.log(0.8), 0.4, half), rng.lognormal(np.log(1.0), 0.4, n - half)]
    )
    db = work / "log.db"
    db.unlink(missing_ok=True)
    engine = create_engine(f"sqlite:///{db}")
    RequestLog(engine)
    t0 = datetime.fromisoformat(DAY1)
    step = 86400.0 / max(half, 1)
    with engine.begin() as c:
        for lo in range(0, n, 50_000):
            rows = []
            for i in range(lo, min(n, lo + 50_000)):
                day, j = (0, i) if i < half else (1, i - half)
                rows.append(
                    {
                        "request_id": f"r{i}",
                        "created_at": t0 + timedelta(days=day, seconds=j * step),
                        "endpoint": "/v1/completions",
                        "model": MODEL,
                        "version": 1,
                        "latency_s": float(latency[i]),
                        "prompt_tokens": int(p_tok[i]),
                        "completion_tokens": int(c_tok[i]),
                        "status": 200,
                        "prompt": prompts[i],
                        "output": outputs[i],
                    }
                )
            c.execute(insert(requests), rows)
    engine.dispose()
    table = pa.table(
        {
            "window": pa.array(["reference"] * half + ["current"] * (n - half)),
            "prompt": pa.array(prompts.tolist(), pa.large_string()),
            "output": pa.array(outputs.tolist(), pa.large_string()),
            "prompt_words": p_words,
            "output_words": o_words,
            "prompt_tokens": p_tok,
            "completion_tokens": c_tok,
            "latency_s": latency,
        }
    )
    pq.write_table(table, work / "log.parquet")
    return {"db_mb": round(db.stat().st_size / 2**20, 1), "pools": {k: len(v) for k, v in pools.items()}}


# ---------------------------------------------------------------------------------------------
# the two sides (children)


def child_genloom(work: Path) -> dict:
    from datetime import datetime

    # imported before the clock starts, as Evidently's libraries are: scipy.stats for the tests,
    # pandas because pyarrow imports it on its first pa.array (about 0.3 s on the 2-core machine)
    import pandas  # noqa: F401
    import scipy.stats  # noqa: F401
    from sqlalchemy import create_engine

    from genloom.monitor.signals import run_checks, window_profile

    engine = create_engine(f"sqlite:///{work / 'log.db'}")
    d1, d2, d3 = (datetime.fromisoformat(x) for x in (DAY1, DAY2, DAY3))
    base = _peak_mb()
    t0 = time.perf_counter()
    profile = window_profile(engine, MODEL, d1, d2)
    t1 = time.perf_counter()
    report = run_checks(engine, MODEL, 1, profile, "reference-window", False, d2, d3, record=False)
    t2 = time.perf_counter()
    drift: dict[str, bool] = {}
    scores: dict[str, dict] = {}
    for col, signal in GENLOOM_SIGNALS.items():
        checks = [c for c in report.checks if c.signal == signal]
        if not checks or any(c.skipped for c in checks):
            raise SystemExit(f"genloom gave no check of {signal}: {[c.skipped for c in checks]}")
        drift[col] = any(c.breached for c in checks)
        scores[col] = {c.method: (round(c.score, 4), c.breached) for c in checks}
    return {
        "seconds": t2 - t0,
        "reference_s": t1 - t0,
        "current_s": t2 - t1,
        "requests": report.requests + profile["window"]["requests"],
        "drift": drift,
        "scores": scores,
        "rss_before_mb": base,
    }


def child_evidently(work: Path) -> dict:
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    t0 = time.perf_counter()
    df = pd.read_parquet(work / "log.parquet")
    ref = df[df["window"] == "reference"][COLUMNS].reset_index(drop=True)
    cur = df[df["window"] == "current"][COLUMNS].reset_index(drop=True)
    del df
    read_s = time.perf_counter() - t0
    base = _peak_mb()
    t1 = time.perf_counter()
    dd = DataDefinition(text_columns=["prompt", "output"], numerical_columns=COLUMNS[2:])
    snap = Report([DataDriftPreset()]).run(
        Dataset.from_pandas(cur, data_definition=dd), Dataset.from_pandas(ref, data_definition=dd)
    )
    seconds = time.perf_counter() - t1
    drift: dict[str, bool] = {}
    scores: dict[str, dict] = {}
    for m in snap.dict()["metrics"]:
        cfg = m.get("config") or {}
        if cfg.get("column") not in COLUMNS:
            continue
        method, threshold, value = str(cfg.get("method")), float(cfg["threshold"]), float(m["value"])
        # p-value tests drift below their threshold, distances (and the text classifier's ROC AUC) above it
        p_value = "p_value" in method.lower() or "test" in method.lower()
        drift[cfg["column"]] = value < threshold if p_value else value >= threshold
        scores[cfg["column"]] = {method: (round(value, 4), drift[cfg["column"]]), "threshold": threshold}
    return {"seconds": seconds, "read_s": read_s, "drift": drift, "scores": scores, "rss_before_mb": base}


def run_child(python: str, side: str, work: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    res = subprocess.run(
        [python, __file__, "--child", side, "--work", str(work)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if res.returncode != 0:
        raise SystemExit(f"{side} child failed:\n{res.stderr[-4000:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["child_s"] = time.perf_counter() - t0
    out["load_before"] = round(load, 2)
    return out


def compare(args: argparse.Namespace) -> dict:
    import tempfile

    n = args.requests or (100_000 if args.quick else 1_000_000)
    check = subprocess.run(
        [args.reference_python, "-c", "import evidently; print(evidently.__version__)"],
        capture_output=True,
        text=True,
    )
    if check.returncode != 0:
        sys.exit(f"{args.reference_python} has no evidently (make bench-venv): {check.stderr.strip()[-300:]}")
    with tempfile.TemporaryDirectory(prefix="genloom-bench-monitor-") as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        info = make_log(n, work)
        print(
            f"log of {n:,} requests written in {time.perf_counter() - t0:.1f} s ({info['db_mb']} MB SQLite)",
            file=sys.stderr,
        )
        g = run_child(sys.executable, "genloom", work)
        print(f"genloom: {g['seconds']:.1f} s, peak {g['peak_mb']:.0f} MiB", file=sys.stderr)
        e = run_child(args.reference_python, "evidently", work)
        print(
            f"evidently: {e['seconds']:.1f} s (+{e['read_s']:.1f} s read), peak {e['peak_mb']:.0f} MiB",
            file=sys.stderr,
        )
    agree = {c: g["drift"][c] == e["drift"].get(c) for c in COLUMNS}
    print(f"\n{'column':18} {'shifted':>8} {'genloom':>8} {'evidently':>10}")
    for c in COLUMNS:
        print(f"{c:18} {str(c in SHIFTED):>8} {str(g['drift'][c]):>8} {str(e['drift'].get(c)):>10}")
    speedup = e["seconds"] / g["seconds"]
    print(
        f"\ngenloom {g['seconds']:.1f} s vs Evidently {e['seconds']:.1f} s: {speedup:.1f}x; agreement {sum(agree.values())}/{len(COLUMNS)}"
    )
    return {
        "benchmark": "monitor",
        "requests": n,
        "evidently_version": check.stdout.strip(),
        "genloom_s": round(g["seconds"], 2),
        "genloom_reference_s": round(g["reference_s"], 2),
        "genloom_current_s": round(g["current_s"], 2),
        "genloom_peak_mb": round(g["peak_mb"], 1),
        "evidently_s": round(e["seconds"], 2),
        "evidently_read_s": round(e["read_s"], 2),
        "evidently_peak_mb": round(e["peak_mb"], 1),
        "speedup": round(speedup, 2),
        "agreement": round(sum(agree.values()) / len(COLUMNS), 3),
        "disagree": [c for c, ok in agree.items() if not ok],
        "genloom_correct": sum(g["drift"][c] == (c in SHIFTED) for c in COLUMNS),
        "evidently_correct": sum(e["drift"].get(c) == (c in SHIFTED) for c in COLUMNS),
        "columns": {
            c: {"shifted": c in SHIFTED, "genloom": g["scores"][c], "evidently": e["scores"].get(c)}
            for c in COLUMNS
        },
        "load_before": [g["load_before"], e["load_before"]],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="100,000 requests instead of 1,000,000")
    ap.add_argument("--requests", type=int, help="how many requests to log (both windows together)")
    ap.add_argument(
        "--reference-python",
        default=str(REPO / ".venv-bench" / "bin" / "python"),
        help="interpreter with evidently (default .venv-bench/bin/python)",
    )
    ap.add_argument("--work", help="keep the log here (default: a temporary folder)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        work = Path(args.work)
        res = child_genloom(work) if args.child == "genloom" else child_evidently(work)
        res["peak_mb"] = _peak_mb()
        print(json.dumps(res))
        return
    print(json.dumps(compare(args)))


if __name__ == "__main__":
    main()
