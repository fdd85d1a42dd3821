"""Fidelity, utility and privacy figures of a synthetic table against the real one.

**Fidelity** follows SDMetrics' single-table ``QualityReport`` (MIT-licensed SDMetrics 0.32 was
read and is re-implemented here with numpy; it is not a dependency, a test compares the numbers):

- *column shapes*: per column, ``KSComplement`` (1 - the two-sample Kolmogorov-Smirnov statistic)
  for numeric, integer and datetime columns, ``TVComplement`` (1 - total variation distance of the
  level frequencies) for categorical and boolean columns; missing values are dropped first.
  The property is the mean over columns.
- *column pair trends*: per pair of columns, ``CorrelationSimilarity`` (1 - |r_real - r_synth| / 2,
  Pearson r on the rows where both are present) when both are continuous, else
  ``ContingencySimilarity`` (1 - total variation distance of the joint frequencies; a missing value
  is a level of its own). For a continuous column paired with a discrete one, the continuous column
  is cut into the 10 equal-width bins of ``numpy.histogram_bin_edges`` - computed, as SDMetrics does,
  on each table separately (the real table on its own range, the synthetic table on its own).
  As in SDMetrics 0.32's QualityReport, only pairs related in the real data count: a numeric pair
  with |r_real| > ``real_correlation_threshold`` (0.5), a contingency pair with Cramér's V of the
  real table > ``real_association_threshold`` (0.3); pass 0 and 0 to average every pair, as older
  SDMetrics releases did. Pairs whose score is undefined (a constant column) are left out.
  SDMetrics samples 50,000 rows of larger tables for the contingency pairs; this uses every row.
- *quality*: the mean of the two properties (NaN ones left out).

**Utility** (``tstr``): train on one table, test on real rows - a
``HistGradientBoostingClassifier`` (categorical features native, missing values native, fixed
``random_state``) predicting a categorical target; accuracy and F1 (the binary F1 of the minority
level of the real test target when it has two levels, else the macro F1 over its levels).

**Privacy**, on float matrices of rows in one space (the transformer's encoding, or
``normalised_matrix`` here): ``dcr`` (distance to the closest training row of each synthetic row,
against the same figure for real holdout rows) and ``membership_inference_auc`` (a distance
attack: real rows closer to the synthetic set are guessed to be training members; 0.5 is ideal).

Kinds (``kinds: column -> kind``) are the transformer's: "numeric", "integer", "datetime"
(continuous), "categorical", "boolean" (discrete); "id" columns are skipped.
"""

from __future__ import annotations

import itertools
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from genloom.core.errors import ConfigError
from genloom.models.tabular_rules import nearest_distances

if TYPE_CHECKING:
    import pandas as pd

    TableLike = pa.Table | pd.DataFrame
else:
    TableLike = pa.Table

CONTINUOUS_KINDS = frozenset({"numeric", "integer", "datetime"})
DISCRETE_KINDS = frozenset({"categorical", "boolean"})
SKIPPED_KINDS = frozenset({"id"})

# SDMetrics rounds values to this many decimals before the KS test (sys.float_info.dig - 1).
_KS_DECIMALS = sys.float_info.dig - 1
_PAIR_BINS = 10
# HistGradientBoostingClassifier accepts at most max_bins (255) levels per categorical feature;
# one code is kept free so rarer levels fall back to "missing".
_MAX_TREE_LEVELS = 254


@dataclass(frozen=True)
class PairScore:
    """One column pair of the column-pair-trends property."""

    column_1: str
    column_2: str
    metric: Literal["CorrelationSimilarity", "ContingencySimilarity"]
    score: float  # NaN when undefined or below the real-data threshold
    real: float  # the real table's Pearson r or Cramér's V (NaN when not computed)
    counts: bool  # whether the pair enters the average


# ----------------------------------------------------------------------------------------------
# fidelity


