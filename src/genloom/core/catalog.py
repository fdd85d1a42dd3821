"""The catalog: runs, stage runs, artifacts, lineage edges and model versions, through SQLAlchemy.

SQLite by default (one file next to the pipeline), PostgreSQL for teams: the same code and tests
run on both. Model versions move between stages ``candidate``, ``champion`` and ``archived``; at
most one champion per model name.

The database itself enforces the model rules, so that two runs registering or promoting at the same
time cannot break them: a version number is unique per name (``uq_model_versions_name_version``),
an artifact is registered once per name (``uq_model_versions_name_artifact``) and a partial unique
index allows one ``champion`` row per name (``uq_model_versions_one_champion``, ``WHERE stage =
'champion'``, on SQLite and PostgreSQL). ``register_model`` and ``promote`` retry a transaction that
lost such a race. Opening an older catalog creates the missing indexes.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError

from genloom.core.errors import GenloomError, NotFoundError

metadata = MetaData()

runs = Table(
    "runs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("pipeline", String(200), nullable=False, index=True),
    Column("config_path", Text),
    Column("status", String(20), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    Column("summary", JSON),
)

stage_runs = Table(
    "stage_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(32), ForeignKey("runs.id"), index=True, nullable=False),
    Column("stage", String(50), nullable=False),
    Column("key", String(64)),
    Column("status", String(20), nullable=False),
    Column("reason", Text),
    Column("seconds", Float),
    Column("stats", JSON),
)

artifacts = Table(
    "artifacts",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("stage", String(50), nullable=False, index=True),
    Column("pipeline", String(200), index=True),
    Column("kind", String(30), nullable=False),
    Column("uri", Text, nullable=False),
    Column("run_id", String(32)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("rows", Integer),
    Column("ingredients", JSON),
)

lineage = Table(
    "lineage",
    metadata,
    Column("parent", String(64), primary_key=True),
    Column("child", String(64), primary_key=True),
)

model_versions = Table(
    "model_versions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False, index=True),
    Column("version", Integer, nullable=False),
    Column("artifact_key", String(64), nullable=False),
    Column("uri", Text, nullable=False),
    Column("stage", String(20), nullable=False),
    Column("metrics", JSON),
    Column("run_id", String(32)),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

MODEL_INDEXES = (
    Index("uq_model_versions_name_version", model_versions.c.name, model_versions.c.version, unique=True),
    Index(
        "uq_model_versions_name_artifact", model_versions.c.name, model_versions.c.artifact_key, unique=True
    ),
    Index(
        "uq_model_versions_one_champion",
        model_versions.c.name,
        unique=True,
        sqlite_where=model_versions.c.stage == "champion",
        postgresql_where=model_versions.c.stage == "champion",
    ),
)

# a transaction that lost a race on the model indexes (or, on SQLite, the write lock) is retried
# this many times, with a short random back-off
_RACE_ATTEMPTS = 8

# what a source keeps between runs (an incremental source's watermarks), by pipeline and by a
# key of the source's config, so a changed query starts afresh
source_states = Table(
    "source_states",
    metadata,
    Column("pipeline", String(200), primary_key=True),
    Column("source", String(64), primary_key=True),
    Column("state", JSON, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

MODEL_STAGES = ("candidate", "champion", "archived")


def _now() -> datetime:
    return datetime.now(UTC)


def resolve_url(url: str, base_dir: Path) -> str:
    """Make a relative SQLite path relative to the project folder, creating its parent folder."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith("sqlite:////") and url != "sqlite:///:memory:":
        path = (base_dir / url[len(prefix) :]).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"{prefix}{path}"
    return url


