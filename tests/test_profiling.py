from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from custseg import profiling
from custseg.errors import DataError


def rfm_table():
    # Segment 0: recent, frequent, big spenders; segment 1: long gone one-off buyers.
    return pd.DataFrame({
        "customer_id": [str(i) for i in range(8)],
        "recency_days": [2, 3, 4, 5, 300, 310, 320, 330],
        "frequency": [20, 22, 18, 25, 1, 1, 1, 1],
        "monetary": [5000.0, 6000.0, 5500.0, 7000.0, 50.0, 60.0, 40.0, 50.0],
    })


def test_sizes_values_and_lifts_by_hand():
    table = rfm_table()
    got = profiling.profile(table, [0, 0, 0, 0, 1, 1, 1, 1])
    rows = got.table.set_index("segment")
    assert list(rows["customers"]) == [4, 4]
    assert rows["share"].sum() == pytest.approx(1.0)
    total = table["monetary"].sum()
    assert rows.loc[0, "value_share"] == pytest.approx(23_500 / total)
    assert got.lifts.loc[0, "monetary"] == pytest.approx(5875 / table["monetary"].mean())
    assert got.medians.loc[1, "recency_days"] == 315
    assert (got.best, got.worst) == (0, 1)
    assert got.value_column == "monetary"


def test_names_come_from_the_evidence():
    # Two stand-out customers among twenty: their median is top of every quintile.
    rng = np.random.default_rng(0)
    table = pd.DataFrame({
        "customer_id": [str(i) for i in range(20)],
        "recency_days": [1, 2] + list(rng.integers(30, 400, 18)),
        "frequency": [40, 50] + list(rng.integers(1, 10, 18)),
        "monetary": [20_000.0, 30_000.0] + list(rng.uniform(50, 2000, 18)),
    })
    labels = [0, 0] + [1] * 18
    got = profiling.profile(table, labels)
    assert got.name_of(0) == "Champions"
    spend = 25_000 / table["monetary"].mean()
    assert got.table.set_index("segment").loc[0, "description"] == (
        f"bought 2 days ago, 45 orders, spends {spend:.1f}× the average"
    )
    assert got.name_of(1) in ("Loyal", "Potential Loyalist", "Need Attention", "About to Sleep",
                              "At Risk", "Hibernating", "Lost", "Promising", "New", "Can't Lose Them")


def test_rules_describe_separable_segments_exactly():
    got = profiling.profile(rfm_table(), [0, 0, 0, 0, 1, 1, 1, 1], max_depth=2)
    for row in got.table.itertuples():
        assert (row.rule_precision, row.rule_recall) == (1.0, 1.0), row.rule
        assert any(f in row.rule for f in ("recency_days", "frequency", "monetary"))


def test_repeated_names_are_made_unique():
    table = pd.concat([rfm_table()] * 2, ignore_index=True)
    table["avg_order_value"] = [1.0] * 8 + [9.0] * 8
    labels = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3]
    names = profiling.profile(table, labels).table["name"]
    assert names.is_unique


def test_noise_is_named_outliers_and_never_best_or_worst():
    labels = [0, 0, 0, 0, 1, 1, 1, -1]
    got = profiling.profile(rfm_table(), labels)
    assert got.name_of(-1) == "Outliers"
    assert -1 not in (got.best, got.worst)


def test_customer_table_names_and_spend_like_value():
    table = pd.DataFrame({
        "customer_id": list("abcdef"),
        "Income": [90_000.0, 95_000, 85_000, 20_000, 25_000, 22_000],
        "Kidhome": [0.0, 0, 0, 2, 2, 1],
        "MntWines": [900.0, 800, 700, 10, 20, 30],
        "MntMeat": [300.0, 200, 100, 5, 5, 5],
        "Education": ["PhD", "PhD", "Master", "Basic", "Basic", "Basic"],
    })
    got = profiling.profile(table, [0, 0, 0, 1, 1, 1])
    assert got.value_column == "total of MntWines, MntMeat"
    assert got.name_of(0).startswith("High ") and got.name_of(1).startswith("Low ")
    assert got.best == 0


def test_rfm_mix_rows_sum_to_one():
    segments = pd.Series(["Champions"] * 3 + ["Loyal"] + ["Lost"] * 4)
    got = profiling.profile(rfm_table(), [0, 0, 0, 0, 1, 1, 1, 1], rfm_segments=segments)
    assert got.rfm_mix.loc[0, "Champions"] == 0.75
    assert np.allclose(got.rfm_mix.sum(axis=1), 1.0)


def test_input_is_not_modified_and_lengths_must_match():
    table = rfm_table()
    before = table.copy()
    profiling.profile(table, [0, 1] * 4)
    pd.testing.assert_frame_equal(table, before)
    with pytest.raises(DataError, match="3 labels for 8 customers"):
        profiling.profile(table, [0, 1, 0])
