"""The pipeline: the fixed stage order, readable top to bottom.

    ingest -> augment -> clean -> preprocess -> features -> tokenize -> train -> evaluate -> register

Every stage's output is an artifact keyed by the hash of (stage, resolved config, component
versions, input keys, source fingerprints). ``plan()`` computes every key before any work, so
``run`` skips stages whose artifact exists and ``explain`` can say why a stage will run.
Data stages are split into shards, each keyed by its own content, run by an executor through
``run_shard``; a killed run resumes from the shards and checkpoints that finished.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from genloom.core.catalog import Catalog, resolve_url
from genloom.core.config import STAGE_LISTS, load_config, validate_config
from genloom.core.errors import GenloomError, NotFoundError, StageError
from genloom.core.executors import Executor, make_executor
from genloom.core.progress import Reporter
from genloom.core.runner import ShardTask, check_unique_ids, run_shard, working_dir
from genloom.core.secrets import DIGEST_PREFIX, store_salt
from genloom.core.stats import merge_stats
from genloom.core.steps import Fitted, Step
from genloom.core.store import ArtifactStore, content_key

DATA_STAGES = ("ingest", "augment", "clean", "preprocess", "features")
MODEL_STAGES = ("tokenize", "train", "evaluate", "register")
STAGES = DATA_STAGES + MODEL_STAGES
_STEP_LISTS = dict(zip(DATA_STAGES, STAGE_LISTS, strict=True))  # stage -> config list name


@dataclass
class StagePlan:
    """What a stage will consume and produce, decided before any work."""

    stage: str
    key: str | None  # None: the stage has nothing to do (no steps, no train section)
    inputs: list[str]  # upstream artifact keys
    ingredients: dict[str, Any]  # what the key hashes, kept for `explain`
    cached: bool = False
    passthrough: bool = False  # no steps: the stage's output is its input
    shards: list[ShardTask] = field(default_factory=list)


@dataclass
class StageResult:
    """What a stage did in a run."""

    stage: str
    status: str  # ran | cached | skipped | failed
    key: str | None
    reason: str
    seconds: float
    rows: int | None = None
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunSummary:
    """The outcome of ``Pipeline.run``."""

    run_id: str
    status: str
    stages: list[StageResult]
    model: dict[str, Any] | None = None
    seconds: float = 0.0
    report: str | None = None


class Pipeline:
    """A validated pipeline bound to its project folder, store and catalog."""

    def __init__(
        self,
        cfg: Any,
        base_dir: str | Path = ".",
        config_path: str | Path | None = None,
        reporter: Reporter | None = None,
    ) -> None:
        self.cfg = cfg
        self.base_dir = Path(base_dir).resolve()
        self.config_path = str(config_path) if config_path else ""
        self.reporter = reporter or Reporter()
        root = cfg.store.path
        if "://" not in root:
            root = str((self.base_dir / root).resolve())
        self.store = ArtifactStore(root)
        self.catalog = Catalog(resolve_url(cfg.catalog.url, self.base_dir))
        self._salt: bytes | None = None

    @classmethod
    def from_file(
        cls, path: str | Path, overrides: list[str] | None = None, reporter: Reporter | None = None
    ) -> Pipeline:
        """Load and validate a pipeline file; relative paths in it are relative to its folder."""
        p = Path(path).resolve()
        with working_dir(str(p.parent)):
            cfg = load_config(p, overrides)
        return cls(cfg, base_dir=p.parent, config_path=p, reporter=reporter)

    @classmethod
    def from_dict(
        cls, raw: dict[str, Any], base_dir: str | Path = ".", reporter: Reporter | None = None
    ) -> Pipeline:
        """Validate config data given as a dict (the Python API)."""
        with working_dir(str(Path(base_dir).resolve())):
            cfg = validate_config(raw)
        return cls(cfg, base_dir=base_dir, reporter=reporter)

    @property
    def model_name(self) -> str:
        """The name models of this pipeline are registered under."""
        return self.cfg.registry.name or self.cfg.name

    # ------------------------------------------------------------------------------------------
    # planning

    def plan(self, force: frozenset[str] = frozenset()) -> list[StagePlan]:
        """Every stage's key and inputs, computed from config and source fingerprints only."""
        plans: list[StagePlan] = []
        with working_dir(str(self.base_dir)):
            prev = self._plan_ingest()
            plans.append(prev)
            for stage in DATA_STAGES[1:]:
                steps: list[Step] = list(getattr(self.cfg, _STEP_LISTS[stage]))
                if not steps:
                    plan = StagePlan(stage, prev.key, [prev.key] if prev.key else [], {}, passthrough=True)
                else:
                    step_ingredients = self._step_ingredients(steps)
                    for i, step in enumerate(steps):
                        if isinstance(step, Fitted):
                            # the fit's identity (what it reads, not what it keeps across runs)
                            tag = _fit_tag(stage, i, step_ingredients, prev.key)
                            digest = step.shared_state_digest(tag)
                            if digest:
                                step_ingredients[i]["shared_state"] = digest
                    ingredients = {"stage": stage, "steps": step_ingredients, "input": prev.key}
                    plan = StagePlan(stage, content_key(ingredients), [prev.key or ""], ingredients)
                plans.append(plan)
                prev = plan
        data_key = prev.key or ""
        self.store.save_file_digests()
        if self.cfg.train is None:
            plans += [StagePlan(s, None, [], {}) for s in MODEL_STAGES]
            return self._mark_cached(plans, force)
        tok = {
            "stage": "tokenize",
            "tokenizer": self._tokenizer_ingredients(),
            "split": self.cfg.split.model_dump(mode="json"),
            "input": data_key,
            "version": 1,
        }
        tok_plan = StagePlan("tokenize", content_key(tok), [data_key], tok)
        plans.append(tok_plan)
        tr = {
            "stage": "train",
            "train": self.cfg.train.model_dump(mode="json"),
            "input": tok_plan.key,
            **self._base_model_files(),
        }
        train_plan = StagePlan("train", content_key(tr), [tok_plan.key or ""], tr)
        ev = {
            "stage": "evaluate",
            "evaluate": self.cfg.evaluate.model_dump(mode="json"),
            "model": train_plan.key,
            "data": tok_plan.key,
            "version": 1,
        }
        ev_plan = StagePlan("evaluate", content_key(ev), [train_plan.key or "", tok_plan.key or ""], ev)
        reg = {
            "stage": "register",
            "register": self.cfg.registry.model_dump(mode="json"),
            "model": train_plan.key,
            "evaluation": ev_plan.key,
        }
        plans += [train_plan, ev_plan, StagePlan("register", content_key(reg), [ev_plan.key or ""], reg)]
        self.store.save_file_digests()
        return self._mark_cached(plans, force)

    def _mark_cached(self, plans: list[StagePlan], force: frozenset[str]) -> list[StagePlan]:
        for p in plans:
            if p.key and not p.passthrough and p.stage != "register":
                p.cached = p.stage not in force and self.store.has_artifact(p.stage, p.key)
        return plans

    def _resolve(self, path: str) -> str:
        """A path from the config, relative to the pipeline file's folder."""
        return path if "://" in path or Path(path).is_absolute() else str(self.base_dir / path)

    def _file_digests(self, patterns: list[str]) -> dict[str, str]:
        """{path as configured (or found by its glob, or inside its folder): content digest}."""
        out: dict[str, str] = {}
        for pattern in patterns:
            full = self._resolve(pattern)
            if os.path.isdir(full):
                found = sorted(str(f) for f in Path(full).rglob("*") if f.is_file())
            elif glob.has_magic(full):
                found = sorted(glob.glob(full, recursive=True))
            else:
                found = [full]
            for f in found:
                name = os.path.relpath(f, self.base_dir) if f.startswith(str(self.base_dir)) else f
                out[name] = self.store.file_digest(f) if os.path.isfile(f) else "missing"
        return out

    def _step_ingredients(self, steps: list[Step]) -> list[dict[str, Any]]:
        """What a step's key hashes: its config, version and class, the files it reads and the
        versions of the resources it loads."""
        out = []
        for s in steps:
            entry: dict[str, Any] = {
                "config": s.key_config(self._secret_salt()),  # secrets as HMACs, never their values
                "version": s.version,
                "class": type(s).__qualname__,
            }
            files = self._file_digests(s.files_read())
            if files:
                entry["files"] = files
            resources = s.resource_versions()
            if resources:
                entry["resources"] = resources
            out.append(entry)
        return out

    def _secret_salt(self) -> bytes:
        if self._salt is None:
            self._salt = store_salt(self.store.fs, self.store.base)
        return self._salt

    def _base_model_files(self) -> dict[str, Any]:
        """The files of a pretrained base model (weights, config, tokenizer), for the train key."""
        model = self.cfg.train.model
        path = getattr(model, "path", None)
        return {"base_model_files": self._file_digests([path])} if isinstance(path, str) else {}

    def _tokenizer_ingredients(self) -> dict[str, Any]:
        model = self.cfg.train.model
        if model.type == "hf_causal_lm":  # a pretrained model brings its own tokenizer
            tok_file = Path(self._resolve(model.path)) / "tokenizer.json"
            digest = self.store.file_digest(str(tok_file)) if tok_file.exists() else ""
            return {"pretrained": str(model.path), "sha256": digest}
        return self.cfg.train.tokenizer.model_dump(mode="json")

    def _plan_ingest(self) -> StagePlan:
        root = self.store.root
        shards: list[ShardTask] = []
        fingerprints: dict[str, Any] = {}
        per_shard = self.cfg.data.partitions_per_shard
        source_ingredients = self._step_ingredients(list(self.cfg.sources))
        for i, src in enumerate(self.cfg.sources):
            src_cfg = source_ingredients[i]
            parts = src.partitions()
            fps = [src.partition_fingerprint(p) for p in parts]
            fingerprints[f"sources.{i}"] = {
                "partitions": {str(p): fp for p, fp in zip(parts, fps, strict=True)}
            }
            for j in range(0, max(len(parts), 1), per_shard):
                chunk = parts[j : j + per_shard]
                # the partitions themselves (file paths) are part of the key: two files with equal
                # content and mtime are two shards, and a renamed file is read again under its name
                named = [[str(p), fp] for p, fp in zip(chunk, fps[j : j + per_shard], strict=True)]
                key = content_key("ingest", 2, src_cfg, named)
                shards.append(
                    ShardTask(
                        store_root=root,
                        base_dir=str(self.base_dir),
                        stage="ingest",
                        shard_key=key,
                        source=src,
                        partitions=tuple(chunk),
                        label={"source": f"sources.{i}", "first": str(chunk[0]) if chunk else ""},
                        step_paths=(f"sources.{i}",),
                    )
                )
        ingredients = {
            "stage": "ingest",
            "sources": source_ingredients,
            "fingerprints": fingerprints,
        }
        return StagePlan(
            "ingest", content_key("ingest", [t.shard_key for t in shards]), [], ingredients, shards=shards
        )

    # ------------------------------------------------------------------------------------------
    # running

    def run(self, until: str | None = None, force: list[str] | None = None) -> RunSummary:
        """Run every stage (up to ``until``), skipping those whose artifact exists."""
        for name in [until, *(force or [])]:
            if name is not None and name not in STAGES:
                raise GenloomError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")
        started = time.perf_counter()
        # --force STAGE reruns that stage from nothing, and every stage after it
        first = min((STAGES.index(f) for f in force or []), default=len(STAGES))
        forced = frozenset(STAGES[first:])
        plans = self.plan(forced)
        run_id = uuid.uuid4().hex[:12]
        self.catalog.start_run(run_id, self.cfg.name, self.config_path)
        results: list[StageResult] = []
        executor: Executor | None = None
        status = "succeeded"
        model: dict[str, Any] | None = None
        try:
            for plan in plans:
                t0 = time.perf_counter()
                if plan.key is None or plan.passthrough:
                    why = "no steps" if plan.passthrough else "not configured"
                    res = StageResult(plan.stage, "skipped", plan.key, why, 0.0)
                elif plan.cached:
                    res = self._cached_result(plan)
                else:
                    reason = self._why(plan, forced)
                    if plan.stage in DATA_STAGES:
                        if executor is None:
                            executor = make_executor(self.cfg.executor)
                        res = self._run_data_stage(plan, plans, executor, reason, forced)
                    elif plan.stage == "tokenize":
                        res = self._run_tokenize(plan, plans, reason)
                    elif plan.stage == "train":
                        res = self._run_train(plan, plans, reason, "train" in forced)
                    elif plan.stage == "evaluate":
                        res = self._run_evaluate(plan, plans, reason)
                    else:
                        res, model = self._run_register(plan, plans, run_id)
                    self._register_artifact(plan, run_id, res)
                res.seconds = time.perf_counter() - t0
                self.reporter.stage_end(res.stage, res.status, res.reason, res.seconds, res.stats)
                self.catalog.record_stage(
                    run_id, res.stage, res.key, res.status, res.reason, res.seconds, res.stats
                )
                results.append(res)
                if until is not None and plan.stage == until:
                    break
        except BaseException as e:
            status = "failed"
            self.catalog.finish_run(run_id, status, {"error": f"{type(e).__name__}: {e}"})
            raise
        finally:
            if executor is not None:
                executor.close()
        summary = RunSummary(run_id, status, results, model, time.perf_counter() - started)
        ev = _plan_for(plans, "evaluate")
        if ev.key and self.store.fs.exists(f"{self.store.artifact_dir('evaluate', ev.key)}/report.html"):
            summary.report = f"{self.store.artifact_dir('evaluate', ev.key)}/report.html"
        self.catalog.finish_run(run_id, status, {"stages": [r.__dict__ for r in results], "model": model})
        return summary

    def _cached_result(self, plan: StagePlan) -> StageResult:
        assert plan.key is not None
        manifest = self.store.read_manifest(plan.stage, plan.key)
        return StageResult(plan.stage, "cached", plan.key, "artifact exists", 0.0, manifest.get("rows"), {})

    def _register_artifact(self, plan: StagePlan, run_id: str, res: StageResult) -> None:
        if plan.key is None or plan.stage == "register":
            return
        kind = {"tokenize": "tokens", "train": "model", "evaluate": "metrics"}.get(plan.stage, "dataset")
        self.catalog.add_artifact(
            plan.key,
            plan.stage,
            self.cfg.name,
            kind,
            self.store.artifact_dir(plan.stage, plan.key),
            run_id,
            res.rows,
            plan.ingredients,
            [k for k in plan.inputs if k],
        )

    # -- data stages

    def _run_data_stage(
        self, plan: StagePlan, plans: list[StagePlan], executor: Executor, reason: str, forced: frozenset[str]
    ) -> StageResult:
        assert plan.key is not None
        force = plan.stage in forced
        if plan.stage == "ingest":
            tasks = [replace(t, force=force) for t in plan.shards]
            outputs = self._map_shards(plan.stage, tasks, executor)
            segment_stats = [merge_stats([o["stats"] for o in outputs])]
            rows_in = None
        else:
            upstream = _plan_for(plans, _previous_data_stage(plans, plan.stage))
            in_stage, in_shards = self._shards_of(upstream)
            rows_in = sum(self.store.shard_done(in_stage, s)["rows"] for s in in_shards)  # type: ignore[index]
            steps: list[Step] = list(getattr(self.cfg, _STEP_LISTS[plan.stage]))
            step_ingredients = plan.ingredients["steps"]
            list_name = _STEP_LISTS[plan.stage]
            segment_stats = []
            fitted: Fitted | None = None
            state_dir: str | None = None
            cur_stage, cur_shards = in_stage, in_shards
            for seg_index, seg in enumerate(_segments(steps)):
                state_key = ""
                fitted = steps[seg[0]] if seg[0] is not None else None  # type: ignore[assignment]
                indices = ([seg[0]] if seg[0] is not None else []) + seg[1]
                seg_cfg = [step_ingredients[i] for i in indices]
                seg_steps = [steps[i] for i in seg[1]]
                if fitted is not None:
                    state_key = content_key(plan.stage, seg_index, seg_cfg[0], cur_shards)
                    tag = _fit_tag(plan.stage, seg[0], step_ingredients, plan.ingredients["input"])
                    state_dir = self._fit_state(
                        plan.stage, state_key, fitted, cur_stage, cur_shards, force, tag
                    )
                else:
                    state_dir = None
                tasks = [
                    ShardTask(
                        store_root=self.store.root,
                        base_dir=str(self.base_dir),
                        stage=plan.stage,
                        shard_key=content_key(plan.stage, seg_index, seg_cfg, state_key, s),
                        steps=tuple(seg_steps),
                        input_stage=cur_stage,
                        input_shard=s,
                        fitted=fitted,
                        state_dir=state_dir,
                        force=force,
                        step_paths=tuple(f"{list_name}.{i}" for i in indices),
                    )
                    for s in cur_shards
                ]
                outputs = self._map_shards(plan.stage, tasks, executor)
                segment_stats.append(merge_stats([o["stats"] for o in outputs]))
                cur_stage, cur_shards = plan.stage, [t.shard_key for t in tasks]
        rows = sum(o["rows"] for o in outputs)
        check_unique_ids(self.store, plan.stage, [o["shard_key"] for o in outputs])
        stats: dict[str, Any] = {}
        for s in segment_stats:
            stats.update(s)
        rejected = sum(o["rejected"] for o in outputs)
        self._check_drops(plan.stage, rows_in, rows)
        manifest = {
            "stage": plan.stage,
            "key": plan.key,
            "shards": [o["shard_key"] for o in outputs],
            "rows": rows,
            "rejected": rejected,
            "stats": stats,
            "ingredients": plan.ingredients,
        }
        self.store.write_manifest(plan.stage, plan.key, manifest)
        stats = {"steps": stats, "rejected": rejected, "rows_in": rows_in}
        return StageResult(plan.stage, "ran", plan.key, reason, 0.0, rows, stats)

    def _map_shards(self, stage: str, tasks: list[ShardTask], executor: Executor) -> list[dict[str, Any]]:
        self.reporter.stage_start(stage, len(tasks))

        def on_result(_i: int, out: dict[str, Any]) -> None:
            self.reporter.stage_advance(stage, 1, out["rows"])

        return executor.map(run_shard, tasks, on_result)

    def _fit_state(
        self,
        stage: str,
        key: str,
        step: Fitted,
        in_stage: str,
        in_shards: list[str],
        force: bool,
        tag: str,
    ) -> str:
        state_dir = f"{self.store.base}/states/{stage}/{key}"
        marker = f"{state_dir}/done"
        if force or not self.store.fs.exists(marker):
            self.reporter.message(f"{stage}: fitting {step.name} on {len(in_shards)} shards")
            step.ensure_setup()
            self.store.fs.makedirs(state_dir, exist_ok=True)
            with working_dir(str(self.base_dir)):
                state = step.fit(b for s in in_shards for b in self.store.iter_batches(in_stage, s))
            step.save_state(state, state_dir, self.store.fs)
            with self.store.fs.open(marker, "w") as f:
                f.write("ok")
        with working_dir(str(self.base_dir)):
            step.commit_state(state_dir, self.store.fs, tag)  # idempotent: also after a kill here
        return state_dir

    def _check_drops(self, stage: str, rows_in: int | None, rows_out: int) -> None:
        if not rows_in:
            if stage == "ingest" and rows_out == 0:
                raise StageError(
                    "ingest produced no records: check the sources' paths and the rejected table "
                    "(genloom status)"
                )
            return
        if rows_out == 0:
            raise StageError(
                f"{stage} dropped every record ({rows_in} in, 0 out): check its steps' thresholds"
            )
        dropped = 1 - rows_out / rows_in
        if dropped > self.cfg.data.max_drop_fraction:
            raise StageError(
                f"{stage} dropped {dropped:.1%} of its records, more than "
                f"data.max_drop_fraction={self.cfg.data.max_drop_fraction}"
            )

    def _shards_of(self, plan: StagePlan) -> tuple[str, list[str]]:
        """(stage folder, shard keys) of a finished data stage's output."""
        assert plan.key is not None
        manifest = self.store.read_manifest(plan.stage, plan.key)
        return plan.stage, list(manifest["shards"])

    def iter_dataset(self, stage: str = "features", columns: list[str] | None = None) -> Iterator[pa.Table]:
        """Stream the output of a finished data stage (the last one with steps when passthrough)."""
        plans = self.plan()
        plan = _plan_for(plans, _resolve_data_stage(plans, stage))
        if plan.key is None or not self.store.has_artifact(plan.stage, plan.key):
            raise NotFoundError(f"stage {stage!r} has not run for the current config: genloom run first")
        yield from self.store.iter_artifact(plan.stage, plan.key, columns=columns)

    # -- model stages

    def _run_tokenize(self, plan: StagePlan, plans: list[StagePlan], reason: str) -> StageResult:
        from genloom.train.data import pack_tokens
        from genloom.train.tokenizer import train_tokenizer

        assert plan.key is not None
        data_plan = _plan_for(plans, _resolve_data_stage(plans, "features"))
        in_stage, in_shards = self._shards_of(data_plan)
        out = self.store.local_path(self.store.artifact_dir("tokenize", plan.key))
        if out.exists():
            shutil.rmtree(out)  # a partial, killed tokenize: it is one unit, redo it
        out.mkdir(parents=True)
        self.reporter.stage_start("tokenize", 3, unit="steps")
        split = self.cfg.split

        def texts(want_val: bool) -> Iterator[str]:
            for s in in_shards:
                for batch in self.store.iter_batches(in_stage, s, columns=["id", "text", "meta"]):
                    want = "val" if want_val else "train"
                    splits = split_of(batch, split.val_fraction, split.seed)
                    for text, part in zip(batch.column("text").to_pylist(), splits, strict=True):
                        if part == want and text:
                            yield text

        ingredients = plan.ingredients["tokenizer"]
        if "pretrained" in ingredients:
            from genloom.models.hf_causal_lm import load_hf_tokenizer

            path = Path(ingredients["pretrained"])
            tokenizer = load_hf_tokenizer(str(path if path.is_absolute() else self.base_dir / path))
        else:
            tokenizer = train_tokenizer(texts(False), self.cfg.train.tokenizer)
        tokenizer.save(str(out / "tokenizer.json"))
        self.reporter.stage_advance("tokenize")
        train_info = pack_tokens(tokenizer, texts(False), out / "train.bin")
        self.reporter.stage_advance("tokenize")
        val_info = pack_tokens(tokenizer, texts(True), out / "val.bin")
        _write_val_texts(texts(True), out / "val_texts.parquet")
        self.reporter.stage_advance("tokenize")
        if not train_info.get("n_tokens") or not val_info.get("n_tokens"):
            raise StageError("the train or validation split is empty: add data or change split.val_fraction")
        manifest = {
            "stage": "tokenize",
            "key": plan.key,
            "train": train_info,
            "val": val_info,
            "vocab_size": tokenizer.get_vocab_size(),
            "ingredients": plan.ingredients,
            "rows": train_info.get("n_docs"),
        }
        self.store.write_manifest("tokenize", plan.key, manifest)
        stats = {
            "vocab_size": tokenizer.get_vocab_size(),
            "train_tokens": train_info.get("n_tokens"),
            "val_tokens": val_info.get("n_tokens"),
        }
        return StageResult("tokenize", "ran", plan.key, reason, 0.0, train_info.get("n_docs"), stats)

    def _run_train(self, plan: StagePlan, plans: list[StagePlan], reason: str, force: bool) -> StageResult:
        from genloom.train.loop import train

        assert plan.key is not None
        tok_dir = self.store.local_path(
            self.store.artifact_dir("tokenize", _plan_for(plans, "tokenize").key or "")
        )
        out = self.store.local_path(self.store.artifact_dir("train", plan.key))
        if force and out.exists():  # forced: train from nothing, not from the last checkpoint
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(tok_dir / "tokenizer.json", out / "tokenizer.json")
        self.reporter.stage_start("train", None, unit="steps")

        def progress(step: int, total: int | None, info: dict[str, Any]) -> None:
            self.reporter.stage_advance("train", 0, 0, {"step": step, "total": total, **info})

        metrics = train(self.cfg.train, tok_dir / "train.bin", tok_dir / "val.bin", out, progress)
        self.store.write_manifest(
            "train",
            plan.key,
            {"stage": "train", "key": plan.key, "metrics": metrics, "ingredients": plan.ingredients},
        )
        return StageResult("train", "ran", plan.key, reason, 0.0, None, _round(metrics))

    def _run_evaluate(self, plan: StagePlan, plans: list[StagePlan], reason: str) -> StageResult:
        from genloom.evaluate.text import evaluate_text_model

        assert plan.key is not None
        model_dir = self.store.local_path(
            self.store.artifact_dir("train", _plan_for(plans, "train").key or "")
        )
        tok_dir = self.store.local_path(
            self.store.artifact_dir("tokenize", _plan_for(plans, "tokenize").key or "")
        )
        self.reporter.stage_start("evaluate", 1, unit="steps")
        metrics = evaluate_text_model(model_dir, tok_dir / "val.bin", max_tokens=self.cfg.evaluate.max_tokens)
        self.reporter.stage_advance("evaluate")
        gates = check_gates(metrics, self.cfg.evaluate.gates)
        out = self.store.local_path(self.store.artifact_dir("evaluate", plan.key))
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps({"metrics": metrics, "gates": gates}, indent=1))
        self._write_report(out, plans, metrics, gates, model_dir)
        self.store.write_manifest(
            "evaluate",
            plan.key,
            {
                "stage": "evaluate",
                "key": plan.key,
                "metrics": metrics,
                "gates": gates,
                "ingredients": plan.ingredients,
            },
        )
        return StageResult(
            "evaluate", "ran", plan.key, reason, 0.0, None, {**_round(metrics), "gates": gates}
        )

    def _write_report(
        self,
        out: Path,
        plans: list[StagePlan],
        metrics: dict[str, Any],
        gates: dict[str, Any],
        model_dir: Path,
    ) -> None:
        from genloom.evaluate.report import write_report

        stages = []
        for p in plans:
            if (
                p.stage in DATA_STAGES
                and not p.passthrough
                and p.key
                and self.store.has_artifact(p.stage, p.key)
            ):
                m = self.store.read_manifest(p.stage, p.key)
                dropped = sum(sum(s.get("dropped", {}).values()) for s in m.get("stats", {}).values())
                stages.append(
                    {
                        "stage": p.stage,
                        "rows": m["rows"],
                        "dropped": dropped,
                        "rejected": m.get("rejected", 0),
                        "steps": ", ".join(m.get("stats", {})),
                        "key": p.key[:12],
                    }
                )
        states = sorted((model_dir / "checkpoints").glob("step_*/state.json"))
        history = json.loads(states[-1].read_text()).get("history", []) if states else []
        write_report(out / "report.html", f"{self.cfg.name}: evaluation", metrics, gates, history, stages)

    def _run_register(
        self, plan: StagePlan, plans: list[StagePlan], run_id: str
    ) -> tuple[StageResult, dict[str, Any]]:
        train_key = _plan_for(plans, "train").key or ""
        ev_key = _plan_for(plans, "evaluate").key or ""
        evaluation = self.store.read_manifest("evaluate", ev_key)
        trained = self.store.read_manifest("train", train_key)["metrics"]
        metrics = {
            **{k: trained[k] for k in ("steps", "tokens", "train_loss", "params", "wall_s") if k in trained},
            **evaluation["metrics"],
        }
        gates = evaluation["gates"]
        name = self.model_name
        known = [m for m in self.catalog.models(name) if m["artifact_key"] == train_key]
        if known:
            version, status = known[0], "cached"
            decision = f"already registered as v{version['version']} ({version['stage']})"
        else:
            version, status = (
                self.catalog.register_model(
                    name, train_key, self.store.artifact_dir("train", train_key), metrics, run_id
                ),
                "ran",
            )
            decision = self._promotion(version, metrics, gates, plans)
            if decision.startswith("promoted"):
                self.catalog.promote(name, version["version"])
                version = self.catalog.model_version(name, version["version"])
        res = StageResult(
            "register",
            status,
            plan.key,
            decision,
            0.0,
            None,
            {"model": name, "version": version["version"], "stage": version["stage"]},
        )
        return res, {
            "name": name,
            "version": version["version"],
            "stage": version["stage"],
            "uri": version["uri"],
            "metrics": _round(metrics),
            "decision": decision,
        }

    def _promotion(
        self, version: dict[str, Any], metrics: dict[str, Any], gates: dict[str, Any], plans: list[StagePlan]
    ) -> str:
        rule = self.cfg.registry
        champion = self.catalog.champion(self.model_name)
        if champion is not None and champion["version"] == version["version"]:
            return "already champion"
        failed = [m for m, g in gates.items() if not g["passed"]]
        if failed:
            return f"kept as candidate: failed gates {', '.join(failed)}"
        if rule.promote == "never":
            return "kept as candidate (register.promote=never)"
        if champion is None or rule.promote == "always":
            return "promoted: first champion" if champion is None else "promoted (register.promote=always)"
        tok_dir = self.store.local_path(
            self.store.artifact_dir("tokenize", _plan_for(plans, "tokenize").key or "")
        )
        ours = metrics.get(rule.metric)
        theirs = self._evaluate_on(Path(champion["uri"]), tok_dir).get(rule.metric)
        if ours is None or theirs is None:
            return f"kept as candidate: metric {rule.metric!r} unavailable"
        if ours < theirs:
            return f"promoted: {rule.metric} {ours:.4f} < champion v{champion['version']} {theirs:.4f}"
        return f"kept as candidate: {rule.metric} {ours:.4f} >= champion v{champion['version']} {theirs:.4f}"

    def _evaluate_on(self, model_dir: Path, tok_dir: Path) -> dict[str, Any]:
        """Evaluate another model on this run's validation texts (re-tokenised with its own tokenizer)."""
        import tempfile

        from tokenizers import Tokenizer

        from genloom.evaluate.text import evaluate_text_model
        from genloom.train.data import pack_tokens

        texts = pq.read_table(tok_dir / "val_texts.parquet").column("text").to_pylist()
        tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        with tempfile.TemporaryDirectory() as tmp:
            pack_tokens(tokenizer, iter(texts), Path(tmp) / "val.bin")
            return evaluate_text_model(
                model_dir, Path(tmp) / "val.bin", max_tokens=self.cfg.evaluate.max_tokens
            )

    # ------------------------------------------------------------------------------------------
    # explaining, status, lineage

    def _why(self, plan: StagePlan, forced: frozenset[str]) -> str:
        if plan.stage in forced:
            return "forced (--force)"
        previous = self.catalog.latest_artifact(self.cfg.name, plan.stage)
        if previous is None:
            return "first run"
        changes = diff_ingredients(previous.get("ingredients") or {}, plan.ingredients)
        changes = [_friendly(c, plan.stage) for c in changes]
        return "; ".join(changes[:4]) if changes else "artifact missing from the store"

    def explain(self) -> list[dict[str, Any]]:
        """For each stage: cached or will run, and which input or config change causes it."""
        out = []
        for plan in self.plan():
            if plan.key is None or plan.passthrough:
                status, why = "skipped", "no steps" if plan.passthrough else "not configured"
            elif plan.stage == "register":
                status, why = "run", "always (registers the model version, promotes if better)"
            elif plan.cached:
                status, why = "cached", "artifact exists"
            else:
                status, why = "run", self._why(plan, frozenset())
            out.append({"stage": plan.stage, "status": status, "key": plan.key, "reason": why})
        return out

    def status(self) -> dict[str, Any]:
        """Recent runs with their stages, and the registered model versions."""
        runs = self.catalog.runs(self.cfg.name, limit=5)
        for r in runs:
            r["stages"] = self.catalog.stage_runs(r["id"])
        return {"runs": runs, "models": self.catalog.models(self.model_name)}

    def rejected(self, stage: str = "ingest") -> pa.Table:
        """The quarantine table of a finished data stage of the current plan."""
        plan = _plan_for(self.plan(), stage)
        if plan.key is None or not self.store.has_artifact(plan.stage, plan.key):
            raise NotFoundError(f"stage {stage!r} has not run for the current config")
        in_stage, shards = self._shards_of(plan)
        tables = [self.store.read_shard(in_stage, s, "rejected") for s in shards]
        return pa.concat_tables(tables) if tables else pa.table({})

    def lineage(self, record_id: str) -> dict[str, Any]:
        """Where a record came from, the steps that touched it, and the artifacts and models it reached."""
        plans = self.plan()
        found: dict[str, Any] = {"id": record_id, "stages": [], "artifacts": [], "models": []}
        alive = False
        for plan in plans:
            if plan.stage not in DATA_STAGES or plan.passthrough or plan.key is None:
                continue
            if not self.store.has_artifact(plan.stage, plan.key):
                break
            manifest = self.store.read_manifest(plan.stage, plan.key)
            entry: dict[str, Any] = {
                "stage": plan.stage,
                "artifact": plan.key,
                "events": [],
                "present": False,
            }
            for s in manifest["shards"]:
                events = self.store.read_shard(plan.stage, s, "events")
                hits = events.filter(pc.equal(events.column("id"), record_id))
                entry["events"] += [f"{e['step']}: {e['event']}" for e in hits.to_pylist()]
                data = self.store.read_shard(plan.stage, s, "data", columns=["id", "source", "meta"])
                rows = data.filter(pc.equal(data.column("id"), record_id)).to_pylist()
                if rows:
                    entry["present"] = True
                    if plan.stage == "ingest":
                        found["source"] = {
                            "source": rows[0]["source"],
                            "meta": json.loads(rows[0]["meta"] or "{}"),
                        }
                rej = self.store.read_shard(plan.stage, s, "rejected")
                for r in rej.filter(pc.equal(rej.column("id"), record_id)).to_pylist():
                    entry["events"].append(f"{r['step']}: rejected:{r['reason']} {r['detail']}".strip())
            found["stages"].append(entry)
            alive = entry["present"]
            found["artifacts"].append({"stage": plan.stage, "key": plan.key})
        if not found["stages"] or not any(e["present"] or e["events"] for e in found["stages"]):
            raise NotFoundError(f"record {record_id!r} is in no artifact of the current plan")
        if alive:
            split = self.cfg.split
            table = pa.table({"id": [record_id], "meta": ["{}"]})
            found["split"] = split_of(table, split.val_fraction, split.seed)[0]
            for plan in plans:
                if (
                    plan.stage in MODEL_STAGES
                    and plan.key
                    and plan.stage != "register"
                    and self.store.has_artifact(plan.stage, plan.key)
                ):
                    found["artifacts"].append({"stage": plan.stage, "key": plan.key})
            train_key = _plan_for(plans, "train").key
            if train_key:
                found["models"] = [
                    {"name": m["name"], "version": m["version"], "stage": m["stage"]}
                    for m in self.catalog.models(self.model_name)
                    if m["artifact_key"] == train_key
                ]
        return found

    def champion_dir(self) -> Path:
        """The folder of the champion model of this pipeline."""
        champ = self.catalog.champion(self.model_name)
        if champ is None:
            raise NotFoundError(f"model {self.model_name!r} has no champion yet: run `genloom run` first")
        return Path(champ["uri"])

    def close(self) -> None:
        """Release the catalog connection."""
        self.catalog.close()


