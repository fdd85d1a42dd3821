"""Step families. A component subclasses one family and writes one method; the family owns the loop.

| family     | a component writes                                     |
| ---------- | ------------------------------------------------------ |
| Source     | ``read(partition) -> Iterator[Table | dict | Rejected]`` |
| Map        | ``apply(record) -> record`` or ``apply_batch(table)``   |
| Filter     | ``reject(record) -> reason | None`` or ``reject_batch`` |
| Augmenter  | ``expand(record) -> Iterable[record]``                  |
| Fitted     | ``fit(tables) -> state`` and ``transform(table, state)`` |

A step is a frozen Pydantic model: its fields are its config. Heavy state (a model, a connection)
is created in ``setup()``, which runs once per process, so steps pickle to worker processes and Ray.
The error policy: a component raises ``RecordError(reason)`` for a problem of one record or file,
which is quarantined with that reason while the run goes on; any other exception is a bug or a
broken resource (``SourceError`` for an unreachable backend) and fails the stage with a
``StepError`` naming the component, its config path (``clean.2``) and the cause.
"""

from __future__ import annotations

import importlib
import json
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, PrivateAttr

from genloom.core.errors import MissingDependencyError, RecordError
from genloom.core.records import (
    Rejected,
    dump_meta,
    load_meta,
    normalize_columns,
    records_to_table,
    table_to_records,
)
from genloom.core.secrets import key_dump
from genloom.core.stats import StepStats


class StepContext:
    """Collects stats, quarantined rows and lineage events for one shard."""

    def __init__(self) -> None:
        self.stats: dict[str, StepStats] = {}
        self.rejected: list[dict[str, str]] = []
        self.events: list[dict[str, str]] = []

    def stats_for(self, step: str) -> StepStats:
        """The stats object of ``step`` (created on first use)."""
        return self.stats.setdefault(step, StepStats())

    def reject(self, step: str, rec_id: str, reason: str, location: str = "", detail: str = "") -> None:
        """Quarantine one record or file."""
        self.rejected.append(
            {"id": rec_id, "step": step, "reason": reason, "location": location, "detail": detail[:2000]}
        )
        self.stats_for(step).rejected += 1

    def event(self, step: str, ids: Iterable[str], event: str) -> None:
        """Record that ``step`` did ``event`` (modified, dropped:<reason>, augmented) to ``ids``."""
        self.events.extend({"id": i, "step": step, "event": event} for i in ids)


class Step(BaseModel):
    """Base of every component: frozen config plus lazy ``setup()``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: str
    #: bump when the component's output changes for the same config (part of cache keys)
    version: ClassVar[str] = "1"
    #: importable modules the component needs, and the extra that installs them
    requires: ClassVar[tuple[str, ...]] = ()
    extra: ClassVar[str] = ""

    _ready: bool = PrivateAttr(default=False)
    _base_dir: str | None = PrivateAttr(default=None)

    @property
    def name(self) -> str:
        """The name used in stats and lineage (the registry name)."""
        return self.type

    def check(self, path: str) -> None:
        """Config-time checks beyond types (paths exist...); raise ConfigError naming ``path``."""

    def check_requirements(self) -> None:
        """Raise MissingDependencyError naming the extra when a required module is absent."""
        for module in self.requires:
            try:
                importlib.import_module(module)
            except ImportError as e:
                hint = f"pip install 'genloom[{self.extra}]'" if self.extra else f"pip install {module}"
                raise MissingDependencyError(f"{module} (needed by {self.type!r})", hint) from e

    def setup(self) -> None:
        """Create heavy state (models, connections); runs once per process before the first batch."""

    def ensure_setup(self) -> None:
        """Run ``setup()`` once."""
        if not self._ready:
            self.check_requirements()
            self.setup()
            self._ready = True

    def bind(self, base_dir: str | Path) -> None:
        """Set the folder this component's relative paths are relative to (the pipeline file's)."""
        self._base_dir = str(base_dir)

    @property
    def base_dir(self) -> str:
        """The folder relative paths resolve against (bound by the config; else the current folder)."""
        return self._base_dir or os.getcwd()

    def resolve_path(self, path: str) -> str:
        """``path`` from this component's config as a real path: relative ones against ``base_dir``."""
        path = os.path.expanduser(path)
        if "://" in path or os.path.isabs(path):
            return path
        return os.path.join(self.base_dir, path)

    def files_read(self) -> list[str]:
        """Files the step reads besides its input records (a dictionary, another dataset, a model).

        Paths or globs as configured (relative ones are relative to the pipeline file's folder).
        Their content hashes enter the cache key, so editing one reruns the step, and ``explain``
        names the file that changed. The default names a ``spacy_model`` given as a folder.
        """
        model = self.spacy_model_ref()
        return [model] if model is not None and os.path.isdir(model) else []

    def resource_versions(self) -> dict[str, str]:
        """Versions of resources the step loads that are not files it names (an installed spaCy
        model package): part of the cache key, so upgrading one reruns the step.

        The default covers every step with a ``spacy_model`` field: the spaCy version and the
        model package's version (a model given as a folder is in ``files_read`` instead)."""
        model = self.spacy_model_ref()
        return spacy_versions(model) if model is not None else {}

    def spacy_model_ref(self) -> str | None:
        """The step's ``spacy_model``: an installed package's name, or a folder resolved against
        ``base_dir``; None for a step without one."""
        model = getattr(self, "spacy_model", None)
        if not isinstance(model, str) or not model:
            return None
        folder = self.resolve_path(model)
        return folder if os.path.isdir(folder) else model

    def config_dict(self) -> dict[str, Any]:
        """The resolved config, as it enters cache keys."""
        return self.model_dump(mode="json")

    def key_config(self, salt: bytes) -> dict[str, Any]:
        """``config_dict()`` with every secret replaced by its HMAC under the store's ``salt``
        (``core.secrets``): what keys and ``explain`` see, so a changed password reruns the step
        while its value never reaches a manifest or the catalog."""
        return key_dump(self, salt)

    def run(self, table: pa.Table, ctx: StepContext) -> pa.Table:
        """Process one batch (implemented by each family)."""
        raise NotImplementedError


