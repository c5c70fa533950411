"""Tests of custseg.preprocessing on a hand-made customer table."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from custseg.errors import ConfigError, ModelError, SchemaError
from custseg.preprocessing import Preprocessor, build_preprocessor, default_feature_columns


@pytest.fixture
def features() -> pd.DataFrame:
    """Ten customers: a constant column, an exact linear copy of monetary, a skewed
    non-negative column (frequency), a skewed column with negatives (balance), missing
    values in age and country, and a datetime column."""
    table = pd.DataFrame(
        {
            "customer_id": [f"C{i}" for i in range(1, 11)],
            "first_order_at": pd.date_range("2023-01-01", periods=10, freq="7D"),
            "age": [34.0, 45.0, np.nan, 29.0, 52.0, 41.0, np.nan, 38.0, 47.0, 33.0],
            "frequency": [1, 1, 2, 2, 3, 3, 4, 5, 8, 40],
            "monetary": [50.0, 20.0, 90.0, 30.0, 120.0, 60.0, 80.0, 200.0, 150.0, 100.0],
            "plan": ["basic"] * 10,
            "balance": [-20.0, 2000.0, 0.0, 5.0, 10.0, 20.0, 15.0, 30.0, 25.0, -10.0],
            "country": ["UK", "FR", "UK", "DE", None, "UK", "FR", "UK", "UK", "DE"],
        }
    )
    table["revenue_usd"] = table["monetary"] * 1.27 + 3.0
    return table


def _records(prep: Preprocessor, action: str) -> dict[str | None, dict]:
    return {record["column"]: record for record in prep.records if record["action"] == action}


def test_columns_chosen_and_excluded(features):
    prep = build_preprocessor(features)
    assert prep.numeric == ["age", "frequency", "monetary", "balance"]
    assert prep.categorical == ["country"]
    excluded = _records(prep, "exclude")
    assert set(excluded) == {"customer_id", "first_order_at"}
    assert "Excluded 'first_order_at': date/time column, not a feature." in prep.report


def test_constant_column_dropped_and_reported(features):
    prep = build_preprocessor(features)
    assert "plan" not in prep.columns
    record = _records(prep, "drop_constant")["plan"]
    assert record["details"] == {"value": "basic"}
    assert "Dropped 'plan': constant, one value ('basic') in every non-missing row." in prep.report


def test_near_constant_numeric_column_dropped_scale_free(features):
    features = features.assign(fee_cents=1_000_000.0 + np.arange(10) * 1e-3)
    prep = build_preprocessor(features)
    assert "fee_cents" in _records(prep, "drop_constant")
    assert "fee_cents" in build_preprocessor(features, variance_threshold=0.0).numeric


def test_all_missing_column_dropped(features):
    prep = build_preprocessor(features.assign(notes=[None] * 10))
    assert _records(prep, "drop_constant")["notes"]["reason"] == "all values missing"


def test_correlated_pair_reported_keeping_the_first(features):
    prep = build_preprocessor(features)
    record = _records(prep, "drop_correlated")["revenue_usd"]
    assert record["details"]["correlated_with"] == "monetary"
    assert record["details"]["correlation"] == pytest.approx(1.0)
    assert "monetary" in prep.numeric and "revenue_usd" not in prep.columns
    assert (
        "Dropped 'revenue_usd': Pearson correlation 1.000 with 'monetary' (|r| > 0.95); kept 'monetary'."
        in prep.report
    )


def test_correlated_pair_keeps_first_in_column_order(features):
    prep = build_preprocessor(features, columns=["revenue_usd", "monetary", "age"])
    assert prep.numeric == ["revenue_usd", "age"]
    assert _records(prep, "drop_correlated")["monetary"]["details"]["correlated_with"] == "revenue_usd"


def test_corr_threshold_one_keeps_the_pair(features):
    doubled = features.drop(columns="revenue_usd").assign(m2=features["monetary"] * 2)
    prep = build_preprocessor(doubled, corr_threshold=1.0)
    assert {"monetary", "m2"} <= set(prep.numeric)


def test_log1p_applied_to_skewed_non_negative_column(features):
    prep = build_preprocessor(features)
    assert _records(prep, "log1p").keys() == {"frequency"}
    out = prep.fit_transform(features)
    logged = np.log1p(features["frequency"].to_numpy(dtype=float))
    expected = (logged - logged.mean()) / logged.std()
    np.testing.assert_allclose(out["frequency"].to_numpy(), expected)


def test_yeo_johnson_for_skewed_column_with_negatives(features):
    prep = build_preprocessor(features)
    assert _records(prep, "yeo_johnson").keys() == {"balance"}
    out = prep.fit_transform(features)
    assert abs(out["balance"].skew()) < abs(features["balance"].skew())
    assert out["balance"].mean() == pytest.approx(0.0, abs=1e-12)


def test_unskewed_column_only_imputed_and_scaled(features):
    out = build_preprocessor(features).fit_transform(features)
    age = features["age"].fillna(39.5).to_numpy()
    np.testing.assert_allclose(out["age"].to_numpy(), (age - age.mean()) / age.std())


def test_imputation_reported(features):
    imputed = _records(build_preprocessor(features), "impute")
    assert imputed["age"]["details"] == {"n_missing": 2, "value": 39.5, "strategy": "median"}
    assert imputed["country"]["details"] == {"n_missing": 1, "value": "UK", "strategy": "most_frequent"}


def test_one_hot_names_present(features):
    out = build_preprocessor(features).fit_transform(features)
    assert list(out.columns) == ["frequency", "balance", "age", "monetary", "country_DE", "country_FR", "country_UK"]
    one_hot = out[["country_DE", "country_FR", "country_UK"]]
    np.testing.assert_array_equal(one_hot.sum(axis=1), np.ones(10))
    assert out.loc[4, "country_UK"] == 1.0  # the missing country took the most frequent value


def test_output_keeps_the_index(features):
    indexed = features.set_index(pd.Index(range(100, 110)))
    out = build_preprocessor(indexed).fit_transform(indexed)
    assert list(out.index) == list(range(100, 110))


def test_transform_new_customers_with_unseen_category(features):
    prep = build_preprocessor(features)
    prep.fit(features)
    new = pd.DataFrame({"country": ["US"], "monetary": [75.0], "age": [40.0], "frequency": [2], "balance": [0.0]})
    out = prep.transform(new)
    assert out[["country_DE", "country_FR", "country_UK"]].to_numpy().tolist() == [[0.0, 0.0, 0.0]]
    assert prep.feature_names_out == list(out.columns)


def test_robust_scaler(features):
    out = build_preprocessor(features, scaler="robust").fit_transform(features)
    assert out["monetary"].median() == pytest.approx(0.0)


def test_one_hot_false_keeps_imputed_text(features):
    prep = build_preprocessor(features, one_hot=False)
    out = prep.fit_transform(features)
    assert out["country"].tolist() == ["UK", "FR", "UK", "DE", "UK", "UK", "FR", "UK", "UK", "DE"]
    assert _records(prep, "keep_categorical").keys() == {"country"}


def test_numeric_like_dtypes_are_numeric():
    table = pd.DataFrame(
        {
            "customer_id": [1, 2, 3, 4, 5, 6],
            "is_member": [True, False, True, False, False, True],
            "visits": pd.array([1, 7, None, 4, 2, 5], dtype="Int64"),
            "credit": [Decimal("1.5"), Decimal("2.5"), None, Decimal("0.5"), Decimal("4"), Decimal("3")],
            "segment": pd.Categorical(["a", "b", "a", "b", "a", "a"]),
        }
    )
    prep = build_preprocessor(table, skew_threshold=10.0)
    assert prep.numeric == ["is_member", "visits", "credit"]
    assert prep.categorical == ["segment"]
    out = prep.fit_transform(table)
    assert not out.isna().any().any()


def test_unknown_column_error(features):
    with pytest.raises(ConfigError, match=r"unknown column\(s\) 'nope' in the feature columns asked for; available: age, frequency"):
        build_preprocessor(features, columns=["monetary", "nope"])


@pytest.mark.parametrize(("column", "kind"), [("first_order_at", "temporal"), ("customer_id", "id")])
def test_non_feature_column_requested_error(features, column, kind):
    with pytest.raises(ConfigError, match=rf"'{column}' \({kind}\) cannot be features; available: "):
        build_preprocessor(features, columns=[column])


def test_invalid_options_reported_together(features):
    with pytest.raises(ConfigError, match=r"scaler must be one of 'standard', 'robust', got 'minmax'; corr_threshold"):
        build_preprocessor(features, scaler="minmax", corr_threshold=1.5)


def test_not_a_frame_error():
    with pytest.raises(SchemaError, match="features must be a pandas DataFrame"):
        build_preprocessor(np.zeros((3, 2)))


def test_transform_before_fit_error(features):
    with pytest.raises(ModelError, match="not fitted"):
        build_preprocessor(features).transform(features)


def test_missing_column_at_transform_error(features):
    prep = build_preprocessor(features)
    prep.fit(features)
    with pytest.raises(SchemaError, match=r"lack column\(s\) 'age'"):
        prep.transform(features.drop(columns="age"))


def test_input_frame_not_mutated(features):
    before = features.copy(deep=True)
    prep = build_preprocessor(features)
    prep.fit_transform(features)
    prep.transform(features)
    pd.testing.assert_frame_equal(features, before)


def test_default_feature_columns(features):
    table = features.assign(recency_days=range(10))
    assert default_feature_columns(table, kind="transactions") == ["recency_days", "frequency", "monetary"]
    assert default_feature_columns(table, kind="customers") == [
        "age",
        "frequency",
        "monetary",
        "plan",
        "balance",
        "country",
        "revenue_usd",
        "recency_days",
    ]
    with pytest.raises(ConfigError, match="kind must be one of 'transactions', 'customers', got 'orders'"):
        default_feature_columns(table, kind="orders")


def test_skewed_binary_flag_is_not_transformed(features):
    flagged = features.assign(complained=[0, 0, 0, 1, 0, 0, 0, 0, 0, 0])
    prep = build_preprocessor(flagged)
    assert flagged["complained"].skew() > 1.0
    assert "complained" not in _records(prep, "log1p")
    assert "complained" in prep.numeric