def column_shape_scores(real: TableLike, synth: TableLike, kinds: Mapping[str, str]) -> dict[str, float]:
    """Per column: KSComplement (continuous) or TVComplement (discrete); NaN when a side is empty."""
    real, synth = _as_table(real), _as_table(synth)
    scores: dict[str, float] = {}
    for name in _modelled(kinds):
        if kinds[name] in CONTINUOUS_KINDS:
            a, b = _continuous(real.column(name)), _continuous(synth.column(name))
            scores[name] = _ks_complement(a[~np.isnan(a)], b[~np.isnan(b)])
        else:
            codes_real, codes_synth, levels = _joint_codes(real.column(name), synth.column(name))
            scores[name] = _tv_complement(codes_real[codes_real >= 0], codes_synth[codes_synth >= 0], levels)
    return scores


def column_shapes(real: TableLike, synth: TableLike, kinds: Mapping[str, str]) -> float:
    """SDMetrics' Column Shapes property: the mean of ``column_shape_scores`` (NaN ones left out)."""
    return _nanmean(list(column_shape_scores(real, synth, kinds).values()))


def column_pair_scores(
    real: TableLike,
    synth: TableLike,
    kinds: Mapping[str, str],
    real_correlation_threshold: float = 0.5,
    real_association_threshold: float = 0.3,
) -> list[PairScore]:
    """Every pair of modelled columns, scored as SDMetrics' Column Pair Trends property does."""
    real, synth = _as_table(real), _as_table(synth)
    names = _modelled(kinds)
    columns = {name: _PairColumn.of(real.column(name), synth.column(name), kinds[name]) for name in names}
    pairs: list[PairScore] = []
    for first, second in itertools.combinations(names, 2):
        a, b = columns[first], columns[second]
        if a.continuous and b.continuous:
            pairs.append(_correlation_pair(first, second, a, b, real_correlation_threshold))
        else:
            pairs.append(_contingency_pair(first, second, a, b, real_association_threshold))
    return pairs


def column_pair_trends(
    real: TableLike,
    synth: TableLike,
    kinds: Mapping[str, str],
    real_correlation_threshold: float = 0.5,
    real_association_threshold: float = 0.3,
) -> float:
    """SDMetrics' Column Pair Trends property: the mean score of the pairs that count (NaN if none)."""
    pairs = column_pair_scores(real, synth, kinds, real_correlation_threshold, real_association_threshold)
    return _nanmean([pair.score for pair in pairs if pair.counts])


def quality(
    real: TableLike,
    synth: TableLike,
    kinds: Mapping[str, str],
    real_correlation_threshold: float = 0.5,
    real_association_threshold: float = 0.3,
) -> dict[str, float]:
    """SDMetrics' QualityReport score: ``column_shapes``, ``column_pair_trends`` and their mean ``quality``."""
    real, synth = _as_table(real), _as_table(synth)
    shapes = column_shapes(real, synth, kinds)
    trends = column_pair_trends(real, synth, kinds, real_correlation_threshold, real_association_threshold)
    return {"column_shapes": shapes, "column_pair_trends": trends, "quality": _nanmean([shapes, trends])}


def _ks_complement(a: np.ndarray, b: np.ndarray) -> float:
    """1 - max |F_a(x) - F_b(x)| over every observed x (the two-sample KS statistic, as scipy's)."""
    if len(a) == 0 or len(b) == 0:
        return math.nan
    a, b = np.sort(np.round(a, _KS_DECIMALS)), np.sort(np.round(b, _KS_DECIMALS))
    points = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, points, side="right") / len(a)
    cdf_b = np.searchsorted(b, points, side="right") / len(b)
    return float(1.0 - np.max(np.abs(cdf_a - cdf_b)))


def _tv_complement(codes_real: np.ndarray, codes_synth: np.ndarray, levels: int) -> float:
    if len(codes_real) == 0 or len(codes_synth) == 0:
        return math.nan
    p = np.bincount(codes_real, minlength=levels) / len(codes_real)
    q = np.bincount(codes_synth, minlength=levels) / len(codes_synth)
    return float(1.0 - 0.5 * np.abs(p - q).sum())


