"""Fidelity (SDMetrics' QualityReport, re-implemented), utility (TSTR) and privacy (DCR, distance attack)."""

from __future__ import annotations

import datetime as dt
import math
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from genloom.core.errors import ConfigError
from genloom.models import tabular_metrics as tm

ADULT = Path("/work/shared/data/tabular")
ADULT_COLUMNS = [
    "age",
    "workclass",
    "fnlwgt",
    "education",
    "education-num",
    "marital-status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "capital-gain",
    "capital-loss",
    "hours-per-week",
    "native-country",
    "income",
]
MIXED_KINDS = {
    "age": "integer",
    "income": "numeric",
    "joined": "datetime",
    "region": "categorical",
    "member": "boolean",
    "plan": "categorical",
    "score": "numeric",
    "key": "id",
}


def mixed_table(n: int, seed: int, shift: float = 0.0) -> pa.Table:
    """Related columns of every kind, with missing values; ``shift`` moves the distributions."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    age = np.round(40 + 10 * x + rng.normal(0, 4, n) + 5 * shift).astype(np.int64)
    income = np.exp(rng.normal(10 + shift, 0.5, n) + 0.4 * x)
    joined = [
        dt.datetime(2015, 1, 1) + dt.timedelta(days=float(d)) for d in 900 + 300 * x + rng.normal(0, 200, n)
    ]
    region = np.where(
        x + rng.normal(0, 0.7, n) > 0.3 * shift, "EU", np.where(rng.random(n) < 0.6, "US", "APAC")
    )
    member = (region == "EU") ^ (rng.random(n) < 0.15 + 0.2 * shift)
    plan = rng.choice(["free", "pro", "team"], n, p=[0.6 - 0.1 * shift, 0.3, 0.1 + 0.1 * shift])
    score = rng.normal(size=n)
    income_mask = rng.random(n) < 0.05
    region_mask = rng.random(n) < 0.04
    return pa.table(
        {
            "age": pa.array(age),
            "income": pa.array(income, mask=income_mask),
            "joined": pa.array(joined, pa.timestamp("us")),
            "region": pa.array(region.tolist(), mask=region_mask),
            "member": pa.array(member),
            "plan": pa.array(plan.tolist()),
            "score": pa.array(score),
            "key": pa.array(np.arange(n)),
        }
    )


def shuffled(table: pa.Table, seed: int) -> pa.Table:
    """Every column permuted on its own: same column shapes, no relation between columns."""
    rng = np.random.default_rng(seed)
    columns = [
        table.column(name).take(pa.array(rng.permutation(table.num_rows))) for name in table.column_names
    ]
    return pa.table(columns, names=table.column_names)


def test_identical_tables_score_one() -> None:
    real = mixed_table(800, seed=0)
    for thresholds in [(0.5, 0.3), (0.0, 0.0)]:
        scores = tm.quality(real, real, MIXED_KINDS, *thresholds)
        assert scores == pytest.approx({"column_shapes": 1.0, "column_pair_trends": 1.0, "quality": 1.0})
    assert set(tm.column_shape_scores(real, real, MIXED_KINDS)) == set(MIXED_KINDS) - {"key"}


def test_shuffled_columns_keep_shapes_and_lose_pair_trends() -> None:
    real = mixed_table(2000, seed=0)
    mixed = shuffled(real, seed=1)
    assert tm.column_shapes(real, mixed, MIXED_KINDS) == pytest.approx(1.0)
    trends = tm.column_pair_trends(real, mixed, MIXED_KINDS, 0.0, 0.0)
    related = tm.column_pair_trends(real, mixed, MIXED_KINDS)
    assert trends < 0.95
    assert related < trends  # the related pairs, the only ones counted by default, lose the most
    assert tm.quality(real, mixed, MIXED_KINDS)["quality"] < tm.quality(real, real, MIXED_KINDS)["quality"]


def test_pair_scores_follow_the_real_data_thresholds() -> None:
    real, synth = mixed_table(2000, seed=0), mixed_table(2000, seed=1, shift=0.5)
    pairs = {(p.column_1, p.column_2): p for p in tm.column_pair_scores(real, synth, MIXED_KINDS)}
    assert len(pairs) == 21  # 7 modelled columns; the id column is skipped
    assert pairs[("age", "joined")].metric == "CorrelationSimilarity"
    assert pairs[("age", "joined")].counts and pairs[("age", "joined")].real > 0.5
    assert pairs[("age", "score")].metric == "CorrelationSimilarity" and not pairs[("age", "score")].counts
    assert (
        pairs[("region", "member")].metric == "ContingencySimilarity" and pairs[("region", "member")].counts
    )
    assert pairs[("plan", "score")].metric == "ContingencySimilarity" and not pairs[("plan", "score")].counts
    counted = [p.score for p in pairs.values() if p.counts]
    assert tm.column_pair_trends(real, synth, MIXED_KINDS) == pytest.approx(np.mean(counted))


def test_a_constant_column_is_left_out_of_correlations() -> None:
    real = pa.table({"a": [1.0, 2.0, 3.0, 4.0], "b": [5.0, 5.0, 5.0, 5.0], "c": [1.0, 3.0, 2.0, 4.0]})
    pairs = tm.column_pair_scores(real, real, {"a": "numeric", "b": "numeric", "c": "numeric"}, 0.0, 0.0)
    assert [(p.column_1, p.column_2, p.counts) for p in pairs] == [
        ("a", "b", False),
        ("a", "c", True),
        ("b", "c", False),
    ]
    assert math.isnan(pairs[0].score)


def sdmetrics_quality(
    real: pa.Table, synth: pa.Table, kinds: dict[str, str], thresholds: tuple[float, float]
):
    from sdmetrics.reports.single_table import QualityReport

    sdtypes = {"integer": "numerical", "numeric": "numerical", "datetime": "datetime", "id": "id"}
    metadata = {"columns": {name: {"sdtype": sdtypes.get(kind, kind)} for name, kind in kinds.items()}}
    report = QualityReport()
    report.real_correlation_threshold, report.real_association_threshold = thresholds
    report.generate(real.to_pandas(), synth.to_pandas(), metadata, verbose=False)
    properties = report.get_properties().set_index("Property")["Score"]
    return {
        "column_shapes": float(properties["Column Shapes"]),
        "column_pair_trends": float(properties["Column Pair Trends"]),
        "quality": float(report.get_score()),
    }


@pytest.mark.filterwarnings("ignore")  # sdmetrics' deprecation notices and pandas warnings
@pytest.mark.parametrize("thresholds", [(0.5, 0.3), (0.0, 0.0)])
def test_agrees_with_sdmetrics_on_a_mixed_table(thresholds: tuple[float, float]) -> None:
    pytest.importorskip("sdmetrics")
    real, synth = mixed_table(1500, seed=0), mixed_table(1200, seed=1, shift=0.5)
    ours = tm.quality(real, synth, MIXED_KINDS, *thresholds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = sdmetrics_quality(real, synth, MIXED_KINDS, thresholds)
    assert ours == pytest.approx(theirs, abs=0.01)
    assert ours == pytest.approx(theirs, abs=1e-9)  # the same definitions give the same numbers
    assert ours["quality"] < 0.97  # the shift is visible


def read_adult(name: str) -> pa.Table:
    """adult-*.csv: no header, values after ', ', '?' missing, test labels end with '.'."""
    import pyarrow.csv as pcsv

    table = pcsv.read_csv(
        ADULT / name,
        read_options=pcsv.ReadOptions(column_names=ADULT_COLUMNS),
        convert_options=pcsv.ConvertOptions(null_values=[" ?"], strings_can_be_null=True),
    )
    columns = []
    for column_name in ADULT_COLUMNS:
        column = table.column(column_name)
        if pa.types.is_string(column.type):
            column = pc.utf8_rtrim(pc.utf8_trim_whitespace(column), characters=".")
        columns.append(column)
    return pa.table(columns, names=ADULT_COLUMNS)


def adult_kinds(table: pa.Table) -> dict[str, str]:
    return {
        name: "integer" if pa.types.is_integer(table.column(name).type) else "categorical"
        for name in table.column_names
    }


@pytest.mark.filterwarnings("ignore")
def test_agrees_with_sdmetrics_on_adult() -> None:
    pytest.importorskip("sdmetrics")
    if not ADULT.exists():
        pytest.skip(f"{ADULT} (the shared Adult data) is absent")
    train, test = read_adult("adult-train.csv").slice(0, 5000), read_adult("adult-test.csv").slice(0, 4000)
    # the first seven columns shuffled apart, the others as in the test file
    mixed = shuffled(test, seed=0)
    synth = pa.table([(mixed if i < 7 else test).column(i) for i in range(15)], names=ADULT_COLUMNS)
    kinds = adult_kinds(train)
    for thresholds in [(0.5, 0.3), (0.0, 0.0)]:
        ours = tm.quality(train, synth, kinds, *thresholds)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = sdmetrics_quality(train, synth, kinds, thresholds)
        assert ours == pytest.approx(theirs, abs=1e-9)


def learnable_table(n: int, seed: int, target_levels: int = 2) -> pa.Table:
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    group = rng.choice(["a", "b", "c", "d"], n)
    signal = x1 + 1.5 * np.isin(group, ["a", "b"]) - 0.75 + 0.2 * rng.normal(size=n)
    if target_levels == 2:
        label = np.where(signal > 0.8, "yes", "no")  # "yes" is the rarer level
    else:
        label = np.where(signal > 0.5, "high", np.where(signal > -0.5, "mid", "low"))
    when = [dt.date(2020, 1, 1) + dt.timedelta(days=int(d)) for d in rng.integers(0, 365, n)]
    return pa.table(
        {
            "x1": pa.array(x1, mask=rng.random(n) < 0.02),
            "x2": x2,
            "group": group.tolist(),
            "when": pa.array(when, pa.date32()),
            "label": label.tolist(),
        }
    )


LEARNABLE_KINDS = {
    "x1": "numeric",
    "x2": "numeric",
    "group": "categorical",
    "when": "datetime",
    "label": "categorical",
}


def test_tstr_learns_a_learnable_table() -> None:
    from sklearn.metrics import f1_score

    train, test = learnable_table(3000, seed=0), learnable_table(1500, seed=1)
    scores = tm.tstr(train, test, "label", LEARNABLE_KINDS)
    assert scores["accuracy"] > 0.9
    assert 0.8 < scores["f1"] <= scores["accuracy"] + 0.05
    assert tm.tstr(train, test, "label", LEARNABLE_KINDS) == scores  # fixed random_state
    # labels unrelated to the features: no better than the majority level, and a poor F1
    noise = train.set_column(
        4, "label", train.column("label").take(pa.array(np.random.default_rng(2).permutation(3000)))
    )
    unrelated = tm.tstr(noise, test, "label", LEARNABLE_KINDS)
    majority = float(np.mean(np.array(test.column("label").to_pylist()) == "no"))
    assert unrelated["accuracy"] < majority + 0.03
    assert unrelated["f1"] < 0.4
    # a training target with one level predicts it
    only_no = train.filter(pc.equal(train.column("label"), "no"))
    assert tm.tstr(only_no, test, "label", LEARNABLE_KINDS) == {
        "accuracy": pytest.approx(majority),
        "f1": 0.0,
    }
    # the binary F1 is the rarer level's
    assert f1_score(["yes", "no", "no"], ["yes", "yes", "no"], pos_label="yes") == pytest.approx(2 / 3)


def test_tstr_macro_f1_for_several_levels_and_many_categories() -> None:
    train, test = (
        learnable_table(3000, seed=0, target_levels=3),
        learnable_table(1500, seed=1, target_levels=3),
    )
    rng = np.random.default_rng(3)
    wide_train = train.append_column("zip", pa.array([f"z{i}" for i in rng.integers(0, 600, 3000)]))
    wide_test = test.append_column("zip", pa.array([f"z{i}" for i in rng.integers(0, 700, 1500)]))
    kinds = {**LEARNABLE_KINDS, "zip": "categorical"}  # more levels than the trees take, some unseen
    scores = tm.tstr(wide_train, wide_test, "label", kinds)
    assert scores["accuracy"] > 0.8
    assert 0.7 < scores["f1"] < 1.0


def test_tstr_needs_a_categorical_target() -> None:
    table = learnable_table(50, seed=0)
    with pytest.raises(ConfigError, match="target 'x2' is numeric"):
        tm.tstr(table, table, "x2", LEARNABLE_KINDS)
    with pytest.raises(ConfigError, match="target 'nope' is not a modelled column"):
        tm.tstr(table, table, "nope", LEARNABLE_KINDS)


def test_normalised_matrix_weighs_each_column_alike() -> None:
    reference = pa.table({"n": [0.0, 10.0, 5.0], "c": ["a", "b", "a"]})
    kinds = {"n": "numeric", "c": "categorical"}
    rows = pa.table({"n": [0.0, 10.0, 0.0, 20.0, None], "c": ["a", "a", "b", "zz", "a"]})
    matrix = tm.normalised_matrix(rows, kinds, reference)
    assert matrix.dtype == np.float32
    assert matrix.shape == (5, 2 + 3)  # value + missing indicator; levels a, b + "other"

    def distance(i: int, j: int) -> float:
        return float(np.linalg.norm(matrix[i] - matrix[j]))

    assert distance(0, 1) == pytest.approx(math.sqrt(1 / 2))  # the full numeric range
    assert distance(0, 2) == pytest.approx(math.sqrt(1 / 2))  # another level
    assert distance(0, 3) == pytest.approx(1.0)  # beyond the range (clipped) and an unseen level
    assert distance(0, 4) == pytest.approx(math.sqrt((0.5**2 + 1) / 2))  # missing vs present
    assert np.array_equal(tm.normalised_matrix(reference, kinds, reference)[0], matrix[0])


def privacy_split() -> tuple[np.ndarray, np.ndarray, pa.Table, pa.Table]:
    train, holdout = mixed_table(1500, seed=0), mixed_table(1500, seed=1)
    return (
        tm.normalised_matrix(train, MIXED_KINDS, train),
        tm.normalised_matrix(holdout, MIXED_KINDS, train),
        train,
        holdout,
    )


def test_copies_of_training_rows_are_caught() -> None:
    train, holdout, _, _ = privacy_split()
    copies = train[np.random.default_rng(0).choice(len(train), 1000, replace=False)]
    scores = tm.dcr(copies, train, holdout)
    assert scores["dcr_synthetic_median"] == pytest.approx(0.0, abs=1e-6)
    assert scores["dcr_holdout_median"] > 0.01
    assert scores["dcr_close_share"] == 1.0
    assert tm.membership_inference_auc(train, train, holdout) == pytest.approx(1.0)
    assert tm.membership_inference_auc(copies, train, holdout) > 0.8


def test_independent_rows_look_like_holdout_rows() -> None:
    train, holdout, train_rows, _ = privacy_split()
    fresh = tm.normalised_matrix(mixed_table(1500, seed=2), MIXED_KINDS, train_rows)
    scores = tm.dcr(fresh, train, holdout)
    assert scores["dcr_synthetic_median"] == pytest.approx(scores["dcr_holdout_median"], rel=0.1)
    assert scores["dcr_close_share"] < 0.04
    assert tm.membership_inference_auc(fresh, train, holdout) == pytest.approx(0.5, abs=0.05)
    sampled = tm.dcr(fresh, train, holdout, max_rows=500)
    assert sampled["dcr_synthetic_median"] == pytest.approx(scores["dcr_synthetic_median"], rel=0.15)
    assert tm.membership_inference_auc(fresh, train, holdout, max_rows=500) == pytest.approx(0.5, abs=0.08)


def test_distance_attack_auc() -> None:
    assert tm.distance_attack_auc(np.array([0.0, 0.1]), np.array([0.5, 0.6])) == 1.0
    assert tm.distance_attack_auc(np.array([0.5, 0.6]), np.array([0.0, 0.1])) == 0.0
    assert tm.distance_attack_auc(np.ones(4), np.ones(3)) == 0.5
    assert math.isnan(tm.distance_attack_auc(np.zeros(0), np.ones(3)))


def test_pandas_tables_and_unknown_kinds() -> None:
    pytest.importorskip("pandas")
    real = mixed_table(300, seed=0)
    assert tm.quality(real.to_pandas(), real, MIXED_KINDS)["quality"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="unknown kind 'text'"):
        tm.quality(real, real, {"age": "text"})


def test_the_report_s_closest_rows_search_in_chunks_finds_what_one_search_finds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The report's closest rows searched 3 training rows at a time: the same rows, distances and
    training rows as one search over all of them (a synthetic copy of a training row first, at 0)."""
    import pyarrow.parquet as pq
    from sklearn.neighbors import NearestNeighbors

    from genloom.stages import evaluate as ev

    rng = np.random.default_rng(0)
    colors = np.array(["red", "blue", "green", "teal"])
    n = 40
    train = pa.table(
        {
            "age": rng.integers(18, 90, n),
            "income": np.round(rng.normal(50, 20, n), 1),
            "color": colors[rng.integers(0, 4, n)],
        }
    )
    pq.write_table(train, tmp_path / "train.parquet")
    synthetic = pa.concat_tables(
        [
            train.slice(31, 1),
            pa.table(
                {
                    "age": rng.integers(18, 90, 12),
                    "income": np.round(rng.normal(50, 20, 12), 1),
                    "color": colors[rng.integers(0, 4, 12)],
                }
            ),
        ]
    )
    kinds = {"age": "integer", "income": "numeric", "color": "categorical"}
    ref = tm.normalised_matrix(train, kinds, train)
    dist, idx = (
        NearestNeighbors(n_neighbors=1, algorithm="brute")
        .fit(ref)
        .kneighbors(tm.normalised_matrix(synthetic, kinds, train))
    )
    order = np.argsort(dist[:, 0], kind="stable")[:6]

    monkeypatch.setattr(ev, "CLOSEST_CHUNK_ROWS", 3)
    found = ev.closest_rows(synthetic, tmp_path / "train.parquet", kinds, k=6)

    assert [f["distance"] for f in found] == pytest.approx(dist[order, 0].tolist(), abs=1e-6)
    assert [f["synthetic"] for f in found] == [synthetic.slice(int(i), 1).to_pylist()[0] for i in order]
    assert [f["training"] for f in found] == [train.slice(int(idx[i, 0]), 1).to_pylist()[0] for i in order]
    assert found[0]["distance"] == pytest.approx(0.0, abs=1e-6) and idx[order[0], 0] == 31
