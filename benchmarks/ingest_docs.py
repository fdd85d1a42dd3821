"""Document ingestion: genloom's ``files`` source vs MarkItDown on the same folder, in one run.

Each side converts every file of the folder in its own child process (so peak memory is its
own), one file after another in one process (MarkItDown has no parallel mode; genloom's process
pool would add a second core). Speed is files and MB per second of in-process conversion time,
imports excluded (the method of ../shared/notes/peer-anchors.md). Similarity is the character
similarity (difflib ratio, whitespace runs collapsed) of the text of the documents that ship a
reference text (textract-raw_text.pdf/.doc/.pptx); a file a converter fails on scores 0.

    python benchmarks/ingest_docs.py                    # shared docs folder x4 (200 files)
    python benchmarks/ingest_docs.py --quick            # x1 (50 files), under 2 minutes
    python benchmarks/ingest_docs.py --csv-gb 2         # stream a generated 2 GB CSV, report peak memory

MarkItDown runs in the interpreter given by ``--reference-python`` (default: ``$MARKITDOWN_PYTHON``,
else this one); install it there with ``pip install 'markitdown[pdf,docx,pptx,xlsx,xls,outlook]'``.
The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_FOLDER = Path(os.environ.get("GENLOOM_SHARED_DATA", REPO.parent / "shared" / "data")) / "docs"

# document -> its reference text (relative to the docs folder)
REFERENCES = {
    "pdf/textract-raw_text.pdf": "pdf/textract-raw_text.txt",
    "office/textract-raw_text.doc": "office/textract-raw_text.doc.txt",
    "office/textract-raw_text.pptx": "office/textract-raw_text.pptx.txt",
}


def _norm(s: str) -> str:
    return " ".join(s.split())


def similarity(a: str, b: str) -> float:
    """difflib ratio of two texts with whitespace runs collapsed to one space."""
    return difflib.SequenceMatcher(None, _norm(a), _norm(b), autojunk=False).ratio()


# ---------------------------------------------------------------------------------------------
# children: convert every file, print one JSON line


def child_genloom(files: list[str], ocr: str) -> dict:
    """Convert with genloom's files source, one partition (file) at a time."""
    from genloom.core.steps import StepContext
    from genloom.sources.files import FilesSource

    src = FilesSource(paths=files, options={"pdf": {"ocr": ocr}})
    ctx = StepContext()
    src.ensure_setup()
    per_file: dict[str, dict] = {}
    total = 0.0
    for p in src.partitions():
        before = len(ctx.rejected)
        t0 = time.perf_counter()
        texts = [t for table in src.run_partition(p, ctx) for t in table.column("text").to_pylist()]
        dt = time.perf_counter() - t0
        total += dt
        per_file[p] = {
            "s": dt,
            "ok": len(ctx.rejected) == before or bool(texts),
            "text": "\n\n".join(x or "" for x in texts),
        }
    return {"seconds": total, "files": per_file, "rejected": len(ctx.rejected)}


def child_markitdown(files: list[str], ocr: str) -> dict:
    """Convert with one MarkItDown() instance, defaults (no plugins, no LLM)."""
    from markitdown import MarkItDown

    md = MarkItDown()
    per_file: dict[str, dict] = {}
    total = 0.0
    failed = 0
    for f in files:
        t0 = time.perf_counter()
        try:
            text = md.convert(f).text_content or ""
            ok = True
        except Exception:
            text, ok = "", False
            failed += 1
        dt = time.perf_counter() - t0
        total += dt
        per_file[f] = {"s": dt, "ok": ok, "text": text}
    return {"seconds": total, "files": per_file, "rejected": failed}


def run_child(python: str, side: str, files: list[str], ocr: str) -> dict:
    """Run one side in a fresh process; add its peak RSS (MiB)."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(files, f)
        listing = f.name
    try:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
        cmd = [python, __file__, "--child", side, "--files-json", listing, "--ocr", ocr]
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if out.returncode != 0:
            raise SystemExit(f"{side} child failed:\n{out.stderr[-3000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        os.unlink(listing)


# ---------------------------------------------------------------------------------------------
# the comparison


def make_workload(folder: Path, copies: int, dest: Path) -> list[str]:
    """The folder's files copied ``copies`` times with a ``rep{k}__`` prefix (extensions kept)."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    out = []
    for k in range(copies):
        for p in files:
            rel = p.relative_to(folder)
            target = dest / rel.parent / f"rep{k}__{rel.name}"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, target)
            out.append(str(target))
    return sorted(out)


def score(result: dict, folder: Path, workdir: Path) -> float:
    """Mean similarity over the reference documents of the first copy."""
    sims = []
    for doc, ref in REFERENCES.items():
        rel = Path(doc)
        key = str(workdir / rel.parent / f"rep0__{rel.name}")
        text = result["files"].get(key, {}).get("text", "")
        sims.append(similarity(text, (folder / ref).read_text("utf-8")))
    return sum(sims) / len(sims)


