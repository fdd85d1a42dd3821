"""Synthetic tables: genloom's tabular_gan and tabular_vae against SDV's CTGAN and TVAE on Adult, in one run.

    python benchmarks/tabular_synth.py --reference-python .venv-bench/bin/python           # 50 epochs, all rows
    python benchmarks/tabular_synth.py --quick --reference-python .venv-bench/bin/python   # 10 epochs, 5,000 rows
    python benchmarks/tabular_synth.py --epochs 30 --rows 10000 --synthesizers genloom_vae,sdv_tvae

Data: ../shared/data/tabular/adult-train.csv to fit (32,561 rows; ``--rows N`` takes N of them,
drawn with seed 0, kept in file order), adult-test.csv to test (16,281 rows; its labels end in
'.', stripped). Each pair (genloom_gan / sdv_ctgan, genloom_vae / sdv_tvae) trains for the same
epochs with the same batch size (500) and the papers' default widths, on the same threads.

Each synthesizer fits and samples in a child process of its own, so its peak memory (the
child's maximum RSS through fitting and sampling, taken before the child writes the rows out for
the scorer; ``child_peak_mb`` is the whole child's, the writing included) is its own: genloom's children run in this interpreter, SDV's in
``--reference-python`` (default ``.venv-bench/bin/python``, where ``make bench-venv`` installs
SDV; SDV is under the Business Source License, a benchmark reference, never a genloom
dependency). genloom is used as a user would: a pipeline file in a temporary folder pointing at
the CSV (``column_names``, ``null_values: ["?"]``), ``Pipeline.from_file(...).run()``, then
``Pipeline.sample(n, seed=0)``.

- fit seconds: genloom's prepare + train stages (fitting the data transformer, encoding,
  training; ingest and evaluate are shown apart), SDV's ``fit(df)`` (its transformers + training);
  each child has scikit-learn loaded before its clock starts (SDV's import loads it; genloom's
  child imports ``sklearn.mixture`` first, ``preload_s``), neither has torch's compiler, which
  torch loads in the first optimizer of either;
- sampling rows/s: as many rows as the training table, one call; genloom's sampling includes its
  privacy filter (rows closer to a training row than the holdout's 1st percentile are rejected
  and redrawn), also timed with the filter off;
- scores, computed by ONE scorer for every synthesizer (a child in the reference interpreter):
  SDMetrics' QualityReport against the training rows (column shapes, column-pair trends,
  overall); train-on-synthetic-test-on-real accuracy and F1 (">50K" positive) of
  HistGradientBoostingClassifier predicting income, next to the same classifier trained on the
  real rows; DCR, the distance of a synthetic row to its closest training row (numeric columns
  standardised, categorical one-hot / sqrt 2), median and share of exact copies, next to the
  real holdout's.

The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("GENLOOM_SHARED_DATA", REPO.parent / "shared" / "data")) / "tabular"
COLUMNS = [
    "age",
    "workclass",
    "fnlwgt",
    "education",
    "education-num",
    "marital-status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "capital-gain",
    "capital-loss",
    "hours-per-week",
    "native-country",
    "income",
]
NUMERIC = ["age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week"]
TARGET, POSITIVE = "income", ">50K"
# name -> (side, model); each genloom family against the SDV synthesizer of the same paper
SYNTHESIZERS = {
    "genloom_gan": ("genloom", "tabular_gan"),
    "sdv_ctgan": ("sdv", "ctgan"),
    "genloom_vae": ("genloom", "tabular_vae"),
    "sdv_tvae": ("sdv", "tvae"),
    # differentially private (DP-SGD, epsilon PRIVATE_EPSILON): not in the default list
    "genloom_gan_dp": ("genloom", "tabular_gan"),
    "genloom_vae_dp": ("genloom", "tabular_vae"),
}
DEFAULT_SYNTHESIZERS = ["genloom_gan", "sdv_ctgan", "genloom_vae", "sdv_tvae"]
PRIVATE_EPSILON, PRIVATE_DELTA = 3.0, 1e-5
PAIRS = {"genloom_gan": "sdv_ctgan", "genloom_vae": "sdv_tvae"}
BATCH_SIZE = 500
VAL_FRACTION = 0.02  # genloom holds out 2% of the rows for its own evaluation stage
DCR_ROWS = 5_000  # synthetic (and holdout) rows whose distance to the training rows is measured


# ---------------------------------------------------------------------------------------------
# the machine


def machine() -> dict[str, Any]:
    """CPU model, its vector extensions that matter for matmuls, cores and load."""
    model, flags = "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model == "unknown":
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
    return {
        "cpu": model,
        "flags": [f for f in wanted if f in flags],
        "cores": os.cpu_count(),
        "load": [round(x, 2) for x in os.getloadavg()],
    }


# ---------------------------------------------------------------------------------------------
# the workload


def write_workload(work: Path, rows: int | None) -> tuple[Path, Path, int, int]:
    """train.csv (all of adult-train, or ``rows`` of it drawn with seed 0) and test.csv (labels
    without their trailing '.'), both in the original format: no header, ", " separators."""
    import numpy as np

    lines = [ln for ln in (DATA / "adult-train.csv").read_text().splitlines() if ln.strip()]
    if rows is not None and rows < len(lines):
        keep = np.sort(np.random.default_rng(0).choice(len(lines), size=rows, replace=False))
        lines = [lines[i] for i in keep]
    test = [
        ln.rstrip().removesuffix(".")
        for ln in (DATA / "adult-test.csv").read_text().splitlines()
        if ln.strip() and not ln.startswith("|")
    ]
    train_csv, test_csv = work / "train.csv", work / "test.csv"
    train_csv.write_text("\n".join(lines) + "\n")
    test_csv.write_text("\n".join(test) + "\n")
    return train_csv, test_csv, len(lines), len(test)


def read_adult(path: Path) -> Any:
    """An Adult CSV as pandas: numbers as int64, categories as strings, '?' as missing."""
    import pandas as pd

    return pd.read_csv(
        path, header=None, names=COLUMNS, skipinitialspace=True, na_values=["?"], keep_default_na=False
    )


# ---------------------------------------------------------------------------------------------
# children: fit, sample, write the synthetic rows, print one JSON line


def genloom_pipeline(
    folder: Path, model_type: str, train_csv: Path, epochs: int, threads: int, private: bool = False
) -> Path:
    """The pipeline file a user would write for this table (with ``private``, DP-SGD at epsilon 3)."""
    import yaml

    model: dict[str, Any] = {"type": model_type, "epochs": epochs, "batch_size": BATCH_SIZE, "target": TARGET}
    if model_type == "tabular_vae":
        # the VAE's decoder reads the label (a conditional VAE, ``condition_on``): chosen on a
        # validation split of adult-train.csv (docs/tabular.md, run 10), never on adult-test.csv
        model["condition_on"] = [TARGET]
    if private:
        model["privacy"] = {"epsilon": PRIVATE_EPSILON, "delta": PRIVATE_DELTA}

    cfg = {
        "name": f"bench-{model_type.replace('_', '-')}",
        "store": {"path": ".genloom/artifacts"},
        "catalog": {"url": "sqlite:///.genloom/catalog.db"},
        "sources": [
            # relative to the pipeline's folder: record ids (and so the split) name the file by
            # this key, so they do not change with the temporary folder's name
            {
                "type": "csv",
                "paths": [os.path.relpath(train_csv, folder)],
                "column_names": COLUMNS,
                "null_values": ["?"],
            }
        ],
        "split": {"val_fraction": VAL_FRACTION, "seed": 0},
        "train": {
            "model": model,
            "threads": threads,
        },
        "register": {"metric": "quality", "promote": "always"},
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def child_genloom(
    model_type: str, work: Path, epochs: int, threads: int, n: int, out: Path, private: bool = False
) -> dict:
    """Fit through the pipeline (run), sample through the Python API, as a user does."""
    import pyarrow.parquet as pq
    import torch

    from genloom.pipeline import Pipeline

    torch.set_num_threads(threads)
    # scikit-learn loaded before the clock starts, as in SDV's child (``from sdv.single_table
    # import ...`` imports it through RDT): fit seconds are fitting, not loading a library, on
    # both sides. Neither child has torch's compiler loaded: both load it in their first
    # optimizer, inside the fit.
    t0 = time.perf_counter()
    import sklearn.mixture  # noqa: F401

    preload_s = time.perf_counter() - t0
    folder = work / (model_type + ("_dp" if private else ""))
    path = genloom_pipeline(folder, model_type, work / "train.csv", epochs, threads, private)
    t0 = time.perf_counter()
    pipe = Pipeline.from_file(path)
    summary = pipe.run()
    pipeline_s = time.perf_counter() - t0
    seconds = {s.stage: s.seconds for s in summary.stages}
    version = summary.model["version"] if summary.model else None
    t0 = time.perf_counter()
    table = pipe.sample(n, seed=0, version=version)
    sample_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    pipe.sample(n, seed=0, version=version, reject_closer_than=0.0)
    sample_unfiltered_s = time.perf_counter() - t0
    report = json.loads((table.schema.metadata or {}).get(b"genloom", b"{}"))
    fit_sample_peak = peak_rss_mib()  # before the benchmark writes the rows out for the scorer
    pq.write_table(table, out)
    evaluation = {k: v for k, v in (summary.model or {}).get("metrics", {}).items() if isinstance(v, float)}
    pipe.close()
    return {
        "api": "pipeline",
        "fit_s": seconds.get("prepare", 0.0) + seconds.get("train", 0.0),
        "preload_s": preload_s,
        "ingest_s": seconds.get("ingest", 0.0),
        "prepare_s": seconds.get("prepare", 0.0),
        "train_s": seconds.get("train", 0.0),
        "evaluate_s": seconds.get("evaluate", 0.0),
        "pipeline_s": pipeline_s,
        "sample_s": sample_s,
        "sample_unfiltered_s": sample_unfiltered_s,
        "rows": table.num_rows,
        "rejected": report.get("rejected", {}),
        "genloom_evaluation": evaluation,
        "dp_epsilon": evaluation.get("dp_epsilon"),
        "peak_mb": fit_sample_peak,
    }


def child_sdv(model: str, work: Path, epochs: int, threads: int, n: int, out: Path) -> dict:
    """SDV's synthesizer of the same paper, with the same epochs and batch size (its defaults otherwise)."""
    import torch
    from sdv.metadata import Metadata
    from sdv.single_table import CTGANSynthesizer, TVAESynthesizer

    torch.set_num_threads(threads)
    df = read_adult(work / "train.csv")
    metadata = Metadata.load_from_dict({"tables": {"adult": {"columns": sdtypes()}}})
    cls = CTGANSynthesizer if model == "ctgan" else TVAESynthesizer
    synth = cls(metadata, epochs=epochs, batch_size=BATCH_SIZE, enable_gpu=False)
    t0 = time.perf_counter()
    synth.fit({"adult": df})  # SDV 2 takes (and returns) a table name -> DataFrame mapping
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    rows = synth.sample(num_rows=n)
    sample_s = time.perf_counter() - t0
    if isinstance(rows, dict):
        rows = rows["adult"]
    fit_sample_peak = peak_rss_mib()  # before the benchmark writes the rows out for the scorer
    rows.to_parquet(out)
    return {"api": "sdv", "fit_s": fit_s, "sample_s": sample_s, "rows": len(rows), "peak_mb": fit_sample_peak}