def spacy_versions(model: str) -> dict[str, str]:
    """{"spacy": version, <model package>: version} without loading spaCy (a folder: spaCy only)."""
    from importlib import metadata

    def version(name: str) -> str:
        for candidate in (name, name.replace("_", "-")):
            try:
                return metadata.version(candidate)
            except metadata.PackageNotFoundError:
                continue
        return "not installed"

    out = {"spacy": version("spacy")}
    if not os.path.isdir(model):
        out[model] = version(model)
    return out


def _ids(table: pa.Table) -> list[str]:
    return table.column("id").to_pylist() if "id" in table.column_names else [""] * table.num_rows


class Source(Step):
    """Produces records. Write ``read(partition)``; optionally ``partitions()`` and ``fingerprint()``."""

    #: rows per output batch when ``read`` yields dicts
    batch_rows: ClassVar[int] = 2048
    #: partitions per ingest shard when the source's partitions are large units of their own
    #: (an incremental segment, a key range); None: ``data.partitions_per_shard``
    partitions_per_shard: ClassVar[int | None] = None

    def partitions(self) -> list[Any]:
        """Independent units of reading (files, key ranges); JSON-serialisable, stable order."""
        return [None]

    def local_only(self) -> bool:
        """True when reading needs this machine's files (local paths, a SQLite file): on a Ray
        cluster the executor runs its shards on the driver's node, the one that has them."""
        return False

    def fingerprint(self) -> str:
        """Changes when the underlying data changes (file sizes and hashes, a table's max id...)."""
        return ""

    def restore_state(self, state: dict[str, Any] | None) -> None:
        """Take what the last run kept in the catalog (an incremental source's watermarks); the
        ingest plan calls it before ``partitions()``. The default keeps nothing."""

    def state(self) -> dict[str, Any] | None:
        """What to keep in the catalog for the next run, once ``partitions()`` ran (JSON); None:
        nothing. A run saves it when it plans, so a killed run resumes the same partitions."""
        return None

    def partition_fingerprint(self, partition: Any) -> str:
        """Fingerprint of one partition: shard keys hash these, so unchanged files are cache hits.

        The default combines ``fingerprint()`` with the partition; sources with per-partition
        fingerprints (files) override it so that one changed file re-reads only its shard.
        """
        return f"{self.fingerprint()}|{json.dumps(partition, sort_keys=True, default=str)}"

    def read(self, partition: Any) -> Iterator[pa.Table | dict[str, Any] | Rejected]:
        """Yield tables, rows (dicts) or Rejected markers for one partition."""
        raise NotImplementedError

    def location(self, partition: Any) -> str:
        """Human-readable location of a partition, for quarantine rows."""
        return "" if partition is None else str(partition)

    def run_partition(self, partition: Any, ctx: StepContext) -> Iterator[pa.Table]:
        """Read one partition; a failure quarantines the partition and the run goes on."""
        self.ensure_setup()
        stats = ctx.stats_for(self.name)
        rows: list[dict[str, Any]] = []
        start = time.perf_counter()
        try:
            for item in self.read(partition):
                if isinstance(item, Rejected):
                    ctx.reject(
                        self.name,
                        item.id,
                        item.reason,
                        item.location or self.location(partition),
                        item.detail,
                    )
                elif isinstance(item, pa.Table):
                    if item.num_rows:
                        stats.rows_out += item.num_rows
                        yield normalize_columns(item)
                else:
                    rows.append(item)
                    if len(rows) >= self.batch_rows:
                        stats.rows_out += len(rows)
                        yield records_to_table(rows)
                        rows = []
        except RecordError as e:  # this partition is bad: quarantined, the run goes on
            loc = self.location(partition)
            ctx.reject(self.name, loc, e.reason, loc, e.detail)
        # anything else (a reader bug, an unreachable backend: SourceError) fails the stage; file
        # sources turn a parser's exception on one broken file into a RecordError themselves
        if rows:
            stats.rows_out += len(rows)
            yield records_to_table(rows)
        stats.seconds += time.perf_counter() - start


