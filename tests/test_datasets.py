"""Tests for the synthetic generator in custseg.datasets."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from custseg.datasets import CUSTOMER_ARCHETYPES, make_customers, make_transactions
from custseg.errors import ConfigError

CUSTOMER_COLUMNS = [
    "customer_id",
    "recency_days",
    "frequency",
    "monetary",
    "tenure_days",
    "avg_order_value",
]
TRANSACTION_COLUMNS = ["customer_id", "order_id", "ordered_at", "product_id", "quantity", "unit_price"]


@pytest.fixture(scope="module", autouse=True)
def _single_thread():
    """These fits are tiny: OpenMP threads cost more than they save (far more on a busy host)."""
    with threadpool_limits(1):
        yield


def _check_customer_invariants(customers: pd.DataFrame, labels: np.ndarray, n: int, k: int) -> None:
    assert list(customers.columns) == CUSTOMER_COLUMNS
    assert len(customers) == n == labels.size
    assert customers["customer_id"].is_unique
    assert customers["customer_id"].map(type).eq(str).all()
    for column in ("recency_days", "frequency", "tenure_days"):
        assert pd.api.types.is_integer_dtype(customers[column]), column
    assert (customers["frequency"] >= 1).all()
    assert (customers["recency_days"] >= 0).all()
    assert (customers["tenure_days"] >= customers["recency_days"]).all()
    one_order = customers["frequency"] == 1
    assert (customers.loc[one_order, "tenure_days"] == customers.loc[one_order, "recency_days"]).all()
    assert (customers["monetary"] > 0).all()
    np.testing.assert_allclose(
        customers["avg_order_value"] * customers["frequency"], customers["monetary"], rtol=1e-12
    )
    np.testing.assert_array_equal(customers["monetary"], customers["monetary"].round(2))
    assert set(np.unique(labels)) == set(range(k))


@pytest.mark.parametrize(("n", "k"), [(2000, 4), (37, 3), (6, 6), (1, 1)])
def test_make_customers_shapes_and_invariants(n, k):
    customers, labels = make_customers(n, n_segments=k, random_state=3)
    _check_customer_invariants(customers, labels, n, k)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(min_value=6, max_value=300),
    k=st.integers(min_value=1, max_value=6),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    separation=st.floats(min_value=0.2, max_value=5.0),
)
def test_make_customers_invariants_hold_for_any_seed(n, k, seed, separation):
    customers, labels = make_customers(n, n_segments=k, random_state=seed, separation=separation)
    _check_customer_invariants(customers, labels, n, k)


def test_make_customers_is_reproducible():
    first = make_customers(300, random_state=11)
    second = make_customers(300, random_state=11)
    other = make_customers(300, random_state=12)
    pd.testing.assert_frame_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    assert not first[0].equals(other[0])


def test_segment_sizes_follow_fixed_shares():
    _, labels = make_customers(1000, n_segments=4, random_state=0)
    # champions, at_risk, new, lost weigh 0.20, 0.22, 0.25, 0.33 (normalised).
    assert np.bincount(labels).tolist() == [200, 220, 250, 330]


def test_archetypes_look_like_their_names():
    customers, labels = make_customers(2000, n_segments=4, random_state=0)
    medians = customers.groupby(np.asarray(CUSTOMER_ARCHETYPES)[labels]).median(numeric_only=True)
    assert medians["recency_days"].idxmin() in {"champions", "new"}
    assert medians["recency_days"].idxmax() == "lost"
    assert medians["frequency"].idxmax() == "champions"
    assert medians.loc["new", "frequency"] == medians.loc["lost", "frequency"] == 1
    assert medians["tenure_days"].idxmin() == "new"


@pytest.mark.parametrize("seed", [0, 1])
def test_planted_segments_are_recoverable(seed):
    customers, labels = make_customers(1500, n_segments=4, random_state=seed)
    X = StandardScaler().fit_transform(np.log1p(customers.drop(columns="customer_id")))
    found = KMeans(n_clusters=4, n_init=4, random_state=0).fit_predict(X)
    assert adjusted_rand_score(labels, found) >= 0.9


def test_separation_controls_overlap():
    def recovered(separation: float) -> float:
        customers, labels = make_customers(1000, random_state=0, separation=separation)
        X = StandardScaler().fit_transform(np.log1p(customers.drop(columns="customer_id")))
        return adjusted_rand_score(labels, KMeans(4, n_init=4, random_state=0).fit_predict(X))

    assert recovered(0.3) < recovered(1.0) <= recovered(3.0)


def test_horizon_caps_recency_and_tenure():
    customers, _ = make_customers(500, random_state=0, horizon_days=200)
    assert customers["tenure_days"].max() <= 200


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: make_customers(10, n_segments=7), r"n_segments must be between 1 and 6, got 7"),
        (lambda: make_customers(3, n_segments=4), r"n_customers must be >= 4, got 3"),
        (lambda: make_customers(10.5), r"n_customers must be an integer, got 10.5"),
        (lambda: make_customers(10, separation=0), r"separation must be a positive number"),
        (lambda: make_transactions(10, start="2024-01-01", end="2023-01-01"), r"end must be after start"),
        (lambda: make_transactions(10, end="not a date"), r"end must be a date, got 'not a date'"),
    ],
)
def test_bad_options_are_config_errors(call, match):
    with pytest.raises(ConfigError, match=match):
        call()


# --- make_transactions ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def log() -> pd.DataFrame:
    return make_transactions(400, start="2023-01-01", end="2024-12-31", random_state=5)


def test_make_transactions_columns_and_types(log):
    assert list(log.columns) == TRANSACTION_COLUMNS
    assert pd.api.types.is_datetime64_any_dtype(log["ordered_at"])
    assert pd.api.types.is_integer_dtype(log["quantity"])
    assert (log["quantity"] >= 1).all()
    assert (log["unit_price"] > 0).all()
    assert log["ordered_at"].is_monotonic_increasing
    assert log["ordered_at"].min() >= pd.Timestamp("2023-01-01")
    assert log["ordered_at"].max() < pd.Timestamp("2025-01-01")
    # An order belongs to one customer at one moment.
    per_order = log.groupby("order_id").agg(
        customers=("customer_id", "nunique"), moments=("ordered_at", "nunique")
    )
    assert (per_order == 1).all().all()
    # A product has one price.
    assert (log.groupby("product_id")["unit_price"].nunique() == 1).all()


def test_make_transactions_matches_the_planted_customers(log):
    customers, _ = make_customers(400, random_state=5, horizon_days=730)
    per_customer = log.groupby("customer_id").agg(
        orders=("order_id", "nunique"), first=("ordered_at", "min"), last=("ordered_at", "max")
    ).loc[customers["customer_id"]]
    end = pd.Timestamp("2024-12-31")
    np.testing.assert_array_equal(per_customer["orders"], customers["frequency"])
    np.testing.assert_array_equal(
        (end - per_customer["last"].dt.normalize()).dt.days, customers["recency_days"]
    )
    np.testing.assert_array_equal(
        (end - per_customer["first"].dt.normalize()).dt.days, customers["tenure_days"]
    )
    spend = (log["quantity"] * log["unit_price"]).groupby(log["customer_id"]).sum()
    ratio = spend.loc[customers["customer_id"]].to_numpy() / customers["monetary"].to_numpy()
    assert 0.85 < np.median(ratio) < 1.15


def test_make_transactions_is_reproducible(log):
    again = make_transactions(400, start="2023-01-01", end="2024-12-31", random_state=5)
    pd.testing.assert_frame_equal(log, again)
    other = make_transactions(400, start="2023-01-01", end="2024-12-31", random_state=6)
    assert not log.equals(other)


def test_make_transactions_scales_to_many_rows():
    log = make_transactions(20_000, random_state=0)
    assert len(log) > 250_000
    assert log["order_id"].nunique() == make_customers(20_000, random_state=0)[0]["frequency"].sum()
