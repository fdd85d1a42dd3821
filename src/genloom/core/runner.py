"""``run_shard``: the one function executors run. It reads an input shard (or source partitions),
applies a sequence of steps, and writes the output shard with its quarantine and lineage events.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from genloom.core.errors import GenloomError, StageError, StepError
from genloom.core.records import empty_records, load_meta
from genloom.core.steps import Fitted, Source, Step, StepContext
from genloom.core.store import ArtifactStore


@dataclass(frozen=True)
class ShardTask:
    """Everything a worker needs to produce one output shard (picklable)."""

    store_root: str
    stage: str
    shard_key: str
    steps: tuple[Step, ...] = ()
    source: Source | None = None
    partitions: tuple[Any, ...] = ()
    input_stage: str | None = None
    input_shard: str | None = None
    fitted: Fitted | None = None
    state_dir: str | None = None
    force: bool = False
    label: dict[str, Any] = field(default_factory=dict)
    #: config paths of ``fitted`` (if any) then ``steps``, for error messages (``clean.2``)
    step_paths: tuple[str, ...] = ()
    #: the shard reads files of the driver's machine: a cluster executor runs it there
    on_driver: bool = False
    #: the store's fsspec options (credentials as SecretStr)
    store_options: dict[str, Any] = field(default_factory=dict)


def run_shard(task: ShardTask) -> dict[str, Any]:
    """Produce one shard unless its completion marker exists; return its completion record."""
    store = ArtifactStore(task.store_root, task.store_options)
    if not task.force:
        done = store.shard_done(task.stage, task.shard_key)
        if done is not None:
            return {**done, "resumed": True}
    start = time.perf_counter()
    ctx = StepContext()
    state = None
    if task.fitted is not None and task.state_dir is not None:
        state = task.fitted.load_state(task.state_dir, store.fs)
    outputs: list[pa.Table] = []
    rows_in = 0
    for batch in _input_batches(task, store, ctx):
        rows_in += batch.num_rows
        if task.fitted is not None:
            with _blame(task, 0, task.fitted):
                batch = task.fitted.run_fitted(batch, state, ctx)
        for i, step in enumerate(task.steps, start=1 if task.fitted is not None else 0):
            if batch.num_rows == 0:
                break
            with _blame(task, i, step):
                batch = step.run(batch, ctx)
        if batch.num_rows:
            outputs.append(batch)
    table = pa.concat_tables(outputs, promote_options="default") if outputs else empty_records()
    _check_unique_ids(table, task)
    info = {
        "shard_key": task.shard_key,
        "rows_in": rows_in,
        "stats": {name: s.to_dict() for name, s in ctx.stats.items()},
        "label": task.label,
    }
    done = store.write_shard(task.stage, task.shard_key, table, ctx.rejected, ctx.events, info)
    return {**done, "seconds": time.perf_counter() - start, "resumed": False}


@dataclass(frozen=True)
class FitShardTask:
    """One input shard of a fit that is counted per shard (picklable, like ShardTask)."""

    store_root: str
    stage: str
    shard: str
    step: Fitted
    state_dir: str
    store_options: dict[str, Any] = field(default_factory=dict)


def run_fit_shard(task: FitShardTask) -> Any:
    """A worker's part of a per-shard fit: ``step.fit_shard`` over the shard's batches, with the
    state's folder as its scratch space; returns the partial counts for ``merge_fits``."""
    store = ArtifactStore(task.store_root, task.store_options)
    task.step.ensure_setup()
    return task.step.fit_shard(_fit_batches(store, task), task.state_dir, store.fs)  # type: ignore[attr-defined]


def _fit_batches(store: ArtifactStore, task: FitShardTask) -> Iterator[pa.Table]:
    """The shard's batches for a fit: only the step's input column where it names one (the text
    vectorizers' ``column``; the same rows per batch as the full read), every column where the
    shard lacks it (so that the step's own error names the columns there are)."""
    column = getattr(task.step, "column", None)
    if not isinstance(column, str):
        yield from store.iter_batches(task.stage, task.shard)
        return
    batches = store.iter_batches(task.stage, task.shard, columns=[column])
    first = next(batches, None)
    if first is not None and column not in first.column_names:
        yield from store.iter_batches(task.stage, task.shard)
        return
    if first is not None:
        yield first
    yield from batches


@contextlib.contextmanager
def _blame(task: ShardTask, index: int, step: Step, where: str = "") -> Iterator[None]:
    """Turn an unexpected exception of a step into a StepError naming its config path."""
    path = task.step_paths[index] if index < len(task.step_paths) else task.stage
    suffix = f" (while reading {where})" if where else ""
    try:
        yield
    except StepError as e:
        if e.path:
            raise
        raise type(e)(f"{e}{suffix}", path=path, component=step.type) from e
    except GenloomError:
        raise
    except Exception as e:
        raise StepError(f"{type(e).__name__}: {e}{suffix}", path=path, component=step.type) from e


def _check_unique_ids(table: pa.Table, task: ShardTask) -> None:
    """Fail before the shard is written when two of its records share an id."""
    if table.num_rows < 2 or "id" not in table.column_names:
        return
    ids = table.column("id")
    if pc.count_distinct(ids).as_py() == table.num_rows:
        return
    first: dict[str, int] = {}
    for i, rid in enumerate(ids.to_pylist()):
        if rid in first:
            raise StageError(
                f"{task.stage}: two records have the id {rid!r} ({_where(table, first[rid])} and "
                f"{_where(table, i)}); ids must be unique: give each source its own files, or set "
                "the source's id column to a unique key"
            )
        first[rid] = i


def _where(table: pa.Table, row: int) -> str:
    """A record's location for messages: its meta path (and page or chunk), else its row."""
    meta = load_meta(table.column("meta")[row].as_py()) if "meta" in table.column_names else {}
    place = meta.get("path") or meta.get("augmented_from") or meta.get("combined_from")
    return f"from {place}" if place else f"row {row}"


def check_unique_ids(store: ArtifactStore, stage: str, shard_keys: list[str]) -> None:
    """Fail when two shards of one artifact hold the same record id (naming both shards)."""
    columns = [store.read_shard(stage, sk, columns=["id"]).column("id") for sk in shard_keys]
    total = sum(len(c) for c in columns)
    if total < 2:
        return
    if len({c.type for c in columns}) == 1:  # one C pass says "no duplicate"; the loop names one
        chunks = [chunk for c in columns for chunk in c.chunks]
        if pc.count_distinct(pa.chunked_array(chunks, type=columns[0].type)).as_py() == total:
            return
    seen: dict[str, str] = {}
    for sk, col in zip(shard_keys, columns, strict=True):
        for rid in col.to_pylist():
            other = seen.setdefault(rid, sk)
            if other != sk:
                where = [store.shard_done(stage, k) or {} for k in (other, sk)]
                labels = [" ".join(str(v) for v in (w.get("label") or {}).values()) or "?" for w in where]
                raise StageError(
                    f"{stage}: two records have the id {rid!r} (in the shards of {labels[0]} and "
                    f"{labels[1]}); ids must be unique: two sources probably read the same file"
                )


def _input_batches(task: ShardTask, store: ArtifactStore, ctx: StepContext) -> Iterator[pa.Table]:
    if task.source is not None:
        for partition in task.partitions:
            with _blame(task, 0, task.source, task.source.location(partition)):
                yield from task.source.run_partition(partition, ctx)
    elif task.input_stage is not None and task.input_shard is not None:
        yield from store.iter_batches(task.input_stage, task.input_shard)