# ----------------------------------------------------------------------------------------------
# helpers


def split_of(batch: pa.Table, fraction: float, seed: int) -> list[str]:
    """Each row's split, ``train``, ``val`` or ``none``, from a stable hash of its (original) id.

    Augmented rows never enter validation: a copy of a training record goes to train, and a copy
    of a validation record is left out of both (in train it would leak the held-out text).
    """
    out = []
    metas = batch.column("meta").to_pylist() if "meta" in batch.column_names else [None] * batch.num_rows
    for rid, meta in zip(batch.column("id").to_pylist(), metas, strict=True):
        origin = None
        if meta and '"augmented_from"' in meta:
            origin = json.loads(meta).get("augmented_from")
        h = hashlib.blake2b(f"{seed}:{origin or rid}".encode(), digest_size=8).digest()
        is_val = int.from_bytes(h, "big") / 2**64 < fraction
        out.append(("none" if is_val else "train") if origin else ("val" if is_val else "train"))
    return out


def check_gates(metrics: dict[str, Any], gates: dict[str, Any]) -> dict[str, Any]:
    """Each gate's bounds, value and whether it passed."""
    out = {}
    for name, gate in gates.items():
        value = metrics.get(name)
        passed = (
            value is not None
            and (gate.min is None or value >= gate.min)
            and (gate.max is None or value <= gate.max)
        )
        out[name] = {"value": value, "min": gate.min, "max": gate.max, "passed": passed}
    return out


