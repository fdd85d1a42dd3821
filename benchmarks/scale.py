"""Scale-out: the data stages on 1 and 2 local worker processes and on a 2-node Ray cluster, and
Ray tasks against Ray Data on the same work.

Two workloads, each run up to ``preprocess`` (the data stages) in a fresh store per configuration:

- ``quickstart``: examples/quickstart/pipeline.yaml with its model sections removed (the
  ``python_docs`` source: this interpreter's pydoc topics and stdlib docstrings, then dedup_exact,
  length >= 200, normalize);
- ``corpus``: the same clean and preprocess steps over a JSON Lines corpus generated from every file
  of ../shared/data/text: documents of 300-3,000 characters drawn from the real sentences in a
  seeded shuffle, each with its own id; 4% exact copies of an earlier document (dedup_exact drops
  them) and 4% short ones (the length filter drops them). ``--size-mb`` (1,000 by default, 16 with
  ``--quick``) of JSON Lines in ``--files`` files, one file per ingest shard.

Configurations: ``local_1`` (the local executor inline) and ``local_2`` (a 2-process pool), both on
a store folder; ``local_2_s3`` (the pool on moto's S3 server, the store a Ray cluster needs);
``ray_2node`` (a Ray cluster started here as tests/core/test_ray_cluster.py does: a head node and a
second node with one CPU each, the second node in a mount namespace where the project folder is an
empty tmpfs, ``RAY_AUTH_MODE=disabled``; the store on moto's S3 server, which runs in a process of
its own). The JSON source and ``python_docs`` read this machine's files, so on Ray their ingest
shards are pinned to the driver's node (one CPU); clean and preprocess run on both nodes. Each
configuration runs in a fresh Python process; its peak RSS (and the pool's largest worker's) is
its own, as the parent stays small (the corpus is written in a child too: a child's peak starts
at its parent's). Ray's workers are not children of the driver and are not measured. Seconds are
``Pipeline.run(until="preprocess")``: planning, starting the executor (pool or connection to the
cluster), the three stages. Ratios: ``speedup_2_vs_1`` (local_1 s / local_2 s), ``ray_vs_local_2``
and ``ray_vs_local_2_s3`` (Ray s / local s: above 1 is Ray's overhead), and the same for clean +
preprocess alone (the stages Ray spreads over both nodes). The outputs must agree across
configurations: rows per stage and a SHA-256 of the sorted record ids of preprocess.

Ray Data: the row-local work of clean and preprocess (the ``length`` filter then ``normalize``,
genloom's own step objects, ``Step.run`` on Arrow tables) over the ingest shards of ``local_2``
(Parquet under /tmp, which both nodes see), on the same cluster: (a) one Ray task per shard
(read_table -> steps -> write_table, what genloom's executor does), (b) ``ray.data.read_parquet ->
map_batches(batch_format="pyarrow", batch_size=None) -> write_parquet``. Rows and ids must agree.

``--quick`` runs the quickstart on ``local_1`` and ``local_2`` only (its 73 small ingest shards on
moto take 20-30 s a run at load 2-8) and the Ray Data comparison once; the full run runs both
workloads on all four configurations and the Ray Data comparison twice. The figures of
``--quick`` are a smoke check: at 16 MB, starting the pool or connecting to the cluster (seconds)
is much of each run.

Run:  .venv/bin/python benchmarks/scale.py --quick      # 16 MB corpus, about 2 minutes on 2 cores
      .venv/bin/python benchmarks/scale.py              # 1,000 MB corpus: 20.5 min at load 2.5-9
Needs genloom[ray,s3], moto[server] (the dev extra), unshare and root (for the second node's mount
namespace; without them the Ray configurations are left out and say so).
The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# token authentication off for the cluster's processes alike: Ray turns it on when
# ~/.ray/auth_token exists (a local ray.init() writes one)
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BUCKET = "genloom-bench"
KEY_ID = "genloom-bench-key-id"
SECRET = "genloom-bench-secret"
DATA_STAGES = ("ingest", "clean", "preprocess")
MODEL_SECTIONS = ("split", "prepare", "train", "evaluate", "register")
CONFIGS = ("local_1", "local_2", "local_2_s3", "ray_2node")
#: per-node object store: far above what a shard needs, far below /dev/shm
OBJECT_STORE_BYTES = 2_000_000_000


# -- the machine -------------------------------------------------------------------------------


def load() -> list[float]:
    """The 1, 5 and 15 minute load averages."""
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict[str, Any]:
    """The CPU model, cores, AVX-512 BF16, memory and the versions that matter here."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), "")
    flags = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    mem = next(
        (
            int(ln.split()[1]) // 1024
            for ln in Path("/proc/meminfo").read_text().splitlines()
            if ln.startswith("MemTotal")
        ),
        0,
    )
    versions = {}
    for mod in ("ray", "pyarrow", "s3fs", "moto"):
        try:
            versions[mod] = __import__(mod).__version__
        except ImportError:
            versions[mod] = None
    return {
        "model": model,
        "cores": os.cpu_count(),
        "avx512_bf16": "avx512_bf16" in flags,
        "mem_mb": mem,
        "python": sys.version.split()[0],
        "versions": versions,
        "load": load(),
    }


