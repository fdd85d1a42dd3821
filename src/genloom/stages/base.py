"""What every stage shares: the plan and result types, the run context, and key ingredients.

A stage is an object with a ``name``, a ``plan`` (its key and what the key hashes, computed
before any work) and a ``run`` (which writes its artifact, manifest last). ``pipeline.py`` lists
the stages in order; a stage never imports ``pipeline.py``, and the queries (``inspect.py``) sit
above both.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa

from genloom.core.catalog import Catalog
from genloom.core.config import STAGE_LISTS
from genloom.core.errors import NotFoundError
from genloom.core.executors import Executor, make_executor
from genloom.core.progress import Reporter
from genloom.core.runner import ShardTask
from genloom.core.secrets import DIGEST_PREFIX, store_salt
from genloom.core.steps import Step
from genloom.core.store import ArtifactStore

DATA_STAGES = ("ingest", "augment", "clean", "preprocess", "features")
MODEL_STAGES = ("prepare", "train", "evaluate", "register")
STAGES = DATA_STAGES + MODEL_STAGES
STEP_LISTS = dict(zip(DATA_STAGES, STAGE_LISTS, strict=True))  # stage -> config list name
#: the kind of artifact each stage writes (catalog)
ARTIFACT_KINDS = {"prepare": "prepared", "train": "model", "evaluate": "metrics"}


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
    #: what the register stage decided (the model version), for the run summary
    model: dict[str, Any] | None = None


class RunContext:
    """What a stage works with: the config, the project folder, the store, the catalog, the
    reporter, the forced stages and (created on first use) the executor."""

    def __init__(
        self,
        cfg: Any,
        base_dir: Path,
        store: ArtifactStore,
        catalog: Catalog,
        reporter: Reporter,
        run_id: str = "",
        forced: frozenset[str] = frozenset(),
    ) -> None:
        self.cfg = cfg
        self.base_dir = base_dir
        self.store = store
        if not store.local and store.cache is None:  # model stages on an object store stage files here
            store.cache = base_dir / ".genloom" / "cache"
        self.catalog = catalog
        self.reporter = reporter
        self.run_id = run_id
        self.forced = forced
        self._executor: Executor | None = None
        self._salt: bytes | None = None

    @property
    def model_name(self) -> str:
        """The name models of this pipeline are registered under."""
        return self.cfg.registry.name or self.cfg.name

    @property
    def executor(self) -> Executor:
        """The data stages' executor, started on first use."""
        if self._executor is None:
            self._executor = make_executor(self.cfg.executor)
        return self._executor

    def close(self) -> None:
        """Stop the executor if one was started, and upload the checkpoints not uploaded yet."""
        if self._executor is not None:
            self._executor.close()
            self._executor = None
        self.store.stop_mirrors()

    def resolve(self, path: str) -> str:
        """A path from the config, relative to the pipeline file's folder."""
        return path if "://" in path or Path(path).is_absolute() else str(self.base_dir / path)

    def local_artifact(self, stage: str, key: str | None) -> Path:
        """The local folder of an artifact (model stages need real files): on an object store, its
        staging folder in the cache, downloaded when finished, its checkpoints mirrored while not."""
        return self.store.staged_artifact(stage, key or "")

    def secret_salt(self) -> bytes:
        """The store's salt for the HMACs of secrets in keys."""
        if self._salt is None:
            self._salt = store_salt(self.store.fs, self.store.base)
        return self._salt

    def file_digests(self, patterns: list[str]) -> dict[str, str]:
        """{path as configured (or found by its glob, or inside its folder): content digest}."""
        out: dict[str, str] = {}
        for pattern in patterns:
            full = self.resolve(pattern)
            if os.path.isdir(full):
                found = sorted(str(f) for f in Path(full).rglob("*") if f.is_file())
            elif glob.has_magic(full):
                found = sorted(glob.glob(full, recursive=True))
            else:
                found = [full]
            for f in found:
                name = os.path.relpath(f, self.base_dir) if Path(f).is_relative_to(self.base_dir) else f
                out[name] = self.store.file_digest(f) if os.path.isfile(f) else "missing"
        return out

    def step_ingredients(self, steps: list[Step]) -> list[dict[str, Any]]:
        """What a step's key hashes: its config (secrets as HMACs), version and class, the files
        it reads and the versions of the resources it loads."""
        out = []
        for s in steps:
            entry: dict[str, Any] = {
                "config": s.key_config(self.secret_salt()),  # secrets as HMACs, never their values
                "version": s.version,
                "class": type(s).__qualname__,
            }
            files = self.file_digests(s.files_read())
            if files:
                entry["files"] = files
            resources = s.resource_versions()
            if resources:
                entry["resources"] = resources
            out.append(entry)
        return out

    def why(self, plan: StagePlan) -> str:
        """Why a stage runs: forced, first run, or what changed since its last artifact."""
        if plan.stage in self.forced:
            return "forced (--force)"
        previous = self.catalog.latest_artifact(self.cfg.name, plan.stage)
        if previous is None:
            return "first run"
        changes = diff_ingredients(previous.get("ingredients") or {}, plan.ingredients)
        changes = [friendly(c, plan.stage) for c in changes]
        return "; ".join(changes[:4]) if changes else "artifact missing from the store"


