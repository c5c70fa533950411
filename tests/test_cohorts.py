from __future__ import annotations

import math

import pandas as pd
import pytest

from custseg import cli, pipeline
from custseg.errors import SchemaError
from custseg.pipeline import SourceSpec


def cohorts_of(frame, tmp_path, **kwargs):
    path = tmp_path / "log.parquet"
    frame.to_parquet(path, index=False)
    return pipeline.cohort_table(pipeline.load(SourceSpec(str(path))), **kwargs)


def test_retention_by_hand(tmp_path):
    frame = pd.DataFrame({
        "InvoiceNo": ["1", "2", "3", "4", "5", "C6"],
        "CustomerID": [1, 1, 2, 2, 3, 3],
        "InvoiceDate": pd.to_datetime(["2024-01-05", "2024-03-02", "2024-01-20", "2024-02-01", "2024-02-10", "2024-03-10"]),
        "Quantity": [1, 1, 1, 1, 1, -1],
        "UnitPrice": [1.0] * 6,
        "Country": ["UK", "UK", "FR", "FR", "UK", "UK"],
    })
    result = cohorts_of(frame, tmp_path)
    matrix = result.matrix.set_index("cohort")
    assert list(matrix.index) == ["2024-01", "2024-02"]
    assert list(matrix["customers"]) == [2, 1]
    jan = matrix.loc["2024-01"]
    assert (jan["month_0"], jan["month_1"], jan["month_2"]) == (1.0, 0.5, 0.5)
    feb = matrix.loc["2024-02"]
    # A cancellation is not activity; March is inside the data, so 0 — not unknown.
    assert (feb["month_0"], feb["month_1"]) == (1.0, 0.0)
    assert math.isnan(feb["month_2"])  # no month 2 for February yet
    counts = result.counts
    assert counts.loc[(counts["cohort"] == "2024-01") & (counts["period"] == 1), "active"].item() == 1


def test_retention_by_country(tmp_path):
    frame = pd.DataFrame({
        "InvoiceNo": ["1", "2", "3"],
        "CustomerID": [1, 2, 2],
        "InvoiceDate": pd.to_datetime(["2024-01-05", "2024-01-06", "2024-02-06"]),
        "Quantity": [1, 1, 1],
        "UnitPrice": [1.0] * 3,
        "Country": ["UK", "FR", "FR"],
    })
    matrix = cohorts_of(frame, tmp_path, by="country").matrix.set_index(["cohort", "country"])
    assert matrix.loc[("2024-01", "FR"), "month_1"] == 1.0
    assert matrix.loc[("2024-01", "UK"), "month_1"] == 0.0


def test_by_country_needs_a_country_column(tmp_path):
    frame = pd.DataFrame({
        "InvoiceNo": ["1"], "CustomerID": [1], "InvoiceDate": pd.to_datetime(["2024-01-05"]),
        "Quantity": [1], "UnitPrice": [1.0],
    })
    with pytest.raises(SchemaError, match="no country column; name it with mapping country=COLUMN$") as caught:
        cohorts_of(frame, tmp_path, by="country")
    assert caught.value.param == "mapping"
    assert caught.value.render(cli.FLAGS).endswith("no country column; name it with --map country=COLUMN")


def test_online_retail_cohorts(online_retail):
    result = pipeline.cohort_table(pipeline.load(SourceSpec(str(online_retail))))
    matrix = result.matrix.set_index("cohort")
    assert len(matrix) == 13  # 2010-12 … 2011-12
    assert matrix["customers"].sum() == 4338  # every customer in exactly one cohort
    assert (matrix["month_0"] == 1.0).all()
    assert matrix.loc["2010-12", "customers"] == 885
    assert matrix.loc["2010-12", "month_1"] == pytest.approx(324 / 885)
    shares = matrix.filter(like="month_")
    known = shares.stack().dropna()
    assert ((known >= 0) & (known <= 1)).all()
    # The last cohort has only its first month; the first cohort has all 13.
    assert shares.loc["2011-12"].notna().sum() == 1
    assert shares.loc["2010-12"].notna().sum() == 13
