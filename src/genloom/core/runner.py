"""``run_shard``: the one function executors run. It reads an input shard (or source partitions),
applies a sequence of steps, and writes the output shard with its quarantine and lineage events.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from genloom.core.records import empty_records
from genloom.core.steps import Fitted, Source, Step, StepContext
from genloom.core.store import ArtifactStore


@dataclass(frozen=True)
class ShardTask:
    """Everything a worker needs to produce one output shard (picklable)."""

    store_root: str
    base_dir: str
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


@contextlib.contextmanager
def working_dir(path: str) -> Iterator[None]:
    """Run with ``path`` as the current folder (relative paths in configs are project-relative)."""
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def run_shard(task: ShardTask) -> dict[str, Any]:
    """Produce one shard unless its completion marker exists; return its completion record."""
    store = ArtifactStore(task.store_root)
    if not task.force:
        done = store.shard_done(task.stage, task.shard_key)
        if done is not None:
            return {**done, "resumed": True}
    start = time.perf_counter()
    ctx = StepContext()
    with working_dir(task.base_dir):
        state = None
        if task.fitted is not None and task.state_dir is not None:
            state = task.fitted.load_state(task.state_dir, store.fs)
        outputs: list[pa.Table] = []
        rows_in = 0
        for batch in _input_batches(task, store, ctx):
            rows_in += batch.num_rows
            if task.fitted is not None:
                batch = task.fitted.run_fitted(batch, state, ctx)
            for step in task.steps:
                if batch.num_rows == 0:
                    break
                batch = step.run(batch, ctx)
            if batch.num_rows:
                outputs.append(batch)
    table = pa.concat_tables(outputs, promote_options="default") if outputs else empty_records()
    info = {
        "shard_key": task.shard_key,
        "rows_in": rows_in,
        "stats": {name: s.to_dict() for name, s in ctx.stats.items()},
        "label": task.label,
    }
    done = store.write_shard(task.stage, task.shard_key, table, ctx.rejected, ctx.events, info)
    return {**done, "seconds": time.perf_counter() - start, "resumed": False}


def _input_batches(task: ShardTask, store: ArtifactStore, ctx: StepContext) -> Iterator[pa.Table]:
    if task.source is not None:
        for partition in task.partitions:
            yield from task.source.run_partition(partition, ctx)
    elif task.input_stage is not None and task.input_shard is not None:
        yield from store.iter_batches(task.input_stage, task.input_shard)
