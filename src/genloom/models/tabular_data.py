"""Rows <-> float32 matrices for the table families (Xu et al. 2019, "Modeling Tabular Data using
Conditional GAN", section 4.2: mode-specific normalisation).

A numeric, integer or datetime column is modelled by a variational Gaussian mixture (sklearn's
``BayesianGaussianMixture`` with a Dirichlet-process prior, as CTGAN). A value ``x`` becomes two
blocks of the encoded row: a mode ``k`` drawn from the mixture's posterior p(k | x) (a one-hot,
"mode" span, softmax) and the position inside that mode ``(x - mu_k) / (4 sigma_k)`` clipped to
[-0.99, 0.99] ("value" span, tanh). Unlike CTGAN, a light mode that alone holds some values is
kept and the draw is among the modes within 4 sigma of x, so the round trip rarely clips. A column with missing values gets a two-way "missing" span
(present, missing). A categorical or boolean column is one one-hot ("category" span) over its
levels, null being a level of its own; levels beyond ``max_categories`` or rarer than
``min_category_fraction`` share one "(other)" level, which decodes to one of the grouped
values drawn in proportion to its training frequency, so rare values still appear.

The layout is a list of ``Span``; the model families read it to put tanh or softmax on each
block. The fitted state is JSON (no pickle).
"""

from __future__ import annotations

import base64
import json
import math
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from genloom.core.errors import ConfigError, GenloomError, MissingDependencyError
from genloom.core.records import RECORD_COLUMNS

if TYPE_CHECKING:
    from genloom.models.config import ColumnSpec, TabularConfig

ColumnKind = Literal["numeric", "integer", "categorical", "boolean", "datetime", "id"]

MODE_FIT_ROWS = 5_000  # rows sampled per column to fit the mixture: EM costs O(rows) x 100 steps
MODE_MIN_WEIGHT = 0.005  # mixture components lighter than this are dropped (CTGAN's threshold)...
MODE_MIN_COVER = 0.0002  # ...unless they alone can represent this share of the values
VALUE_CLIP = 0.99
TEXT_SHARE, TEXT_MIN_DISTINCT = 0.5, 20  # a string column more distinct than both is free text
OTHER = "(other)"
QUANTILES = (0, 1, 5, 25, 50, 75, 95, 99, 100)
PROFILE_LEVELS = 100
FORMAT = "genloom.table_transformer"
VERSION = 1

MODE_KINDS = ("numeric", "integer", "datetime")
LEVEL_KINDS = ("categorical", "boolean")
_PER_SECOND = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}
_DAY = 86_400.0
_JSON_NATIVE = (pa.types.is_string, pa.types.is_large_string, pa.types.is_integer, pa.types.is_floating)


@dataclass(frozen=True)
class Span:
    """One block of the encoded row: which column, where, how wide, and its output activation."""

    column: str
    start: int
    dim: int
    activation: Literal["tanh", "softmax"]
    role: Literal["value", "mode", "category", "missing"]


def infer_kinds(
    schema: pa.Schema, sample: pa.Table, cfg: TabularConfig
) -> tuple[dict[str, ColumnKind], dict[str, str]]:
    """How each column is modelled (in schema order) and why the others are left out.

    Arrow ints are integer, floats and decimals numeric, bools boolean, timestamps and dates
    datetime, strings categorical unless they are free text (more distinct values than half the
    sample's rows and than 20). ``cfg.columns[name].type`` overrides the guess ("text" and
    "ignore" leave a column out, "id" generates unique keys). genloom's own columns (id, text,
    source, meta) and ``cfg.exclude`` are always left out.
    """
    specs = _column_specs(cfg, schema.names)
    excluded = {_resolve_name(n, schema.names, "exclude") for n in cfg.exclude}
    kinds: dict[str, ColumnKind] = {}
    left_out: dict[str, str] = {}
    for field in schema:
        name, typ = field.name, field.type
        spec = specs.get(name)
        wanted = spec.type if spec is not None else None
        if name in RECORD_COLUMNS:
            left_out[name] = "genloom column"
        elif name in excluded:
            left_out[name] = "excluded"
        elif wanted in ("text", "ignore"):
            left_out[name] = f"{wanted} (configured)"
        elif wanted == "id":
            kinds[name] = "id"
        else:
            col = sample.column(name)
            # "text", "ignore" and "id" were handled above, so an override is a ColumnKind here
            guess = cast("ColumnKind", wanted) if wanted is not None else _kind_of_type(typ)
            if guess is None:
                left_out[name] = f"unsupported type {typ}"
            elif col.null_count == len(col):
                left_out[name] = "no values"
            elif wanted is None and guess == "categorical" and _is_text(col):
                left_out[name] = f"text: {_distinct(col)} distinct values of {len(col)}"
            else:
                kinds[name] = guess
    return kinds, left_out


