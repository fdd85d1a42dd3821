"""One registry per stage: a name in config maps to a registered class.

Components register with a decorator (``@SOURCES.register("csv")``); third-party packages add
theirs through the ``genloom.plugins`` entry point, whose target is imported once before lookup.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, TypeVar

from genloom.core.errors import ConfigError

T = TypeVar("T")

# stage name -> package whose modules hold that stage's components
STAGE_PACKAGES = {
    "sources": "genloom.sources",
    "augment": "genloom.augment",
    "clean": "genloom.clean",
    "preprocess": "genloom.preprocess",
    "features": "genloom.features",
}


class Registry:
    """Maps component names to classes for one stage."""

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self._items: dict[str, type] = {}

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        """Class decorator: register ``cls`` under ``name`` (the YAML ``type:``)."""

        def deco(cls: type[T]) -> type[T]:
            existing = self._items.get(name)
            if existing is not None and existing.__qualname__ != cls.__qualname__:
                raise ValueError(f"{self.stage} component {name!r} registered twice ({existing} and {cls})")
            self._items[name] = cls
            return cls

        return deco

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        load_all()
        return sorted(self._items)

    def items(self) -> list[tuple[str, type]]:
        """(name, class) for every registered component, sorted by name."""
        load_all()
        return sorted(self._items.items())

    def get(self, name: str, path: str = "") -> type:
        """The class registered as ``name``; an unknown name raises ConfigError listing the choices."""
        load_all()
        if name in self._items:
            return self._items[name]
        raise ConfigError(
            f"unknown {self.stage} component {name!r}",
            path=path,
            hint=suggest(name, list(self._items), prefix=f"available: {', '.join(sorted(self._items))}"),
        )


def suggest(name: str, choices: list[str], prefix: str = "") -> str:
    """A 'did you mean' hint for ``name`` among ``choices``."""
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    parts = [f"did you mean {close[0]!r}?"] if close else []
    if prefix:
        parts.append(prefix)
    return "; ".join(parts)


SOURCES = Registry("sources")
AUGMENTERS = Registry("augment")
CLEANERS = Registry("clean")
PREPROCESSORS = Registry("preprocess")
FEATURES = Registry("features")

#: model families (``genloom.models.base.ModelFamily``), by ``train.model.type``; a family's module
#: is imported on first use (``models.base.family``), never by ``load_all``, so configs stay torch-free
MODELS = Registry("models")
#: config sections of a pipeline file contributed from above core (``train`` by genloom.train.config),
#: so core builds the whole pipeline model without importing those packages
SECTIONS = Registry("sections")
#: the modules that register SECTIONS (torch-free)
SECTION_MODULES = ("genloom.train.config",)

REGISTRIES: dict[str, Registry] = {
    "sources": SOURCES,
    "augment": AUGMENTERS,
    "clean": CLEANERS,
    "preprocess": PREPROCESSORS,
    "features": FEATURES,
}

_loaded = False


def load_all() -> None:
    """Import every built-in component module and every ``genloom.plugins`` entry point, once.

    A built-in module whose optional dependency is missing still registers: components import
    their heavy libraries inside ``setup()``, so importing the module is always cheap and safe.
    """
    global _loaded
    if _loaded:
        return
    _loaded = True
    for package in STAGE_PACKAGES.values():
        pkg = importlib.import_module(package)
        for info in pkgutil.iter_modules(pkg.__path__):
            if not info.name.startswith("_"):
                importlib.import_module(f"{package}.{info.name}")
    for module in SECTION_MODULES:
        importlib.import_module(module)
    for ep in entry_points(group="genloom.plugins"):
        target: Any = ep.load()
        if callable(target):
            target()


def first_doc_line(cls: type) -> str:
    """The first line of a class docstring (what ``genloom list`` prints)."""
    doc = (cls.__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""
