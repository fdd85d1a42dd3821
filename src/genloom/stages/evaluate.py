"""evaluate: the trained model on the held-out split, the champion on the same data, the gates,
and the HTML report.

The held-out split is test when the prepared data has one (``split.test_fraction`` > 0), else
validation; ``metrics.json`` says which. The champion is scored by its own family on the same
split, so relative gates (``max_vs_champion``...) and the report compare like with like; the key
holds the champion's artifact key, so a new champion means a new evaluation. With
``evaluate.references`` the file's content is in the key; with ``evaluate.judge`` the LLM judge
scores a seeded sample of generations of both models (``judge_score``), its replies cached per
sample in the store.
"""

from __future__ import annotations

import functools
import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

from genloom.core.errors import ConfigError
from genloom.core.store import content_key
from genloom.evaluate.gates import check_gates
from genloom.evaluate.heldout import evaluation_split, evaluation_view
from genloom.models.base import ModelFamily, family, family_of
from genloom.stages.base import (
    DATA_STAGES,
    RunContext,
    Stage,
    StagePlan,
    StageResult,
    plan_for,
    round_metrics,
)

#: generated records the report shows (texts; rows of a table)
SAMPLE_TEXTS = 12
SAMPLE_ROWS = 500
#: held-out texts the report reads (the length histogram, the random real samples)
REAL_TEXTS = 2_000
SAMPLE_SEED = 0
#: training rows searched for the synthetic rows closest to one (tables), and how many of them
#: are normalised and searched at a time (the search's memory)
CLOSEST_TRAIN_ROWS = 50_000
CLOSEST_CHUNK_ROWS = 8_192
#: images per label in the report's grids (generated, and real held-out); labels shown
GRID_IMAGES = 8
GRID_LABELS = 10
#: windows of a series model the report reads (real held-out, and generated), at most this
#: many values of each
SERIES_WINDOWS = 500
SERIES_VALUES = 2_000_000

log = logging.getLogger("genloom.evaluate")


class EvaluateStage(Stage):
    """Model + prepared held-out data -> the family's metrics (each with its direction), the
    champion's on the same data, the gate results, and ``report.html``."""

    name = "evaluate"
    needs_train = True

    def plan(self, ctx: RunContext, plans: list[StagePlan]) -> StagePlan:
        model, data = plan_for(plans, "train").key or "", plan_for(plans, "prepare").key or ""
        ingredients: dict[str, Any] = {
            "stage": "evaluate",
            "evaluate": ctx.cfg.evaluate.key_dict(),
            "model": model,
            "data": data,
            "version": 3,
        }
        refs = ctx.cfg.evaluate.references
        if refs:
            path = Path(ctx.resolve(refs))
            if not path.is_file():
                raise ConfigError(
                    f"no reference file at {path}",
                    path="evaluate.references",
                    hint="a JSON Lines file of {prompt, reference}",
                )
            ingredients["references"] = ctx.store.file_digest(str(path))
        champion = champion_key(ctx, ingredients)
        if champion:
            ingredients["champion"] = champion
        return StagePlan("evaluate", content_key(ingredients), [model, data], ingredients)

    def run(self, ctx: RunContext, plan: StagePlan, plans: list[StagePlan], reason: str) -> StageResult:
        assert plan.key is not None
        model_dir = ctx.local_artifact("train", plan_for(plans, "train").key)
        prepared = ctx.local_artifact("prepare", plan_for(plans, "prepare").key)
        fam = family(ctx.cfg.train.model.type)
        champion = champion_version(ctx, plan.ingredients.get("champion"))
        ctx.reporter.stage_start("evaluate", 3 if champion else 2, unit="steps")
        split = evaluation_split(prepared)
        eval_cfg = ctx.cfg.evaluate
        if eval_cfg.references:  # the family opens it: relative to the pipeline file, not the cwd
            eval_cfg = eval_cfg.model_copy(update={"references": ctx.resolve(eval_cfg.references)})
        with evaluation_view(prepared) as view:
            from genloom.models.text_metrics import recording

            with recording() as inputs:
                scored = fam.evaluate(model_dir, view, eval_cfg)
            ctx.reporter.stage_advance("evaluate")
            metrics = {k: m.value for k, m in scored.items()}
            directions = {k: m.direction for k, m in scored.items() if m.direction is not None}
            judged = None
            if eval_cfg.judge is not None:
                judged = judge_model(ctx, fam, model_dir)
                metrics.update(judged.metrics())
                directions["judge_score"] = "max"
            theirs: dict[str, Any] | None = None
            if champion is not None:
                uri = ctx.store.registered_model(champion)  # fetched from an object store
                their_fam = family_of(uri)
                their_scores = their_fam.evaluate_champion(uri, view, eval_cfg)
                theirs = {k: m.value for k, m in their_scores.items()}
                if eval_cfg.judge is not None:
                    theirs.update(judge_model(ctx, their_fam, uri).metrics())
                ctx.reporter.stage_advance("evaluate")
            gates = check_gates(metrics, eval_cfg.gates, theirs)
            out = ctx.local_artifact("evaluate", plan.key)
            out.mkdir(parents=True, exist_ok=True)
            champion_entry = (
                {"version": champion["version"], "key": champion["artifact_key"], "metrics": theirs}
                if champion is not None
                else None
            )
            result = {
                "split": split,
                "metrics": metrics,
                "directions": directions,
                "gates": gates,
                "champion": champion_entry,
            }
            if judged is not None:
                result["judge"] = judged.rows()
            (out / "metrics.json").write_text(json.dumps(result, indent=1, default=str))
            write_report(ctx, out, plans, result, fam, model_dir, view, inputs)
            ctx.reporter.stage_advance("evaluate")
        ctx.store.write_manifest(
            "evaluate",
            plan.key,
            {"stage": "evaluate", "key": plan.key, **result, "ingredients": plan.ingredients},
        )
        stats = {**round_metrics(metrics), "split": split, "gates": gates}
        return StageResult("evaluate", "ran", plan.key, reason, 0.0, None, stats)