def profile_table(rows: pa.Table, kinds: dict[str, ColumnKind]) -> dict:
    """Per-column distributions for monitoring: numeric quantiles, mean and std (datetimes in
    seconds since the epoch), the most frequent levels (at most 100), missing rates, row count."""
    n = rows.num_rows
    columns: dict[str, dict[str, Any]] = {}
    for name, kind in kinds.items():
        col = rows.column(name)
        entry: dict[str, Any] = {"kind": kind}
        if kind in MODE_KINDS:
            x = _as_numbers(col, kind, name)
            finite = x[np.isfinite(x)]
            entry["missing"] = float(1 - len(finite) / n) if n else 0.0
            if kind == "datetime":
                entry["unit"] = "seconds since epoch"
            if len(finite):
                qs = np.percentile(finite, QUANTILES)
                entry["quantiles"] = {f"p{q}": float(v) for q, v in zip(QUANTILES, qs, strict=True)}
                entry["mean"] = float(finite.mean())
                entry["std"] = float(finite.std())
        elif kind in LEVEL_KINDS:
            values, counts = _level_counts(_plain(col))
            entry["missing"] = float(col.null_count / n) if n else 0.0
            entry["distinct"] = len(counts)
            entry["levels"] = [
                {"value": v, "count": int(c), "share": float(c / n)}
                for v, c in zip(
                    _json_values(values.slice(0, PROFILE_LEVELS)), counts[:PROFILE_LEVELS], strict=True
                )
            ]
        else:
            entry["missing"] = float(col.null_count / n) if n else 0.0
            entry["distinct"] = _distinct(col)
        columns[name] = entry
    return {"rows": n, "columns": columns}