def peak_mb() -> dict[str, float]:
    """Peak RSS of this process and of its largest finished child, in MB."""
    me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"peak_mb": round(me, 1), "worker_peak_mb": round(kids, 1)}


# -- the corpus --------------------------------------------------------------------------------


def shared_text() -> Path:
    data = Path(os.environ.get("GENLOOM_SHARED_DATA") or ROOT.parent / "shared" / "data") / "text"
    if not data.is_dir():
        sys.exit(f"{data} is absent: set GENLOOM_SHARED_DATA to the shared data folder")
    return data


def sentences() -> list[str]:
    """The distinct sentences (20-400 characters) of every file of ../shared/data/text."""
    found: list[str] = []
    for path in sorted(shared_text().iterdir()):
        raw = path.read_text(encoding="utf-8", errors="replace")
        if path.suffix == ".tsv" or path.name.endswith("_labelled.txt"):
            cells = [max(line.split("\t"), key=len) for line in raw.splitlines() if line.strip()]
        else:
            cells = re.split(r"(?<=[.!?])\s+", re.sub(r"\s+", " ", raw))
        found += [c.strip() for c in cells if 20 <= len(c.strip()) <= 400]
    return list(dict.fromkeys(found))


def write_corpus(folder: Path, size_mb: float, files: int, seed: int = 0) -> dict[str, Any]:
    """``files`` JSON Lines files of about ``size_mb`` MB in all: {"id", "text"} documents."""
    rng = random.Random(seed)
    pool = sentences()
    folder.mkdir(parents=True, exist_ok=True)
    per_file = int(size_mb * 1e6 / files)
    docs = dupes = short = 0
    written = 0
    recent: list[str] = []
    for f in range(files):
        lines: list[str] = []
        size = 0
        while size < per_file:
            roll = rng.random()
            if roll < 0.04 and recent:
                text = rng.choice(recent)  # an exact copy under another id
                dupes += 1
            elif roll < 0.08:
                text = rng.choice(pool)[:150]  # shorter than the length filter's 200
                short += 1
            else:
                target = rng.randint(300, 3000)
                paras: list[str] = []
                n = 0
                while n < target:
                    para = " ".join(rng.choices(pool, k=rng.randint(2, 6)))
                    paras.append(para)
                    n += len(para) + 2
                text = "\n\n".join(paras)
                if len(recent) < 512:
                    recent.append(text)
                else:
                    recent[rng.randrange(512)] = text
            line = json.dumps({"id": f"d{docs:09d}", "text": text}, ensure_ascii=False)
            lines.append(line)
            size += len(line) + 1
            docs += 1
        (folder / f"part{f:04d}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        written += size
    return {
        "docs": docs,
        "exact_copies": dupes,
        "short": short,
        "mb": round(written / 1e6, 1),
        "files": files,
        "distinct_sentences": len(pool),
    }


# -- pipelines ---------------------------------------------------------------------------------


def quickstart_config() -> dict[str, Any]:
    """examples/quickstart/pipeline.yaml without its model sections."""
    import yaml

    cfg = yaml.safe_load((ROOT / "examples" / "quickstart" / "pipeline.yaml").read_text())
    return {k: v for k, v in cfg.items() if k not in MODEL_SECTIONS}


def corpus_config(corpus_dir: Path) -> dict[str, Any]:
    """The quickstart's clean and preprocess steps over the corpus, one file per ingest shard."""
    cfg = quickstart_config()
    cfg["name"] = "corpus"
    cfg["sources"] = [{"type": "json", "paths": [str(corpus_dir)], "id_field": "id", "text_field": "text"}]
    cfg["data"] = {"partitions_per_shard": 1}
    return cfg


def write_pipeline(folder: Path, cfg: dict[str, Any], config: str, store: str, address: str | None) -> Path:
    """The pipeline file of one configuration, with its own store and catalog."""
    import yaml

    cfg = dict(cfg)
    if config.startswith("ray"):
        cfg["executor"] = {"type": "ray", "address": address}
    else:
        cfg["executor"] = {"type": "local", "workers": int(config.split("_")[1])}
    cfg["store"] = {"path": store}
    cfg["catalog"] = {"url": f"sqlite:///{folder}/catalog-{config}.db"}
    path = folder / f"pipeline-{config}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def measure(path: Path) -> None:
    """Run the data stages of one pipeline file in this process; print the figures as JSON."""
    from genloom.core.progress import Reporter
    from genloom.pipeline import Pipeline

    nodes: dict[str, dict[str, int]] = {}

    class Placements(Reporter):
        """The Ray executor's per-stage placements arrive as messages."""

        def message(self, text: str, **fields: Any) -> None:
            if "nodes" in fields:
                nodes[text.split(":")[0]] = fields["nodes"]

    pipe = Pipeline.from_file(path, reporter=Placements())
    summary = pipe.run(until="preprocess")
    assert summary.status == "succeeded", summary.status
    stages = {
        r.stage: {"status": r.status, "seconds": round(r.seconds, 2), "rows": r.rows}
        for r in summary.stages
        if r.stage in DATA_STAGES
    }
    assert all(s["status"] == "ran" for s in stages.values()), stages
    # the stages' keys from the run itself: planning again would fingerprint every source file
    keys = {r.stage: r.key or "" for r in summary.stages}
    ids = sorted(
        v
        for t in pipe.store.iter_artifact("preprocess", keys["preprocess"], columns=["id"])
        for v in t.column("id").to_pylist()
    )
    shards = pipe.store.read_manifest("ingest", keys["ingest"])["shards"]
    out = {
        "seconds": round(summary.seconds, 2),
        "stages": stages,
        "ids_sha256": hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16],
        "ingest_shards": [pipe.store.shard_dir("ingest", k) + "/data.parquet" for k in shards],
        "nodes": nodes,
        **peak_mb(),
    }
    print(json.dumps(out))


