from __future__ import annotations

from datetime import datetime

import pandas as pd
import pytest

from custseg import cli, pipeline
from custseg.errors import DataError
from custseg.pipeline import SourceSpec


@pytest.fixture(scope="module")
def campaign(marketing_campaign):
    return pipeline.customer_table(pipeline.load(SourceSpec(str(marketing_campaign))))


def test_marketing_campaign_is_a_customer_table(campaign):
    assert campaign.kind == "customers"
    table = campaign.features
    assert len(table) == 2240 and table["customer_id"].is_unique
    assert campaign.report.rows_in == campaign.report.rows_out == 2240


def test_single_valued_and_id_columns_are_not_features(campaign):
    columns = set(campaign.features.columns)
    assert not {"Z_CostContact", "Z_Revenue", "ID"} & columns
    assert any("Z_CostContact" in note and "single value" in note for note in campaign.report.notes)


def test_dates_become_durations_and_birth_years_ages(campaign, marketing_campaign):
    raw = pd.read_csv(marketing_campaign, sep="\t")
    table = campaign.features.set_index("customer_id")
    assert campaign.as_of == datetime(2014, 6, 30)  # the day after the last Dt_Customer
    # Customer 5524 joined on 04-09-2012 (dd-mm-yyyy): 664 days before 2014-06-30.
    assert table.loc["5524", "tenure_days"] == 664
    assert table.loc["5524", "age"] == 2014 - 1957
    assert table["tenure_days"].min() == 1 and table["tenure_days"].max() == 700
    assert "Dt_Customer" not in table.columns and "Year_Birth" not in table.columns
    assert len(raw) == len(table)


def test_missing_income_is_imputed_and_reported(campaign, marketing_campaign):
    raw = pd.read_csv(marketing_campaign, sep="\t")
    assert campaign.features["Income"].notna().all()
    note = next(n for n in campaign.report.notes if n.startswith("'Income'"))
    assert f"24 missing filled with the median ({raw['Income'].median()})" in note


def test_categoricals_stay_text(campaign):
    assert campaign.features["Education"].dtype == "string"
    assert campaign.features["Income"].dtype == "float64"


def test_mall_customers(mall_customers):
    made = pipeline.customer_table(pipeline.load(SourceSpec(str(mall_customers))))
    table = made.features
    assert list(table.columns) == ["customer_id", "Genre", "Age", "Annual Income (k$)", "Spending Score (1-100)"]
    assert table["customer_id"].iloc[0] == "0001"  # ids keep their leading zeros
    assert table["Genre"].value_counts().to_dict() == {"Female": 112, "Male": 88}
    assert table["Age"].mean() == pytest.approx(38.85)


def test_duplicate_and_missing_ids_are_counted(tmp_path):
    path = tmp_path / "customers.csv"
    path.write_text("customer_id,age,city\n1,30,Oslo\n1,30,Oslo\n1,31,Bergen\n,40,Oslo\n2,50,Oslo\n", encoding="utf-8")
    made = pipeline.customer_table(pipeline.load(SourceSpec(str(path))))
    counts = {r.rule: r.rows for r in made.report.dropped}
    assert counts == {"missing_customer_id": 1, "duplicate_row": 1, "duplicate_customer_id": 1}
    assert list(made.features["customer_id"]) == ["1", "2"]
    assert list(made.features["age"]) == [30.0, 50.0]


@pytest.mark.parametrize(
    "text, message",
    [
        ("customer_id,plan\n1,gold\n2,gold\n3,gold\n",
         r"customers\.csv: no column describes the customers besides the id 'customer_id' "
         r"\('plan' has a single value\); a customer table needs"),
        ("customer_id,age\n,30\n ,40\n",
         r"customers\.csv: no customer left after cleaning \(2 rows in, 2 without a customer id in "
         r"'customer_id'\); check that column"),
    ],
    ids=["only-ids", "no-ids"],
)
def test_a_table_with_nothing_to_segment_is_refused_with_the_reason(text, message, tmp_path):
    path = tmp_path / "customers.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        pipeline.customer_table(pipeline.load(SourceSpec(str(path), kind="customers")))


def test_a_small_table_is_segmented_with_the_k_it_allows(tmp_path):
    """Four customers: k is chosen among 2 and 3, not refused for the default 2..15."""
    path = tmp_path / "customers.csv"
    path.write_text("customer_id,spend,visits\n1,10,1\n2,11,1\n3,90,9\n4,95,8\n", encoding="utf-8")
    result = pipeline.run_segmentation(pipeline.load(SourceSpec(str(path), kind="customers")))
    assert set(result.selection.leaderboard["n_clusters"]) <= {2, 3}
    assert result.n_clusters in (2, 3) and len(result.assignments) == 4
    two = tmp_path / "two.csv"
    two.write_text("customer_id,spend\n1,10\n2,90\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"two\.csv: 2 customer\(s\) after cleaning; segments need at least 3"):
        pipeline.run_segmentation(pipeline.load(SourceSpec(str(two), kind="customers")))


def test_as_of_before_the_latest_date_of_a_customer_table_is_refused(marketing_campaign):
    loaded = pipeline.load(SourceSpec(str(marketing_campaign)))
    with pytest.raises(DataError, match=r"marketing_campaign\.csv: as_of 2012-01-01 is before the latest date in the "
                                        r"table \(2014-06-29 in 'Dt_Customer'\), so some durations would be negative") as caught:
        pipeline.customer_table(loaded, as_of=datetime(2012, 1, 1))
    assert caught.value.render(cli.FLAGS) == (
        f"{marketing_campaign}: --as-of 2012-01-01 is before the latest date in the table (2014-06-29 in "
        "'Dt_Customer'), so some durations would be negative; a customer table is not a snapshot — give a date "
        "on or after it")
    later = pipeline.customer_table(loaded, as_of=datetime(2014, 7, 1))
    assert later.features["tenure_days"].min() == 2  # joined 2014-06-29