def finite_json(value: Any) -> Any:
    """``value`` (parsed JSON) with every NaN or infinite number replaced by None: strict JSON, which
    ``json.dumps`` otherwise writes as the non-standard ``NaN``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite_json(v) for v in value]
    return value


class TableTransformer:
    """Rows <-> float32 matrices (CTGAN's mode-specific normalisation).

    ``fit`` learns a Gaussian mixture per numeric column on at most ``MODE_FIT_ROWS`` (5,000)
    rows sampled from it, for speed: EM costs rows x 100 steps; 5,000 rows fit Adult's six
    numeric columns in about 3.5 s of CPU and still put 25 rows behind the lightest mode kept.
    Modes lighter than 0.5% are dropped unless they alone can represent 0.02% of the values, and
    a row's mode is drawn among the modes within 4 sigma of it, so few values are clipped.
    Levels are counted on every row. ``transform`` draws
    each row's mode from the posterior of the kept modes (point estimates of the fitted mixture,
    so a transformer reloaded from JSON encodes identically); ``inverse_transform`` takes the
    argmax of each softmax span, so it accepts probabilities, one-hots or logits.
    Decoded numbers are clipped to the training range (as SDV's ``enforce_min_max_values``);
    integer columns round back to their integer type, datetimes to the training unit. A value
    span is float32, so a decoded number is within ~1e-7 x 4 sigma of its mode (a datetime
    spread over a month: ~0.1 s); values beyond 4 sigma of every kept mode are clipped there.
    NaN and infinite floats count as missing (they decode as null).
    """

    def __init__(
        self,
        schema: pa.Schema,
        kinds: dict[str, ColumnKind],
        left_out: dict[str, str],
        encoders: dict[str, _ModeColumn | _LevelColumn | _IdColumn],
        rows: int,
    ) -> None:
        self.schema = schema
        self.kinds = kinds
        self.left_out = left_out
        self.rows = rows  # training rows
        self._encoders = encoders
        self.spans: list[Span] = []
        self._starts: dict[str, int] = {}
        start = 0
        for name in kinds:
            enc = encoders[name]
            if isinstance(enc, _IdColumn):
                continue
            self._starts[name] = start
            for span in enc.spans(name, start):
                self.spans.append(span)
                start += span.dim
        self.dim = start
        self.discrete_columns = [c for c, k in kinds.items() if k in LEVEL_KINDS]

    @classmethod
    def fit(cls, rows: pa.Table, cfg: TabularConfig, seed: int = 0) -> TableTransformer:
        """Learn the encoding of ``rows`` (kinds, mixtures, levels) under ``cfg``; deterministic for a seed."""
        if rows.num_rows == 0:
            raise GenloomError("cannot fit a table transformer on an empty table")
        kinds, left_out = infer_kinds(rows.schema, rows, cfg)
        if not any(k != "id" for k in kinds.values()):
            raise GenloomError(
                "no column of the table can be modelled; left out: "
                + "; ".join(f"{c} ({why})" for c, why in left_out.items())
            )
        encoders: dict[str, _ModeColumn | _LevelColumn | _IdColumn] = {}
        for name, kind in kinds.items():
            col = rows.column(name)
            if kind == "id":
                encoders[name] = _IdColumn.fit(col)
            elif kind in LEVEL_KINDS:
                encoders[name] = _LevelColumn.fit(_plain(col), cfg.max_categories, cfg.min_category_fraction)
            else:
                encoders[name] = _ModeColumn.fit(col, kind, name, cfg.max_modes, _column_seed(seed, name))
        fields = [rows.schema.field(name) for name in kinds]
        return cls(pa.schema(fields), kinds, left_out, encoders, rows.num_rows)

    def transform(self, rows: pa.Table, seed: int = 0) -> np.ndarray:
        """``rows`` encoded as a (n, dim) float32 matrix; modes are drawn with ``default_rng(seed)``."""
        n = rows.num_rows
        out = np.zeros((n, self.dim), dtype=np.float32)
        rng = np.random.default_rng(seed)
        for name, start in self._starts.items():
            if name not in rows.column_names:
                raise GenloomError(
                    f"the rows lack column {name!r} the transformer was fitted on; they have {rows.column_names}"
                )
            enc = self._encoders[name]
            col = rows.column(name)
            if isinstance(enc, _ModeColumn):
                block = enc.encode(_as_numbers(col, enc.kind, name), rng)
                out[:, start : start + block.shape[1]] = block
            elif isinstance(enc, _LevelColumn):
                out[np.arange(n), start + enc.encode(_plain(col), name)] = 1.0
        return out

    def inverse_transform(self, data: np.ndarray, seed: int = 0, *, first_row: int = 0) -> pa.Table:
        """Rows with ``self.schema`` from encoded rows (tanh/softmax applied, or logits).

        Softmax spans decode by argmax; "(other)" levels and nothing else draw from
        ``default_rng(seed)``. Id columns get unique keys from the row number plus ``first_row``
        (pass the rows generated so far, so keys stay unique across batches).
        """
        data = np.asarray(data)
        if data.ndim != 2 or data.shape[1] != self.dim:
            raise GenloomError(f"expected encoded rows of shape (n, {self.dim}), got {data.shape}")
        n = data.shape[0]
        rng = np.random.default_rng(seed)
        arrays = []
        for field in self.schema:
            enc = self._encoders[field.name]
            if isinstance(enc, _IdColumn):
                arrays.append(enc.decode(n, first_row, field.type))
                continue
            start = self._starts[field.name]
            block = data[:, start : start + enc.width]
            if isinstance(enc, _ModeColumn):
                arrays.append(_from_numbers(enc.decode(block), field.type, enc))
            else:
                arrays.append(enc.decode(block.argmax(axis=1), rng, field.type))
        return pa.Table.from_arrays(arrays, schema=self.schema)

    def category_span(self, column: str) -> Span:
        """The one-hot span of a categorical or boolean column."""
        self._levels(column)
        return next(s for s in self.spans if s.column == column and s.role == "category")

    def category_index(self, column: str, value: object) -> int:
        """The position of ``value`` within the column's category span (a grouped rare value: "(other)")."""
        enc = self._levels(column)
        index = enc.index_of(value)
        if index is None:
            known = enc.kept.to_pylist()
            shown = ", ".join(repr(v) for v in known[:50]) + (" ..." if len(known) > 50 else "")
            if enc.grouped is not None:
                shown += f" and {len(enc.grouped)} rarer ones grouped as {OTHER!r}"
            raise ConfigError(f"column {column!r} has no level {value!r}; known levels: {shown}")
        return index

    def category_levels(self, column: str) -> list[object]:
        """The levels of a category span in span order ("(other)" stands for the grouped ones)."""
        enc = self._levels(column)
        return enc.kept.to_pylist() + ([OTHER] if enc.grouped is not None else [])

    def level_frequencies(self, column: str) -> np.ndarray:
        """The training frequency of each level of the column's category span, in span order."""
        enc = self._levels(column)
        return enc.counts / enc.counts.sum()

    def _levels(self, column: str) -> _LevelColumn:
        enc = self._encoders.get(column)
        if not isinstance(enc, _LevelColumn):
            raise ConfigError(
                f"column {column!r} is not categorical in this model",
                hint=f"categorical columns: {', '.join(self.discrete_columns) or 'none'}",
            )
        return enc

    def to_json(self) -> dict:
        """The fitted state as JSON-ready data (``from_json`` rebuilds an identical transformer)."""
        schema_bytes = self.schema.serialize().to_pybytes()
        return {
            "format": FORMAT,
            "version": VERSION,
            "rows": self.rows,
            "schema": base64.b64encode(schema_bytes).decode("ascii"),
            "types": {f.name: str(f.type) for f in self.schema},  # for people reading the file
            "kinds": dict(self.kinds),
            "left_out": dict(self.left_out),
            "columns": {name: enc.to_json() for name, enc in self._encoders.items()},
        }

    @classmethod
    def from_json(cls, d: dict) -> TableTransformer:
        """The transformer ``to_json`` described."""
        if d.get("format") != FORMAT or d.get("version") != VERSION:
            raise GenloomError(
                f"not a genloom table transformer (version {VERSION}): format={d.get('format')!r}"
                f" version={d.get('version')!r}"
            )
        schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(d["schema"])))
        kinds: dict[str, ColumnKind] = dict(d["kinds"])
        encoders: dict[str, _ModeColumn | _LevelColumn | _IdColumn] = {}
        for name, kind in kinds.items():
            state = d["columns"][name]
            if kind == "id":
                encoders[name] = _IdColumn.from_json(state)
            elif kind in LEVEL_KINDS:
                encoders[name] = _LevelColumn.from_json(state, _plain_type(schema.field(name).type))
            else:
                encoders[name] = _ModeColumn.from_json(state)
        return cls(schema, kinds, dict(d["left_out"]), encoders, int(d["rows"]))

    def save(self, path: Path) -> None:
        """Write the fitted state to the JSON file ``path``."""
        Path(path).write_text(json.dumps(self.to_json(), ensure_ascii=False, indent=1))

    @classmethod
    def load(cls, path: Path) -> TableTransformer:
        """The transformer saved at ``path``."""
        return cls.from_json(json.loads(Path(path).read_text()))