def champion_key(ctx: RunContext, ingredients: dict[str, Any]) -> str | None:
    """The artifact key of the champion this model is evaluated against (None: no champion, or
    the model is the champion). Once a model has been promoted it is its own champion: its
    evaluation stays the one made against the champion it replaced (the latest evaluation of the
    same model, data and settings), so a rerun is a cache hit."""
    champ = ctx.catalog.champion(ctx.model_name)
    if champ is None:
        return None
    if champ["artifact_key"] != ingredients["model"]:
        return str(champ["artifact_key"])
    previous = ctx.catalog.latest_artifact(ctx.cfg.name, "evaluate")
    before = (previous or {}).get("ingredients") or {}
    same = all(before.get(k) == ingredients[k] for k in ("evaluate", "model", "data", "version"))
    return str(before["champion"]) if same and before.get("champion") else None


def champion_version(ctx: RunContext, key: str | None) -> dict[str, Any] | None:
    """The registered version whose model artifact is ``key``."""
    if not key:
        return None
    return next((m for m in ctx.catalog.models(ctx.model_name) if m["artifact_key"] == key), None)


def data_funnel(ctx: RunContext, plans: list[StagePlan]) -> list[dict[str, Any]]:
    """Per data stage and step: rows in and out, dropped and quarantined by reason (the manifests' stats)."""
    rows: list[dict[str, Any]] = []
    for p in plans:
        if (
            p.stage not in DATA_STAGES
            or p.passthrough
            or not p.key
            or not ctx.store.has_artifact(p.stage, p.key)
        ):
            continue
        m = ctx.store.read_manifest(p.stage, p.key)
        steps = m.get("stats", {}) or {}
        rows.append(
            {
                "stage": p.stage,
                "step": "",
                "rows_in": None,
                "rows_out": m.get("rows"),
                "dropped": sum(sum((s.get("dropped") or {}).values()) for s in steps.values()),
                "quarantined": m.get("rejected", 0),
                "reasons": {},
            }
        )
        for name, s in steps.items():
            rows.append(
                {
                    "stage": p.stage,
                    "step": name,
                    "rows_in": s.get("rows_in"),
                    "rows_out": s.get("rows_out"),
                    "dropped": sum((s.get("dropped") or {}).values()),
                    "quarantined": s.get("rejected", 0),
                    "reasons": dict(s.get("dropped") or {}),
                }
            )
    return rows


