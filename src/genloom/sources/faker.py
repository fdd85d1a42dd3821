"""Typed synthetic records from Faker providers: seeded, a locale per field, text from a template."""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterator
from datetime import date, datetime
from decimal import Decimal
from typing import Any, ClassVar, Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, model_validator

from genloom.core.errors import ConfigError
from genloom.core.records import RECORD_COLUMNS, records_to_table
from genloom.core.registry import SOURCES
from genloom.core.steps import Source
from genloom.sources.csv import template_fields

# the scale of decimal columns whose provider does not fix one (right_digits)
_DECIMAL_SCALE = 10
_SCALARS = (str, int, float, bool, Decimal, date, datetime)


class FakerField(BaseModel):
    """One column: a Faker provider, its arguments, its locale and a share of missing values.

    YAML accepts three spellings: ``name`` (a provider), ``{date_between: {start_date: -1y}}``
    (a provider and its arguments) and this model's keys (``{provider: city, locale: de_DE}``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    provider: str = Field(description="the Faker provider method (name, email, date_between, pyint...)")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the provider")
    locale: str | None = Field(default=None, description="this column's locale (default: the source's)")
    null_fraction: float = Field(default=0.0, ge=0, le=1, description="share of rows left null")

    @model_validator(mode="before")
    @classmethod
    def _short_forms(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"provider": value}
        if isinstance(value, dict) and len(value) == 1:
            ((name, args),) = value.items()
            if name not in cls.model_fields:
                if args is None:
                    args = {}
                if not isinstance(args, dict):
                    raise ValueError(f"the arguments of provider {name!r} must be a mapping, not {args!r}")
                return {"provider": name, "kwargs": args}
        return value


@SOURCES.register("faker")
class FakerSource(Source):
    """``n`` typed records made by Faker providers, one column per entry of ``fields``.

    Each column is a provider (``name``, ``email``, ``date_between: {start_date: -1y}``,
    ``pydecimal: {left_digits: 3, right_digits: 2}``...) in the source's ``locale`` or its own.
    Values keep their Python type as Arrow columns (strings, integers, floats, decimals, dates,
    timestamps, booleans; lists and mappings become JSON strings), for the table models; a column
    named like a record column (``id``, ``text``...) is stored as ``col_<name>``. ``text`` comes
    from ``text_template`` (``"{name} <{email}>"``) or ``col: value; ...``. Every row is seeded on
    its own (``seed``, its row number, the locale), so the same seed gives the same rows whatever
    ``n`` and the partitioning, and row ``i`` of ``n=100`` is row ``i`` of ``n=1000``. Relative
    dates (``-1y``) move with the clock: write absolute ones for rows that match on every day.
    Records are marked ``meta.synthetic`` with the generator and seed; ids are
    ``faker:<label>#row=<i>``.
    """

    type: Literal["faker"] = "faker"
    fields: dict[str, FakerField] = Field(min_length=1, description="column name -> provider")
    n: int = Field(gt=0, description="how many rows to make")
    seed: int = Field(default=0, description="seeds every row; the same seed gives the same rows")
    locale: str = Field(default="en_US", description="the locale of columns that name none")
    text_template: str | None = Field(
        default=None, description='builds ``text`` from the columns, e.g. "{name} <{email}>"'
    )
    label: str = Field(default="faker", description="the name in record ids")
    rows_per_partition: int = Field(default=10_000, gt=0, description="rows per partition (a unit of work)")

    version: ClassVar[str] = "1"
    requires: ClassVar[tuple[str, ...]] = ("faker",)
    extra: ClassVar[str] = "faker"

    def check(self, path: str) -> None:
        if self.text_template is not None:
            unknown = [f for f in template_fields(self.text_template) if f not in self.fields]
            if unknown:
                raise ConfigError(
                    f"text_template uses {{{unknown[0]}}}, not one of the fields {sorted(self.fields)}",
                    path=f"{path}.text_template",
                )
        try:
            import faker  # noqa: F401
        except ImportError:
            return  # check_requirements names the extra when the stage runs
        fakers = self._fakers(path)
        for name, spec in self.fields.items():
            fk = fakers[spec.locale or self.locale]
            where = f"{path}.fields.{name}"
            if spec.provider.startswith("_") or not callable(getattr(fk, spec.provider, None)):
                close = difflib.get_close_matches(
                    spec.provider, [m for m in dir(fk) if not m.startswith("_")]
                )
                hint = f"did you mean {close[0]!r}?" if close else "see https://faker.readthedocs.io"
                raise ConfigError(f"no Faker provider {spec.provider!r}", path=where, hint=hint)
            try:
                getattr(fk, spec.provider)(**_kwargs(spec.kwargs))
            except Exception as e:  # a wrong argument of the provider: tell before any work
                raise ConfigError(
                    f"{spec.provider}({_args(spec.kwargs)}) fails: {type(e).__name__}: {e}", path=where
                ) from None

    def resource_versions(self) -> dict[str, str]:
        """Faker's version: a new release may change the values of a seed, so it reruns the source."""
        from importlib import metadata

        try:
            return {"faker": metadata.version("faker")}
        except metadata.PackageNotFoundError:
            return {"faker": "not installed"}

    def partitions(self) -> list[Any]:
        """Row ranges ``[start, stop)`` of ``rows_per_partition`` rows."""
        step = self.rows_per_partition
        return [[start, min(start + step, self.n)] for start in range(0, self.n, step)]

    def location(self, partition: Any) -> str:
        return f"faker:{self.label} rows {partition[0]}..{partition[1] - 1}" if partition else "faker"

    def _fakers(self, path: str = "") -> dict[str, Any]:
        from faker import Faker

        out: dict[str, Any] = {}
        for locale in sorted({self.locale, *(f.locale for f in self.fields.values() if f.locale)}):
            try:
                out[locale] = Faker(locale)
            except AttributeError:
                raise ConfigError(
                    f"Faker has no locale {locale!r}", path=path, hint="e.g. en_US, de_DE, fr_FR, ja_JP"
                ) from None
        return out

    def read(self, partition: Any) -> Iterator[pa.Table]:
        """The rows of one range, each seeded by (seed, row, locale), as one table."""
        start, stop = partition
        fakers = self._fakers()
        columns = {name: f"col_{name}" if name in RECORD_COLUMNS else name for name in self.fields}
        records: list[dict[str, Any]] = []
        for i in range(start, stop):
            for locale, fk in fakers.items():
                fk.seed_instance(f"{self.seed}:{i}:{locale}")
            row: dict[str, Any] = {}
            for name, spec in self.fields.items():
                fk = fakers[spec.locale or self.locale]
                # the draw for null happens every row, so null_fraction does not shift other values
                missing = fk.random.random() < spec.null_fraction
                value = getattr(fk, spec.provider)(**_kwargs(spec.kwargs))
                row[name] = None if missing else _typed(value)
            if self.text_template:
                text = self.text_template
                for name in template_fields(self.text_template):
                    text = text.replace("{" + name + "}", "" if row[name] is None else str(row[name]))
            else:
                text = "; ".join(f"{k}: {v}" for k, v in row.items() if v is not None)
            meta = {"synthetic": True, "generator": "faker", "seed": self.seed, "row": i}
            record = {"id": f"faker:{self.label}#row={i}", "text": text, "source": "faker", "meta": meta}
            record.update({columns[k]: v for k, v in row.items()})
            records.append(record)
        table = records_to_table(records)
        # Arrow infers a decimal's precision from the values at hand: one type for every partition
        for name, spec in self.fields.items():
            col = columns[name]
            if pa.types.is_decimal(table.schema.field(col).type):
                scale = int(spec.kwargs.get("right_digits", _DECIMAL_SCALE))
                index = table.schema.get_field_index(col)
                table = table.set_column(index, col, table.column(col).cast(pa.decimal128(38, scale)))
        yield table


def _typed(value: Any) -> Any:
    """A provider's value as an Arrow-friendly scalar: lists, tuples, sets and mappings as JSON."""
    if value is None or isinstance(value, _SCALARS):
        return value
    if isinstance(value, set | frozenset):
        value = sorted(value, key=str)
    return json.dumps(value, ensure_ascii=False, default=str, sort_keys=True)


_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?$")


def _kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """A provider's arguments with ISO dates (``2024-01-01``, quoted or not in YAML) as dates:
    Faker reads strings as relative dates only (``-1y``, ``+30d``)."""
    out = {}
    for key, value in kwargs.items():
        if isinstance(value, str) and _ISO_DATE.match(value):
            value = datetime.fromisoformat(value) if len(value) > 10 else date.fromisoformat(value)
        out[key] = value
    return out


def _args(kwargs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())


__all__ = ["FakerField", "FakerSource"]
