"""Content-addressed artifact store on any fsspec filesystem.

Layout under the root::

    shards/<stage>/<shard_key>/data.parquet      one shard of a data stage's output
                               rejected.parquet  quarantined rows (id, step, reason, location, detail)
                               events.parquet    record-level lineage (id, step, event)
                               done.json         completion marker with the shard's stats (written last)
    artifacts/<stage>/<key>/manifest.json        the artifact: ordered shard keys, stats, key ingredients
                                                 (written last: if it exists, the stage is done)
    artifacts/<stage>/<key>/...                  non-tabular payloads (tokenizer, token memmaps, a model)

Shards are keyed by their own content key, so a killed stage resumes where it stopped and an
unchanged input shard is never recomputed, even when other shards of the same stage changed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from genloom.core.records import EVENTS_SCHEMA, REJECTED_SCHEMA


def content_key(*parts: Any) -> str:
    """A stable hex key of JSON-serialisable parts (sorted keys, so dict order never matters)."""
    payload = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]


def sha256_file(path: str) -> str:
    """The SHA-256 of a file, read in 4 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(4 * 2**20):
            h.update(block)
    return h.hexdigest()


def write_parquet_bytes(table: pa.Table) -> bytes:
    """Serialise a table the same way everywhere (zstd, statistics), so equal data gives equal bytes."""
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", compression_level=3, row_group_size=65536)
    return buf.getvalue()


class ArtifactStore:
    """Artifacts and shards under one fsspec root."""

    def __init__(self, root: str) -> None:
        self.root = root.rstrip("/")
        self.fs, self.base = fsspec.core.url_to_fs(self.root)

    # -- paths
    def shard_dir(self, stage: str, shard_key: str) -> str:
        """Folder of one shard."""
        return f"{self.base}/shards/{stage}/{shard_key}"

    def artifact_dir(self, stage: str, key: str) -> str:
        """Folder of one artifact (manifest and payload files)."""
        return f"{self.base}/artifacts/{stage}/{key}"

    def local_path(self, path: str) -> Path:
        """A path on the local filesystem (training and models need real files)."""
        if "file" not in self.fs.protocol:
            raise NotImplementedError("models and token files need a local store path")
        return Path(path)

    # -- shards
    def shard_done(self, stage: str, shard_key: str) -> dict[str, Any] | None:
        """The shard's completion record, or None when it is not finished."""
        marker = f"{self.shard_dir(stage, shard_key)}/done.json"
        if not self.fs.exists(marker):
            return None
        with self.fs.open(marker, "r") as f:
            return json.load(f)

    def write_shard(
        self,
        stage: str,
        shard_key: str,
        table: pa.Table,
        rejected: list[dict[str, str]],
        events: list[dict[str, str]],
        info: dict[str, Any],
    ) -> dict[str, Any]:
        """Write a shard's files, then its completion marker last."""
        d = self.shard_dir(stage, shard_key)
        self.fs.makedirs(d, exist_ok=True)
        self._write_atomic(f"{d}/data.parquet", write_parquet_bytes(table))
        self._write_atomic(
            f"{d}/rejected.parquet",
            write_parquet_bytes(pa.Table.from_pylist(rejected, schema=REJECTED_SCHEMA)),
        )
        self._write_atomic(
            f"{d}/events.parquet", write_parquet_bytes(pa.Table.from_pylist(events, schema=EVENTS_SCHEMA))
        )
        done = {**info, "rows": table.num_rows, "rejected": len(rejected)}
        self._write_atomic(f"{d}/done.json", json.dumps(done, sort_keys=True, indent=1).encode())
        return done

    def read_shard(
        self, stage: str, shard_key: str, part: str = "data", columns: list[str] | None = None
    ) -> pa.Table:
        """Read one shard's ``data``, ``rejected`` or ``events`` table."""
        with self.fs.open(f"{self.shard_dir(stage, shard_key)}/{part}.parquet", "rb") as f:
            return pq.read_table(f, columns=columns)

    def shard_columns(self, stage: str, shard_key: str) -> list[str]:
        """The column names of one shard's data (from the Parquet footer, no data read)."""
        with self.fs.open(f"{self.shard_dir(stage, shard_key)}/data.parquet", "rb") as f:
            return list(pq.read_schema(f).names)

    def iter_batches(
        self, stage: str, shard_key: str, batch_rows: int = 8192, columns: list[str] | None = None
    ) -> Iterator[pa.Table]:
        """Stream one shard's data in record batches (bounded memory)."""
        with self.fs.open(f"{self.shard_dir(stage, shard_key)}/data.parquet", "rb") as f:
            pf = pq.ParquetFile(f)
            for batch in pf.iter_batches(batch_size=batch_rows, columns=columns):
                yield pa.Table.from_batches([batch])

    # -- fingerprints of files that steps read
    def file_digest(self, path: str) -> str:
        """SHA-256 of a local file, memoised in the store by (path, size, mtime) across runs."""
        st = os.stat(path)
        memo = self._digests()
        entry = f"{os.path.abspath(path)}\0{st.st_size}\0{st.st_mtime_ns}"
        digest = memo.get(entry)
        if digest is None:
            digest = memo[entry] = sha256_file(path)
            self._digests_dirty = True
        return digest

    def save_file_digests(self) -> None:
        """Write the digest memo (after planning) if it gained entries."""
        if getattr(self, "_digests_dirty", False):
            self.fs.makedirs(self.base, exist_ok=True)
            self._write_atomic(f"{self.base}/file_digests.json", json.dumps(self._digests()).encode())
            self._digests_dirty = False

    def _digests(self) -> dict[str, str]:
        memo: dict[str, str] | None = getattr(self, "_digest_memo", None)
        if memo is None:
            memo = {}
            path = f"{self.base}/file_digests.json"
            if self.fs.exists(path):
                with self.fs.open(path, "r") as f:
                    memo = json.load(f)
            self._digest_memo = memo
        return memo

    # -- artifacts
    def has_artifact(self, stage: str, key: str) -> bool:
        """True when the artifact's manifest exists (the stage finished)."""
        return bool(self.fs.exists(f"{self.artifact_dir(stage, key)}/manifest.json"))

    def write_manifest(self, stage: str, key: str, manifest: dict[str, Any]) -> None:
        """Write the manifest: the last write of a stage, which marks it done."""
        d = self.artifact_dir(stage, key)
        self.fs.makedirs(d, exist_ok=True)
        self._write_atomic(f"{d}/manifest.json", json.dumps(manifest, sort_keys=True, indent=1).encode())

    def read_manifest(self, stage: str, key: str) -> dict[str, Any]:
        """The manifest of a finished artifact."""
        with self.fs.open(f"{self.artifact_dir(stage, key)}/manifest.json", "r") as f:
            return json.load(f)

    def iter_artifact(self, stage: str, key: str, columns: list[str] | None = None) -> Iterator[pa.Table]:
        """Stream every shard of a tabular artifact, in order."""
        m = self.read_manifest(stage, key)
        for sk in m["shards"]:
            yield from self.iter_batches(stage, sk, columns=columns)

    def _write_atomic(self, path: str, data: bytes) -> None:
        tmp = f"{path}.tmp"
        with self.fs.open(tmp, "wb") as f:
            f.write(data)
        self.fs.mv(tmp, path)