def peak_rss_mib() -> float:
    """The maximum resident memory of this process (and of any child it waited for) so far, MiB."""
    return (
        max(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
        )
        / 1024
    )


def sdtypes() -> dict[str, dict[str, str]]:
    """Adult's columns as SDV / SDMetrics metadata: integers as numerical, the rest categorical."""
    return {c: {"sdtype": "numerical"} if c in NUMERIC else {"sdtype": "categorical"} for c in COLUMNS}


def run_child(python: str, name: str, work: Path, epochs: int, threads: int, n: int) -> dict:
    """One synthesizer in a fresh process; adds its peak RSS (MiB) and the load before it."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO / "src")}
    cmd = [python, __file__, "--child", name, "--work", str(work), "--epochs", str(epochs)]
    cmd += ["--threads", str(threads), "--sample-rows", str(n)]
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"{name} child failed:\n{res.stderr[-4000:]}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    out["load_before"] = round(load, 2)
    out["child_s"] = wall  # the whole child: imports, reading, fitting, sampling, writing
    return out


# ---------------------------------------------------------------------------------------------
# the one scorer (reference interpreter): SDMetrics quality, TSTR, DCR for every synthesizer


def normalise(df: Any) -> Any:
    """The Adult columns in order; numbers as float, categories as strings with NaN for missing."""
    import numpy as np
    import pandas as pd

    df = df[COLUMNS].copy()
    for c in COLUMNS:
        if c in NUMERIC:
            df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
        else:
            df[c] = df[c].astype(object).where(df[c].notna(), np.nan)
    return df


def quality(real: Any, synth: Any) -> dict[str, float]:
    """SDMetrics' QualityReport: column shapes, column-pair trends and their mean."""
    from sdmetrics.reports import QualityReport

    report = QualityReport()
    report.generate(
        {"adult": real}, {"adult": synth}, {"tables": {"adult": {"columns": sdtypes()}}}, verbose=False
    )
    props = dict(zip(report.get_properties()["Property"], report.get_properties()["Score"], strict=True))
    return {
        "quality": float(report.get_score()),
        "column_shapes": float(props["Column Shapes"]),
        "column_pair_trends": float(props["Column Pair Trends"]),
    }


