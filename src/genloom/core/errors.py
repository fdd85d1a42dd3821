"""The genloom exception tree: every error a user can see derives from GenloomError."""

from __future__ import annotations


class GenloomError(Exception):
    """Base class for every error genloom raises on purpose."""


class ConfigError(GenloomError):
    """The pipeline file is wrong; raised before any work, the CLI exits with code 2.

    ``path`` is the dotted location in the config (``clean.2.min_chars``), ``hint`` says what to do.
    """

    def __init__(self, message: str, path: str = "", hint: str = "") -> None:
        self.path = path
        self.message = message
        self.hint = hint
        super().__init__(self.one_line())

    def one_line(self) -> str:
        """The error as one line: where, what, and the fix."""
        where = f"{self.path}: " if self.path else ""
        fix = f" ({self.hint})" if self.hint else ""
        return f"{where}{self.message}{fix}"


class ConfigErrors(ConfigError):
    """Several config errors found at once; each is one line."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = errors
        super().__init__("\n".join(e.one_line() for e in errors))

    def one_line(self) -> str:
        return "\n".join(e.one_line() for e in getattr(self, "errors", []))


class MissingDependencyError(GenloomError):
    """An optional library or system resource is absent; the message says how to install it."""

    def __init__(self, what: str, install: str) -> None:
        self.what = what
        self.install = install
        super().__init__(f"{what} is not installed: {install}")


class RecordError(GenloomError):
    """A single record or file cannot be processed; it is quarantined with ``reason``, the run goes on."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class StageError(GenloomError):
    """A stage failed as a whole (for instance it dropped more than the allowed fraction)."""


class StepError(StageError):
    """A component failed in a way that is not a problem of one record: a bug, or a resource it
    needs is broken. The stage fails loudly; the message names the component, its config path
    (``clean.2``) and the cause."""

    def __init__(self, message: str, path: str = "", component: str = "") -> None:
        self.path = path
        self.component = component
        where = f"{path} ({component})" if path and component else path or component
        super().__init__(f"{where}: {message}" if where else message)


class SourceError(StepError):
    """A source's backend cannot be reached, refuses the credentials or drops mid-read (after the
    configured retries): the stage fails rather than ingest a silently shorter dataset."""


class NotFoundError(GenloomError):
    """A run, artifact, record or model asked for by the user does not exist."""