def child(args: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run this script with ``args`` in a fresh process; its last stdout line as JSON."""
    out = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, check=False, cwd=str(ROOT), env=env
    )
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- moto and the cluster ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def s3_env(endpoint: str) -> dict[str, str]:
    """The environment of a process whose fsspec S3 filesystems use the moto server."""
    return {
        **os.environ,
        "FSSPEC_S3_ENDPOINT_URL": endpoint,
        "FSSPEC_S3_KEY": KEY_ID,
        "FSSPEC_S3_SECRET": SECRET,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


@contextlib.contextmanager
def moto_server(log: Path) -> Iterator[str]:
    """moto's S3 server in a process of its own (not sharing the driver's GIL), with the bucket."""
    import boto3

    port = free_port()
    code = (
        "import logging, time; logging.getLogger('werkzeug').setLevel(logging.ERROR)\n"
        "from moto.server import ThreadedMotoServer\n"
        f"ThreadedMotoServer(ip_address='127.0.0.1', port={port}, verbose=False).start()\n"
        "time.sleep(1e9)\n"
    )
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=out, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=KEY_ID,
            aws_secret_access_key=SECRET,
            region_name="us-east-1",
        )
        deadline = time.time() + 60
        while True:
            try:
                client.create_bucket(Bucket=BUCKET)
                break
            except Exception:
                if time.time() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.3)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def ray_bin() -> str:
    return str(Path(sys.executable).with_name("ray"))


def start_node(cmd: list[str], env: dict[str, str], log: Path, procs: list[subprocess.Popen[bytes]]) -> None:
    """Start a `ray start --block` process (added to ``procs``); wait until its node is up."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    procs.append(proc)
    deadline = time.time() + 180
    while "Ray runtime started" not in log.read_text(errors="replace"):
        if time.time() > deadline or proc.poll() is not None:
            raise RuntimeError(f"ray start did not come up: {log.read_text()[-2000:]}")
        time.sleep(0.5)