class Stage:
    """One stage: ``plan`` decides its key before any work, ``run`` writes its artifact."""

    name: ClassVar[str]
    #: model stages: none unless the pipeline has a ``train:`` section
    needs_train: ClassVar[bool] = False

    def plan(self, ctx: RunContext, plans: list[StagePlan]) -> StagePlan:
        """The stage's key, inputs and ingredients, from the plans of the stages before it."""
        raise NotImplementedError

    def run(self, ctx: RunContext, plan: StagePlan, plans: list[StagePlan], reason: str) -> StageResult:
        """Do the stage's work and write its artifact (manifest last)."""
        raise NotImplementedError

    def cached_result(self, ctx: RunContext, plan: StagePlan) -> StageResult:
        """The result reported when the stage's artifact already exists."""
        assert plan.key is not None
        manifest = ctx.store.read_manifest(plan.stage, plan.key)
        return StageResult(plan.stage, "cached", plan.key, "artifact exists", 0.0, manifest.get("rows"), {})

    def is_cached(self, ctx: RunContext, plan: StagePlan) -> bool:
        """True when the artifact exists and the stage is not forced."""
        if not plan.key or plan.passthrough:
            return False
        return plan.stage not in ctx.forced and ctx.store.has_artifact(plan.stage, plan.key)


# ----------------------------------------------------------------------------------------------
# plan lookups


def plan_for(plans: list[StagePlan], stage: str) -> StagePlan:
    """The plan of ``stage``."""
    for p in plans:
        if p.stage == stage:
            return p
    raise KeyError(stage)


def previous_data_stage(plans: list[StagePlan], stage: str) -> str:
    """The nearest earlier data stage that produced an artifact (not a passthrough)."""
    i = DATA_STAGES.index(stage)
    for s in reversed(DATA_STAGES[:i]):
        if not plan_for(plans, s).passthrough:
            return s
    return "ingest"


def resolve_data_stage(plans: list[StagePlan], stage: str) -> str:
    """``stage``, or the earlier data stage whose output it passes through."""
    p = plan_for(plans, stage)
    return previous_data_stage(plans, stage) if p.passthrough else stage


def shards_of(store: ArtifactStore, plan: StagePlan) -> tuple[str, list[str]]:
    """(stage folder, shard keys) of a finished data stage's output."""
    if plan.key is None or not store.has_artifact(plan.stage, plan.key):
        raise NotFoundError(f"stage {plan.stage!r} has not run for the current config")
    manifest = store.read_manifest(plan.stage, plan.key)
    return plan.stage, list(manifest["shards"])


# ----------------------------------------------------------------------------------------------
# splits, rounding, the "why" texts


def split_of(batch: pa.Table, fraction: float, seed: int, test_fraction: float = 0.0) -> list[str]:
    """Each row's split, ``train``, ``val``, ``test`` or ``none``, from a stable hash of its (original) id.

    The hash, as u in [0, 1): validation below ``fraction``, test in [fraction, fraction +
    test_fraction), train above (so a test split leaves validation as it was). Augmented rows never
    enter a held-out split: a copy of a training record goes to train, and a copy of a validation
    or test record is left out (in train it would leak the held-out text).
    """
    out = []
    metas = batch.column("meta").to_pylist() if "meta" in batch.column_names else [None] * batch.num_rows
    for rid, meta in zip(batch.column("id").to_pylist(), metas, strict=True):
        origin = None
        if meta and '"augmented_from"' in meta:
            origin = json.loads(meta).get("augmented_from")
        h = hashlib.blake2b(f"{seed}:{origin or rid}".encode(), digest_size=8).digest()
        u = int.from_bytes(h, "big") / 2**64
        part = "val" if u < fraction else "test" if u < fraction + test_fraction else "train"
        out.append("none" if origin and part != "train" else part)
    return out


def round_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """Floats rounded to 5 decimals (for summaries and the catalog)."""
    return {k: round(v, 5) if isinstance(v, float) else v for k, v in metrics.items()}


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


def friendly(change: str, stage: str) -> str:
    """``steps.1.config.min_chars: ...`` -> ``clean.1.min_chars: ...`` (the path a user writes)."""
    change = re.sub(r"^steps\.(\d+)\.config\.", rf"{stage}.\1.", change)
    change = re.sub(r"^steps\.(\d+)\.version", rf"{stage}.\1 component version", change)
    change = re.sub(r"^steps\.(\d+):", rf"{stage}.\1:", change)
    change = re.sub(r"^sources\.(\d+)\.config\.", r"sources.\1.", change)
    return change.replace("upstream artifact changed (input)", "input changed (an earlier stage's output)")