@dataclass
class _ModeColumn:
    """A numeric, integer or datetime column: kept mixture modes, training range, missing rate."""

    kind: ColumnKind
    means: np.ndarray  # (K,)
    stds: np.ndarray  # (K,)
    weights: np.ndarray  # (K,), renormalised over the kept modes
    lo: float
    hi: float
    mean: float
    missing_rate: float
    time_format: str | None = None  # strings read as datetimes are written back in this format

    @property
    def has_missing(self) -> bool:
        return self.missing_rate > 0

    @property
    def width(self) -> int:
        return 1 + len(self.means) + (2 if self.has_missing else 0)

    @classmethod
    def fit(cls, col: pa.ChunkedArray, kind: ColumnKind, name: str, max_modes: int, seed: int) -> _ModeColumn:
        try:
            from sklearn.exceptions import ConvergenceWarning
            from sklearn.mixture import BayesianGaussianMixture
        except ImportError as e:
            raise MissingDependencyError("scikit-learn", "pip install 'genloom[tabular]'") from e

        x_all = _as_numbers(col, kind, name)
        x = x_all[np.isfinite(x_all)]
        if len(x) == 0:
            raise GenloomError(f"column {name!r} has no finite value to fit")
        rng = np.random.default_rng(seed)
        sample = rng.choice(x, MODE_FIT_ROWS, replace=False) if len(x) > MODE_FIT_ROWS else x
        distinct = len(np.unique(sample))
        if distinct < 2:
            means, stds, weights = np.array([float(sample[0])]), np.array([1.0]), np.array([1.0])
        else:
            bgm = BayesianGaussianMixture(
                n_components=min(max_modes, distinct),
                # in one dimension a diagonal covariance is the full one (same fit to 1e-10), and
                # sklearn's diagonal path skips a Cholesky per component: 30% less time
                covariance_type="diag",
                weight_concentration_prior_type="dirichlet_process",
                weight_concentration_prior=0.001,
                max_iter=100,
                n_init=1,
                random_state=seed,
            )
            with warnings.catch_warnings():
                # 100 EM steps rarely meet sklearn's tolerance on thousands of rows; the modes are
                # usable long before (CTGAN silences the same warning)
                warnings.simplefilter("ignore", ConvergenceWarning)
                bgm.fit(sample.reshape(-1, 1))
            all_means = bgm.means_.ravel().astype(np.float64)
            all_stds = np.sqrt(bgm.covariances_.ravel()).astype(np.float64)
            keep = _kept_modes(x, bgm.weights_, all_means, all_stds)
            means, stds = all_means[keep], all_stds[keep]
            weights = np.maximum(bgm.weights_[keep], 1e-12)
            weights /= weights.sum()
        time_format = None
        if kind == "datetime" and _plain_type(col.type) in (pa.string(), pa.large_string()):
            midnight = np.all(np.mod(x, _DAY) == 0)
            time_format = "%Y-%m-%d" if midnight else "%Y-%m-%d %H:%M:%S"
        return cls(
            kind=kind,
            means=means,
            stds=stds,
            weights=weights,
            lo=float(x.min()),
            hi=float(x.max()),
            mean=float(x.mean()),
            missing_rate=float(1 - len(x) / len(x_all)),
            time_format=time_format,
        )

    def spans(self, name: str, start: int) -> list[Span]:
        k = len(self.means)
        out = [Span(name, start, 1, "tanh", "value"), Span(name, start + 1, k, "softmax", "mode")]
        if self.has_missing:
            out.append(Span(name, start + 1 + k, 2, "softmax", "missing"))
        return out

    def posterior(self, x: np.ndarray) -> np.ndarray:
        """p(mode | x) over the kept modes that can represent x (within 4 sigma), (n,) -> (n, K)."""
        z = (x[:, None] - self.means) / self.stds
        logp = np.log(self.weights) - np.log(self.stds) - 0.5 * z * z
        # a mode whose value span would clip x is no choice, unless no mode can hold it
        fits = np.abs(z) <= 4 * VALUE_CLIP
        logp = np.where(fits | ~fits.any(axis=1, keepdims=True), logp, -np.inf)
        logp -= logp.max(axis=1, keepdims=True)
        p = np.exp(logp)
        return p / p.sum(axis=1, keepdims=True)

    def encode(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(n,) numbers, NaN for missing -> (n, width) value, mode one-hot, missing one-hot."""
        n, k = len(x), len(self.means)
        missing = ~np.isfinite(x)
        x = np.where(missing, self.mean, x)
        p = self.posterior(x)
        u = rng.random(n)
        mode = np.minimum((p.cumsum(axis=1) < u[:, None]).sum(axis=1), k - 1)
        # a missing row takes the mean's most likely mode: a fixed code the model learns to ignore
        mode[missing] = int(self.posterior(np.array([self.mean]))[0].argmax())
        value = np.clip((x - self.means[mode]) / (4 * self.stds[mode]), -VALUE_CLIP, VALUE_CLIP)
        block = np.zeros((n, self.width), dtype=np.float32)
        block[:, 0] = value
        block[np.arange(n), 1 + mode] = 1.0
        if self.has_missing:
            block[:, 1 + k] = ~missing
            block[:, 2 + k] = missing
        return block

    def decode(self, block: np.ndarray) -> np.ndarray:
        """(n, width) -> (n,) numbers in the training range, NaN where the missing span says so."""
        k = len(self.means)
        value = np.clip(block[:, 0].astype(np.float64), -1.0, 1.0)
        mode = block[:, 1 : 1 + k].argmax(axis=1)
        x = np.clip(value * 4 * self.stds[mode] + self.means[mode], self.lo, self.hi)
        if self.has_missing:
            x[block[:, 2 + k] > block[:, 1 + k]] = np.nan
        return x

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "means": self.means.tolist(),
            "stds": self.stds.tolist(),
            "weights": self.weights.tolist(),
            "lo": self.lo,
            "hi": self.hi,
            "mean": self.mean,
            "missing_rate": self.missing_rate,
            "time_format": self.time_format,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> _ModeColumn:
        return cls(
            kind=d["kind"],
            means=np.asarray(d["means"], dtype=np.float64),
            stds=np.asarray(d["stds"], dtype=np.float64),
            weights=np.asarray(d["weights"], dtype=np.float64),
            lo=float(d["lo"]),
            hi=float(d["hi"]),
            mean=float(d["mean"]),
            missing_rate=float(d["missing_rate"]),
            time_format=d.get("time_format"),
        )


@dataclass
class _LevelColumn:
    """A categorical or boolean column: the kept levels by frequency, then "(other)" if any are grouped."""

    kept: pa.Array  # typed levels in span order (a null level stands for missing values)
    counts: np.ndarray  # training rows per span entry, "(other)" last
    grouped: pa.Array | None  # the values behind "(other)"
    grouped_counts: np.ndarray

    @property
    def width(self) -> int:
        return len(self.counts)

    @property
    def other(self) -> int | None:
        """The span index of "(other)", if some levels are grouped."""
        return len(self.kept) if self.grouped is not None else None

    @classmethod
    def fit(cls, col: pa.ChunkedArray, max_categories: int, min_fraction: float) -> _LevelColumn:
        values, counts = _level_counts(col)
        n = counts.sum()
        keep = max(1, min(max_categories, int((counts >= min_fraction * n).sum())))
        if len(counts) - keep <= 1:  # grouping a single level into "(other)" would only rename it
            return cls(values, counts, None, np.zeros(0, dtype=np.int64))
        grouped_counts = counts[keep:]
        return cls(
            values.slice(0, keep),
            np.append(counts[:keep], grouped_counts.sum()),
            values.slice(keep),
            grouped_counts,
        )

    def spans(self, name: str, start: int) -> list[Span]:
        return [Span(name, start, self.width, "softmax", "category")]

    def encode(self, col: pa.ChunkedArray, name: str) -> np.ndarray:
        """Each value's span index; values unseen in training go to "(other)", else the commonest level."""
        col = _cast_like(col, self.kept.type, name)
        index = pc.fill_null(pc.index_in(col, value_set=self.kept, skip_nulls=False), -1)
        index = np.asarray(index.to_numpy(zero_copy_only=False), dtype=np.int64)
        index[index < 0] = self.other if self.other is not None else 0
        return index

    def decode(self, index: np.ndarray, rng: np.random.Generator, typ: pa.DataType) -> pa.Array:
        """Span indices -> values of type ``typ``; "(other)" draws a grouped value by training frequency."""
        take = index.astype(np.int64)
        if self.grouped is not None:
            table = pa.concat_arrays([self.kept, self.grouped])
            rest = take == self.other
            p = self.grouped_counts / self.grouped_counts.sum()
            take[rest] = len(self.kept) + rng.choice(len(p), size=int(rest.sum()), p=p)
        else:
            table = self.kept
        out = table.take(pa.array(take))
        return out if out.type == typ else out.cast(typ)

    def index_of(self, value: object) -> int | None:
        """The span index of ``value`` (compared as is, then as text), None when unknown."""
        pools: list[tuple[list[Any], int | None]] = [(self.kept.to_pylist(), None)]
        if self.grouped is not None:
            pools.append((self.grouped.to_pylist(), self.other))
        for same in (_same_value, _same_text):
            for pool, fixed in pools:
                for i, level in enumerate(pool):
                    if same(level, value):
                        return i if fixed is None else fixed
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "levels": _json_values(self.kept),
            "counts": self.counts.tolist(),
            "grouped": None if self.grouped is None else _json_values(self.grouped),
            "grouped_counts": self.grouped_counts.tolist(),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any], typ: pa.DataType) -> _LevelColumn:
        return cls(
            _values_from_json(d["levels"], typ),
            np.asarray(d["counts"], dtype=np.int64),
            None if d["grouped"] is None else _values_from_json(d["grouped"], typ),
            np.asarray(d["grouped_counts"], dtype=np.int64),
        )