def stop_nodes(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM to every `ray start --block` at once: each stops the processes it started (and only
    those: `ray stop` would stop every Ray runtime of the machine), which takes seconds each."""
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextlib.contextmanager
def cluster(project: Path, env: dict[str, str], work: Path) -> Iterator[str]:
    """A head and a second node (one CPU each; the second cannot see ``project``); the address."""
    port = free_port()
    address = f"127.0.0.1:{port}"
    # Ray's socket paths must stay short: temporary folders directly under /tmp
    head_tmp, worker_tmp = tempfile.mkdtemp(prefix="glsh"), tempfile.mkdtemp(prefix="glsw")
    common = ["--num-cpus=1", f"--object-store-memory={OBJECT_STORE_BYTES}", "--disable-usage-stats"]
    head = [ray_bin(), "start", "--head", f"--port={port}", "--include-dashboard=false", *common]
    head += [f"--temp-dir={head_tmp}", "--block"]
    worker = [
        "unshare",
        "-m",
        "sh",
        "-c",
        f"mount -t tmpfs none {project} && exec {ray_bin()} start --address={address} {' '.join(common)}"
        f" --resources='{{\"second_node\": 1}}' --temp-dir={worker_tmp} --block",
    ]
    # no draining on SIGTERM: nothing runs once the benchmark stops the nodes, and each node would
    # otherwise wait up to 30 s for the GCS before it shuts down (measured: 32 s of every run)
    env = {**env, "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        start_node(head, env, work / "head.log", procs)
        start_node(worker, env, work / "worker.log", procs)
        wait_nodes(address, 2, env)
        yield address
    finally:
        stop_nodes(procs)
        shutil.rmtree(head_tmp, ignore_errors=True)
        shutil.rmtree(worker_tmp, ignore_errors=True)


def wait_nodes(address: str, n: int, env: dict[str, str], timeout: float = 120) -> None:
    """Wait until ``n`` nodes of the cluster are alive (asked from a short child process)."""
    code = (
        "import ray, sys, time\n"
        f"ray.init(address='{address}', include_dashboard=False, log_to_driver=False, configure_logging=False)\n"
        f"end = time.time() + {timeout}\n"
        f"while len([x for x in ray.nodes() if x['Alive']]) < {n}:\n"
        "    if time.time() > end: sys.exit('the cluster did not come up')\n"
        "    time.sleep(0.5)\n"
    )
    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True)


# -- Ray tasks against Ray Data ----------------------------------------------------------------


def _steps(pipeline: Path) -> list[Any]:
    """The length filter of clean and the normalize map of preprocess, as the pipeline built them."""
    from genloom.core.config import load_config

    cfg = load_config(pipeline)
    return [s for s in cfg.clean if s.type == "length"] + list(cfg.preprocess)


def _apply(table: Any, steps: list[Any]) -> Any:
    from genloom.core.steps import StepContext

    ctx = StepContext()
    for step in steps:
        step.ensure_setup()
        table = step.run(table, ctx)
    return table


def _task(src: str, dst: str, steps: list[Any]) -> int:
    import pyarrow.parquet as pq

    table = _apply(pq.read_table(src), steps)
    pq.write_table(table, dst)
    return int(table.num_rows)


def _written(folder: Path) -> tuple[int, str]:
    """Rows and a digest of the sorted ids of every Parquet file under ``folder``."""
    import pyarrow.parquet as pq

    ids = sorted(
        v
        for f in sorted(folder.rglob("*.parquet"))
        for v in pq.read_table(f, columns=["id"]).column("id").to_pylist()
    )
    return len(ids), hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]


def raydata(address: str, pipeline: Path, shards_file: Path, out: Path, reps: int) -> None:
    """Time the same work as Ray tasks and as a Ray Data pipeline; print the figures as JSON."""
    import ray
    import ray.data

    shards = json.loads(shards_file.read_text())
    steps = _steps(pipeline)
    ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    task = ray.remote(num_cpus=1)(_task)

    def run_tasks(dst: Path) -> float:
        dst.mkdir(parents=True)
        t0 = time.perf_counter()
        steps_ref = ray.put(steps)
        ray.get([task.remote(s, str(dst / f"{i:05d}.parquet"), steps_ref) for i, s in enumerate(shards)])
        return time.perf_counter() - t0

    def run_data(dst: Path) -> float:
        t0 = time.perf_counter()
        ds = ray.data.read_parquet(shards).map_batches(
            _apply, fn_kwargs={"steps": steps}, batch_format="pyarrow", batch_size=None
        )
        ds.write_parquet(str(dst))
        return time.perf_counter() - t0

    res: dict[str, Any] = {"tasks_seconds": [], "data_seconds": [], "shards": len(shards)}
    for rep in range(reps):  # alternated, so that neither always runs on a warmer cluster
        res["tasks_seconds"].append(round(run_tasks(out / f"tasks{rep}"), 2))
        res["data_seconds"].append(round(run_data(out / f"data{rep}"), 2))
    res["tasks_rows"], res["tasks_ids"] = _written(out / "tasks0")
    res["data_rows"], res["data_ids"] = _written(out / "data0")
    res["data_files"] = len(list((out / "data0").rglob("*.parquet")))
    ray.shutdown()
    print(json.dumps(res))


# -- the comparison ----------------------------------------------------------------------------


def ratios(runs: dict[str, Any]) -> dict[str, float | None]:
    """Speed-up of the pool and Ray's overhead, whole runs and clean + preprocess alone."""

    def later(r: dict[str, Any]) -> float:
        return float(r["stages"]["clean"]["seconds"] + r["stages"]["preprocess"]["seconds"])

    def ratio(a: str, b: str, f: Any) -> float | None:
        return round(f(runs[a]) / f(runs[b]), 3) if a in runs and b in runs else None

    def whole(r: dict[str, Any]) -> float:
        return float(r["seconds"])

    return {
        "speedup_2_vs_1": ratio("local_1", "local_2", whole),
        "ray_vs_local_2": ratio("ray_2node", "local_2", whole),
        "ray_vs_local_2_s3": ratio("ray_2node", "local_2_s3", whole),
        "s3_vs_disk_local_2": ratio("local_2_s3", "local_2", whole),
        "clean_preprocess_speedup_2_vs_1": ratio("local_1", "local_2", later),
        "clean_preprocess_ray_vs_local_2_s3": ratio("ray_2node", "local_2_s3", later),
    }


def check_equal(runs: dict[str, Any]) -> bool:
    """Rows per stage and the ids of preprocess agree across configurations."""
    keys = {
        (json.dumps({s: v["rows"] for s, v in r["stages"].items()}), r["ids_sha256"]) for r in runs.values()
    }
    return len(keys) == 1


def run_workload(
    name: str, cfg: dict[str, Any], work: Path, configs: list[str], endpoint: str | None, address: str | None
) -> dict[str, Any]:
    """Every configuration of one workload, each in a fresh store and process."""
    runs: dict[str, Any] = {}
    folder = work / "project" / name
    folder.mkdir(parents=True, exist_ok=True)
    for config in configs:
        on_s3 = config.endswith("s3") or config.startswith("ray")
        if on_s3 and endpoint is None:
            continue
        if config.startswith("ray") and address is None:
            continue
        store = f"s3://{BUCKET}/{name}/{config}" if on_s3 else str(work / "stores" / name / config)
        path = write_pipeline(folder, cfg, config, store, address)
        t0 = time.perf_counter()
        r = child(["--measure", str(path)], env=s3_env(endpoint) if endpoint else None)
        r["process_seconds"] = round(time.perf_counter() - t0, 1)  # with imports and the id check
        if on_s3 and endpoint:  # moto keeps every object in memory: free it for the next run
            import s3fs

            s3fs.S3FileSystem(key=KEY_ID, secret=SECRET, endpoint_url=endpoint).rm(
                f"{BUCKET}/{name}/{config}", recursive=True
            )
        r["load_after"] = load()
        runs[config] = r
        docs = r["stages"]["ingest"]["rows"]
        r["docs_per_s"] = round(docs / r["seconds"], 1)
        st = r["stages"]
        placed = "; ".join(f"{s} {sorted(n.values(), reverse=True)}" for s, n in r["nodes"].items())
        print(
            f"{name:10s} {config:10s} {r['seconds']:7.1f} s {r['docs_per_s']:>9.1f} docs/s | ingest "
            f"{st['ingest']['seconds']:.1f} s, clean {st['clean']['seconds']:.1f} s, preprocess "
            f"{st['preprocess']['seconds']:.1f} s | rows {st['ingest']['rows']} -> {st['clean']['rows']}"
            f" -> {st['preprocess']['rows']} | peak {r['peak_mb']:.0f} MB (worker {r['worker_peak_mb']:.0f})"
            + (f" | shards per node: {placed}" if placed else "")
            + f" | load {r['load_after']}",
            flush=True,
        )
    out: dict[str, Any] = {"runs": runs, "ratios": ratios(runs), "outputs_equal": check_equal(runs)}
    print(f"{name:10s} ratios {out['ratios']} outputs equal: {out['outputs_equal']}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--quick",
        action="store_true",
        help="a 16 MB corpus in 8 files, the quickstart on local_1/local_2 only, one Ray Data repetition",
    )
    ap.add_argument("--size-mb", type=float, default=None, help="corpus size (default 1000; --quick 16)")
    ap.add_argument(
        "--files", type=int, default=None, help="corpus files = ingest shards (default 64; --quick 8)"
    )
    ap.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated, of {','.join(CONFIGS)}")
    ap.add_argument("--no-quickstart", action="store_true", help="leave the quickstart workload out")
    ap.add_argument("--measure", help=argparse.SUPPRESS)
    ap.add_argument("--corpus", nargs=3, metavar=("FOLDER", "MB", "FILES"), help=argparse.SUPPRESS)
    ap.add_argument(
        "--raydata", nargs=4, metavar=("ADDRESS", "PIPELINE", "SHARDS", "OUT"), help=argparse.SUPPRESS
    )
    ap.add_argument("--reps", type=int, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.measure:
        measure(Path(a.measure))
        return
    if a.corpus:
        folder, mb, n = a.corpus
        print(json.dumps(write_corpus(Path(folder), float(mb), int(n))))
        return
    if a.raydata:
        address, pipeline, shards, out = a.raydata
        raydata(address, Path(pipeline), Path(shards), Path(out), a.reps or 1)
        return

    size_mb = a.size_mb or (16 if a.quick else 1000)
    files = a.files or (8 if a.quick else 64)
    reps = a.reps or (1 if a.quick else 2)
    configs = [c for c in a.configs.split(",") if c]
    info = machine()
    print(
        f"CPU: {info['model']} ({info['cores']} cores, {info['mem_mb']} MB), avx512_bf16: {info['avx512_bf16']}"
    )
    print(f"python {info['python']}, {info['versions']}; load average before: {info['load']}", flush=True)
    results: dict[str, Any] = {"machine": info, "quick": a.quick, "configs": configs}
    started = time.perf_counter()
    left_out: list[str] = []
    try:
        import boto3  # noqa: F401
        import moto.server  # noqa: F401
        import s3fs  # noqa: F401

        has_s3 = True
    except ImportError as e:
        has_s3 = False
        left_out.append(f"local_2_s3 and ray_2node: {e} (pip install 'genloom[s3]' 'moto[server]')")
    try:
        import ray  # noqa: F401

        can_cluster = has_s3 and shutil.which("unshare") is not None and os.geteuid() == 0
        if not can_cluster and has_s3:
            left_out.append("ray_2node: the second node's mount namespace needs unshare and root")
    except ImportError:
        can_cluster = False
        left_out.append("ray_2node: ray is not installed (pip install 'genloom[ray]')")
    if left_out:
        results["left_out"] = left_out
        print(f"left out: {left_out}")
    # under /tmp: the second node's namespace hides only the project folder, so the stores
    # (and the Parquet that the Ray Data comparison reads) stay visible to both nodes
    work = Path(tempfile.mkdtemp(prefix="genloom-bench-scale-"))
    try:
        t0 = time.perf_counter()
        # in a child process: a child's peak RSS starts at its parent's (getrusage), so the parent
        # that starts every measured process stays small
        corpus = child(["--corpus", str(work / "project" / "corpus_files"), str(size_mb), str(files)])
        corpus["seconds"] = round(time.perf_counter() - t0, 1)
        results["corpus_files"] = corpus
        print(f"corpus: {corpus}", flush=True)
        workloads = [] if a.no_quickstart else [("quickstart", quickstart_config())]
        workloads.append(("corpus", corpus_config(work / "project" / "corpus_files")))
        local = [c for c in configs if c in ("local_1", "local_2")]
        remote = [c for c in configs if c not in local]
        for name, cfg in workloads:
            results[name] = run_workload(name, cfg, work, local, None, None)
        if remote and has_s3:
            with contextlib.ExitStack() as stack:
                endpoint = stack.enter_context(moto_server(work / "moto.log"))
                env = s3_env(endpoint)
                address = None
                if "ray_2node" in remote and can_cluster:
                    t0 = time.perf_counter()
                    address = stack.enter_context(cluster(work / "project", env, work))
                    results["cluster_start_seconds"] = round(time.perf_counter() - t0, 1)
                    print(
                        f"cluster up in {results['cluster_start_seconds']} s at {address}"
                        f" ({time.perf_counter() - started:.0f} s in)",
                        flush=True,
                    )
                for name, cfg in workloads:
                    # --quick: the quickstart's 73 small ingest shards on moto take 20-30 s a run
                    # at load 2-8; they run in the full run only
                    todo = [] if a.quick and name == "quickstart" else remote
                    more = run_workload(name, cfg, work, todo, endpoint, address)
                    runs = {**results[name]["runs"], **more["runs"]}
                    results[name] = {"runs": runs, "ratios": ratios(runs), "outputs_equal": check_equal(runs)}
                    print(
                        f"{name:10s} all ratios {results[name]['ratios']} outputs equal: "
                        f"{results[name]['outputs_equal']}",
                        flush=True,
                    )
                corpus_runs = results["corpus"]["runs"]
                if address and "local_2" in corpus_runs:
                    print(f"Ray tasks vs Ray Data from {time.perf_counter() - started:.0f} s", flush=True)
                    shards_file = work / "ingest_shards.json"
                    shards_file.write_text(json.dumps(corpus_runs["local_2"]["ingest_shards"]))
                    pipeline = work / "project" / "corpus" / "pipeline-local_2.yaml"
                    rd = child(
                        [
                            "--raydata",
                            address,
                            str(pipeline),
                            str(shards_file),
                            str(work / "raydata"),
                            "--reps",
                            str(reps),
                        ],
                        env=env,
                    )
                    rd["ratio_data_vs_tasks"] = round(min(rd["data_seconds"]) / min(rd["tasks_seconds"]), 3)
                    rd["outputs_equal"] = (
                        rd["tasks_rows"] == rd["data_rows"] and rd["tasks_ids"] == rd["data_ids"]
                    )
                    rd["load_after"] = load()
                    results["ray_data"] = rd
                    print(
                        f"ray tasks {rd['tasks_seconds']} s vs ray.data {rd['data_seconds']} s over {rd['shards']}"
                        f" shards (length + normalize): ray.data / tasks {rd['ratio_data_vs_tasks']}, rows "
                        f"{rd['tasks_rows']} / {rd['data_rows']}, equal: {rd['outputs_equal']} | load {rd['load_after']}",
                        flush=True,
                    )
                print(f"stopping the cluster and moto at {time.perf_counter() - started:.0f} s", flush=True)
            print(f"stopped at {time.perf_counter() - started:.0f} s", flush=True)
        for r in (results.get("quickstart", {}).get("runs", {}), results["corpus"].get("runs", {})):
            for run in r.values():
                run.pop("ingest_shards", None)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["load_after"] = load()
    results["total_seconds"] = round(time.perf_counter() - started, 1)
    print(f"total {results['total_seconds']:.0f} s, load average after: {results['load_after']}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