def write_report(
    ctx: RunContext,
    out: Path,
    plans: list[StagePlan],
    result: dict[str, Any],
    fam: ModelFamily,
    model_dir: Path,
    view: Path,
    inputs: Any = None,
) -> None:
    """The self-contained HTML report of this evaluation (``report.html`` beside ``metrics.json``);
    ``inputs`` (``text_metrics.MetricInputs``) holds what the text figures were computed from."""
    from genloom.evaluate.report import ReportData
    from genloom.evaluate.report import write_report as write_html

    states = sorted((model_dir / "checkpoints").glob("step_*/state.json"))
    history = json.loads(states[-1].read_text()).get("history", []) if states else []
    prepare = plan_for(plans, "prepare")
    prepared_manifest = ctx.store.read_manifest("prepare", prepare.key or "") if prepare.key else {}
    data = ReportData(
        title=f"{ctx.cfg.name}: evaluation",
        config=ctx.cfg.model_dump(mode="json", by_alias=True),
        split=result["split"],
        metrics=result["metrics"],
        directions=result["directions"],
        gates=result["gates"],
        champion=result["champion"],
        history=history,
        funnel=data_funnel(ctx, plans),
        prepared=prepared_manifest,
        model_type=ctx.cfg.train.model.type,
        judge=result.get("judge"),
    )
    if inputs is not None:
        add_text_inputs(data, inputs)
    if fam.generates_text:
        import pyarrow.parquet as pq

        data.real_texts = []  # the first REAL_TEXTS held-out texts: a sample, never the whole split
        for batch in pq.ParquetFile(view / "val_texts.parquet").iter_batches(
            batch_size=1024, columns=["text"]
        ):
            data.real_texts += batch.column(0).to_pylist()[: REAL_TEXTS - len(data.real_texts)]
            if len(data.real_texts) >= REAL_TEXTS:
                break
        generated = fam.sample(model_dir, SAMPLE_TEXTS, seed=SAMPLE_SEED, max_new_tokens=120)
        data.generated_texts = generated.column("text").to_pylist()
    elif (view / "val.parquet").exists():
        import pyarrow as pa
        import pyarrow.parquet as pq

        first = next(pq.ParquetFile(view / "val.parquet").iter_batches(batch_size=SAMPLE_ROWS), None)
        if first is not None and first.num_rows:
            data.real_rows = pa.Table.from_batches([first])
            data.generated_rows = fam.sample(model_dir, first.num_rows, seed=SAMPLE_SEED)
            if (view / "train.parquet").exists():
                data.closest_rows = closest_rows(
                    data.generated_rows, view / "train.parquet", prepared_manifest.get("kinds") or {}
                )
    add_family_media(data, fam, model_dir, view)
    if fam.generates_text:
        data.languages = language_mix(ctx, plans, data.real_texts, data.generated_texts)
    write_html(out / "report.html", data)


def add_family_media(data: Any, fam: ModelFamily, model_dir: Path, view: Path) -> None:
    """An image model's grids (``image_grids``) or a series model's windows (``series_windows``)
    into the report data; nothing for the other families."""
    from genloom.models.image_data import ImageFamily

    if isinstance(fam, ImageFamily):
        data.image_rows = image_grids(fam, model_dir, view)
        return
    if (view / "series.json").exists() and (view / "val_values.npy").exists():
        from genloom.models.series import SeriesFamily

        if isinstance(fam, SeriesFamily):
            data.series = series_windows(fam, model_dir, view)


def image_grids(fam: Any, model_dir: Path, view: Path) -> list[dict[str, Any]]:
    """A row per label (the model's first ``GRID_LABELS``): ``GRID_IMAGES`` samples generated
    under it (seeded) and the first as many held-out images with it, each (N, C, S, S) uint8;
    one unlabelled row for a model without labels."""
    import numpy as np

    from genloom.models.image_data import ImageLayout, decode_image

    model_layout = ImageLayout.load(Path(model_dir) / "images.json")
    data_layout = ImageLayout.load(view / "images.json")
    val = np.load(view / "val.npy", mmap_mode="r")
    val_labels = np.load(view / "val_labels.npy")

    def decoded(table: Any) -> Any:
        images = [
            decode_image(b, model_layout.size, model_layout.channels)
            for b in table.column("image").to_pylist()
        ]
        return (
            np.stack(images)
            if images
            else np.zeros((0, model_layout.channels, model_layout.size, model_layout.size), np.uint8)
        )

    if model_layout.n_labels == 0:
        synthetic = decoded(fam.sample(model_dir, GRID_IMAGES, seed=SAMPLE_SEED))
        return [{"label": "(no labels)", "synthetic": synthetic, "real": np.asarray(val[:GRID_IMAGES])}]
    rows = []
    for label in model_layout.labels[:GRID_LABELS]:
        synthetic = decoded(fam.sample(model_dir, GRID_IMAGES, conditions={"label": label}, seed=SAMPLE_SEED))
        real = np.zeros((0, *val.shape[1:]), np.uint8)
        if label in data_layout.labels:
            idx = np.nonzero(val_labels == data_layout.labels.index(label))[0][:GRID_IMAGES]
            real = np.asarray(val[np.sort(idx)])
        rows.append({"label": label, "synthetic": synthetic, "real": real})
    return rows