class Catalog:
    """Metadata about everything genloom made."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: Engine = create_engine(url, future=True)
        metadata.create_all(self.engine)
        self._migrate_model_indexes()

    def _migrate_model_indexes(self) -> None:
        """Create the model indexes an older catalog lacks; a catalog whose rows already break a
        rule is reported, not silently changed."""
        checks = {
            "uq_model_versions_name_version": (model_versions.c.name, model_versions.c.version),
            "uq_model_versions_name_artifact": (model_versions.c.name, model_versions.c.artifact_key),
        }
        with self.engine.connect() as c:
            present = {i["name"] for i in _inspect_indexes(c)}
        for index in MODEL_INDEXES:
            if index.name in present:
                continue
            with self.engine.begin() as c:
                cols = checks.get(str(index.name))
                q = (
                    select(*cols).group_by(*cols)
                    if cols
                    else select(model_versions.c.name)
                    .where(model_versions.c.stage == "champion")
                    .group_by(model_versions.c.name)
                )
                dup = c.execute(q.having(func.count() > 1).limit(1)).first()
                if dup is not None:
                    raise GenloomError(
                        f"catalog {self.engine.url.render_as_string(hide_password=True)!r}: "
                        f"model_versions breaks {index.name} (for example "
                        f"{tuple(dup)}); fix those rows (`genloom status` lists the versions; archive or delete the "
                        "duplicates) and open the catalog again"
                    )
                index.create(c, checkfirst=True)

    def close(self) -> None:
        """Release connections."""
        self.engine.dispose()

    # -- runs
    def start_run(self, run_id: str, pipeline: str, config_path: str) -> None:
        """Record a new run."""
        with self.engine.begin() as c:
            c.execute(
                insert(runs).values(
                    id=run_id, pipeline=pipeline, config_path=config_path, status="running", started_at=_now()
                )
            )

    def finish_run(self, run_id: str, status: str, summary: dict[str, Any]) -> None:
        """Mark a run finished (``succeeded`` or ``failed``) with its summary."""
        with self.engine.begin() as c:
            c.execute(
                update(runs)
                .where(runs.c.id == run_id)
                .values(status=status, finished_at=_now(), summary=_jsonable(summary))
            )

    def record_stage(
        self,
        run_id: str,
        stage: str,
        key: str | None,
        status: str,
        reason: str,
        seconds: float,
        stats: dict[str, Any],
    ) -> None:
        """Record what one stage did in a run (``cached`` or ``ran``) and why."""
        with self.engine.begin() as c:
            c.execute(
                insert(stage_runs).values(
                    run_id=run_id,
                    stage=stage,
                    key=key,
                    status=status,
                    reason=reason,
                    seconds=seconds,
                    stats=_jsonable(stats),
                )
            )

    def runs(self, pipeline: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        """Most recent runs first."""
        q = select(runs).order_by(runs.c.started_at.desc()).limit(limit)
        if pipeline:
            q = q.where(runs.c.pipeline == pipeline)
        with self.engine.connect() as c:
            return [dict(r._mapping) for r in c.execute(q)]

    def stage_runs(self, run_id: str) -> list[dict[str, Any]]:
        """Stage records of one run, in execution order."""
        with self.engine.connect() as c:
            q = select(stage_runs).where(stage_runs.c.run_id == run_id).order_by(stage_runs.c.id)
            return [dict(r._mapping) for r in c.execute(q)]

    # -- artifacts
    def add_artifact(
        self,
        key: str,
        stage: str,
        pipeline: str,
        kind: str,
        uri: str,
        run_id: str,
        rows: int | None,
        ingredients: dict[str, Any],
        parents: list[str],
    ) -> None:
        """Register an artifact and its lineage edges (idempotent)."""
        with self.engine.begin() as c:
            if c.execute(select(artifacts.c.key).where(artifacts.c.key == key)).first() is None:
                c.execute(
                    insert(artifacts).values(
                        key=key,
                        stage=stage,
                        pipeline=pipeline,
                        kind=kind,
                        uri=uri,
                        run_id=run_id,
                        created_at=_now(),
                        rows=rows,
                        ingredients=_jsonable(ingredients),
                    )
                )
            for p in parents:
                exists = c.execute(
                    select(lineage).where(lineage.c.parent == p, lineage.c.child == key)
                ).first()
                if exists is None:
                    c.execute(insert(lineage).values(parent=p, child=key))

    def artifact(self, key: str) -> dict[str, Any] | None:
        """One artifact by key, or None."""
        with self.engine.connect() as c:
            r = c.execute(select(artifacts).where(artifacts.c.key == key)).first()
            return dict(r._mapping) if r else None

    def latest_artifact(self, pipeline: str, stage: str) -> dict[str, Any] | None:
        """The most recently created artifact of a stage of a pipeline."""
        with self.engine.connect() as c:
            q = (
                select(artifacts)
                .where(artifacts.c.pipeline == pipeline, artifacts.c.stage == stage)
                .order_by(artifacts.c.created_at.desc())
                .limit(1)
            )
            r = c.execute(q).first()
            return dict(r._mapping) if r else None

    def children(self, key: str) -> list[str]:
        """Artifacts made from ``key``."""
        with self.engine.connect() as c:
            return [r[0] for r in c.execute(select(lineage.c.child).where(lineage.c.parent == key))]

    # -- source state
    def source_state(self, pipeline: str, source: str) -> dict[str, Any] | None:
        """The state a source kept in the last run that saved one, or None."""
        with self.engine.connect() as c:
            q = select(source_states.c.state).where(
                source_states.c.pipeline == pipeline, source_states.c.source == source
            )
            r = c.execute(q).first()
            return dict(r[0]) if r else None

    def save_source_state(self, pipeline: str, source: str, state: dict[str, Any]) -> None:
        """Keep a source's state for the next run (replacing the previous one)."""
        where = (source_states.c.pipeline == pipeline, source_states.c.source == source)
        with self.engine.begin() as c:
            if c.execute(select(source_states.c.source).where(*where)).first() is None:
                c.execute(
                    insert(source_states).values(
                        pipeline=pipeline, source=source, state=_jsonable(state), updated_at=_now()
                    )
                )
            else:
                c.execute(
                    update(source_states).where(*where).values(state=_jsonable(state), updated_at=_now())
                )

    # -- models
    def register_model(
        self, name: str, artifact_key: str, uri: str, metrics: dict[str, Any], run_id: str
    ) -> dict[str, Any]:
        """Add a candidate version (or return the existing version of the same artifact).

        Safe when several processes register at once: the unique indexes reject a duplicate version
        number and the transaction is retried with the next one."""

        def attempt(c: Connection) -> int:
            existing = c.execute(
                select(model_versions.c.version).where(
                    model_versions.c.name == name, model_versions.c.artifact_key == artifact_key
                )
            ).first()
            if existing is not None:
                return int(existing[0])
            last = c.execute(
                select(func.max(model_versions.c.version)).where(model_versions.c.name == name)
            ).scalar()
            version = int(last or 0) + 1
            c.execute(
                insert(model_versions).values(
                    name=name,
                    version=version,
                    artifact_key=artifact_key,
                    uri=uri,
                    stage="candidate",
                    metrics=_jsonable(metrics),
                    run_id=run_id,
                    created_at=_now(),
                )
            )
            return version

        return self.model_version(name, self._retry_race(attempt))

    def _retry_race(self, attempt: Callable[[Connection], Any]) -> Any:
        """Run ``attempt`` in a transaction, again when it lost a race with another writer."""
        for n in range(_RACE_ATTEMPTS):
            try:
                with self.engine.begin() as c:
                    if self.engine.dialect.name == "sqlite":
                        # take the write lock up front: two deferred transactions that both read and
                        # then write deadlock on SQLite, and one fails at once without waiting
                        c.exec_driver_sql("BEGIN IMMEDIATE")
                    return attempt(c)
            except (IntegrityError, OperationalError) as e:
                lost = isinstance(e, IntegrityError) or "locked" in str(e).lower()
                if not lost or n == _RACE_ATTEMPTS - 1:
                    raise
                time.sleep(random.uniform(0.005, 0.05) * (n + 1))
        raise AssertionError("unreachable")

    def model_version(self, name: str, version: int) -> dict[str, Any]:
        """One model version."""
        with self.engine.connect() as c:
            r = c.execute(
                select(model_versions).where(
                    model_versions.c.name == name, model_versions.c.version == version
                )
            ).first()
        if r is None:
            raise NotFoundError(f"model {name!r} has no version {version}")
        return dict(r._mapping)

    def champion(self, name: str) -> dict[str, Any] | None:
        """The champion version of a model, or None."""
        with self.engine.connect() as c:
            r = c.execute(
                select(model_versions).where(
                    model_versions.c.name == name, model_versions.c.stage == "champion"
                )
            ).first()
            return dict(r._mapping) if r else None

    def models(self, name: str | None = None) -> list[dict[str, Any]]:
        """Every model version, newest first."""
        q = select(model_versions).order_by(model_versions.c.name, model_versions.c.version.desc())
        if name:
            q = q.where(model_versions.c.name == name)
        with self.engine.connect() as c:
            return [dict(r._mapping) for r in c.execute(q)]

    def promote(self, name: str, version: int, also: Callable[[Connection], object] | None = None) -> None:
        """Make ``version`` the champion; the previous champion is archived (one transaction).
        ``also(connection)`` runs in that transaction after the change (a record of it, stored
        with the promotion or not at all).

        Two concurrent promotions leave one champion: the partial unique index rejects the second
        champion row and that promotion is retried, archiving the first."""

        def attempt(c: Connection) -> None:
            found = c.execute(
                select(model_versions.c.id).where(
                    model_versions.c.name == name, model_versions.c.version == version
                )
            ).first()
            if found is None:
                raise NotFoundError(f"model {name!r} has no version {version}")
            c.execute(
                update(model_versions)
                .where(
                    model_versions.c.name == name,
                    model_versions.c.stage == "champion",
                    model_versions.c.version != version,
                )
                .values(stage="archived")
            )
            c.execute(
                update(model_versions)
                .where(model_versions.c.name == name, model_versions.c.version == version)
                .values(stage="champion")
            )
            if also is not None:
                also(c)

        self._retry_race(attempt)


def _inspect_indexes(c: Connection) -> list[dict[str, Any]]:
    from sqlalchemy import inspect

    return [dict(ix) for ix in inspect(c).get_indexes("model_versions")]


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
