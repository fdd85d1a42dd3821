"""Unicode and whitespace normalisation of the text column."""

from __future__ import annotations

import unicodedata
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc

from genloom.core.registry import PREPROCESSORS
from genloom.core.steps import Map, StepContext

_QUOTES = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201a": "'",
        "\u201b": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u201f": '"',
        "\u2032": "'",
        "\u2033": '"',
    }
)
_DASHES = str.maketrans(
    {"\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2212": "-"}
)


@PREPROCESSORS.register("normalize")
class NormalizeMap(Map):
    """Normalise Unicode (NFC or NFKC) and whitespace; optionally quotes, dashes and accents.

    Changes the text in place (or writes ``output_column``): Unicode normal form, runs of spaces
    and tabs collapsed to one space, trailing spaces stripped, more than two newlines collapsed to
    a blank line, leading and trailing whitespace removed. Vectorised with pyarrow.compute except
    for the optional quote/dash/accent folding and ``repair_encoding`` (ftfy: mojibake such as
    ``cafÃ©`` -> ``café``). Drops nothing.
    """

    type: Literal["normalize"] = "normalize"
    form: Literal["NFC", "NFKC", "none"] = "NFC"
    whitespace: bool = True
    quotes_and_dashes: bool = False
    fold_accents: bool = False
    column: str = "text"
    output_column: str | None = None
    #: repair mojibake ("doesnâ€™t" -> "doesn’t") with ftfy before anything else (genloom[docs])
    repair_encoding: bool = False

    def apply_batch(self, table: pa.Table, ctx: StepContext) -> pa.Table:
        col = table.column(self.column)
        if self.repair_encoding:
            col = pa.array([None if v is None else _fix_text(v) for v in col.to_pylist()], pa.string())
        if self.form != "none":
            col = pc.utf8_normalize(col, form=self.form)
        if self.whitespace:
            col = pc.replace_substring_regex(col, pattern=r"[\t\f\v\r\p{Zs}]+", replacement=" ")
            col = pc.replace_substring_regex(col, pattern=r" *\n *", replacement="\n")
            col = pc.replace_substring_regex(col, pattern=r"\n{3,}", replacement="\n\n")
            col = pc.utf8_trim_whitespace(col)
        if self.quotes_and_dashes or self.fold_accents:
            col = pa.array([None if v is None else self._fold(v) for v in col.to_pylist()], pa.string())
        target = self.output_column or self.column
        if target in table.column_names:
            return table.set_column(table.column_names.index(target), target, col)
        return table.append_column(target, col)

    def _fold(self, text: str) -> str:
        if self.quotes_and_dashes:
            text = text.translate(_QUOTES).translate(_DASHES)
        if self.fold_accents:
            decomposed = unicodedata.normalize("NFKD", text)
            text = unicodedata.normalize(
                "NFC", "".join(c for c in decomposed if not unicodedata.combining(c))
            )
        return text


def _fix_text(text: str) -> str:
    try:
        import ftfy
    except ImportError as e:
        from genloom.core.errors import MissingDependencyError

        raise MissingDependencyError("ftfy (normalize repair_encoding)", "pip install 'genloom[docs]'") from e
    return ftfy.fix_text(text, normalization="NFC", uncurl_quotes=False)