class Map(Step):
    """Changes records one by one (``apply``) or a whole batch at once (``apply_batch``)."""

    def apply(self, record: dict[str, Any]) -> dict[str, Any]:
        """Return the changed record."""
        raise NotImplementedError

    def apply_batch(self, table: pa.Table, ctx: StepContext) -> pa.Table:
        """Vectorised form; the default calls ``apply`` per record and quarantines failures."""
        out: list[dict[str, Any]] = []
        for rec in table_to_records(table):
            try:
                out.append(self.apply(rec))
            except RecordError as e:  # a problem of this record: quarantined; any other error is a bug
                ctx.reject(self.name, rec.get("id", ""), e.reason, "", e.detail)
        return records_to_table(out, schema=None) if out else table.slice(0, 0)

    def run(self, table: pa.Table, ctx: StepContext) -> pa.Table:
        self.ensure_setup()
        stats = ctx.stats_for(self.name)
        start = time.perf_counter()
        stats.rows_in += table.num_rows
        out = self.apply_batch(table, ctx)
        stats.rows_out += out.num_rows
        if "text" in table.column_names and "text" in out.column_names and out.num_rows == table.num_rows:
            before, after = table.column("text"), out.column("text")
            both_null = pc.and_(pc.is_null(before), pc.is_null(after))
            changed = pc.and_(pc.fill_null(pc.not_equal(before, after), True), pc.invert(both_null))
            ctx.event(self.name, out.filter(changed).column("id").to_pylist(), "modified")
        stats.seconds += time.perf_counter() - start
        return out


class Filter(Step):
    """Drops records: ``reject(record)`` returns a reason (counted as ``dropped.<reason>``) or None."""

    def reject(self, record: dict[str, Any]) -> str | None:
        """A reason to drop the record, or None to keep it."""
        raise NotImplementedError

    def reject_batch(self, table: pa.Table) -> list[str | None]:
        """Vectorised form: one reason or None per row; the default calls ``reject`` per record."""
        return [self.reject(r) for r in table_to_records(table)]

    def run(self, table: pa.Table, ctx: StepContext) -> pa.Table:
        self.ensure_setup()
        stats = ctx.stats_for(self.name)
        start = time.perf_counter()
        stats.rows_in += table.num_rows
        reasons = self.reject_batch(table)
        keep = [r is None for r in reasons]
        ids = _ids(table)
        by_reason: dict[str, list[str]] = {}
        for rid, reason in zip(ids, reasons, strict=True):
            if reason is not None:
                by_reason.setdefault(reason, []).append(rid)
        for reason, rids in by_reason.items():
            stats.drop(reason, len(rids))
            ctx.event(self.name, rids, f"dropped:{reason}")
        out = table.filter(pa.array(keep, pa.bool_()))
        stats.rows_out += out.num_rows
        stats.seconds += time.perf_counter() - start
        return out