@dataclass(frozen=True)
class _PairColumn:
    """One column prepared once for all its pairs: values (continuous), codes (discrete or binned)."""

    continuous: bool
    real_values: np.ndarray  # float64, NaN = missing (continuous only)
    synth_values: np.ndarray
    real_codes: np.ndarray  # int64 in [0, levels): levels or bins, missing as a level of its own
    synth_codes: np.ndarray
    levels: int
    real_constant: bool
    synth_constant: bool

    @classmethod
    def of(cls, real: pa.ChunkedArray, synth: pa.ChunkedArray, kind: str) -> _PairColumn:
        if kind in CONTINUOUS_KINDS:
            a, b = _continuous(real), _continuous(synth)
            # SDMetrics bins each table on its own range; np.digitize puts the maximum and NaN in
            # the last code (bins + 1), so the codes run 1..bins+1.
            real_codes = np.digitize(a, np.histogram_bin_edges(a[~np.isnan(a)], bins=_PAIR_BINS))
            synth_codes = np.digitize(b, np.histogram_bin_edges(b[~np.isnan(b)], bins=_PAIR_BINS))
            return cls(True, a, b, real_codes, synth_codes, _PAIR_BINS + 2, _constant(a), _constant(b))
        codes_real, codes_synth, levels = _joint_codes(real, synth)
        # the missing value becomes one more level (SDMetrics groups with dropna=False)
        codes_real = np.where(codes_real < 0, levels, codes_real)
        codes_synth = np.where(codes_synth < 0, levels, codes_synth)
        empty = np.zeros(0)
        return cls(False, empty, empty, codes_real, codes_synth, levels + 1, False, False)


def _correlation_pair(first: str, second: str, a: _PairColumn, b: _PairColumn, threshold: float) -> PairScore:
    if a.real_constant or a.synth_constant or b.real_constant or b.synth_constant:
        return PairScore(first, second, "CorrelationSimilarity", math.nan, math.nan, False)
    r_real = _pearson(a.real_values, b.real_values)
    counts = threshold <= 0 or (not math.isnan(r_real) and abs(r_real) > threshold)
    if not math.isnan(r_real) and abs(r_real) <= threshold:
        return PairScore(first, second, "CorrelationSimilarity", math.nan, r_real, counts)
    r_synth = _pearson(a.synth_values, b.synth_values)
    score = math.nan if math.isnan(r_real) or math.isnan(r_synth) else 1.0 - abs(r_real - r_synth) / 2.0
    return PairScore(first, second, "CorrelationSimilarity", score, r_real, counts)


def _contingency_pair(first: str, second: str, a: _PairColumn, b: _PairColumn, threshold: float) -> PairScore:
    cells = a.levels * b.levels
    real_counts = np.bincount(a.real_codes * b.levels + b.real_codes, minlength=cells)
    association = math.nan
    if threshold > 0:
        association = _cramers_v(real_counts.reshape(a.levels, b.levels))
        if math.isnan(association) or association <= threshold:
            return PairScore(first, second, "ContingencySimilarity", math.nan, association, False)
    synth_counts = np.bincount(a.synth_codes * b.levels + b.synth_codes, minlength=cells)
    p = real_counts / max(len(a.real_codes), 1)
    q = synth_counts / max(len(a.synth_codes), 1)
    score = float(1.0 - 0.5 * np.abs(p - q).sum())
    return PairScore(first, second, "ContingencySimilarity", score, association, True)


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    both = ~(np.isnan(x) | np.isnan(y))
    x, y = x[both], y[both]
    if len(x) < 2:
        return math.nan
    dx, dy = x - x.mean(), y - y.mean()
    # elementwise sums, not BLAS dot products: BLAS threads stall on a busy machine (10x slower here)
    denominator = math.sqrt(float(np.sum(dx * dx)) * float(np.sum(dy * dy)))
    if denominator == 0:
        return math.nan
    return max(-1.0, min(1.0, float(np.sum(dx * dy)) / denominator))


def _cramers_v(table: np.ndarray) -> float:
    """Cramér's V of a contingency table (no continuity correction, as scipy's ``association``)."""
    table = table[table.sum(axis=1) > 0][:, table.sum(axis=0) > 0].astype(np.float64)
    total = table.sum()
    if total == 0 or min(table.shape) < 2:
        return math.nan
    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / total
    chi2 = float(((table - expected) ** 2 / expected).sum())
    return math.sqrt(chi2 / total / (min(table.shape) - 1))


# ----------------------------------------------------------------------------------------------
# utility


