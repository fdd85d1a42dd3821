"""The ``files`` source: every supported file under some paths, each read by its format's reader."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import ValidationError

from genloom.core.errors import ConfigError
from genloom.core.registry import SOURCES, suggest
from genloom.sources._files.base import FileSource
from genloom.sources._files.detect import tables


def readers() -> tuple[str, ...]:
    """The formats ``files`` reads: every registered file source that declares how to recognise
    its format (extensions, magic bytes, container signatures), by name."""
    return tuple(tables().readers)


def __getattr__(name: str) -> Any:
    # ``READERS`` is read from the registry when asked for, not at import: the registry imports
    # this module while it loads the built-in sources
    if name == "READERS":
        return readers()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@SOURCES.register("files")
class FilesSource(FileSource):
    """Every file under ``paths``, whatever its format: ``{type: files, paths: ["data/**/*"]}``.

    Each file's format is detected from its content (magic bytes, the parts inside ZIP and OLE2
    containers), the extension only breaking ties, so a DOCX named ``.doc`` is read as DOCX and
    random bytes named ``.docx`` are quarantined as ``corrupt``. Archives (zip, tar, gz, bz2, xz)
    are opened transparently under ``archives`` limits. Each format is read by its own source
    (``text``, ``csv``, ``json``, ``html``, ``pdf``, ``docx``, ``doc``, ``excel``, ``pptx``,
    ``ppt``, ``odt``, ``odp``, ``rtf``, ``eml``, ``msg``, ``epub``, and any registered file source
    that declares how to recognise its format), with the shared options given
    here (``chunk``, ``password``, ``text_template``...) and per-format ones under ``options``
    (``{pdf: {ocr: never}}``). Password-protected XLSX/DOCX/PPTX are decrypted with ``password``
    / ``passwords`` when given.
    Record ids are ``<format>:<path>[!member]#<locator>``, stable across runs; a file that
    cannot be read goes to ``rejected`` with a specific reason and the run goes on.
    """

    type: Literal["files"] = "files"
    #: builds the text of tabular rows (CSV, Parquet/JSON, Excel in rows mode), e.g. ``"{title}: {body}"``
    text_template: str | None = None
    #: per-format options, e.g. ``{csv: {delimiter: ";"}, pdf: {ocr: never}, excel: {mode: rows}}``
    options: dict[str, dict[str, Any]] = {}
    #: read only these formats (default: all); others are skipped without a quarantine row
    formats_only: list[str] = []

    formats: ClassVar[tuple[str, ...]] = ()
    default_include: ClassVar[tuple[str, ...]] = ()

    def check(self, path: str) -> None:
        """Globs must match files; ``options`` must name formats and valid fields."""
        known = readers()
        for fmt in [*self.options, *self.formats_only]:
            if fmt not in known:
                raise ConfigError(
                    f"unknown format {fmt!r}",
                    path=f"{path}.options.{fmt}" if fmt in self.options else f"{path}.formats_only",
                    hint=suggest(fmt, list(known), prefix=f"formats: {', '.join(known)}"),
                )
        for fmt in self.options:
            try:
                self.make_reader(fmt)
            except ValidationError as e:
                err = e.errors()[0]
                loc = ".".join(str(x) for x in err["loc"])
                raise ConfigError(err["msg"], path=f"{path}.options.{fmt}.{loc}") from e
        super().check(path)

    def reader_options(self, fmt: str, cls: Any) -> dict[str, Any]:
        """Shared fields, then the format's own ``options``."""
        return {**super().reader_options(fmt, cls), **self.options.get(fmt, {}), "type": fmt}

    def reader_for(self, fmt: str, blob: Any) -> FileSource:
        if self.formats_only and fmt in tables().readers and fmt not in self.formats_only:
            return _SKIP
        return super().reader_for(fmt, blob)


class _SkipReader:
    """Reads nothing: formats left out by ``formats_only``."""

    def read_file(self, blob: Any) -> list[Any]:
        return []


_SKIP: Any = _SkipReader()
