"""Set up WordNet 3.0 for NLTK's reader from the Debian packages (offline; `genloom setup wordnet`)."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path
from typing import Any

from genloom.core.errors import MissingDependencyError

DEBIAN_WORDNET = "/usr/share/wordnet"
# lexnames(5WN): file number, name and syntactic category; Debian does not ship this file
LEXNAMES = [
    "adj.all",
    "adj.pert",
    "adv.all",
    "noun.Tops",
    "noun.act",
    "noun.animal",
    "noun.artifact",
    "noun.attribute",
    "noun.body",
    "noun.cognition",
    "noun.communication",
    "noun.event",
    "noun.feeling",
    "noun.food",
    "noun.group",
    "noun.location",
    "noun.motive",
    "noun.object",
    "noun.person",
    "noun.phenomenon",
    "noun.plant",
    "noun.possession",
    "noun.process",
    "noun.quantity",
    "noun.relation",
    "noun.shape",
    "noun.state",
    "noun.substance",
    "noun.time",
    "verb.body",
    "verb.change",
    "verb.cognition",
    "verb.communication",
    "verb.competition",
    "verb.consumption",
    "verb.contact",
    "verb.creation",
    "verb.emotion",
    "verb.motion",
    "verb.perception",
    "verb.possession",
    "verb.social",
    "verb.stative",
    "verb.weather",
    "adj.ppl",
]
_CATEGORY = {"adj": 3, "adv": 4, "noun": 1, "verb": 2}
REQUIRED = ("data.noun", "index.noun", "index.sense", "noun.exc")
INSTALL_HINT = "apt-get install wordnet-base wordnet-sense-index, then run: genloom setup wordnet"

_loaded: dict[str, Any] = {}


def default_wordnet_root() -> Path:
    """Where ``setup_wordnet`` puts the NLTK data folder unless told otherwise."""
    return Path.home() / ".cache" / "genloom" / "nltk_data"


def setup_wordnet(target: str | Path | None = None, source: str | Path = DEBIAN_WORDNET) -> Path:
    """Copy the Debian WordNet files into ``<target>/corpora/wordnet`` and write the missing ``lexnames``.

    Files are copied, not linked: NLTK 3.10 rejects links that leave its data root. Returns the
    NLTK data root to give to ``load_wordnet`` (``target``, default ``~/.cache/genloom/nltk_data``).
    Raises MissingDependencyError when the Debian packages are absent. Idempotent.
    """
    root = Path(target) if target is not None else default_wordnet_root()
    src = Path(source)
    missing = [f for f in REQUIRED if not (src / f).is_file()]
    if missing:
        raise MissingDependencyError(f"WordNet files {', '.join(missing)} in {src}", INSTALL_HINT)
    dest = root / "corpora" / "wordnet"
    dest.mkdir(parents=True, exist_ok=True)
    for f in sorted(os.listdir(src)):
        if (src / f).is_file():
            shutil.copyfile(src / f, dest / f)
    with open(dest / "lexnames", "w", encoding="utf-8") as fp:
        for i, name in enumerate(LEXNAMES):
            fp.write(f"{i:02d}\t{name}\t{_CATEGORY[name.split('.')[0]]}\n")
    return root


def is_wordnet_ready(root: str | Path | None = None) -> bool:
    """True when ``setup_wordnet`` has been run for ``root``."""
    d = (Path(root) if root is not None else default_wordnet_root()) / "corpora" / "wordnet"
    return all((d / f).is_file() for f in (*REQUIRED, "lexnames"))


def load_wordnet(root: str | Path | None = None) -> Any:
    """NLTK's WordNet reader over the folder made by ``setup_wordnet`` (cached per process, ~5 s)."""
    path = Path(root) if root is not None else default_wordnet_root()
    key = str(path)
    if key in _loaded:
        return _loaded[key]
    if not is_wordnet_ready(path):
        raise MissingDependencyError(f"WordNet data in {path}", INSTALL_HINT)
    try:
        import nltk
        from nltk.corpus.reader.wordnet import WordNetCorpusReader
    except ImportError as e:
        raise MissingDependencyError("nltk", "pip install 'genloom[nlp]'") from e
    if key not in nltk.data.path:
        nltk.data.path.insert(0, key)
    with warnings.catch_warnings():
        # "multilingual functions are not available": there is no Open Multilingual Wordnet here
        warnings.simplefilter("ignore", UserWarning)
        reader = WordNetCorpusReader(str(path / "corpora" / "wordnet"), None)
    _loaded[key] = reader
    return reader