def tstr(
    train: TableLike, test: TableLike, target: str, kinds: Mapping[str, str], seed: int = 0
) -> dict[str, float]:
    """Train a gradient-boosted classifier on ``train`` (synthetic, or real for the baseline), test on real ``test``.

    Features are the other modelled columns (categorical levels as known in ``train``; unseen
    levels and missing values go to the trees' missing branch). Rows without a target are left
    out. ``f1`` is the binary F1 of the rarer level of ``test``'s target when it has two levels,
    else the macro F1 over ``test``'s levels. A ``train`` target with one level predicts it always.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import accuracy_score, f1_score

    train, test = _as_table(train), _as_table(test)
    if target not in kinds:
        raise ConfigError(
            f"target '{target}' is not a modelled column; columns: {', '.join(_modelled(kinds))}"
        )
    if kinds[target] not in DISCRETE_KINDS:
        raise ConfigError(
            f"target '{target}' is {kinds[target]}; the utility score needs a categorical or boolean target",
            hint="set train.model.target to a categorical column",
        )
    (y_train, train_rows), (y_test, test_rows) = _labels(train.column(target)), _labels(test.column(target))
    y_train, y_test = y_train[train_rows], y_test[test_rows]
    if len(y_train) == 0 or len(y_test) == 0:
        return {"accuracy": math.nan, "f1": math.nan}
    features = [name for name in _modelled(kinds) if name != target]
    x_train, x_test, categorical = _feature_matrices(train, test, features, kinds)
    classes = np.unique(y_train)
    if len(classes) == 1 or not features:
        majority = classes[np.argmax([np.count_nonzero(y_train == c) for c in classes])]
        predicted = np.full(len(y_test), majority, dtype=object)
    else:
        model = HistGradientBoostingClassifier(categorical_features=categorical, random_state=seed)
        model.fit(x_train[train_rows], y_train)
        predicted = model.predict(x_test[test_rows])
    levels, counts = np.unique(y_test, return_counts=True)
    if len(levels) == 2:
        f1 = f1_score(y_test, predicted, labels=[levels[np.argmin(counts)]], average="macro", zero_division=0)
    else:
        f1 = f1_score(y_test, predicted, labels=list(levels), average="macro", zero_division=0)
    return {"accuracy": float(accuracy_score(y_test, predicted)), "f1": float(f1)}


def _labels(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """The target as text (so that real and synthetic labels compare) and which rows have one."""
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    present = np.asarray(pc.is_valid(column).to_numpy(zero_copy_only=False), dtype=bool)
    text = column.cast(pa.string()).fill_null("").to_numpy(zero_copy_only=False).astype(str)
    return text, present


def _feature_matrices(
    train: pa.Table, test: pa.Table, features: list[str], kinds: Mapping[str, str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float64 feature matrices (NaN = missing) and the mask of categorical features."""
    x_train = np.empty((train.num_rows, len(features)))
    x_test = np.empty((test.num_rows, len(features)))
    categorical = np.zeros(len(features), dtype=bool)
    for j, name in enumerate(features):
        if kinds[name] in CONTINUOUS_KINDS:
            x_train[:, j], x_test[:, j] = _continuous(train.column(name)), _continuous(test.column(name))
            continue
        categorical[j] = True
        codes_train, codes_test, _ = _joint_codes(train.column(name), test.column(name))
        # levels ordered by training frequency; those beyond the trees' limit and those never seen
        # in training become missing
        levels = max(codes_train.max(initial=-1), codes_test.max(initial=-1)) + 1
        counts = np.bincount(codes_train[codes_train >= 0], minlength=levels)
        order = np.argsort(-counts, kind="stable")
        kept = order[: min(_MAX_TREE_LEVELS, int(np.count_nonzero(counts)))]
        remap = np.full(len(counts) + 1, np.nan)
        remap[kept] = np.arange(len(kept))
        x_train[:, j] = remap[np.where(codes_train >= 0, codes_train, len(counts))]
        x_test[:, j] = remap[np.where(codes_test >= 0, codes_test, len(counts))]
    return x_train, x_test, categorical


# ----------------------------------------------------------------------------------------------
# privacy