def features(rows: Any, encoder: Any) -> Any:
    """Feature matrix for the classifier: numbers as they are, categories ordinal (-1: unknown/missing)."""
    import numpy as np

    cats = [c for c in COLUMNS if c not in NUMERIC and c != TARGET]
    num = rows[NUMERIC].to_numpy(dtype=float)
    cat = encoder.transform(rows[cats].fillna("\x00missing").astype(str))
    return np.hstack([num, cat])


def tstr(fit_rows: Any, test: Any, encoder: Any) -> dict[str, float]:
    """Accuracy and F1 (">50K" positive) on the real test rows of a classifier fitted on ``fit_rows``."""
    import numpy as np
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import accuracy_score, f1_score

    y_fit = fit_rows[TARGET].astype(str).to_numpy()
    y_test = test[TARGET].astype(str).to_numpy()
    if len(set(y_fit)) < 2:  # a synthesizer that never produced one of the classes
        pred = np.full(len(test), y_fit[0])
    else:
        cats = np.arange(len(NUMERIC), len(COLUMNS) - 1)
        clf = HistGradientBoostingClassifier(random_state=0, categorical_features=cats)
        clf.fit(features(fit_rows, encoder), y_fit)
        pred = clf.predict(features(test, encoder))
    return {
        "accuracy": float(accuracy_score(y_test, pred)),
        "f1": float(f1_score(y_test, pred, pos_label=POSITIVE, zero_division=0)),
    }


