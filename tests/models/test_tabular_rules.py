"""Rules, conditions and constraints on generated tables: parsing without eval, typed vectorised checks."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from genloom.core.errors import ConfigError
from genloom.models.config import ColumnSpec
from genloom.models.tabular_rules import (
    Condition,
    Rule,
    Value,
    apply_rounding,
    enforce_unique,
    nearest_distances,
    parse_condition,
    parse_rule,
    row_mask,
)


@pytest.fixture
def people() -> pa.Table:
    return pa.table(
        {
            "age": pa.array([17, 18, 30, None, 45], pa.int64()),
            "income": pa.array([0.0, 1200.5, 3000.0, 50.0, None]),
            "region": pa.array(["EU", "US", "EU", None, "APAC"]),
            "member": pa.array([True, False, True, True, None]),
            "start_date": pa.array(
                [dt.date(2020, 1, 1), dt.date(2020, 6, 1), dt.date(2021, 1, 1), dt.date(2019, 5, 5), None],
                pa.date32(),
            ),
            "end_date": pa.array(
                [dt.date(2020, 2, 1), dt.date(2020, 5, 1), dt.date(2021, 1, 1), None, dt.date(2022, 1, 1)],
                pa.date32(),
            ),
            "seen_at": pa.array(
                [dt.datetime(2020, 1, 1, 12, tzinfo=dt.UTC)] * 2
                + [dt.datetime(2021, 3, 1, tzinfo=dt.UTC)] * 3,
                pa.timestamp("ms", tz="UTC"),
            ),
            "hours-per-week": pa.array([40, 20, 60, 40, 10], pa.int64()),
        }
    )


def holds(text: str, table: pa.Table) -> list[bool]:
    return parse_rule(text, table.column_names).holds(table).tolist()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("age >= 18", [False, True, True, True, True]),  # the missing age passes
        ("age > 18", [False, False, True, True, True]),
        ("age < 18", [True, False, False, True, False]),
        ("age <= 18", [True, True, False, True, False]),
        ("age == 30", [False, False, True, True, False]),
        ("age != 30", [True, True, False, True, True]),
        ("age>=1.8e1", [False, True, True, True, True]),
        ("income >= 1000.25", [False, True, True, False, True]),
        ("18 <= age", [False, True, True, True, True]),  # a literal on the left mirrors the operator
    ],
)
def test_each_operator_on_numbers(people: pa.Table, text: str, expected: list[bool]) -> None:
    assert holds(text, people) == expected


def test_column_against_column_and_dates(people: pa.Table) -> None:
    assert holds("end_date >= start_date", people) == [True, False, True, True, True]
    assert holds("end_date > start_date", people) == [True, False, False, True, True]
    assert holds("start_date >= 2020-06-01", people) == [False, True, True, False, True]
    assert holds("start_date < '2020-01-02'", people) == [True, False, False, True, True]
    # a timestamp column against a date: the date is its midnight (UTC)
    assert holds("seen_at > 2020-01-01", people) == [True, True, True, True, True]
    assert holds("seen_at >= 2021-03-01T00:00:00Z", people) == [False, False, True, True, True]
    assert holds("seen_at < 2020-01-01T13:00:00+02:00", people) == [False] * 5  # 11:00 UTC
    assert holds("seen_at < 2020-01-01T15:00:00+02:00", people) == [True, True, False, False, False]
    assert holds("seen_at >= start_date", people) == [True, False, True, True, True]


def test_strings_booleans_and_hyphenated_names(people: pa.Table) -> None:
    assert holds("region == 'EU'", people) == [True, False, True, True, False]
    assert holds('region != "EU"', people) == [False, True, False, True, True]
    assert holds("member == true", people) == [True, False, True, True, True]
    assert holds("hours-per-week >= 40", people) == [True, False, True, True, False]
    assert holds("`hours-per-week` < age", people) == [False, False, False, True, True]
    assert holds("age <= hours-per-week", people) == [True, True, True, True, False]


def test_rule_parts() -> None:
    rule = parse_rule("end_date >= start_date", ["start_date", "end_date"])
    assert rule == Rule("end_date >= start_date", "end_date", ">=", other="start_date")
    assert rule.reason == "rule: end_date >= start_date"
    assert parse_rule("age >= 18", ["age"]).value == Value("18")
    assert parse_rule("region == 'a b'", ["region"]).value == Value("a b", quoted=True)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("agee >= 18", "'agee' is neither a known column nor a value; known columns: age, region"),
        ("age >= eighteen", "'eighteen' is neither a known column"),
        ("region == EU", "quote string values"),
        ("age 18", "has no comparison"),
        ("age = 18", "'=' is not an operator"),
        ("0 < age < 99", "more than one comparison"),
        ("age >=", "both sides"),
        ("18 >= 17", "compares two values; one side must be a column"),
        ("height >= 17", "'height' is neither a known column"),
    ],
)
def test_rule_syntax_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match="rule") as caught:
        parse_rule(text, ["age", "region"])
    assert message in str(caught.value)
    assert text in str(caught.value)


def test_type_errors_when_checked(people: pa.Table) -> None:
    with pytest.raises(ConfigError, match="'2020-01-01' is not a number"):
        parse_rule("age >= 2020-01-01", people.column_names).holds(people)
    with pytest.raises(ConfigError, match="'5' is not an ISO date"):
        parse_rule("start_date >= 5", people.column_names).holds(people)
    with pytest.raises(ConfigError, match="cannot compare 'region' \\(string\\) with 'age' \\(number\\)"):
        parse_rule("region == age", people.column_names).holds(people)
    with pytest.raises(ConfigError, match="unknown column 'age'; known columns: region"):
        parse_rule("age >= 18", ["age"]).holds(people.select(["region"]))


@pytest.mark.parametrize(
    ("text", "column", "condition"),
    [
        ("region=EU", "region", Condition("region=EU", "region", "==", value=Value("EU"))),
        (
            "region == 'EU West'",
            "region",
            Condition("region == 'EU West'", "region", "==", Value("EU West", True)),
        ),
        ("age>=30", "age", Condition("age>=30", "age", ">=", value=Value("30"))),
        ("age<30", "age", Condition("age<30", "age", "<", value=Value("30"))),
        ("age!=30", "age", Condition("age!=30", "age", "!=", value=Value("30"))),
        ("income=>50K", "income", Condition("income=>50K", "income", "==", value=Value(">50K"))),
        ("income=<=50K", "income", Condition("income=<=50K", "income", "==", value=Value("<=50K"))),
        ("age=30..40", "age", Condition("age=30..40", "age", "range", low=Value("30"), high=Value("40"))),
        ("age=30..", "age", Condition("age=30..", "age", "range", low=Value("30"))),
        ("name=a..b", "name", Condition("name=a..b", "name", "==", value=Value("a..b"))),
        (
            "start_date=2020-01-01..2020-06-30",
            "start_date",
            Condition(
                "start_date=2020-01-01..2020-06-30",
                "start_date",
                "range",
                low=Value("2020-01-01"),
                high=Value("2020-06-30"),
            ),
        ),
    ],
)
def test_parse_condition(text: str, column: str, condition: Condition) -> None:
    assert parse_condition(text) == (column, condition)


@pytest.mark.parametrize(
    ("text", "message"),
    [("region", "no comparison"), ("=EU", "names no column"), ("age>=", "no value"), ("age!30", "'!'")],
)
def test_condition_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_condition(text)


def test_conditions_select_rows(people: pa.Table) -> None:
    def where(text: str) -> list[bool]:
        return parse_condition(text)[1].holds(people).tolist()

    assert where("region=EU") == [True, False, True, False, False]  # missing fails a condition
    assert where("age=18..30") == [False, True, True, False, False]
    assert where("age=..18") == [True, True, False, False, False]
    assert where("income=0..1200.5") == [True, True, False, True, False]
    assert where("start_date=2020-01-01..2020-06-01") == [True, True, False, False, False]
    assert where("seen_at>=2021-01-01") == [False, False, True, True, True]
    assert where("member=false") == [False, True, False, False, False]
    with pytest.raises(ConfigError, match="unknown column 'country'; known columns: age, income, region"):
        parse_condition("country=FR")[1].holds(people)


def test_typed_value_for_a_conditional_vector() -> None:
    assert parse_condition("region=EU")[1].typed_value(pa.string()) == "EU"
    assert parse_condition("grade=3")[1].typed_value(pa.int64()) == 3
    assert parse_condition("member=true")[1].typed_value(pa.bool_()) is True
    assert parse_condition("day=2020-02-03")[1].typed_value(pa.date32()) == dt.date(2020, 2, 3)
    with pytest.raises(ConfigError, match="not an equality"):
        parse_condition("age>=3")[1].typed_value(pa.int64())


def test_row_mask_counts_each_row_under_its_first_reason(people: pa.Table) -> None:
    rules = [parse_rule("end_date >= start_date", people.column_names)]
    conditions = dict([parse_condition("age=..40")])
    specs = {"income": ColumnSpec(min=10.0), "age": ColumnSpec(max=20)}
    mask, counts = row_mask(people, rules, conditions, specs)
    # row 0: income 0 < min; row 1: ends before it starts; row 2: age 30 > max; row 3: age missing
    # fails the condition; row 4: age 45 outside the condition
    assert mask.tolist() == [False, False, False, False, False]
    assert counts == {
        "condition: age=..40": 2,
        "min: income": 1,
        "max: age": 1,
        "rule: end_date >= start_date": 1,
    }
    mask, counts = row_mask(people, rules, [], {"income": ColumnSpec(max=5000.0)})
    assert mask.tolist() == [True, False, True, True, True]
    assert counts == {"rule: end_date >= start_date": 1}
    assert row_mask(people)[0].all()


def test_constraint_errors(people: pa.Table) -> None:
    with pytest.raises(ConfigError, match="columns.region.min: 'region' is not numeric"):
        row_mask(people, specs={"region": ColumnSpec(min=1)})
    with pytest.raises(ConfigError, match="columns.start_date.max.*write a rule"):
        row_mask(people, specs={"start_date": ColumnSpec(max=1)})
    with pytest.raises(ConfigError, match="unknown column 'height'"):
        row_mask(people, specs={"height": ColumnSpec(min=1)})
    row_mask(people, specs={"notes": ColumnSpec(type="text")})  # a spec without bounds is not checked


def test_apply_rounding(people: pa.Table) -> None:
    table = people.append_column("ratio", pa.array([0.12345, 2.5, -1.005, None, 7.0], pa.float32()))
    rounded = apply_rounding(
        table, {"income": ColumnSpec(round=0), "ratio": ColumnSpec(round=2), "age": ColumnSpec(round=1)}
    )
    assert rounded.column("income").to_pylist() == [0.0, 1200.0, 3000.0, 50.0, None]  # half to even
    assert rounded.column("ratio").type == pa.float32()
    assert np.allclose(rounded.column("ratio").to_numpy(zero_copy_only=False)[[0, 1, 4]], [0.12, 2.5, 7.0])
    assert rounded.column("age").equals(people.column("age"))
    assert rounded.schema == table.schema
    with pytest.raises(ConfigError, match="only numbers are rounded"):
        apply_rounding(people, {"region": ColumnSpec(round=1)})


def test_enforce_unique_across_batches() -> None:
    seen: dict[str, set[object]] = {}
    first = pa.table({"key": [1, 2, 2, 3, None, None], "code": ["a", "b", "c", "d", "e", "f"]})
    mask, rejected = enforce_unique(first, ["key"], seen)
    assert mask.tolist() == [True, True, False, True, True, True]  # missing values are no repeats
    assert rejected == 1
    assert seen == {"key": {1, 2, 3}}
    second = pa.table({"key": [3, 4, 5, 4], "code": ["g", "h", "i", "j"]})
    mask, rejected = enforce_unique(second, ["key"], seen)
    assert mask.tolist() == [False, True, True, False]
    assert rejected == 2
    assert seen["key"] == {1, 2, 3, 4, 5}


def test_enforce_unique_on_several_columns_never_lets_a_duplicate_through() -> None:
    seen: dict[str, set[object]] = {"email": {"x@a"}}
    table = pa.table({"id": ["p", "p", "q", "r"], "email": ["x@a", "y@a", "y@a", "z@a"]})
    mask, rejected = enforce_unique(table, ["id", "email"], seen)
    # row 0 repeats a known email; row 1 repeats row 0's id (rejected too: conservative);
    # row 2 repeats row 1's email; row 3 is new in both
    assert mask.tolist() == [False, False, False, True]
    assert rejected == 3
    assert seen == {"email": {"x@a", "z@a"}, "id": {"r"}}


def test_nearest_distances_is_the_brute_force_minimum() -> None:
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(300, 7)).astype(np.float32)
    query = np.vstack([reference[:5], rng.normal(size=(50, 7)).astype(np.float32)])
    expected = np.sqrt(
        ((query[:, None, :].astype(np.float64) - reference[None].astype(np.float64)) ** 2).sum(-1)
    ).min(1)
    distances = nearest_distances(query, reference)
    assert distances.shape == (55,)
    assert np.allclose(distances, expected, atol=1e-6)
    assert np.all(distances[:5] == 0)
    assert nearest_distances(query[:0], reference).shape == (0,)
    with pytest.raises(ValueError, match="reference row"):
        nearest_distances(query, reference[:0])