def normalised_matrix(table: TableLike, kinds: Mapping[str, str], reference: TableLike) -> np.ndarray:
    """Rows as float32 vectors where each column's largest difference weighs the same, fitted on ``reference``.

    Continuous columns are min-max scaled by the reference's range and clipped to [0, 1] (a
    constant reference column: 0 at its value, 1 elsewhere), plus a 0/1 missing indicator
    (missing values sit at 0.5); discrete columns are one-hot over the reference's levels (missing
    is a level when the reference has it) plus one "other" slot, divided by sqrt(2) so two
    different levels are 1 apart. Everything is divided by sqrt(number of columns), so the
    Euclidean distance is the root mean square of the per-column differences (0 to about 1.1).
    SDMetrics' DCR uses the same per-column scale (range-normalised numbers capped at 1, 0/1 for
    levels, missing vs present 1) but averages absolute differences (an L1 / Gower distance).
    """
    table, reference = _as_table(table), _as_table(reference)
    names = _modelled(kinds)
    # per column: (scaled values in [0, 1] or NaN where missing) or (one-hot slot, width); the
    # matrix is then filled in place in float32 (float64 blocks stacked and scaled held three
    # copies of it at once: on Adult's 32,561 rows about 86 MB, the evaluation's peak)
    columns: list[tuple[np.ndarray, int]] = []
    for name in names:
        if kinds[name] in CONTINUOUS_KINDS:
            ref = _continuous(reference.column(name))
            values = _continuous(table.column(name))
            low, high = (
                (float(np.nanmin(ref)), float(np.nanmax(ref))) if np.any(~np.isnan(ref)) else (0.0, 1.0)
            )
            if high > low:
                scaled = np.clip((values - low) / (high - low), 0.0, 1.0)
            else:
                scaled = np.where(np.isnan(values), np.nan, (values != low).astype(np.float64))
            columns.append((scaled, 0))
            continue
        codes_ref, codes_table, levels = _joint_codes(reference.column(name), table.column(name))
        in_reference = np.zeros(levels + 1, dtype=bool)  # the last slot is the missing value
        in_reference[np.where(codes_ref >= 0, codes_ref, levels)] = True
        slot = np.full(levels + 1, -1)
        slot[in_reference] = np.arange(int(in_reference.sum()))
        width = int(in_reference.sum()) + 1  # + the "other" slot
        positions = slot[np.where(codes_table >= 0, codes_table, levels)]
        columns.append((np.where(positions >= 0, positions, width - 1), width))
    if not columns:
        return np.zeros((table.num_rows, 0), dtype=np.float32)
    scale = 1.0 / math.sqrt(len(names))
    out = np.zeros((table.num_rows, sum(width or 2 for _, width in columns)), dtype=np.float32)
    rows, at = np.arange(table.num_rows), 0
    for data, width in columns:
        if width == 0:  # a continuous column: its value (missing at 0.5) and a missing indicator
            present = ~np.isnan(data)
            out[:, at] = np.where(present, data, 0.5) * scale
            out[:, at + 1] = (~present) * scale
            at += 2
        else:
            out[rows, at + data] = scale / math.sqrt(2.0)
            at += width
    return out


def dcr(
    synth: np.ndarray, train: np.ndarray, holdout: np.ndarray, max_rows: int | None = None, seed: int = 0
) -> dict[str, float]:
    """Distance to the closest training row: synthetic rows against real holdout rows.

    ``dcr_synthetic_median`` / ``dcr_holdout_median``: the median distance of a synthetic / holdout
    row to its closest training row (synthetic well below holdout: rows copied or memorised);
    ``dcr_holdout_p1``: the holdout's 1st percentile; ``dcr_close_share``: the share of synthetic
    rows closer than that (about 0.01 for a model that does not memorise). ``max_rows`` bounds the
    synthetic and holdout rows measured (a seeded sample; every training row is always searched):
    the cost is rows x training rows x width.
    """
    synth, holdout = _sample_rows(synth, max_rows, seed), _sample_rows(holdout, max_rows, seed + 1)
    to_train = nearest_distances(synth, train)
    holdout_to_train = nearest_distances(holdout, train)
    p1 = float(np.percentile(holdout_to_train, 1))
    return {
        "dcr_synthetic_median": float(np.median(to_train)),
        "dcr_holdout_median": float(np.median(holdout_to_train)),
        "dcr_holdout_p1": p1,
        "dcr_close_share": float(np.mean(to_train < p1)),
    }