def series_windows(fam: Any, model_dir: Path, view: Path) -> dict[str, Any]:
    """The first held-out windows and as many generated ones (seeded), in the data's units, as
    (N, T, C) floats with NaN at gaps and past each window's length."""
    import numpy as np

    from genloom.models.series_data import SeriesLayout

    layout = SeriesLayout.from_json(json.loads((view / "series.json").read_text()))
    values = np.load(view / "val_values.npy", mmap_mode="r")
    _, steps, channels = values.shape
    n = min(len(values), SERIES_WINDOWS, max(10, SERIES_VALUES // max(1, steps * channels)))
    real = layout.unscale(np.asarray(values[:n], np.float64))
    mask = np.asarray(np.load(view / "val_mask.npy", mmap_mode="r")[:n]).astype(bool)
    lengths = np.asarray(np.load(view / "val_lengths.npy", mmap_mode="r")[:n])
    mask &= np.arange(steps)[None, :, None] < lengths[:, None, None]
    real[~mask] = np.nan
    synthetic = np.full((n, steps, channels), np.nan)
    if n:
        table = fam.sample(model_dir, n, seed=SAMPLE_SEED)
        for i, window in enumerate(table.column("values").to_pylist()):
            w = np.asarray(window, np.float64).reshape(-1, channels)[:steps]
            synthetic[i, : len(w)] = w
    return {"channels": list(layout.channels), "real": real, "synthetic": synthetic}


def judge_model(ctx: RunContext, fam: ModelFamily, model_dir: Path) -> Any:
    """The LLM judge's verdicts on ``evaluate.judge.samples`` seeded samples of a model: texts
    (continuations of nothing) for a text model, rows as JSON objects for a table model."""
    from genloom.evaluate.judge import Judge, JudgeCache

    cfg = ctx.cfg.evaluate.judge
    if fam.generates_text:
        texts = fam.sample(model_dir, cfg.samples, seed=SAMPLE_SEED, max_new_tokens=cfg.sample_tokens)
        samples = [str(t) for t in texts.column("text").to_pylist()]
    else:
        rows = fam.sample(model_dir, cfg.samples, seed=SAMPLE_SEED).to_pylist()
        samples = [json.dumps(r, default=str, ensure_ascii=False) for r in rows]
    result = Judge(cfg, JudgeCache(ctx.store.fs, ctx.store.base)).score(samples)
    log.info(
        "judge %s: mean %s over %d samples (%d requests, the rest cached)",
        cfg.model,
        result.score,
        len(samples),
        result.requests,
    )
    return result


def add_text_inputs(data: Any, inputs: Any) -> None:
    """The report's embedding projection, worst-by-memorisation generations and reference pairs,
    from what the text figures were computed from (nothing is computed again)."""
    from genloom.evaluate.plots import pca_2d

    if inputs.embeddings:
        real, generated = inputs.embeddings[0]
        data.projection, data.projection_explained = pca_2d({"real": real, "generated": generated})
    if inputs.memorised:
        texts, report = inputs.memorised[0]
        data.memorised = [
            {"chars": c["chars"], "words": c["words"], "copied": c["text"], "text": texts[c["sample"]]}
            for c in report.copies
        ]
    if inputs.references:
        hyps, refs = inputs.references[0]
        data.references = [{"reference": r, "continuation": h} for h, r in zip(hyps, refs, strict=True)]


def language_mix(
    ctx: RunContext, plans: list[StagePlan], real: list[str] | None, generated: list[str] | None
) -> dict[str, Any] | None:
    """Records per language: the column a ``language`` preprocessor wrote, counted over the last
    data stage's records; else langid on the first ``evaluate.language_sample`` held-out texts
    and the report's generations (None when that is 0, or without langid)."""
    steps = [s for s in (getattr(ctx.cfg, "preprocess", None) or []) if getattr(s, "type", "") == "language"]
    if steps:
        column = steps[-1].output_column
        data_plans = [p for p in plans if p.stage in DATA_STAGES and p.key and not p.passthrough]
        for p in reversed(data_plans):
            if not ctx.store.has_artifact(p.stage, p.key or ""):
                continue
            counts: Counter[str] = Counter()
            try:
                for batch in ctx.store.iter_artifact(p.stage, p.key or "", columns=[column]):
                    counts.update(str(v) for v in batch.column(0).to_pylist())
            except (KeyError, ValueError, OSError):  # the column is not in this stage's records
                continue
            return {
                "source": f"the {column!r} column (preprocess: language) of the {p.stage} records",
                "counts": {"data": dict(counts)},
            }
    limit = ctx.cfg.evaluate.language_sample
    if not real or not limit:
        return None
    try:
        ident = _language_identifier()
    except ImportError:
        log.info("language mix skipped: langid is not installed (pip install 'genloom[nlp]')")
        return None
    groups = {"held-out": real[:limit], "generated": generated or []}
    counts_of = {
        name: dict(Counter(ident.classify(t[:1000])[0] if t.strip() else "und" for t in texts))
        for name, texts in groups.items()
        if texts
    }
    n = len(groups["held-out"])
    return {"source": f"langid on {n} held-out texts and the report's generations", "counts": counts_of}


@functools.lru_cache(maxsize=1)
def _language_identifier() -> Any:
    """langid's identifier, loaded once per process (decoding its model takes seconds)."""
    from langid.langid import LanguageIdentifier, model

    return LanguageIdentifier.from_modelstring(model, norm_probs=True)


def closest_rows(synthetic: Any, train_path: Path, kinds: dict[str, str], k: int = 5) -> list[dict[str, Any]]:
    """The ``k`` synthetic rows closest to a training row (DCR: Euclidean distance in
    ``normalised_matrix`` space, fitted on the training rows), each with that training row; the
    first ``CLOSEST_TRAIN_ROWS`` training rows are searched, ``CLOSEST_CHUNK_ROWS`` at a time.

    A chunk's rows are the same vectors as in the whole matrix (the space is fitted on all the
    searched rows), so the rows found are those of one search. Normalising all of
    Adult's rows at once held a 14 MB matrix beside scikit-learn's copy: this search was the
    evaluation's peak memory."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from genloom.models.tabular_metrics import normalised_matrix

    if not kinds or synthetic.num_rows == 0:
        return []
    batches = []
    rows = 0
    for batch in pq.ParquetFile(train_path).iter_batches(batch_size=8192):
        batches.append(batch.slice(0, CLOSEST_TRAIN_ROWS - rows))
        rows += batches[-1].num_rows
        if rows >= CLOSEST_TRAIN_ROWS:
            break
    if not rows:
        return []
    train = pa.Table.from_batches(batches)
    modelled = {
        c: kind for c, kind in kinds.items() if c in train.column_names and c in synthetic.column_names
    }
    if not modelled:
        return []
    from sklearn import config_context
    from sklearn.neighbors import NearestNeighbors

    from genloom.models.tabular_rules import DCR_WORKING_MIB

    query = normalised_matrix(synthetic, modelled, train)
    dist = np.full(synthetic.num_rows, np.inf)
    idx = np.zeros(synthetic.num_rows, dtype=np.int64)
    for start in range(0, train.num_rows, CLOSEST_CHUNK_ROWS):
        ref = normalised_matrix(train.slice(start, CLOSEST_CHUNK_ROWS), modelled, train)
        with config_context(working_memory=DCR_WORKING_MIB):  # distances in small chunks (peak memory)
            d, i = NearestNeighbors(n_neighbors=1, algorithm="brute").fit(ref).kneighbors(query)
        closer = d[:, 0] < dist  # an earlier chunk's row keeps an equal distance
        dist[closer], idx[closer] = d[closer, 0], i[closer, 0] + start
    order = np.argsort(dist, kind="stable")[:k]
    syn_rows = synthetic.to_pylist()
    return [
        {
            "distance": float(dist[j]),
            "synthetic": syn_rows[j],
            "training": train.slice(int(idx[j]), 1).to_pylist()[0],
        }
        for j in order
    ]
