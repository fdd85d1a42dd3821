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

On an object store (``s3://``...), where a rename is a copy then a delete and so not atomic,
every file is written straight to its final key (one PUT, or one multipart upload, which the
store makes visible whole or not at all), and the completion markers (``done.json``,
``manifest.json``) stay the last write: a reader never sees a half-written artifact. Model stages
need real files: they work in a local staging folder (``<cache>/<stage>/<key>``) that
``write_manifest`` uploads whole, payload first and the manifest (with every file's size and
SHA-256) last; ``staged_artifact`` downloads a finished artifact into the cache and verifies it,
and mirrors the checkpoints of an unfinished one as they are saved, so a killed training run
resumes on another machine or from an empty cache.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import SecretStr

from genloom.core.errors import ConfigError, GenloomError, MissingDependencyError, NotFoundError
from genloom.core.records import EVENTS_SCHEMA, REJECTED_SCHEMA

#: the folder of a model artifact whose complete subfolders are uploaded as they appear (the
#: train stage's checkpoints, train/checkpoint.py: ``step_<n>/`` renamed from ``.partial`` when
#: complete, ``state.json`` in each)
CHECKPOINTS = "checkpoints"
MIRROR_SECONDS = 0.5


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
    """Serialise a table the same way everywhere (zstd, statistics), so equal data gives equal bytes.

    Every column is dictionary-encoded except floats inside lists (vectors: embeddings, TF-IDF
    values), whose values rarely repeat: hashing each of them for a dictionary cost 0.16 s of the
    0.46 s of CPU that writing 100,000 TF-IDF rows took, and the files came out larger."""
    buf = io.BytesIO()
    pq.write_table(
        table,
        buf,
        compression="zstd",
        compression_level=3,
        row_group_size=65536,
        use_dictionary=_dictionary_columns(table.schema),
    )
    return buf.getvalue()


_DICTIONARY_COLUMNS: dict[pa.Schema, list[str] | bool] = {}


def _dictionary_columns(schema: pa.Schema) -> list[str] | bool:
    """The Parquet leaf columns of ``schema`` to dictionary-encode (True: all of them): all but
    the floating-point ones inside a list. The leaves are read from an empty file written with
    the schema, so their paths are Parquet's own (``tfidf.values.list.element``)."""
    found = _DICTIONARY_COLUMNS.get(schema)
    if found is None:
        buf = io.BytesIO()
        pq.write_table(schema.empty_table(), buf)
        leaves = pq.ParquetFile(pa.BufferReader(buf.getvalue())).schema
        columns = [leaves.column(i) for i in range(len(leaves))]
        keep = [
            c.path
            for c in columns
            if not (c.physical_type in ("FLOAT", "DOUBLE") and c.max_repetition_level > 0)
        ]
        found = True if len(keep) == len(columns) else keep
        if len(_DICTIONARY_COLUMNS) > 256:  # schemas of one process are few; never grow without bound
            _DICTIONARY_COLUMNS.clear()
        _DICTIONARY_COLUMNS[schema] = found
    return found


def plain_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """fsspec storage options with every ``SecretStr`` (at any depth) unwrapped, for the filesystem only."""
    out: dict[str, Any] = {}
    for k, v in options.items():
        if isinstance(v, SecretStr):
            v = v.get_secret_value()
        elif isinstance(v, Mapping):
            v = plain_options(v)
        out[k] = v
    return out


class ArtifactStore:
    """Artifacts and shards under one fsspec root.

    ``options`` are the filesystem's storage options (``endpoint_url``, ``key``, ``secret``...;
    credentials as ``SecretStr``, unwrapped only for the filesystem and never stored elsewhere);
    ``cache`` is the local staging folder of model artifacts on an object store.
    """

    def __init__(
        self, root: str, options: Mapping[str, Any] | None = None, cache: str | Path | None = None
    ) -> None:
        self.root = root.rstrip("/")
        #: as given (``SecretStr`` kept), for the workers that open the same store
        self.options = dict(options or {})
        try:
            self.fs, self.base = fsspec.core.url_to_fs(self.root, **plain_options(options or {}))
        except ImportError as e:  # fsspec's message names the package (gcsfs, adlfs...)
            protocol = self.root.split("://")[0]
            install = "pip install 'genloom[s3]'" if protocol in ("s3", "s3a") else str(e)
            raise MissingDependencyError(f"the fsspec filesystem of {protocol}://", install) from None
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        #: False on object stores: no atomic rename, and model stages work in ``cache``
        self.local = "file" in protocols
        self.cache = Path(cache) if cache is not None else None
        self._mirrors: dict[str, CheckpointMirror] = {}

    def __repr__(self) -> str:
        return f"ArtifactStore({self.root!r})"  # never the options: they may hold credentials

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_mirrors": {}}  # threads stay in their process

    # -- paths
    def shard_dir(self, stage: str, shard_key: str) -> str:
        """Folder of one shard."""
        return f"{self.base}/shards/{stage}/{shard_key}"

    def artifact_dir(self, stage: str, key: str) -> str:
        """Folder of one artifact (manifest and payload files)."""
        return f"{self.base}/artifacts/{stage}/{key}"

    def local_path(self, path: str) -> Path:
        """A path on the local filesystem (training and models need real files): ``path`` itself
        on a local store, its place in the staging cache on an object store (see ``staged_artifact``)."""
        if self.local:
            return Path(path)
        if self.cache is None:
            raise ConfigError(
                f"{self.root} is an object store, and model stages need a local staging cache",
                path="store.cache",
                hint="a local folder for model artifacts",
            )
        return self.cache / Path(path).relative_to(f"{self.base}/artifacts")

    # -- shards
    def shard_done(self, stage: str, shard_key: str) -> dict[str, Any] | None:
        """The shard's completion record, or None when it is not finished."""
        return self._read_json(f"{self.shard_dir(stage, shard_key)}/done.json")

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
        self._makedirs(d)
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
            self._makedirs(self.base)
            self._write_atomic(f"{self.base}/file_digests.json", json.dumps(self._digests()).encode())
            self._digests_dirty = False

    def _digests(self) -> dict[str, str]:
        memo: dict[str, str] | None = getattr(self, "_digest_memo", None)
        if memo is None:
            memo = self._read_json(f"{self.base}/file_digests.json") or {}
            self._digest_memo = memo
        return memo

    # -- artifacts
    def has_artifact(self, stage: str, key: str) -> bool:
        """True when the artifact's manifest exists (the stage finished)."""
        return bool(self.fs.exists(f"{self.artifact_dir(stage, key)}/manifest.json"))

    def write_manifest(self, stage: str, key: str, manifest: dict[str, Any]) -> None:
        """Write the manifest: the last write of a stage, which marks it done.

        On an object store, the artifact's staging folder (if the stage worked in one) is
        uploaded first, and the manifest lists its files (``files``: path -> size, sha256)."""
        d = self.artifact_dir(stage, key)
        self._makedirs(d)
        staged = None if self.local or self.cache is None else self.local_path(d)
        if staged is not None and staged.is_dir():
            mirror = self._mirrors.pop(d, None)
            if mirror is not None:
                mirror.stop(final_sync=False)  # the whole folder goes up now
            files = self._upload_folder(staged, d)
            manifest = {**manifest, "files": files}
            self._write_atomic(f"{d}/manifest.json", json.dumps(manifest, sort_keys=True, indent=1).encode())
            _write_stamp(staged, files)
            return
        self._write_atomic(f"{d}/manifest.json", json.dumps(manifest, sort_keys=True, indent=1).encode())

    def read_manifest(self, stage: str, key: str) -> dict[str, Any]:
        """The manifest of a finished artifact."""
        manifest = self._read_json(f"{self.artifact_dir(stage, key)}/manifest.json")
        if manifest is None:
            raise FileNotFoundError(
                f"{self.fs.unstrip_protocol(self.artifact_dir(stage, key))}/manifest.json"
            )
        return manifest

    def iter_artifact(self, stage: str, key: str, columns: list[str] | None = None) -> Iterator[pa.Table]:
        """Stream every shard of a tabular artifact, in order."""
        m = self.read_manifest(stage, key)
        for sk in m["shards"]:
            yield from self.iter_batches(stage, sk, columns=columns)

    # -- model artifacts on an object store: the local staging cache
    def fetch_artifact(self, stage: str, key: str) -> Path:
        """The local folder of an artifact: its own folder on a local store; on an object store,
        ``<cache>/<stage>/<key>``, into which a finished artifact is downloaded whole when missing
        or changed, and verified against its manifest (an unfinished one: the folder as it is)."""
        d = self.artifact_dir(stage, key)
        local = self.local_path(d)
        if self.local:
            return local
        self.fs.invalidate_cache(d)  # another process may have written since this one listed it
        if self.has_artifact(stage, key):
            files = self.read_manifest(stage, key).get("files", {})
            if _read_stamp(local) != files or not _sizes_match(local, files):
                self._download_files(d, local, files)
                _write_stamp(local, files)
        return local

    def registered_model(self, row: dict[str, Any]) -> Path:
        """The local folder of a registry row's model (``artifact_key``, ``uri``): the train
        artifact fetched from this store when the store holds it; otherwise the row's ``uri`` when
        it is a local folder (a version registered from outside this store); otherwise an error."""
        key, uri = str(row["artifact_key"]), str(row.get("uri") or "")
        if self.has_artifact("train", key) or uri == self.artifact_dir("train", key):
            return self.fetch_artifact("train", key)
        if uri and Path(uri).is_dir():
            return Path(uri)
        raise NotFoundError(
            f"model version {row.get('version')} ({key[:12]}) is neither in the store {self.root} nor at {uri!r}"
        )

    def staged_artifact(self, stage: str, key: str) -> Path:
        """The local folder a model stage reads or writes an artifact in (``fetch_artifact``); for
        an unfinished artifact on an object store, it also holds the newest checkpoint uploaded
        so far, and from then on each checkpoint the stage completes is uploaded within a second."""
        local = self.fetch_artifact(stage, key)
        d = self.artifact_dir(stage, key)
        if not self.local and d not in self._mirrors and not self.has_artifact(stage, key):
            self._download_latest_checkpoint(d, local)
            self._mirrors[d] = CheckpointMirror(self, local, d)
        return local

    def stop_mirrors(self) -> None:
        """Upload the checkpoints not yet uploaded and stop mirroring (end of a run, or a failure)."""
        while self._mirrors:
            _, mirror = self._mirrors.popitem()
            mirror.stop(final_sync=True)

    def _upload_folder(self, local: Path, remote: str) -> dict[str, dict[str, Any]]:
        """Upload every file under ``local`` to ``remote`` (each PUT whole); return path -> size, sha256."""
        files: dict[str, dict[str, Any]] = {}
        for f in sorted(p for p in local.rglob("*") if p.is_file()):
            rel = f.relative_to(local).as_posix()
            if rel == STAMP or any(part.endswith(".partial") for part in f.relative_to(local).parts):
                continue
            files[rel] = {"size": f.stat().st_size, "sha256": sha256_file(str(f))}
            self.fs.put_file(str(f), f"{remote}/{rel}")
        return files

    def _download_files(self, remote: str, local: Path, files: dict[str, dict[str, Any]]) -> None:
        """Download the listed files into ``local``, each through a ``.partial`` file, and verify them."""
        for rel, meta in files.items():
            dest = local / rel
            if (
                dest.is_file()
                and dest.stat().st_size == meta["size"]
                and sha256_file(str(dest)) == meta["sha256"]
            ):
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(dest.name + ".partial")
            self.fs.get_file(f"{remote}/{rel}", str(tmp))
            got = sha256_file(str(tmp))
            if got != meta["sha256"]:
                tmp.unlink()
                raise GenloomError(
                    f"{self.fs.unstrip_protocol(f'{remote}/{rel}')} does not match its manifest "
                    f"(sha256 {got[:12]}..., expected {meta['sha256'][:12]}...): it changed after "
                    "it was written; delete the artifact's manifest.json to rebuild it"
                )
            os.replace(tmp, dest)

    def _download_latest_checkpoint(self, remote: str, local: Path) -> None:
        """Fetch the newest complete checkpoint uploaded for an unfinished artifact (if newer than the cache's)."""
        remote_steps = _remote_checkpoints(self.fs, f"{remote}/{CHECKPOINTS}")
        if not remote_steps:
            return
        newest = remote_steps[-1]
        root = local / CHECKPOINTS
        if (root / newest / "state.json").exists():
            return
        tmp = root / f"{newest}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for path in self.fs.find(f"{remote}/{CHECKPOINTS}/{newest}"):
            self.fs.get_file(path, str(tmp / path.rsplit("/", 1)[1]))
        os.replace(tmp, root / newest)

    def _read_json(self, path: str) -> Any:
        """A small JSON file, or None when it does not exist (one GET on an object store)."""
        try:  # a range from 0: s3fs asks for the size (HEAD, and a listing when absent) without one
            return json.loads(self.fs.cat_file(path, start=0))
        except FileNotFoundError:
            return None

    def _makedirs(self, path: str) -> None:
        if self.local:  # object stores have no folders
            self.fs.makedirs(path, exist_ok=True)

    def _write_atomic(self, path: str, data: bytes) -> None:
        if not self.local:
            self.fs.pipe_file(path, data)  # one PUT: visible whole or not at all; a rename would copy
            return
        tmp = f"{path}.tmp"
        with self.fs.open(tmp, "wb") as f:
            f.write(data)
        self.fs.mv(tmp, path)


class CheckpointMirror:
    """Uploads each complete checkpoint of a staging folder as it appears, and drops the uploaded
    ones the folder no longer keeps; a checkpoint's ``state.json`` goes up last, so a remote
    checkpoint is complete exactly when its ``state.json`` exists."""

    def __init__(self, store: ArtifactStore, local: Path, remote: str) -> None:
        self.store, self.local, self.remote = store, local / CHECKPOINTS, f"{remote}/{CHECKPOINTS}"
        self.uploaded = set(_remote_checkpoints(store.fs, self.remote))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"checkpoint-mirror-{remote}", daemon=True)
        self._thread.start()

    def stop(self, final_sync: bool) -> None:
        """Stop the thread; with ``final_sync``, upload what is left first."""
        self._stop.set()
        self._thread.join()
        if final_sync:
            self.sync()

    def sync(self) -> None:
        """Upload the complete local checkpoints not uploaded yet; delete the uploaded ones pruned locally."""
        if not self.local.is_dir():
            return
        complete = sorted(
            p.name
            for p in self.local.iterdir()
            if p.is_dir() and not p.name.endswith(".partial") and (p / "state.json").exists()
        )
        for name in complete:
            if name not in self.uploaded:
                try:
                    self._upload(name)
                except FileNotFoundError:  # pruned by the training loop meanwhile: a newer one exists
                    continue
        for name in sorted(self.uploaded - set(complete)):
            if complete and name < complete[0]:
                self.store.fs.rm(f"{self.remote}/{name}", recursive=True)
                self.uploaded.discard(name)

    def _upload(self, name: str) -> None:
        folder = self.local / name
        files = sorted(f.name for f in folder.iterdir() if f.is_file())
        files.sort(key=lambda n: n == "state.json")  # the completion marker last
        for f in files:
            self.store.fs.put_file(str(folder / f), f"{self.remote}/{name}/{f}")
        self.uploaded.add(name)

    def _loop(self) -> None:
        while not self._stop.wait(MIRROR_SECONDS):
            self.sync()


STAMP = ".genloom-staged.json"  # in a staging folder: the manifest's file list it was verified against


def _read_stamp(local: Path) -> Any:
    try:
        return json.loads((local / STAMP).read_text())
    except (OSError, ValueError):
        return None


def _write_stamp(local: Path, files: dict[str, dict[str, Any]]) -> None:
    local.mkdir(parents=True, exist_ok=True)
    tmp = local / f"{STAMP}.partial"
    tmp.write_text(json.dumps(files, sort_keys=True))
    os.replace(tmp, local / STAMP)


def _sizes_match(local: Path, files: dict[str, dict[str, Any]]) -> bool:
    return all(
        (local / rel).is_file() and (local / rel).stat().st_size == m["size"] for rel, m in files.items()
    )


def _remote_checkpoints(fs: Any, root: str) -> list[str]:
    """Names of the complete checkpoints under ``root`` on ``fs``, oldest first."""
    try:
        found = fs.glob(f"{root}/step_*/state.json")
    except FileNotFoundError:
        return []
    return sorted(p.rsplit("/", 2)[1] for p in found)