def membership_inference_auc(
    synth: np.ndarray, train: np.ndarray, holdout: np.ndarray, max_rows: int | None = None, seed: int = 0
) -> float:
    """ROC AUC of a distance attack telling training rows from holdout rows; 0.5 is ideal.

    The attacker scores each real row by minus its distance to the closest synthetic row
    (members - the training rows - should be closer if the model memorised them). ``max_rows``
    bounds the training and holdout rows scored (a seeded sample).
    """
    members, non_members = _sample_rows(train, max_rows, seed), _sample_rows(holdout, max_rows, seed + 1)
    return distance_attack_auc(nearest_distances(members, synth), nearest_distances(non_members, synth))


def distance_attack_auc(member_distances: np.ndarray, non_member_distances: np.ndarray) -> float:
    """ROC AUC of the score ``-distance`` separating members (label 1) from non-members (label 0)."""
    from sklearn.metrics import roc_auc_score

    if len(member_distances) == 0 or len(non_member_distances) == 0:
        return math.nan
    labels = np.concatenate([np.ones(len(member_distances)), np.zeros(len(non_member_distances))])
    scores = -np.concatenate([member_distances, non_member_distances])
    return float(roc_auc_score(labels, scores))


# ----------------------------------------------------------------------------------------------
# columns


def _sample_rows(rows: np.ndarray, max_rows: int | None, seed: int) -> np.ndarray:
    if max_rows is None or len(rows) <= max_rows:
        return rows
    return rows[np.sort(np.random.default_rng(seed).choice(len(rows), max_rows, replace=False))]


def _as_table(table: TableLike) -> pa.Table:
    if isinstance(table, pa.Table):
        return table
    return pa.Table.from_pandas(table, preserve_index=False)


def _modelled(kinds: Mapping[str, str]) -> list[str]:
    names = []
    for name, kind in kinds.items():
        if kind in SKIPPED_KINDS:
            continue
        if kind not in CONTINUOUS_KINDS and kind not in DISCRETE_KINDS:
            raise ValueError(f"column '{name}' has unknown kind '{kind}'")
        names.append(name)
    return names


def _continuous(column: pa.ChunkedArray) -> np.ndarray:
    """float64 values, NaN where missing; dates and timestamps as microseconds since 1970-01-01."""
    column = _decoded(column)
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        from genloom.models.tabular_data import parse_times  # a datetime column read from a CSV

        column = parse_times(column)
    arrow_type = column.type
    if pa.types.is_date(arrow_type):
        column = column.cast(pa.timestamp("us"))
    elif pa.types.is_timestamp(arrow_type) and arrow_type.unit != "us":
        column = column.cast(pa.timestamp("us", arrow_type.tz), safe=False)
    if pa.types.is_timestamp(column.type):
        column = column.cast(pa.int64())
    return column.cast(pa.float64()).fill_null(math.nan).to_numpy()


def _joint_codes(first: pa.ChunkedArray, second: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray, int]:
    """Level codes of two columns over their joint levels (-1 = missing) and the number of levels."""
    first, second = _decoded(first), _decoded(second)
    if first.type != second.type:
        try:
            second = second.cast(first.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            first, second = first.cast(pa.string()), second.cast(pa.string())
    joint = pa.chunked_array(first.chunks + second.chunks, type=first.type).combine_chunks()
    encoded = pc.dictionary_encode(joint)
    codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    return codes[: len(first)], codes[len(first) :], len(encoded.dictionary)


def _decoded(column: pa.ChunkedArray) -> pa.ChunkedArray:
    if pa.types.is_dictionary(column.type):
        return column.cast(column.type.value_type)
    return column


def _constant(values: np.ndarray) -> bool:
    """One distinct present value (pandas' nunique() == 1: SDMetrics' constant-column check)."""
    present = values[~np.isnan(values)]
    return len(present) > 0 and bool(np.all(present == present[0]))


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan
