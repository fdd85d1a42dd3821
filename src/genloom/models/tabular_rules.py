"""Row rules, sampling conditions and column constraints for generated tables.

Generated rows are checked here before they reach the user, and rows that break something are
rejected (the sampler draws more). Everything is parsed from text by a small hand-written scanner
(never ``eval``) and checked vectorised on Arrow tables:

- a **rule** (``train.model.rules``) compares a column with another column or a literal:
  ``end_date >= start_date``, ``age >= 18``, ``region != 'EU'``; operators ``< <= > >= == !=``;
  a literal is a number, a quoted string, ``true``/``false`` or an ISO date
  (``2020-01-31``, ``2020-01-31T08:00:00+01:00``). A row whose compared value is missing passes
  (a rule constrains the values that are there, as SDV's ``Inequality`` does);
- a **condition** (``genloom sample --where``) asks for rows: ``region=EU``, ``age>=30``,
  ``age=30..40`` (inclusive range; ``30..`` and ``..40`` are open). The value is typed against the
  column when checked. A row whose value is missing fails a condition;
- **constraints** come from ``columns:`` (``ColumnSpec``): ``min``/``max`` reject rows
  (missing values pass), ``round`` rounds, ``unique`` rejects rows repeating a value, across all
  the batches of one sampling call.

Values compare by the column's Arrow type: numbers as numbers, dates and timestamps on one time
line (microseconds since 1970-01-01; a date is its midnight, a timestamp without time zone is read
as UTC), strings as text (lexicographic), booleans as booleans (``false < true``).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from genloom.core.errors import ConfigError
from genloom.models.config import ColumnSpec

Op = Literal["<", "<=", ">", ">=", "==", "!="]
ConditionOp = Literal["<", "<=", ">", ">=", "==", "!=", "range"]

_TWO_CHAR_OPS = ("<=", ">=", "==", "!=")
_MIRROR: dict[str, Op] = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_INTEGER = re.compile(r"[+-]?\d+")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROS_PER_UNIT = {"s": 1_000_000, "ms": 1_000, "us": 1}

Family = Literal["number", "temporal", "string", "boolean"]


@dataclass(frozen=True)
class Value:
    """A literal of a rule or a condition, kept as written; it is typed against the column it meets."""

    text: str
    quoted: bool = False


@dataclass(frozen=True)
class Rule:
    """``column op other_column`` or ``column op value``; rows with a missing operand pass."""

    text: str
    column: str
    op: Op
    other: str | None = None
    value: Value | None = None

    @property
    def reason(self) -> str:
        """The rejection reason rows failing this rule are counted under."""
        return f"rule: {self.text}"

    def holds(self, table: pa.Table) -> np.ndarray:
        """Per row: True where the rule holds or an operand is missing."""
        where = f"rule '{self.text}'"
        left = _column(table, self.column, where)
        if self.other is not None:
            result, known = _compare(
                left, self.column, self.op, _column(table, self.other, where), self.other, where
            )
        else:
            result, known = _compare(left, self.column, self.op, self.value, "", where)  # type: ignore[arg-type]
        return result | ~known


@dataclass(frozen=True)
class Condition:
    """What sampled rows must satisfy (``--where``); rows with a missing value fail.

    ``op == "range"`` is the inclusive range ``low..high`` (either end may be None: open).
    """

    text: str
    column: str
    op: ConditionOp
    value: Value | None = None
    low: Value | None = None
    high: Value | None = None

    @property
    def reason(self) -> str:
        """The rejection reason rows failing this condition are counted under."""
        return f"condition: {self.text}"

    def holds(self, table: pa.Table) -> np.ndarray:
        """Per row: True where the value is present and satisfies the condition."""
        where = f"condition '{self.text}'"
        column = _column(table, self.column, where)
        if self.op != "range":
            result, known = _compare(column, self.column, self.op, self.value, "", where)  # type: ignore[arg-type]
            return result & known
        ok = np.asarray(pc.is_valid(column).to_numpy(zero_copy_only=False), dtype=bool)
        if self.low is not None:
            result, known = _compare(column, self.column, ">=", self.low, "", where)
            ok &= result & known
        if self.high is not None:
            result, known = _compare(column, self.column, "<=", self.high, "", where)
            ok &= result & known
        return ok

    def typed_value(self, arrow_type: pa.DataType) -> object:
        """The equality value as a Python object of ``arrow_type`` (for a conditional vector)."""
        if self.op != "==" or self.value is None:
            raise ConfigError(
                f"condition '{self.text}' is not an equality; only 'column=value' picks a level"
            )
        family = _family(arrow_type, f"condition '{self.text}'", self.column)
        text = self.value.text
        if family == "string":
            return text
        if family == "boolean":
            return _parse_bool(text, f"condition '{self.text}'", self.column)
        if family == "number":
            number = _parse_number(text, f"condition '{self.text}'", self.column)
            return int(number) if pa.types.is_integer(arrow_type) and float(number).is_integer() else number
        micros = _parse_iso(text, f"condition '{self.text}'", self.column)
        return pa.scalar(micros, pa.timestamp("us")).cast(arrow_type).as_py()


# ----------------------------------------------------------------------------------------------
# parsing


def parse_rule(text: str, columns: Sequence[str]) -> Rule:
    """Parse ``"end_date >= start_date"`` / ``"age >= 18"`` against the known ``columns``.

    The left side is a column (or a literal, if the right side is a column: ``18 <= age`` reads as
    ``age >= 18``); the right side is a column, a number, a quoted string, ``true``/``false`` or an
    ISO date. A column name with spaces or operator characters can be written in backquotes.
    """
    known = list(columns)
    start, op = _find_operator(text)
    if start < 0:
        raise ConfigError(
            f"rule '{text}' has no comparison",
            hint="write 'column op column|value' with op one of < <= > >= == !=",
        )
    left_text, right_text = text[:start].strip(), text[start + len(op) :].strip()
    if _find_operator(right_text)[0] >= 0:
        raise ConfigError(f"rule '{text}' has more than one comparison", hint="write one rule per comparison")
    if not left_text or not right_text:
        raise ConfigError(f"rule '{text}' needs something on both sides of '{op}'")
    left, right = _operand(left_text, known), _operand(right_text, known)
    if isinstance(left, str):
        if isinstance(right, str):
            return Rule(text, left, op, other=right)
        if right is None:
            raise _unknown_in_rule(text, right_text, known)
        return Rule(text, left, op, value=right)
    if isinstance(right, str) and left is not None:
        return Rule(text, right, _MIRROR[op], value=left)
    if left is not None and right is not None:
        raise ConfigError(
            f"rule '{text}' compares two values; one side must be a column; known columns: {', '.join(known)}"
        )
    raise _unknown_in_rule(text, left_text if left is None else right_text, known)


def parse_condition(text: str) -> tuple[str, Condition]:
    """Parse a ``--where`` condition: ``region=EU``, ``age>=30``, ``age=30..40`` (inclusive).

    The first ``<``, ``>``, ``!`` or ``=`` ends the column name: ``=`` (or ``==``) there is an
    equality whose value is the rest as written, so ``income=>50K`` asks for the value ``>50K``.
    An equality value ``a..b`` whose ends are numbers or ISO dates is an inclusive range.
    Quotes around the value are removed.
    """
    match = re.search(r"[<>!=]", text)
    if match is None:
        raise ConfigError(
            f"condition '{text}' has no comparison",
            hint="write column=value, column>=value or column=low..high",
        )
    i = match.start()
    column = text[:i].strip()
    if text[i] == "=":
        op: ConditionOp = "=="
        rest = text[i + 2 :] if text[i : i + 2] == "==" else text[i + 1 :]
    elif text[i : i + 2] in _TWO_CHAR_OPS:
        op, rest = text[i : i + 2], text[i + 2 :]  # type: ignore[assignment]
    elif text[i] in "<>":
        op, rest = text[i], text[i + 1 :]  # type: ignore[assignment]
    else:
        raise ConfigError(f"condition '{text}': '!' must be followed by '='")
    column, raw = column.strip("`"), rest.strip()
    if not column:
        raise ConfigError(f"condition '{text}' names no column")
    if not raw:
        raise ConfigError(f"condition '{text}' has no value after '{op}'")
    value = _unquote(raw)
    if op == "==" and not value.quoted and ".." in raw:
        low_text, high_text = (part.strip() for part in raw.split("..", 1))
        if (low_text or high_text) and all(_is_orderable(part) for part in (low_text, high_text) if part):
            return column, Condition(
                text,
                column,
                "range",
                low=Value(low_text) if low_text else None,
                high=Value(high_text) if high_text else None,
            )
    return column, Condition(text, column, op, value=value)


def _find_operator(text: str) -> tuple[int, Op]:
    """The offset and text of the first comparison operator outside quotes and backquotes (-1 if none)."""
    quote: str | None = None
    for i, ch in enumerate(text):
        if quote is not None:
            quote = None if ch == quote else quote
        elif ch in "'\"`":
            quote = ch
        elif ch in "<>=!":
            pair = text[i : i + 2]
            if pair in _TWO_CHAR_OPS:
                return i, pair  # type: ignore[return-value]
            if ch in "<>":
                return i, ch  # type: ignore[return-value]
            raise ConfigError(
                f"rule '{text}': '{ch}' is not an operator", hint="use == for equality and != for inequality"
            )
    return -1, "=="


def _operand(token: str, columns: list[str]) -> str | Value | None:
    """A column name, a literal, or None when it is neither (an unknown name)."""
    if len(token) >= 2 and token[0] == token[-1] == "`":
        name = token[1:-1]
        return name if name in columns else None
    if token in columns:
        return token
    if len(token) >= 2 and token[0] == token[-1] and token[0] in "'\"":
        return Value(token[1:-1], quoted=True)
    if _NUMBER.fullmatch(token) or _ISO_DATE.fullmatch(token) or token.lower() in ("true", "false"):
        return Value(token)
    return None


def _unknown_in_rule(text: str, token: str, columns: list[str]) -> ConfigError:
    return ConfigError(
        f"rule '{text}': '{token}' is neither a known column nor a value; known columns: {', '.join(columns)}",
        hint="quote string values ('EU'); write dates as YYYY-MM-DD",
    )


def _unquote(raw: str) -> Value:
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
        return Value(raw[1:-1], quoted=True)
    return Value(raw)


def _is_orderable(text: str) -> bool:
    return bool(_NUMBER.fullmatch(text) or _ISO_DATE.fullmatch(text))


# ----------------------------------------------------------------------------------------------
# checking


def row_mask(
    table: pa.Table,
    rules: Iterable[Rule] = (),
    conditions: Mapping[str, Condition] | Iterable[Condition] = (),
    specs: Mapping[str, ColumnSpec] | None = None,
) -> tuple[np.ndarray, dict[str, int]]:
    """Rows satisfying every condition, ``min``/``max`` constraint and rule; rejected counts by reason.

    Each rejected row is counted once, under the first check it fails, in the order conditions,
    then constraints (``"min: age"``, ``"max: age"``), then rules; only reasons that rejected a
    row appear. ``conditions`` may be a mapping (column -> condition) or any iterable.
    """
    keep = np.ones(table.num_rows, dtype=bool)
    counts: dict[str, int] = {}

    def reject(reason: str, ok: np.ndarray) -> None:
        rejected = int(np.count_nonzero(keep & ~ok))
        if rejected:
            counts[reason] = counts.get(reason, 0) + rejected
        keep[:] &= ok

    for condition in conditions.values() if isinstance(conditions, Mapping) else conditions:
        reject(condition.reason, condition.holds(table))
    for name, spec in (specs or {}).items():
        for bound, limit in (("min", spec.min), ("max", spec.max)):
            if limit is None:
                continue
            where = f"columns.{name}.{bound}"
            column = _column(table, name, where)
            if _family(column.type, where, name) != "number":
                raise ConfigError(
                    f"{where}: '{name}' is not numeric ({column.type}); min/max bound numbers",
                    hint=f"for dates write a rule such as '{name} >= 2020-01-01'",
                )
            values, known = _numbers(column)
            ok = values >= limit if bound == "min" else values <= limit
            reject(f"{bound}: {name}", ok | ~known)
    for rule in rules:
        reject(rule.reason, rule.holds(table))
    return keep, counts


def apply_rounding(table: pa.Table, specs: Mapping[str, ColumnSpec]) -> pa.Table:
    """Round the columns whose spec sets ``round`` to that many decimals (integers stay as they are)."""
    for name, spec in specs.items():
        if spec.round is None:
            continue
        where = f"columns.{name}.round"
        column = _column(table, name, where)
        if pa.types.is_integer(column.type):
            continue  # an integer already has no decimals
        if not (pa.types.is_floating(column.type) or pa.types.is_decimal(column.type)):
            raise ConfigError(f"{where}: '{name}' is not numeric ({column.type}); only numbers are rounded")
        rounded = pc.round(column, ndigits=spec.round).cast(column.type)
        index = table.schema.get_field_index(name)
        table = table.set_column(index, table.schema.field(index), rounded)
    return table


def enforce_unique(
    table: pa.Table, unique_columns: Sequence[str], seen: dict[str, set[object]]
) -> tuple[np.ndarray, int]:
    """Rows whose value in every unique column is new (not in ``seen``, first in this batch).

    ``seen`` carries the values kept so far across the batches of one sampling call and is
    updated with the kept rows' values. Missing values never count as repeats. A row repeating a
    value of one column is rejected even if an earlier copy is itself rejected for another column
    (conservative with several unique columns: it never lets a duplicate through).
    Returns the mask and the number of rejected rows.
    """
    keep = np.ones(table.num_rows, dtype=bool)
    encoded: list[tuple[str, np.ndarray, list[object]]] = []
    for name in unique_columns:
        column = _column(table, name, f"columns.{name}.unique")
        dictionary = pc.dictionary_encode(column.combine_chunks())
        codes = dictionary.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
        levels = dictionary.dictionary.to_pylist()
        known = seen.setdefault(name, set())
        repeated = np.fromiter((level in known for level in levels), dtype=bool, count=len(levels))
        present = codes >= 0
        first = np.zeros(table.num_rows, dtype=bool)
        first[np.unique(codes, return_index=True)[1]] = True
        ok = ~present | (first & ~repeated[np.where(present, codes, 0)])
        keep &= ok
        encoded.append((name, codes, levels))
    for name, codes, levels in encoded:
        kept = codes[keep & (codes >= 0)]
        seen[name].update(levels[code] for code in kept.tolist())
    return keep, int(np.count_nonzero(~keep))


DCR_WORKING_MIB = 16  # MiB of distances computed at a time by the neighbour search


def nearest_distances(query: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Euclidean distance from each query row to its closest reference row, by brute force: (len(query),) float32.

    Both are float matrices in one space (``tabular.DistanceSpace``, or
    ``tabular_metrics.normalised_matrix``). The search runs in float32 (scikit-learn upcasts each
    chunk to float64 itself) over chunks of ``DCR_WORKING_MIB`` of distances: a float64 copy of
    Adult's reference is 28 MB and scikit-learn's default chunks 1 GiB, which made the evaluation's
    DCR and membership scores and the sampler's privacy filter a run's peak memory. Distances
    agree with a float64 search to within about 1e-6; a copy of a reference row is at 0.
    """
    from sklearn import config_context
    from sklearn.neighbors import NearestNeighbors

    if len(reference) == 0:
        raise ValueError("nearest_distances needs at least one reference row")
    if len(query) == 0:
        return np.zeros(0, dtype=np.float32)
    index = NearestNeighbors(n_neighbors=1, algorithm="brute").fit(np.asarray(reference, dtype=np.float32))
    with config_context(working_memory=DCR_WORKING_MIB):
        distances, _ = index.kneighbors(np.asarray(query, dtype=np.float32))
    return np.asarray(distances[:, 0], dtype=np.float32)