class Space:
    """Rows as vectors for distances: numbers standardised on the training rows, categories one-hot / sqrt 2."""

    def __init__(self, train: Any) -> None:
        self.mean = train[NUMERIC].mean()
        self.std = train[NUMERIC].std().replace(0, 1.0)
        self.levels = {
            c: sorted(train[c].fillna("\x00missing").astype(str).unique())
            for c in COLUMNS
            if c not in NUMERIC
        }

    def vectors(self, rows: Any) -> Any:
        """(n, d) float32."""
        import numpy as np

        parts = [((rows[NUMERIC] - self.mean) / self.std).fillna(0.0).to_numpy(np.float32)]
        for c, levels in self.levels.items():
            index = {v: i for i, v in enumerate(levels)}
            pos = rows[c].fillna("\x00missing").astype(str).map(index).fillna(-1).to_numpy(int)
            hot = np.zeros((len(rows), len(levels)), np.float32)
            ok = pos >= 0
            hot[np.nonzero(ok)[0], pos[ok]] = 1 / np.sqrt(2)
            parts.append(hot)
        return np.hstack(parts)


def nearest(query: Any, reference: Any) -> Any:
    """Distance of each query row to its closest reference row (L2)."""
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=1, algorithm="brute").fit(reference)
    return nn.kneighbors(query)[0][:, 0]