def diff_ingredients(old: Any, new: Any, path: str = "") -> list[str]:
    """Human-readable differences between two key ingredient trees (what changed and where)."""
    if isinstance(old, dict) and isinstance(new, dict):
        if path.endswith(("partitions", "files")):  # {file: fingerprint}: name the files that changed
            changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            if not changed:
                return []
            names = [Path(c).name or c for c in changed]
            more = f" and {len(names) - 3} more" if len(names) > 3 else ""
            what = "source data" if path.endswith("partitions") else f"{path.removesuffix('.files')}: file"
            return [f"{what} changed: {', '.join(names[:3])}{more}"]
        out: list[str] = []
        for k in sorted(set(old) | set(new), key=str):
            sub = f"{path}.{k}" if path else str(k)
            if k not in old:
                out.append(f"{sub} added")
            elif k not in new:
                out.append(f"{sub} removed")
            else:
                out += diff_ingredients(old[k], new[k], sub)
        return out
    if isinstance(old, list) and isinstance(new, list):
        if len(old) != len(new):
            return [f"{path}: {len(old)} -> {len(new)} items"]
        out = []
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            out += diff_ingredients(a, b, f"{path}.{i}")
        return out
    if old != new:
        if isinstance(old, dict | list) or isinstance(new, dict | list):
            return [f"{path} changed (recorded by an older genloom in another form)"]
        if isinstance(old, str) and isinstance(new, str) and new.startswith(DIGEST_PREFIX):
            return [f"{path} changed (a secret: its value is never shown)"]
        if path.endswith("input") or path.endswith("model") or path.endswith("data"):
            return [f"upstream artifact changed ({path})"]
        return [f"{path}: {old!r} -> {new!r}"]
    return []