class Augmenter(Step):
    """Adds new records derived from each one (``expand``); originals are kept.

    New records carry ``meta.augmented_from`` (the original id) and ``meta.augmentation`` (the
    component), so splits can keep them out of validation and test data.
    """

    def expand(self, record: dict[str, Any]) -> Iterable[dict[str, Any]]:
        """New records derived from ``record`` (not including it)."""
        raise NotImplementedError

    def run(self, table: pa.Table, ctx: StepContext) -> pa.Table:
        self.ensure_setup()
        stats = ctx.stats_for(self.name)
        start = time.perf_counter()
        stats.rows_in += table.num_rows
        new: list[dict[str, Any]] = []
        taken = set(_ids(table))  # a second augmenter of the same type must not reuse an id
        for rec in table_to_records(table):
            try:
                k = 0
                for aug in self.expand(rec):
                    meta = {**(rec.get("meta") or {}), **(aug.get("meta") or {})}
                    meta.update(augmented_from=rec["id"], augmentation=self.name)
                    while f"{rec['id']}#{self.name}{k}" in taken:
                        k += 1
                    new_id = f"{rec['id']}#{self.name}{k}"
                    taken.add(new_id)
                    new.append({**rec, **aug, "id": new_id, "meta": meta})
            except RecordError as e:
                ctx.reject(self.name, rec.get("id", ""), e.reason, "", e.detail)
        stats.added += len(new)
        ctx.event(self.name, [r["meta"]["augmented_from"] for r in new], "augmented")
        out = pa.concat_tables([table, records_to_table(new, schema=table.schema)]) if new else table
        stats.rows_out += out.num_rows
        stats.seconds += time.perf_counter() - start
        return out


class Fitted(Step):
    """Learns state from the whole input (``fit``), then transforms each batch with it.

    The state is saved as its own artifact (JSON by default; override ``save_state`` and
    ``load_state`` for binary state). Rows that ``transform`` removes are counted as
    ``dropped.<drop_reason>``.
    """

    drop_reason: ClassVar[str] = "dropped"

    def fit(self, tables: Iterable[pa.Table]) -> Any:
        """Learn the state from every batch of the input, in order."""
        raise NotImplementedError

    def transform(self, table: pa.Table, state: Any) -> pa.Table:
        """Apply the state to one batch."""
        raise NotImplementedError

    def save_state(self, state: Any, path: str, fs: Any) -> None:
        """Write the state under ``path`` on fsspec filesystem ``fs``."""
        with fs.open(f"{path}/state.json", "w") as f:
            json.dump(state, f, sort_keys=True)

    def load_state(self, path: str, fs: Any) -> Any:
        """Read what ``save_state`` wrote."""
        with fs.open(f"{path}/state.json") as f:
            return json.load(f)

    def shared_state_digest(self, tag: str) -> str:
        """Digest of what the step keeps outside the store across runs (a cross-run index), for
        its cache key, leaving out what this same fit (``tag``) committed there itself, so that
        re-running unchanged data stays a cache hit. Empty when the step keeps nothing."""
        return ""

    def commit_state(self, path: str, fs: Any, tag: str) -> None:
        """Publish what a complete state must make visible outside the store (a cross-run index),
        marked as this fit's (``tag``).

        Runs after the state's done marker, every time the state is used, so it must be
        idempotent: a run killed between the marker and this call publishes on resume.
        """

    def run_fitted(self, table: pa.Table, state: Any, ctx: StepContext) -> pa.Table:
        """Transform one batch, recording stats and dropped ids."""
        self.ensure_setup()
        stats = ctx.stats_for(self.name)
        start = time.perf_counter()
        stats.rows_in += table.num_rows
        out = self.transform(table, state)
        if out.num_rows < table.num_rows and "id" in table.column_names:
            kept = set(out.column("id").to_pylist())
            gone = [i for i in table.column("id").to_pylist() if i not in kept]
            stats.drop(self.drop_reason, len(gone))
            ctx.event(self.name, gone, f"dropped:{self.drop_reason}")
        stats.rows_out += out.num_rows
        stats.seconds += time.perf_counter() - start
        return out


__all__ = [
    "Augmenter",
    "Filter",
    "Fitted",
    "Map",
    "Rejected",
    "Source",
    "Step",
    "StepContext",
    "dump_meta",
    "load_meta",
]