def dcr(space: Space, reference: Any, rows: Any, holdout_p1: float) -> dict[str, float]:
    """Median distance to the closest training row of up to DCR_ROWS rows (seed 0), the share at
    distance 0 (copies of a training row) and the share closer than the holdout's 1st percentile."""
    import numpy as np

    if len(rows) > DCR_ROWS:
        rows = rows.iloc[np.sort(np.random.default_rng(0).choice(len(rows), DCR_ROWS, replace=False))]
    d = nearest(space.vectors(rows), reference)
    return {
        "dcr_median": float(np.median(d)),
        "dcr_copies_share": float((d < 1e-6).mean()),
        "dcr_close_share": float((d < holdout_p1).mean()),
    }


def child_score(work: Path, names: list[str]) -> dict:
    """Every synthesizer's rows scored by the same code."""
    import warnings

    import numpy as np
    import pandas as pd
    from sklearn.preprocessing import OrdinalEncoder

    warnings.filterwarnings("ignore", category=FutureWarning)
    real = normalise(read_adult(work / "train.csv"))
    test = normalise(read_adult(work / "test.csv"))
    cats = [c for c in COLUMNS if c not in NUMERIC and c != TARGET]
    encoder = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-1)
    encoder.fit(real[cats].fillna("\x00missing").astype(str))
    space = Space(real)
    reference = space.vectors(real)
    holdout = test.iloc[
        np.sort(np.random.default_rng(0).choice(len(test), min(DCR_ROWS, len(test)), replace=False))
    ]
    d_holdout = nearest(space.vectors(holdout), reference)
    p1 = float(np.percentile(d_holdout, 1))
    out: dict[str, Any] = {
        "real": {**{f"tstr_{k}": v for k, v in tstr(real, test, encoder).items()}},
        "holdout": {"dcr_median": float(np.median(d_holdout)), "dcr_p1": p1},
    }
    # the ceiling: real rows the synthesizers never saw, scored like a synthesizer's rows
    out["holdout"].update(quality(real, test))
    for name in names:
        t0 = time.perf_counter()
        synth = normalise(pd.read_parquet(work / f"{name}.parquet"))
        scores: dict[str, Any] = quality(real, synth)
        scores.update({f"tstr_{k}": v for k, v in tstr(synth, test, encoder).items()})
        scores.update(dcr(space, reference, synth, p1))
        scores["score_s"] = time.perf_counter() - t0
        out[name] = scores
    return out


# ---------------------------------------------------------------------------------------------
# the comparison