def _friendly(change: str, stage: str) -> str:
    """``steps.1.config.min_chars: ...`` -> ``clean.1.min_chars: ...`` (the path a user writes)."""
    import re

    change = re.sub(r"^steps\.(\d+)\.config\.", rf"{stage}.\1.", change)
    change = re.sub(r"^steps\.(\d+)\.version", rf"{stage}.\1 component version", change)
    change = re.sub(r"^sources\.(\d+)\.config\.", r"sources.\1.", change)
    return change.replace("upstream artifact changed (input)", "input changed (an earlier stage's output)")


def _fit_tag(stage: str, index: int, step_ingredients: list[dict[str, Any]], input_key: str | None) -> str:
    """The identity of a fit: its stage, place, the configs up to it and its input, without
    what fits keep across runs (so it is the same before and after it commits)."""
    upto = [{k: v for k, v in s.items() if k != "shared_state"} for s in step_ingredients[: index + 1]]
    return content_key(stage, index, upto, input_key)


def _segments(steps: list[Step]) -> list[tuple[int | None, list[int]]]:
    """Split a step list at Fitted steps, as indices: [(fitted or None, per-record steps after it)]."""
    segs: list[tuple[int | None, list[int]]] = [(None, [])]
    for i, s in enumerate(steps):
        if isinstance(s, Fitted):
            segs.append((i, []))
        else:
            segs[-1][1].append(i)
    return [seg for i, seg in enumerate(segs) if i > 0 or seg[1]]


def _plan_for(plans: list[StagePlan], stage: str) -> StagePlan:
    for p in plans:
        if p.stage == stage:
            return p
    raise KeyError(stage)


def _previous_data_stage(plans: list[StagePlan], stage: str) -> str:
    """The nearest earlier data stage that produced an artifact (not a passthrough)."""
    i = DATA_STAGES.index(stage)
    for s in reversed(DATA_STAGES[:i]):
        if not _plan_for(plans, s).passthrough:
            return s
    return "ingest"


def _resolve_data_stage(plans: list[StagePlan], stage: str) -> str:
    p = _plan_for(plans, stage)
    return _previous_data_stage(plans, stage) if p.passthrough else stage


def _write_val_texts(texts: Iterator[str], path: Path) -> None:
    pq.write_table(pa.table({"text": pa.array(list(texts), pa.string())}), path, compression="zstd")


def _round(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 5) if isinstance(v, float) else v for k, v in metrics.items()}
