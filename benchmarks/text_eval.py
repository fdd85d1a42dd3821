"""Cost and peak memory of a text model's evaluation on a large validation split.

Builds (``--build``) a prepared folder like the prepare stage writes: ``--val`` validation
records and ``--train`` training records (sentences of real text from ../shared/data/text, each
record 1-4 sentences), a byte-level BPE tokenizer, token memmaps, ``val_texts.parquet``, and a tiny
GPT trained for a few steps. Then, in a fresh process (``--eval``), runs the family's
``evaluate`` (held-out loss on ``--max-tokens`` tokens + the generation metrics with their
defaults: 64 samples of 64 new tokens, the training n-gram index, MiniLM Fréchet/MAUVE) and
prints each part's seconds and the process's peak RSS. A second figure, the evaluation with
the generation metrics off (``samples: 0``), is printed beside it as the reference; a third
(``--champion``) is the family's ``evaluate_champion`` of the same model on the same folder: the
path the evaluate stage takes for the current champion (its own tokenizer on the held-out texts).

Run:  OMP_NUM_THREADS=1 .venv/bin/python benchmarks/text_eval.py --dir /tmp/text_eval --val 100000 --train 100000
      OMP_NUM_THREADS=1 .venv/bin/python benchmarks/text_eval.py --quick   # 5k records each

The last line printed is one JSON object.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def peak_rss_mib() -> int:
    """This process's peak resident set (VmHWM; ru_maxrss would count the parent's at fork)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def sentences() -> list[str]:
    data = Path(os.environ.get("GENLOOM_SHARED_DATA") or ROOT.parent / "shared" / "data") / "text"
    out: list[str] = []
    for name in ("pride_and_prejudice.txt", "republic_gutenberg_raw.txt"):
        text = re.sub(r"\s+", " ", (data / name).read_text(encoding="utf-8"))
        out += [s.strip() for s in re.split(r"(?<=[.!?]) ", text) if 20 < len(s.strip()) < 400]
    return out


def records(pool: list[str], n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(pool) for _ in range(rng.randint(1, 4))) for _ in range(n)]


def build(folder: Path, n_val: int, n_train: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from genloom.models.tokenizer import TokenizerConfig, train_tokenizer
    from genloom.models.tokens import pack_tokens
    from genloom.train.config import TrainConfig
    from genloom.train.loop import train

    pool = sentences()
    train_docs, val_docs = records(pool, n_train, 0), records(pool, n_val, 1)
    prepared, model = folder / "prepared", folder / "model"
    prepared.mkdir(parents=True, exist_ok=True)
    model.mkdir(exist_ok=True)
    tok = train_tokenizer(iter(train_docs[:20_000]), TokenizerConfig(kind="bpe", vocab_size=2048))
    for d in (prepared, model):
        tok.save(str(d / "tokenizer.json"))
    pack_tokens(tok, iter(train_docs), prepared / "train.bin")
    pack_tokens(tok, iter(val_docs), prepared / "val.bin")
    pq.write_table(pa.table({"text": val_docs}), prepared / "val_texts.parquet", compression="zstd")
    cfg = TrainConfig(model={"type": "gpt", "preset": "tiny", "block_size": 64}, max_steps=60, batch_size=8)
    train(cfg, prepared / "train.bin", prepared / "val.bin", model)


def evaluate_as_champion(folder: Path, samples: int, max_tokens: int) -> dict[str, object]:
    """The family's ``evaluate_champion`` of the model on the folder (texts tokenised again)."""
    import torch

    torch.set_num_threads(1)
    from types import SimpleNamespace

    from genloom.models.base import family_of

    model, prepared = folder / "model", folder / "prepared"
    base = peak_rss_mib()
    t0 = time.perf_counter()
    cfg = SimpleNamespace(max_tokens=max_tokens, samples=samples, embeddings=True)
    metrics = family_of(model).evaluate_champion(model, prepared, cfg)
    return {
        "samples": samples,
        "seconds": {"champion": round(time.perf_counter() - t0, 2)},
        "peak_rss_mib_after_imports": round(base),
        "peak_rss_mib": round(peak_rss_mib()),
        "figures": {k: m.value for k, m in metrics.items()},
    }


def evaluate(folder: Path, samples: int, max_tokens: int) -> dict[str, object]:
    import torch

    torch.set_num_threads(1)
    from genloom.models.base import family_of
    from genloom.models.text_family import GenerationSettings, evaluate_generations, evaluate_text_model

    model, prepared = folder / "model", folder / "prepared"
    base = peak_rss_mib()
    t0 = time.perf_counter()
    loss = evaluate_text_model(model, prepared / "val.bin", max_tokens)
    seconds: dict[str, float] = {"loss": time.perf_counter() - t0}
    after_loss = peak_rss_mib()
    figures: dict[str, object] = dict(loss)
    if samples:
        res = evaluate_generations(model, prepared, GenerationSettings(samples=samples))
        seconds.update(res.seconds)
        figures.update(res.figures)
        figures["skipped"] = res.skipped
    family_of(model)  # the family resolves (config.json is a genloom model)
    peak = peak_rss_mib()
    return {
        "samples": samples,
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "peak_rss_mib_after_imports": round(base),
        "peak_rss_mib_after_loss": round(after_loss),
        "peak_rss_mib": round(peak),
        "figures": figures,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default="/tmp/genloom_text_eval")
    ap.add_argument("--val", type=int, default=100_000)
    ap.add_argument("--train", type=int, default=100_000)
    ap.add_argument("--max-tokens", type=int, default=200_000)
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--eval", action="store_true", help="(internal) evaluate an already built folder")
    ap.add_argument("--champion", action="store_true", help="also measure evaluate_champion")
    ap.add_argument("--as-champion", action="store_true", help="(internal) with --eval: evaluate_champion")
    args = ap.parse_args()
    folder = Path(args.dir)
    if args.eval:
        run = evaluate_as_champion if args.as_champion else evaluate
        print(json.dumps(run(folder, args.samples, args.max_tokens), default=str))
        return
    if args.quick:
        args.val = args.train = 5000
    t0 = time.perf_counter()
    if not (folder / "model" / "config.json").exists():
        build(folder, args.val, args.train)
    built = time.perf_counter() - t0
    runs: dict[str, dict[str, object]] = {}
    modes = [("generation", args.samples, False), ("loss_only", 0, False)]
    if args.champion:
        modes.append(("champion", args.samples, True))
    for name, samples, champion in modes:  # in fresh processes: each peak RSS is its own
        cmd = [sys.executable, __file__, "--eval", "--dir", str(folder), "--samples", str(samples)]
        cmd += ["--max-tokens", str(args.max_tokens)] + (["--as-champion"] if champion else [])
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        runs[name] = r = json.loads(out)
        print(f"{name} (samples={samples}): peak RSS {r['peak_rss_mib']} MiB, seconds {r['seconds']}")
    val_meta = json.loads((folder / "prepared" / "val.json").read_text())
    train_meta = json.loads((folder / "prepared" / "train.json").read_text())
    print(
        json.dumps(
            {
                "val_records": args.val,
                "train_records": args.train,
                "val_tokens": val_meta["n_tokens"],
                "train_tokens": train_meta["n_tokens"],
                "build_s": round(built, 1),
                "with_generation_metrics": runs["generation"],
                "reference_loss_only": runs["loss_only"],
                **({"champion": runs["champion"]} if "champion" in runs else {}),
            },
            default=str,
        )
    )


if __name__ == "__main__":
    main()