def compare(args: argparse.Namespace) -> dict:
    """Every synthesizer in its own child, then the one scorer; prints the table, returns the figures."""
    epochs = args.epochs if args.epochs is not None else (10 if args.quick else 50)
    rows = args.rows if args.rows is not None else (5_000 if args.quick else None)
    names = [n.strip() for n in args.synthesizers.split(",") if n.strip()]
    unknown = [n for n in names if n not in SYNTHESIZERS]
    if unknown:
        raise SystemExit(f"unknown synthesizers {unknown}; known: {', '.join(SYNTHESIZERS)}")
    ref_python = args.reference_python
    # SDV's children and the scorer (SDMetrics) both run there
    # (found, not imported: importing SDV takes seconds)
    find = "import importlib.util as u, sys; sys.exit(not (u.find_spec('sdv') and u.find_spec('sdmetrics')))"
    check = subprocess.run([ref_python, "-c", find], capture_output=True, text=True)
    if check.returncode != 0:
        raise SystemExit(
            f"{ref_python} has no sdv and sdmetrics (make bench-venv installs them){check.stderr[-800:]}"
        )
    m = machine()
    print(f"machine: {m['cpu']}, {m['cores']} cores, flags {' '.join(m['flags']) or 'none of avx2/avx512'}")
    print(f"load average at start: {m['load']} (other sessions share these cores)")
    with tempfile.TemporaryDirectory(prefix="genloom-tabular-bench-") as tmp:
        work = Path(tmp)
        _, _, n, n_test = write_workload(work, rows)
        print(
            f"workload: Adult, {n} training rows ({n_test} test rows), {epochs} epochs, batch {BATCH_SIZE}, {args.threads} threads;"
            f" {n} rows sampled per synthesizer; genloom through the Pipeline API",
            flush=True,
        )
        results: dict[str, dict] = {}
        jobs = args.jobs if args.jobs is not None else (2 if args.quick else 1)
        # with --jobs 2 the synthesizers run two at a time in the order given (each genloom family
        # beside its SDV twin), each on its own threads: both of a pair share the same load
        from concurrent.futures import ThreadPoolExecutor

        def one(name: str) -> dict:
            python = sys.executable if SYNTHESIZERS[name][0] == "genloom" else ref_python
            return run_child(python, name, work, epochs, args.threads, n)

        with ThreadPoolExecutor(max_workers=jobs) as pool:
            for group in (names[i : i + jobs] for i in range(0, len(names), jobs)):
                for name, r in zip(group, pool.map(one, group), strict=True):
                    results[name] = r
                    print(
                        f"  {name}: fit {r['fit_s']:.1f} s, peak {r['peak_mb']:.0f} MiB"
                        f" ({r['child_peak_mb']:.0f} with writing the rows), child {r['child_s']:.0f} s",
                        flush=True,
                    )
        t0 = time.perf_counter()
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        cmd = [ref_python, __file__, "--child", "score", "--work", str(work), "--names", ",".join(names)]
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if res.returncode != 0:
            raise SystemExit(f"scorer failed:\n{res.stderr[-4000:]}")
        scores = json.loads(res.stdout.strip().splitlines()[-1])
        score_s = time.perf_counter() - t0
    for name in names:
        r = results[name]
        r.update(scores[name])
        r["sample_rows_per_s"] = r["rows"] / r["sample_s"]
        if "sample_unfiltered_s" in r:
            r["sample_rows_per_s_unfiltered"] = r["rows"] / r["sample_unfiltered_s"]
    print()
    print(
        f"{'':14} {'fit s':>7} {'rows/s':>9} {'peak MiB':>9} {'quality':>8} {'shapes':>7} {'pairs':>7}"
        f" {'TSTR acc':>8} {'TSTR F1':>8} {'DCR med':>8} {'copies':>7} {'load':>5}"
    )
    for name in names:
        r = results[name]
        print(
            f"{name:14} {r['fit_s']:7.1f} {r['sample_rows_per_s']:9.0f} {r['peak_mb']:9.0f} {r['quality']:8.4f}"
            f" {r['column_shapes']:7.4f} {r['column_pair_trends']:7.4f} {r['tstr_accuracy']:8.4f}"
            f" {r['tstr_f1']:8.4f} {r['dcr_median']:8.4f} {r['dcr_copies_share']:7.4f} {r['load_before']:5.2f}"
        )
    real, holdout = scores["real"], scores["holdout"]
    print(
        f"{'real rows':14} {'':7} {'':9} {'':9} {holdout['quality']:8.4f} {holdout['column_shapes']:7.4f}"
        f" {holdout['column_pair_trends']:7.4f} {real['tstr_accuracy']:8.4f} {real['tstr_f1']:8.4f}"
        f" {holdout['dcr_median']:8.4f}   (quality and DCR: the test rows; TSTR: trained on the real rows)"
    )
    for name in names:
        r = results[name]
        if r["api"] == "pipeline":
            print(
                f"  {name}: scikit-learn loaded in {r['preload_s']:.1f} s before the clock, ingest {r['ingest_s']:.1f} s, prepare {r['prepare_s']:.1f} s, train {r['train_s']:.1f} s,"
                f" evaluate {r['evaluate_s']:.1f} s; sampling {r['sample_rows_per_s']:.0f} rows/s with the DCR"
                f" filter ({r['rejected']}), {r['sample_rows_per_s_unfiltered']:.0f} rows/s without"
            )
    out: dict[str, Any] = {
        "rows": n,
        "test_rows": n_test,
        "epochs": epochs,
        "batch_size": BATCH_SIZE,
        "threads": args.threads,
        "jobs": jobs,
        "cpu": m["cpu"],
        "flags": m["flags"],
        "load_start": m["load"],
        "load_end": [round(x, 2) for x in os.getloadavg()],
        "genloom_api": "pipeline",
        "score_s": round(score_s, 1),
        "real_accuracy": round(real["tstr_accuracy"], 4),
        "real_f1": round(real["tstr_f1"], 4),
        "holdout_dcr_median": round(holdout["dcr_median"], 4),
        "holdout_quality": round(holdout["quality"], 4),
    }
    ours = [nm for nm in names if nm in PAIRS]
    if ours:
        best = max(ours, key=lambda nm: results[nm]["quality"])
        out.update(best=best, **headline(results[best], "", 4))
        ref = PAIRS[best]
        if ref in results:
            out.update(reference=ref, **headline(results[ref], "reference_", 4))
            out["ratio_fit_time"] = round(results[best]["fit_s"] / results[ref]["fit_s"], 3)
    for name in names:
        twin = name.removesuffix("_dp")
        if name.endswith("_dp") and twin in results:  # what privacy costs, against the same family without it
            r, base = results[name], results[twin]
            out[f"{name}_cost"] = {
                "dp_epsilon": r.get("dp_epsilon"),
                "quality_delta": round(r["quality"] - base["quality"], 4),
                "tstr_accuracy_delta": round(r["tstr_accuracy"] - base["tstr_accuracy"], 4),
                "fit_ratio": round(r["fit_s"] / base["fit_s"], 3),
            }
            print(
                f"  {name}: epsilon spent {r.get('dp_epsilon')}, quality {r['quality']:.4f}"
                f" ({out[f'{name}_cost']['quality_delta']:+.4f} against {twin}), TSTR accuracy"
                f" {r['tstr_accuracy']:.4f} ({out[f'{name}_cost']['tstr_accuracy_delta']:+.4f})"
            )
    for name in names:
        out[name] = {
            k: round(v, 4) if isinstance(v, float) else v
            for k, v in results[name].items()
            if k not in ("genloom_evaluation",)
        }
    return out