def compare(args: argparse.Namespace) -> dict:
    folder = Path(args.folder)
    copies = 1 if args.quick else args.copies
    with tempfile.TemporaryDirectory(prefix="genloom-bench-") as tmp:
        work = Path(tmp)
        files = make_workload(folder, copies, work)
        mb = sum(os.path.getsize(f) for f in files) / 1e6
        print(f"workload: {len(files)} files, {mb:.1f} MB ({folder} x{copies})", flush=True)
        gl = run_child(sys.executable, "genloom", files, args.ocr)
        ref_python = args.reference_python or os.environ.get("MARKITDOWN_PYTHON") or sys.executable
        mid = run_child(ref_python, "markitdown", files, args.ocr)
        rows = []
        for name, res in (("genloom", gl), ("markitdown", mid)):
            res["files_per_s"] = len(files) / res["seconds"]
            res["mb_per_s"] = mb / res["seconds"]
            res["similarity"] = score(res, folder, work)
            rows.append((name, res))
        print(
            f"{'':12} {'files/s':>9} {'MB/s':>7} {'seconds':>8} {'peak MiB':>9} {'similarity':>10} {'failed/rejected':>15}"
        )
        for name, r in rows:
            print(
                f"{name:12} {r['files_per_s']:9.2f} {r['mb_per_s']:7.3f} {r['seconds']:8.2f} {r['peak_mb']:9.0f}"
                f" {r['similarity']:10.4f} {r['rejected']:15d}"
            )
        for doc in REFERENCES:
            rel = Path(doc)
            key = str(work / rel.parent / f"rep0__{rel.name}")
            sims = [
                similarity(
                    r["files"].get(key, {}).get("text", ""), (folder / REFERENCES[doc]).read_text("utf-8")
                )
                for _, r in rows
            ]
            print(f"  similarity {doc}: genloom {sims[0]:.4f}, markitdown {sims[1]:.4f}")
        slow = sorted(gl["files"].items(), key=lambda kv: -kv[1]["s"])[:3]
        print("  slowest genloom files: " + ", ".join(f"{Path(k).name} {v['s']:.2f}s" for k, v in slow))
        return {
            "files": len(files),
            "mb": round(mb, 2),
            "files_per_s": round(gl["files_per_s"], 2),
            "reference_files_per_s": round(mid["files_per_s"], 2),
            "ratio": round(gl["files_per_s"] / mid["files_per_s"], 2),
            "mb_per_s": round(gl["mb_per_s"], 3),
            "reference_mb_per_s": round(mid["mb_per_s"], 3),
            "similarity": round(gl["similarity"], 4),
            "reference_similarity": round(mid["similarity"], 4),
            "rejected": gl["rejected"],
            "reference_failed": mid["rejected"],
            "peak_mb": round(gl["peak_mb"], 1),
            "reference_peak_mb": round(mid["peak_mb"], 1),
            "ocr": args.ocr,
        }


# ---------------------------------------------------------------------------------------------
# streaming a large CSV


def csv_stream(gb: float) -> dict:
    """Write a ``gb`` GB CSV in a temporary folder, stream it through the csv source in a child."""
    with tempfile.TemporaryDirectory(prefix="genloom-csv-") as tmp:
        path = Path(tmp) / "big.csv"
        target = int(gb * 1e9)
        row = "{i},user{m},{v:.3f},The quick brown fox jumps over the lazy dog number {i}.,{c}\n"
        written = 0
        with open(path, "w") as f:
            f.write("id,user,score,comment,category\n")
            i = 0
            while written < target:
                chunk = "".join(
                    row.format(i=j, m=j % 9973, v=j * 0.37 % 100, c="abcde"[j % 5])
                    for j in range(i, i + 100_000)
                )
                f.write(chunk)
                written += len(chunk)
                i += 100_000
        print(f"csv: {written / 1e9:.2f} GB, {i} rows written", flush=True)
        code = (
            "import json, resource, time\n"
            "from genloom.core.steps import StepContext\n"
            "from genloom.sources.csv import CsvSource\n"
            f"src = CsvSource(paths=[{str(path)!r}], text_template='{{user}}: {{comment}}')\n"
            "ctx = StepContext(); t0 = time.perf_counter(); rows = 0; batches = 0\n"
            "for p in src.partitions():\n"
            "    for t in src.run_partition(p, ctx):\n"
            "        rows += t.num_rows; batches += 1\n"
            "dt = time.perf_counter() - t0\n"
            "print(json.dumps({'rows': rows, 'batches': batches, 'seconds': dt, 'rejected': len(ctx.rejected),"
            " 'peak_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))\n"
        )
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
        )
        res = json.loads(out.stdout.strip().splitlines()[-1])
        res["gb"] = round(written / 1e9, 3)
        res["mb_per_s"] = round(written / 1e6 / res["seconds"], 1)
        print(
            f"csv stream: {res['rows']} rows in {res['batches']} batches, {res['seconds']:.1f} s "
            f"({res['mb_per_s']} MB/s), peak {res['peak_mb']:.0f} MiB, rejected {res['rejected']}"
        )
        return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--folder", default=str(DEFAULT_FOLDER), help="folder of documents (default: shared docs)"
    )
    ap.add_argument("--copies", type=int, default=4, help="copies of the folder in the workload (default 4)")
    ap.add_argument("--quick", action="store_true", help="one copy (50 files): under 2 minutes")
    ap.add_argument(
        "--ocr", choices=["auto", "never"], default="auto", help="genloom OCR of scanned PDF pages"
    )
    ap.add_argument("--reference-python", help="interpreter with markitdown installed")
    ap.add_argument("--csv-gb", type=float, default=0.0, help="also stream a generated CSV of this many GB")
    ap.add_argument("--child", choices=["genloom", "markitdown"], help=argparse.SUPPRESS)
    ap.add_argument("--files-json", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        files = json.loads(Path(args.files_json).read_text())
        fn = child_genloom if args.child == "genloom" else child_markitdown
        res = fn(files, args.ocr)
        res["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(res))
        return
    result = compare(args)
    if args.csv_gb:
        c = csv_stream(args.csv_gb)
        result.update(
            {
                "csv_gb": c["gb"],
                "csv_rows": c["rows"],
                "csv_mb_per_s": c["mb_per_s"],
                "csv_peak_mb": round(c["peak_mb"], 1),
            }
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
