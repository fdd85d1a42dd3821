"""Throughput of each augment / clean / preprocess step on real text, one process, one thread.

Documents: paragraphs of Pride and Prejudice and The Republic from ../shared/data/text, grouped
into about 1 KB documents. Each step runs on the same batches after its setup (model loading is
not timed). Prints one line per step (docs/s, MB/s), then one JSON object.

Run:  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/text_steps.py [--docs 4000] [--only quality,pii]
      OMP_NUM_THREADS=1 .venv/bin/python benchmarks/text_steps.py --quick   # 500 documents, under 2 minutes

The last line printed is one JSON object: documents, average size and docs/s + MB/s per step.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pyarrow as pa  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def documents(n: int) -> pa.Table:
    data = Path(os.environ.get("GENLOOM_SHARED_DATA") or ROOT.parent / "shared" / "data") / "text"
    paras: list[str] = []
    for name in ("pride_and_prejudice.txt", "republic_gutenberg_raw.txt"):
        paras += [p.strip() for p in (data / name).read_text(encoding="utf-8").split("\n\n") if p.strip()]
    docs, cur = [], ""
    k = 0
    while len(docs) < n:
        cur += ("\n\n" if cur else "") + paras[k % len(paras)]
        k += 1
        if len(cur) >= 1000:
            docs.append(cur)
            cur = ""
    return pa.table(
        {"id": [f"d{i}" for i in range(n)], "text": docs, "source": ["bench"] * n, "meta": ["{}"] * n}
    )


def steps() -> dict[str, Any]:
    from genloom.augment.back_translate import BackTranslateAugmenter
    from genloom.augment.bigram_flip import BigramFlipAugmenter
    from genloom.augment.noise import NoiseAugmenter
    from genloom.augment.synonyms import SynonymAugmenter
    from genloom.clean.dedup_minhash import MinHashDedup
    from genloom.clean.noise import NoiseClean
    from genloom.clean.pii import PiiMask
    from genloom.clean.quality import GopherQualityFilter
    from genloom.clean.spelling import SpellingClean
    from genloom.preprocess.coref import CorefMap
    from genloom.preprocess.language import LanguageMap
    from genloom.preprocess.lemmatize import LemmatizeMap
    from genloom.preprocess.lowercase import LowercaseMap
    from genloom.preprocess.ner import NerMap
    from genloom.preprocess.normalize import NormalizeMap
    from genloom.preprocess.parse import ParseMap
    from genloom.preprocess.pos import PosMap
    from genloom.preprocess.punctuation import PunctuationMap
    from genloom.preprocess.stem import StemMap
    from genloom.preprocess.stopwords import StopwordsMap
    from genloom.preprocess.tokenize import TokenizeMap

    return {
        "clean.noise": NoiseClean(urls="mask", emails="mask"),
        "clean.pii": PiiMask(),
        "clean.pii(+names)": PiiMask(kinds=["email", "credit_card", "ip", "phone", "name"]),
        "clean.quality": GopherQualityFilter(),
        "clean.spelling": SpellingClean(),
        "clean.dedup_minhash(xxhash64)": MinHashDedup(),
        "clean.dedup_minhash(blake2b)": MinHashDedup(hash="blake2b"),
        "preprocess.normalize": NormalizeMap(),
        "preprocess.lowercase": LowercaseMap(),
        "preprocess.punctuation": PunctuationMap(),
        "preprocess.tokenize(regex)": TokenizeMap(),
        "preprocess.tokenize(spacy)": TokenizeMap(backend="spacy"),
        "preprocess.tokenize(sentence,pysbd)": TokenizeMap(level="sentence", backend="pysbd"),
        "preprocess.stopwords": StopwordsMap(),
        "preprocess.stem": StemMap(),
        "preprocess.lemmatize(simplemma)": LemmatizeMap(backend="simplemma"),
        "preprocess.lemmatize(spacy)": LemmatizeMap(),
        "preprocess.language": LanguageMap(),
        "preprocess.pos": PosMap(),
        "preprocess.parse": ParseMap(),
        "preprocess.ner": NerMap(),
        "preprocess.coref": CorefMap(),
        "augment.bigram_flip": BigramFlipAugmenter(),
        "augment.noise": NoiseAugmenter(word_dropout=0.05),
        "augment.synonyms(no POS)": SynonymAugmenter(pos_tagger="none"),
        "augment.back_translate(apertium)": BackTranslateAugmenter(),
    }


def main() -> None:
    from genloom.core.steps import Fitted, StepContext

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=None, help="documents (default 4000; --quick: 500)")
    ap.add_argument("--only", default="", help="comma-separated name prefixes")
    ap.add_argument(
        "--quick", action="store_true", help="500 documents, 100 for model-bound steps: under 2 minutes"
    )
    args = ap.parse_args()
    t_all = time.perf_counter()
    table = documents(args.docs or (500 if args.quick else 4000))
    slow_docs = 100 if args.quick else 1000
    mb = sum(len(t.encode()) for t in table.column("text").to_pylist()) / 1e6
    batches = [table.slice(i, 1000) for i in range(0, table.num_rows, 1000)]
    results: dict[str, Any] = {}
    for name, step in steps().items():
        if args.only and not any(name.startswith(p) for p in args.only.split(",")):
            continue
        n = table.num_rows
        work = batches
        slow = any(
            k in name for k in ("spacy", "pos", "parse", "ner", "coref", "names", "apertium", "synonyms")
        )
        if slow:  # model-bound steps: a quarter of the documents is enough for a stable figure
            n = min(n, slow_docs)
            work = [table.slice(0, n)]
        try:
            step.ensure_setup()
        except Exception as e:  # a missing optional dependency: report it and go on
            print(f"{name:40s} skipped: {e}")
            continue
        ctx = StepContext()
        start = time.perf_counter()
        if isinstance(step, Fitted):
            state = step.fit(work)
            for b in work:
                step.run_fitted(b, state, ctx)
        else:
            for b in work:
                step.run(b, ctx)
        sec = time.perf_counter() - start
        rate = n / sec
        results[name] = {"docs_per_s": round(rate, 1), "mb_per_s": round(mb * n / table.num_rows / sec, 2)}
        print(f"{name:40s} {rate:10.1f} docs/s {results[name]['mb_per_s']:8.2f} MB/s")
    print(
        json.dumps(
            {
                "docs": table.num_rows,
                "avg_doc_chars": round(mb * 1e6 / table.num_rows),
                "quick": args.quick,
                "wall_s": round(time.perf_counter() - t_all, 1),
                "steps": results,
            }
        )
    )


if __name__ == "__main__":
    main()