@dataclass
class _IdColumn:
    """A key column: generated unique by row number, never learned."""

    offset: int  # integer keys start above the largest training key, so none repeats a real one

    @classmethod
    def fit(cls, col: pa.ChunkedArray) -> _IdColumn:
        if pa.types.is_integer(col.type) and len(col) > col.null_count:
            return cls(int(pc.max(col).as_py()) + 1)
        return cls(0)

    def decode(self, n: int, first_row: int, typ: pa.DataType) -> pa.Array:
        rows = np.arange(first_row, first_row + n, dtype=np.int64)
        if pa.types.is_string(typ) or pa.types.is_large_string(typ):
            return pc.binary_join_element_wise("syn-", pc.cast(pa.array(rows), pa.string()), "").cast(typ)
        keys = rows + self.offset if pa.types.is_integer(typ) else rows
        return pa.array(keys).cast(typ)

    def to_json(self) -> dict[str, Any]:
        return {"offset": self.offset}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> _IdColumn:
        return cls(int(d["offset"]))


def _kept_modes(x: np.ndarray, weights: np.ndarray, means: np.ndarray, stds: np.ndarray) -> np.ndarray:
    """The mixture components kept: those over ``MODE_MIN_WEIGHT``, then lighter ones that alone
    can represent (within 4 sigma) at least ``MODE_MIN_COVER`` of the values no kept mode can.

    CTGAN drops every light mode, and the values only it covered are clipped on decoding (on
    Adult: capital-gain's 99999 spike, 0.5% of the rows).
    """
    keep = weights > MODE_MIN_WEIGHT
    if not keep.any():
        keep = weights == weights.max()
    within = np.abs(x[:, None] - means) / stds <= 4 * VALUE_CLIP  # (n, K)
    covered = within[:, keep].any(axis=1)
    need = max(1, math.ceil(MODE_MIN_COVER * len(x)))
    for k in np.argsort(-weights, kind="stable"):
        if (~covered).sum() < need:
            break
        gain = within[:, k] & ~covered
        if not keep[k] and gain.sum() >= need:
            keep[k] = True
            covered |= gain
    return keep