# ----------------------------------------------------------------------------------------------
# typed comparison


def _column(table: pa.Table, name: str, where: str) -> pa.ChunkedArray:
    if name not in table.column_names:
        raise ConfigError(f"{where}: unknown column '{name}'; known columns: {', '.join(table.column_names)}")
    column = table.column(name)
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    return column


def _family(arrow_type: pa.DataType, where: str, name: str) -> Family:
    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    if pa.types.is_boolean(arrow_type):
        return "boolean"
    if pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type) or pa.types.is_decimal(arrow_type):
        return "number"
    if pa.types.is_timestamp(arrow_type) or pa.types.is_date(arrow_type):
        return "temporal"
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "string"
    raise ConfigError(
        f"{where}: column '{name}' has type {arrow_type}, which rules and conditions cannot compare"
    )


def _validity(column: pa.ChunkedArray) -> np.ndarray:
    return np.asarray(pc.is_valid(column).to_numpy(zero_copy_only=False), dtype=bool)


def _numbers(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """int64 for integer columns (exact), float64 otherwise; plus which rows are present."""
    target = pa.int64() if pa.types.is_integer(column.type) else pa.float64()
    values = column.cast(target).fill_null(0).to_numpy()
    return values, _validity(column)


def _micros(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Microseconds since 1970-01-01 (UTC) of a date or timestamp column; plus which rows are present."""
    arrow_type = column.type
    if pa.types.is_date32(arrow_type):
        values = column.cast(pa.int32()).fill_null(0).to_numpy().astype(np.int64) * 86_400_000_000
    elif pa.types.is_date64(arrow_type):
        values = column.cast(pa.int64()).fill_null(0).to_numpy() * 1_000
    else:
        raw = column.cast(pa.int64()).fill_null(0).to_numpy()
        unit = arrow_type.unit
        values = raw // 1_000 if unit == "ns" else raw * _MICROS_PER_UNIT[unit]
    return values, _validity(column)


def _parse_number(text: str, where: str, name: str) -> int | float:
    if _INTEGER.fullmatch(text):
        return int(text)
    if _NUMBER.fullmatch(text):
        return float(text)
    raise ConfigError(f"{where}: '{text}' is not a number, and column '{name}' holds numbers")


def _parse_bool(text: str, where: str, name: str) -> bool:
    lowered = text.lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise ConfigError(f"{where}: '{text}' is not true/false, and column '{name}' holds booleans")


def _parse_iso(text: str, where: str, name: str) -> int:
    """Microseconds since 1970-01-01 UTC of an ISO date or datetime (no time zone: UTC)."""
    if not _ISO_DATE.fullmatch(text):
        raise ConfigError(
            f"{where}: '{text}' is not an ISO date, and column '{name}' holds dates",
            hint="write YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS",
        )
    moment = dt.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return (moment - _EPOCH) // dt.timedelta(microseconds=1)


def _compare(
    left: pa.ChunkedArray, name: str, op: Op, right: pa.ChunkedArray | Value, right_name: str, where: str
) -> tuple[np.ndarray, np.ndarray]:
    """``left op right`` per row (False where unknown) and which rows have both operands present."""
    family = _family(left.type, where, name)
    if isinstance(right, Value):
        return _compare_literal(left, family, op, right, where, name)
    right_family = _family(right.type, where, right_name)
    both = {family, right_family}
    if both <= {"number", "boolean"} and family != right_family:
        both = {"number"}
    if len(both) != 1:
        raise ConfigError(f"{where}: cannot compare '{name}' ({family}) with '{right_name}' ({right_family})")
    kind = both.pop()
    if kind == "number":
        a, known_a = _numbers(left.cast(pa.float64()) if family == "boolean" else left)
        b, known_b = _numbers(right.cast(pa.float64()) if right_family == "boolean" else right)
    elif kind == "temporal":
        (a, known_a), (b, known_b) = _micros(left), _micros(right)
    else:
        return _arrow_compare(left, op, right)
    return _numpy_compare(a, op, b), known_a & known_b


def _compare_literal(
    column: pa.ChunkedArray, family: Family, op: Op, value: Value, where: str, name: str
) -> tuple[np.ndarray, np.ndarray]:
    if family == "string":
        return _arrow_compare(column, op, pa.scalar(value.text, column.type))
    if family == "boolean":
        return _arrow_compare(column, op, pa.scalar(_parse_bool(value.text, where, name)))
    if family == "number":
        number = _parse_number(value.text, where, name)
        values, known = _numbers(column)
        if isinstance(number, float) and values.dtype == np.int64:
            values = values.astype(np.float64)
        return _numpy_compare(values, op, number), known
    values, known = _micros(column)
    return _numpy_compare(values, op, _parse_iso(value.text, where, name)), known


def _numpy_compare(a: np.ndarray, op: Op, b: np.ndarray | float) -> np.ndarray:
    if op == "<":
        return a < b
    if op == "<=":
        return a <= b
    if op == ">":
        return a > b
    if op == ">=":
        return a >= b
    if op == "==":
        return a == b
    return a != b


_ARROW_OPS = {
    "<": pc.less,
    "<=": pc.less_equal,
    ">": pc.greater,
    ">=": pc.greater_equal,
    "==": pc.equal,
    "!=": pc.not_equal,
}


def _arrow_compare(
    left: pa.ChunkedArray, op: Op, right: pa.ChunkedArray | pa.Scalar
) -> tuple[np.ndarray, np.ndarray]:
    result = _ARROW_OPS[op](left, right)
    known = np.asarray(pc.is_valid(result).to_numpy(zero_copy_only=False), dtype=bool)
    values = np.asarray(result.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)
    return values, known