def headline(r: dict, prefix: str, digits: int) -> dict[str, float]:
    """The figures the summary line carries for one synthesizer."""
    keys = ("quality", "column_shapes", "column_pair_trends", "tstr_accuracy", "tstr_f1", "fit_s")
    return {f"{prefix}{k}": round(r[k], digits) for k in keys} | {
        f"{prefix}sample_rows_per_s": round(r["sample_rows_per_s"], 1),
        f"{prefix}peak_mb": round(r["peak_mb"], 1),
        f"{prefix}child_peak_mb": round(r["child_peak_mb"], 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10 epochs on 5,000 training rows (under 2 minutes)")
    ap.add_argument("--epochs", type=int, help="epochs of every synthesizer (default 50; --quick 10)")
    ap.add_argument(
        "--rows", type=int, help="training rows drawn from adult-train (default all; --quick 5000)"
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads of every synthesizer (default 1: with other work on the cores, 2 threads ran 3x slower)",
    )
    ap.add_argument(
        "--jobs",
        type=int,
        help="synthesizers fitted at the same time, in the order given (default 1; --quick 2: each"
        " genloom family beside its SDV counterpart, one thread each)",
    )
    ap.add_argument(
        "--synthesizers",
        default=",".join(DEFAULT_SYNTHESIZERS),
        help=f"comma-separated subset of {', '.join(SYNTHESIZERS)} (the _dp ones: DP-SGD at epsilon"
        f" {PRIVATE_EPSILON:g}, delta {PRIVATE_DELTA:g}; default: the four non-private ones)",
    )
    ap.add_argument(
        "--reference-python",
        default=str(REPO / ".venv-bench" / "bin" / "python"),
        help="interpreter with sdv and sdmetrics (default .venv-bench/bin/python)",
    )
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    ap.add_argument("--sample-rows", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--names", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        work = Path(args.work)
        if args.child == "score":
            print(json.dumps(child_score(work, args.names.split(","))))
            return
        side, model = SYNTHESIZERS[args.child]
        out_file = work / f"{args.child}.parquet"
        if side == "genloom":
            private = args.child.endswith("_dp")
            res = child_genloom(model, work, args.epochs, args.threads, args.sample_rows, out_file, private)
        else:
            res = child_sdv(model, work, args.epochs, args.threads, args.sample_rows, out_file)
        res["child_peak_mb"] = peak_rss_mib()  # the whole child, writing the rows included
        print(json.dumps(res))
        return
    print(json.dumps(compare(args)))


if __name__ == "__main__":
    main()