def _column_seed(seed: int, name: str) -> int:
    """A seed per column from (seed, name): adding or reordering columns leaves the others' fit alone."""
    return int(np.random.SeedSequence([seed, zlib.crc32(name.encode())]).generate_state(1)[0])


def _column_specs(cfg: TabularConfig, names: list[str]) -> dict[str, ColumnSpec]:
    """``cfg.columns`` keyed by the table's column names; a ConfigError for a name not in the table."""
    return {_resolve_name(n, names, f"columns.{n}"): spec for n, spec in cfg.columns.items()}


def _resolve_name(name: str, names: list[str], where: str) -> str:
    """The table column ``name`` refers to (``col_<name>`` when the source renamed one of genloom's)."""
    if name in RECORD_COLUMNS and f"col_{name}" in names:
        return f"col_{name}"
    if name in names and name not in RECORD_COLUMNS:
        return name
    data = [n for n in names if n not in RECORD_COLUMNS]
    raise ConfigError(
        f"no column {name!r} in the table", path=f"train.model.{where}", hint=f"columns: {', '.join(data)}"
    )


def _kind_of_type(typ: pa.DataType) -> ColumnKind | None:
    """The kind an Arrow type is modelled as by default, None when it cannot be."""
    if pa.types.is_dictionary(typ):
        typ = typ.value_type
    if pa.types.is_boolean(typ):
        return "boolean"
    if pa.types.is_integer(typ):
        return "integer"
    if pa.types.is_floating(typ) or pa.types.is_decimal(typ):
        return "numeric"
    if pa.types.is_timestamp(typ) or pa.types.is_date(typ):
        return "datetime"
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        return "categorical"
    return None


