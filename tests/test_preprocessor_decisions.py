"""Tests of the decisions build_preprocessor takes and logs (flags, imputation, exclusion,
column choice, refusals, the order of the log), on a hand-made customer table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from custseg.errors import DataError, SchemaError
from custseg.preprocessing import Preprocessor, build_preprocessor


@pytest.fixture
def table() -> pd.DataFrame:
    """Ten customers: a date column, spend with a missing value and an exact copy in
    spend_with_tax, a skewed order count, a constant plan, a 0/1 flag with as many 0s as 1s
    and two missing, a skewed column with two values (1 and 5) and a region with a missing
    value."""
    frame = pd.DataFrame(
        {
            "customer_id": [f"C{i}" for i in range(1, 11)],
            "joined_at": pd.date_range("2023-01-01", periods=10, freq="MS"),
            "spend": [120.0, 80.0, 95.0, np.nan, 150.0, 60.0, 110.0, 70.0, 130.0, 100.0],
            "orders": [1, 2, 1, 3, 2, 1, 4, 2, 30, 1],
            "plan": ["basic"] * 10,
            "complained": [0.0, 1.0, 0.0, 1.0, np.nan, 0.0, 1.0, 0.0, 1.0, np.nan],
            "seats": [1, 1, 5, 1, 1, 1, 1, 1, 5, 1],
            "region": ["north", "south", "north", "east", "north", None, "south", "north", "east", "north"],
        }
    )
    frame["spend_with_tax"] = frame["spend"] * 1.2
    return frame


def _records(prep: Preprocessor, action: str) -> dict[str | None, dict]:
    return {record["column"]: record for record in prep.records if record["action"] == action}


@pytest.mark.parametrize(
    ("flag", "filled"),
    [
        ([0.0, 1.0, 0.0, 1.0, np.nan, 0.0, 1.0, 0.0, 1.0, np.nan], 0.0),  # a tie: the median would be 0.5
        ([1.0, 1.0, 0.0, 1.0, np.nan, 1.0, 1.0, 0.0, 1.0, 1.0], 1.0),
    ],
)
def test_flag_imputation_note_names_the_most_frequent_value(table, flag, filled):
    flagged = table.assign(complained=flag)
    prep = build_preprocessor(flagged)
    record = _records(prep, "impute")["complained"]
    n_missing = int(flagged["complained"].isna().sum())
    assert record["details"] == {"n_missing": n_missing, "value": filled, "strategy": "most_frequent"}
    assert record["reason"] == f"{n_missing} missing, filled with the most frequent value {filled:g}"
    assert (
        f"Imputed 'complained': {n_missing} missing value(s) filled with the most frequent value {filled:g}."
        in prep.report
    )
    out = prep.fit_transform(flagged)
    assert out.loc[flagged["complained"].isna(), "complained"].tolist() == [filled] * n_missing


def test_median_imputation_note_of_a_numeric_column_unchanged(table):
    record = _records(build_preprocessor(table), "impute")["spend"]
    assert record["details"] == {"n_missing": 1, "value": 100.0, "strategy": "median"}
    assert record["reason"] == "1 missing, filled with the median 100"


def test_flag_kept_unscaled_and_left_out_of_scaling(table):
    prep = build_preprocessor(table)
    assert _records(prep, "keep_flag").keys() == {"complained"}
    assert _records(prep, "scale")[None]["details"] == {"scaler": "standard", "columns": ["spend", "orders", "seats"]}
    out = prep.fit_transform(table)
    assert set(out["complained"]) == {0.0, 1.0}
    assert out["complained"].tolist() == table["complained"].fillna(0.0).tolist()


def test_two_valued_column_not_a_flag_scaled_but_not_transformed(table):
    prep = build_preprocessor(table)
    assert table["seats"].skew() > 1.0
    assert "seats" not in {**_records(prep, "log1p"), **_records(prep, "yeo_johnson"), **_records(prep, "keep_flag")}
    seats = prep.fit_transform(table)["seats"].to_numpy()
    raw = table["seats"].to_numpy(dtype=float)
    np.testing.assert_allclose(seats, (raw - raw.mean()) / raw.std())


def test_unsupported_dtype_excluded_with_its_dtype(table):
    prep = build_preprocessor(table.assign(phase=np.full(10, 1 + 2j)))
    record = _records(prep, "exclude")["phase"]
    assert record["reason"] == "unsupported dtype complex128"
    assert record["details"] == {"dtype": "complex128"}
    assert "Excluded 'phase': dtype complex128 is neither numeric nor categorical." in prep.report
    assert "phase" not in prep.columns


def test_columns_asked_for_used_once_each_and_nothing_logged_as_excluded(table):
    prep = build_preprocessor(table, columns=["region", "spend", "region"])
    assert (prep.numeric, prep.categorical) == (["spend"], ["region"])
    assert not _records(prep, "exclude")
    assert build_preprocessor(table, columns="spend").columns == ["spend"]


def test_duplicate_column_names_refused(table):
    doubled = pd.concat([table, table[["spend"]]], axis=1)
    with pytest.raises(SchemaError, match="features has duplicate column names spend; rename them first"):
        build_preprocessor(doubled)


def test_table_without_rows_refused(table):
    with pytest.raises(DataError, match="features has no rows"):
        build_preprocessor(table.iloc[:0])


def test_no_column_left_after_the_drops_refused(table):
    with pytest.raises(DataError, match="no usable feature columns left after dropping constant and correlated ones"):
        build_preprocessor(table, columns=["plan"])


def test_decisions_logged_in_their_order(table):
    prep = build_preprocessor(table)
    stage = {
        "exclude": 1,
        "drop_constant": 2,
        "drop_correlated": 3,
        "impute": 4,
        "log1p": 5,
        "yeo_johnson": 5,
        "keep_flag": 6,
        "scale": 7,
        "one_hot": 8,
        "keep_categorical": 8,
    }
    stages = [stage[record["action"]] for record in prep.records]
    assert stages == sorted(stages)
    assert set(stages) == {1, 2, 3, 4, 5, 6, 7, 8}
    assert len(prep.report) == len(prep.records)
