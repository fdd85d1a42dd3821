"""The base class of every file source: the loop over files, archives, formats and records."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
from pydantic import PrivateAttr, SecretStr

from genloom.core.errors import ConfigError, MissingDependencyError, RecordError, StepError
from genloom.core.records import Rejected, record_id
from genloom.core.steps import Source
from genloom.sources._files.archives import ARCHIVE_FORMATS, ENCRYPTED_MEMBER, iter_archive
from genloom.sources._files.blob import ArchiveBudget, ArchiveLimits, Blob, copy_to_temp
from genloom.sources._files.chunking import Block, ChunkConfig, chunk_blocks, tokenizer_file
from genloom.sources._files.crypto import ENCRYPTED_OOXML, decrypt_office
from genloom.sources._files.detect import detect_format, format_by_extension, tables
from genloom.sources._files.discover import discover, file_fingerprint, special_file_kind
from genloom.sources._files.text import is_blank, strip_nul


class FileSource(Source):
    """Base of every file source: finds files, opens archives, detects formats, chunks documents.

    A reader subclasses it, is registered in ``SOURCES`` under its format's name, declares
    ``formats`` (the detected formats it reads itself: its own name) and ``default_include`` (the
    file patterns used when ``include`` is empty), and writes ``read_file(blob)``.

    A reader also declares what identifies its format, as class attributes read by
    :mod:`~genloom.sources._files.detect` from the registry (so the ``files`` source reads a new
    format with nothing else edited):

    - ``extensions``: the names it goes by (``("pdf",)``), used when the content does not decide;
    - ``magic``: byte prefixes (``(b"{\\rtf",)``); with ``magic_within = N``, found anywhere in the
      first N bytes instead (``%PDF-`` may follow junk);
    - ``zip_mimetypes``: the content of the ``mimetype`` member of a ZIP (ODF, EPUB);
    - ``zip_members``: alternative sets of members, each all present in the ZIP
      (``(("[Content_Types].xml", "word/"),)``; a name ending in ``/`` is any member under that
      folder); with ``weak_zip_members``, a set counts only in a file named with one of
      ``extensions`` (a member other ZIPs may hold too);
    - ``ole_streams``: alternative sets of stream names at the root of an OLE2 file, each all
      present (``(("WordDocument",),)``, case-insensitive; a name ending in ``*`` is a prefix);
    - ``signature_required``: files of the format always carry one of its signatures (binary
      formats, RTF): one named with its extension that has none is quarantined as ``corrupt``;
    - ``sniff(head, ext)``: for text formats without a signature, whether the first bytes of a
      file named as plain text or not named at all are of this format (HTML, e-mail).

    A signature the format shares with no other beats the extension: a DOCX named ``.doc`` is
    read as DOCX. The order in which signatures are tried is in the ``detect`` module.

    What every file source does the same way:

    - named pipes, sockets and device files that the paths match are never opened (a FIFO would
      block the run): each goes to ``rejected`` as ``not_regular_file`` with its kind as detail,
      and its fingerprint is ``special:<kind>``;
    - NUL characters (U+0000) are removed from every record's text (and its string meta values,
      e.g. a PDF title) and counted in ``meta.nul_removed``;
    - readers that decode bytes (text, CSV, JSON, HTML) detect UTF-16/32 without a byte order
      mark, and read a UTF-8 file with a few damaged bytes as UTF-8: each invalid sequence
      becomes U+FFFD, and a record of such a file counts the U+FFFD of its text in
      ``meta.invalid_bytes``;
    - with ``chunk.unit: tokens``, the tokenizer file is listed by ``files_read()``, so editing it
      re-reads the files.
    """

    #: files, folders or globs (``data/**/*.pdf``); relative paths are relative to the pipeline file's folder
    paths: list[str]
    #: keep only files matching one of these globs (a pattern without ``/`` matches the file name)
    include: list[str] = []
    #: drop files matching one of these globs
    exclude: list[str] = []
    #: follow symbolic links (a folder reached twice through links is read once)
    follow_symlinks: bool = True
    #: read files and folders whose name starts with a dot
    hidden: bool = False
    #: cut long documents into chunks; without it a document is one record (PDF: one per page)
    chunk: ChunkConfig | None = None
    #: password for encrypted PDFs and Office files; write ``${env:PDF_PASSWORD}`` in YAML, never the secret
    password: SecretStr | None = None
    #: more passwords to try, in order, when files have different ones
    passwords: list[SecretStr] = []
    #: limits while unpacking zip/tar/gz/bz2/xz archives
    archives: ArchiveLimits = ArchiveLimits()

    _readers: dict[str, FileSource] = PrivateAttr(default_factory=dict)

    formats: ClassVar[tuple[str, ...]] = ()
    default_include: ClassVar[tuple[str, ...]] = ()

    # what identifies the format (see the class docstring); a reader that declares none is not
    # offered files by detection
    extensions: ClassVar[tuple[str, ...]] = ()
    magic: ClassVar[tuple[bytes, ...]] = ()
    magic_within: ClassVar[int] = 0
    zip_mimetypes: ClassVar[tuple[str, ...]] = ()
    zip_members: ClassVar[tuple[tuple[str, ...], ...]] = ()
    weak_zip_members: ClassVar[bool] = False
    ole_streams: ClassVar[tuple[tuple[str, ...], ...]] = ()
    signature_required: ClassVar[bool] = False

    @classmethod
    def sniff(cls, head: bytes, ext: str) -> bool:
        """Whether a text file (first bytes ``head``, extension ``ext``) is of this format."""
        return False

    # -- Source API ---------------------------------------------------------------------------

    def _includes(self) -> list[str]:
        if self.include:
            return list(self.include)
        return list(self.default_include)

    def local_only(self) -> bool:
        return True  # the files are found and read on this machine

    def partitions(self) -> list[Any]:
        """One partition per file (an archive is one partition; its members are read inside it)."""
        return discover(
            self.paths,
            self._includes(),
            list(self.exclude),
            self.follow_symlinks,
            self.hidden,
            root=self.base_dir,
        )

    def partition_fingerprint(self, partition: Any) -> str:
        """Size, mtime and SHA-256 of the file: unchanged files are cache hits."""
        try:
            return file_fingerprint(self.resolve_path(str(partition)))
        except OSError:
            return "missing"

    def fingerprint(self) -> str:
        """Changes when any matched file is added, removed or changed."""
        h = hashlib.sha256()
        for p in self.partitions():
            h.update(f"{p}\0{self.partition_fingerprint(p)}\n".encode())
        return h.hexdigest()

    def location(self, partition: Any) -> str:
        return "" if partition is None else str(partition)

    def check(self, path: str) -> None:
        """The globs must match at least one file."""
        if not self.partitions():
            raise ConfigError(
                f"no file matches {self.paths}"
                + (f" with include {self._includes()}" if self._includes() else ""),
                path=f"{path}.paths",
                hint="check the paths (relative to the pipeline file's folder) and the include/exclude patterns",
            )
        tokenizer = self.chunk_tokenizer()
        if tokenizer is not None and not tokenizer_file(tokenizer).is_file():
            raise ConfigError(
                f"no tokenizer.json at {self.chunk.tokenizer!r}", path=f"{path}.chunk.tokenizer"
            )

    def read(self, partition: Any) -> Iterator[pa.Table | dict[str, Any] | Rejected]:
        path = Path(self.resolve_path(str(partition)))
        blob = Blob(str(partition), path, path.name)
        kind = special_file_kind(path)
        if kind is not None:  # checked before anything opens it: reading a FIFO blocks
            yield Rejected(record_id(self._fmt_name(blob), blob.key), "not_regular_file", blob.key, kind)
            return
        yield from self.read_blob(blob)

    def files_read(self) -> list[str]:
        """The tokenizer file of ``chunk`` (``unit: tokens``): chunks change when it does."""
        tokenizer = self.chunk_tokenizer()
        return [str(tokenizer_file(tokenizer))] if tokenizer is not None else []

    def chunk_tokenizer(self) -> str | None:
        """The ``chunk.tokenizer`` path resolved against the pipeline file's folder (None: none)."""
        if self.chunk is None or not self.chunk.tokenizer:
            return None
        return self.resolve_path(self.chunk.tokenizer)

    # -- dispatch -----------------------------------------------------------------------------

    def read_blob(self, blob: Blob) -> Iterator[pa.Table | dict[str, Any] | Rejected]:
        """Detect the format of ``blob`` and read it, unpacking archives; failures become Rejected."""
        if blob.name == ENCRYPTED_MEMBER:
            yield Rejected(record_id("files", blob.key), "encrypted", blob.key, "encrypted archive member")
            return
        try:
            size = blob.size
            if size == 0:
                raise RecordError("empty_file", "0 bytes")
            fmt = detect_format(blob)
            if fmt in ARCHIVE_FORMATS:
                for member in iter_archive(blob, fmt, self.archives):
                    yield from self.read_blob(member)
                return
            if fmt == ENCRYPTED_OOXML and any(self.secrets()):
                yield from self._read_decrypted(blob)
                return
            reader = self.reader_for(fmt, blob)
            yield from reader.read_file(blob)
        except RecordError as e:
            yield Rejected(record_id(self._fmt_name(blob), blob.key), e.reason, blob.key, e.detail)
        except (MissingDependencyError, StepError):
            raise  # not this file's fault: a library to install, a broken resource
        except Exception as e:  # a parser's exception on one broken file: that file is quarantined
            yield Rejected(
                record_id(self._fmt_name(blob), blob.key),
                f"read_error:{type(e).__name__}",
                blob.key,
                str(e)[:2000],
            )

    def read_attached(
        self, blob: Blob, members: Iterable[tuple[str, bytes]]
    ) -> Iterator[pa.Table | dict[str, Any] | Rejected]:
        """Files embedded in ``blob`` (e-mail attachments), each read by its own format's reader
        with the id ``<blob>!<name>``, counted against the same limits as archive members."""
        budget = blob.budget or ArchiveBudget(self.archives)
        for name, payload in members:
            budget.add_member(blob.key)
            budget.add_bytes(len(payload), blob.key)
            tmp = copy_to_temp(payload, "".join(Path(name).suffixes[-2:])[:20])
            try:
                yield from self.read_blob(Blob(f"{blob.key}!{name}", tmp, name, blob.depth + 1, budget))
            finally:
                tmp.unlink(missing_ok=True)

    def _read_decrypted(self, blob: Blob) -> Iterator[pa.Table | dict[str, Any] | Rejected]:
        """An encrypted XLSX/DOCX/PPTX opened with the configured passwords, read by its own reader.

        Records keep the encrypted file's key; the plain package lives in a private temporary file
        (mode 0600) only while its reader runs.
        """
        plain = decrypt_office(blob, self.secrets())
        try:
            inner = Blob(blob.key, plain, blob.name, blob.depth, blob.budget)
            fmt = detect_format(inner)
            if fmt not in tables().ooxml:
                raise RecordError("corrupt", f"the decrypted package is not an Office file (detected {fmt})")
            yield from self.reader_for(fmt, inner).read_file(inner)
        finally:
            plain.unlink(missing_ok=True)

    def _fmt_name(self, blob: Blob) -> str:
        return format_by_extension(blob.ext) or "files"

    def reader_for(self, fmt: str, blob: Blob) -> FileSource:
        """The source that reads ``fmt``: this one, or the registered reader built with shared options."""
        if fmt in self.formats:
            return self
        if fmt == ENCRYPTED_OOXML:
            raise RecordError(
                "encrypted",
                f"{blob.name} is an encrypted Office file (OLE2 EncryptedPackage); decrypt it first",
            )
        if fmt == "mismatch":
            raise RecordError(
                "corrupt",
                f"named .{blob.ext} but the content is not a {blob.ext.upper()} file: {blob.head(16)!r}",
            )
        if fmt == "broken_zip":
            raise RecordError(
                "truncated" if blob.size > 22 else "corrupt", f"ZIP container unreadable (.{blob.ext})"
            )
        if fmt in ("binary", "unknown", "ole", "unsupported_zip"):
            raise RecordError(
                "unsupported_format", f"no reader for this content (.{blob.ext}, detected {fmt})"
            )
        return self.make_reader(fmt)

    def make_reader(self, fmt: str) -> FileSource:
        """A reader for ``fmt`` that inherits this source's shared options (cached per process)."""
        cache = self._readers
        if fmt not in cache:
            from genloom.core.registry import SOURCES

            cls = SOURCES.get(fmt)
            reader = cls(**self.reader_options(fmt, cls))
            reader.bind(self.base_dir)
            cache[fmt] = reader
        return cache[fmt]

    def reader_options(self, fmt: str, cls: Any) -> dict[str, Any]:
        """Options for the reader of ``fmt``: the fields both sources share."""
        fields = getattr(cls, "model_fields", {})
        shared = {
            k: getattr(self, k)
            for k in type(self).model_fields
            if k in fields and k not in ("type", "include")
        }
        return {**shared, "type": fmt}

    def secrets(self) -> list[str]:
        """The configured passwords, in the order they are tried."""
        out = [self.password.get_secret_value()] if self.password is not None else []
        return out + [p.get_secret_value() for p in self.passwords]

    def read_file(self, blob: Blob) -> Iterator[pa.Table | dict[str, Any] | Rejected]:
        """Read one file of this source's format (written by each format)."""
        raise NotImplementedError

    # -- helpers for readers ------------------------------------------------------------------

    def record(self, key: str, text: str, meta: dict[str, Any], damaged: bool = False) -> dict[str, Any]:
        """One record of this source's format: stable id from the key, format as ``source``.

        NULs are removed from the text and from string meta values, counted in
        ``meta.nul_removed``. ``damaged`` says the file had invalid bytes (now U+FFFD): the
        U+FFFD of this text are counted in ``meta.invalid_bytes``.
        """
        text, nuls = strip_nul(text)
        if nuls or any(isinstance(v, (str, list)) and "\x00" in str(v) for v in meta.values()):
            meta = dict(meta)
            for k, v in meta.items():
                if isinstance(v, str):
                    meta[k], n = strip_nul(v)
                    nuls += n
                elif isinstance(v, list):
                    cleaned = [strip_nul(x) if isinstance(x, str) else (x, 0) for x in v]
                    meta[k] = [x for x, _ in cleaned]
                    nuls += sum(n for _, n in cleaned)
            meta["nul_removed"] = nuls
        if damaged and (invalid := text.count("\ufffd")):
            meta = {**meta, "invalid_bytes": invalid}
        return {"id": record_id(self.type, key), "text": text, "source": self.type, "meta": meta}

    def emit_document(
        self,
        blob: Blob,
        blocks: Iterable[Block],
        meta: dict[str, Any],
        per_page: bool = False,
        damaged: bool = False,
    ) -> Iterator[dict[str, Any]]:
        """Records for a document: chunks when ``chunk`` is set, else one per document (or per page).

        An empty document raises RecordError ``no_text``; ``damaged`` as in :meth:`record`.
        """
        base = {"path": blob.key, "format": self.type, **meta}
        n = 0
        if self.chunk is not None:
            for text, cmeta in chunk_blocks(blocks, self.chunk, self.chunk_tokenizer()):
                n += 1
                yield self.record(
                    f"{blob.key}#chunk={cmeta['chunk']}",
                    text,
                    {**base, **cmeta, "doc_id": record_id(self.type, blob.key)},
                    damaged,
                )
        elif per_page:
            page_blocks: list[Block] = []
            current: int | None = None
            for b in blocks:
                if page_blocks and b.page != current:
                    n += 1
                    yield self._page_record(blob, page_blocks, base, damaged)
                    page_blocks = []
                current = b.page
                page_blocks.append(b)
            if page_blocks:
                n += 1
                yield self._page_record(blob, page_blocks, base, damaged)
        else:
            kept = [b for b in blocks if not is_blank(b.text)]
            texts = [b.text.strip("\n").rstrip() for b in kept]
            for b in kept:
                if b.meta:
                    base.update(b.meta)
            if texts:
                n += 1
                yield self.record(blob.key, "\n\n".join(texts), base, damaged)
        if n == 0:
            raise RecordError("no_text", "the document holds no text")

    def _page_record(
        self, blob: Blob, blocks: list[Block], base: dict[str, Any], damaged: bool = False
    ) -> dict[str, Any]:
        page = blocks[0].page
        text = "\n\n".join(b.text.strip("\n").rstrip() for b in blocks if not is_blank(b.text))
        meta = {**base, "page": page}
        for b in blocks:
            if b.meta:
                meta.update(b.meta)
        if blocks[0].section:
            meta["section"] = list(blocks[0].section)
        return self.record(f"{blob.key}#page={page}", text, meta, damaged)