def _distinct(col: pa.ChunkedArray) -> int:
    return int(pc.count_distinct(_plain(col)).as_py())


def _is_text(col: pa.ChunkedArray) -> bool:
    distinct = _distinct(col)
    return distinct > TEXT_SHARE * len(col) and distinct > TEXT_MIN_DISTINCT


def _plain_type(typ: pa.DataType) -> pa.DataType:
    return typ.value_type if pa.types.is_dictionary(typ) else typ


def _plain(col: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """A dictionary-encoded column as its plain values (levels are compared by value)."""
    return col.cast(col.type.value_type) if pa.types.is_dictionary(col.type) else col


def _cast_like(col: pa.ChunkedArray, typ: pa.DataType, name: str) -> pa.ChunkedArray:
    col = _plain(col)
    if col.type == typ:
        return col
    try:
        return col.cast(typ)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise GenloomError(
            f"column {name!r}: cannot read {col.type} values as the training type {typ}: {e}"
        ) from e


def _level_counts(col: pa.ChunkedArray | pa.Array) -> tuple[pa.Array, np.ndarray]:
    """Distinct values (null included) by descending count, ties in order of first appearance."""
    vc = pc.value_counts(col)
    values, counts = vc.field("values"), np.asarray(vc.field("counts").to_numpy(), dtype=np.int64)
    order = np.argsort(-counts, kind="stable")
    return values.take(pa.array(order)), counts[order]


def _as_numbers(col: pa.ChunkedArray, kind: ColumnKind, name: str) -> np.ndarray:
    """A column as float64 (datetimes: seconds since the epoch); NaN where missing."""
    col = _plain(col)
    typ = col.type
    try:
        if pa.types.is_timestamp(typ):
            ticks = col.cast(pa.int64())
            return _float_numpy(ticks) / _PER_SECOND[typ.unit]
        if pa.types.is_date32(typ):
            return _float_numpy(col.cast(pa.int32())) * _DAY
        if pa.types.is_date64(typ):
            return _float_numpy(col.cast(pa.int64())) / 1e3
        if kind == "datetime" and (pa.types.is_string(typ) or pa.types.is_large_string(typ)):
            return _as_numbers(parse_times(col), kind, name)
        return _float_numpy(col.cast(pa.float64()))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise ConfigError(
            f"column {name!r} ({typ}) cannot be read as {kind}: {e}",
            path=f"train.model.columns.{name}.type",
            hint="set another type for it, or exclude it",
        ) from e


def parse_times(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """ISO-8601 strings as timestamps (those with a zone offset as UTC)."""
    try:
        return col.cast(pa.timestamp("us"))
    except pa.ArrowInvalid:
        return col.cast(pa.timestamp("us", tz="UTC"))


def _float_numpy(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    col = col.cast(pa.float64())
    return np.asarray(pc.fill_null(col, math.nan).to_numpy(), dtype=np.float64)


def _from_numbers(x: np.ndarray, typ: pa.DataType, enc: _ModeColumn) -> pa.Array:
    """Decoded float64 numbers (NaN: missing) as an Arrow array of the training type."""
    missing = ~np.isfinite(x)
    mask = missing if missing.any() else None
    plain = _plain_type(typ)
    x = np.where(missing, 0.0, x)
    if pa.types.is_timestamp(plain):
        ticks = np.round(x * _PER_SECOND[plain.unit]).astype(np.int64)
        out = pa.array(ticks, pa.int64(), mask=mask).cast(plain)
    elif pa.types.is_date32(plain):
        out = pa.array(np.round(x / _DAY).astype(np.int32), pa.int32(), mask=mask).cast(plain)
    elif pa.types.is_date64(plain):
        ms = (np.round(x / _DAY) * _DAY * 1e3).astype(np.int64)
        out = pa.array(ms, pa.int64(), mask=mask).cast(plain)
    elif enc.time_format is not None:
        seconds = pa.array(np.round(x).astype(np.int64), pa.int64(), mask=mask).cast(pa.timestamp("s"))
        out = pc.strftime(seconds, format=enc.time_format).cast(plain)
    elif pa.types.is_integer(plain) or enc.kind == "integer":
        out = pa.array(np.round(x).astype(np.int64), pa.int64(), mask=mask).cast(plain)
    elif pa.types.is_decimal(plain):
        out = pa.array(np.round(x, plain.scale), pa.float64(), mask=mask).cast(plain, safe=False)
    elif pa.types.is_boolean(plain):
        out = pa.array(x >= 0.5, pa.bool_(), mask=mask)
    else:
        out = pa.array(x, pa.float64(), mask=mask).cast(plain)
    return out if out.type == typ else out.cast(typ)


def _json_values(values: pa.Array) -> list[Any]:
    """Levels as JSON values: strings and numbers as they are, other types as their text."""
    if pa.types.is_boolean(values.type) or any(test(values.type) for test in _JSON_NATIVE):
        return values.to_pylist()
    return values.cast(pa.string()).to_pylist()


def _values_from_json(values: list[Any], typ: pa.DataType) -> pa.Array:
    if pa.types.is_boolean(typ) or any(test(typ) for test in _JSON_NATIVE):
        return pa.array(values, typ)
    return pa.array(values, pa.string()).cast(typ)


def _same_value(level: object, value: object) -> bool:
    if level is None or value is None:
        return level is None and value is None
    if isinstance(level, bool) or isinstance(value, bool):
        return type(level) is type(value) and level == value
    return level == value


def _same_text(level: object, value: object) -> bool:
    if level is None or value is None:
        return False
    if isinstance(level, bool):
        return str(value).strip().lower() in (("true", "1", "yes") if level else ("false", "0", "no"))
    return str(level) == str(value).strip()
