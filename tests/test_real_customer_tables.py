"""Customer tables as real exports come: no id column, outcome columns, a value column,
numbers with blank cells, dates written yyyymmdd — each read with no options."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest

from custseg import pipeline, schema
from custseg.cli import main
from custseg.pipeline import SourceSpec


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def planted(n: int = 600, seed: int = 1) -> tuple[pd.DataFrame, np.ndarray]:
    """Three groups apart in tenure and charges; churn depends on the group (60 %, 20 %, 5 %)."""
    rng = np.random.default_rng(seed)
    group = rng.integers(0, 3, n)
    tenure = np.choose(group, [rng.normal(5, 1, n), rng.normal(30, 2, n), rng.normal(60, 2, n)]).clip(1)
    monthly = np.choose(group, [rng.normal(90, 4, n), rng.normal(50, 3, n), rng.normal(25, 2, n)])
    churn = rng.random(n) < np.choose(group, [0.6, 0.2, 0.05])
    frame = pd.DataFrame({
        "tenure": tenure.round(1), "MonthlyCharges": monthly.round(2),
        "TotalCharges": (tenure * monthly).round(2), "Churn": np.where(churn, "Yes", "No"),
    })
    return frame, group


# --- no id column ------------------------------------------------------------------------

def test_a_table_of_numbers_without_ids_segments_with_row_numbers(tmp_path, capsys):
    frame, _ = planted()
    frame = frame.drop(columns=["Churn", "TotalCharges"])
    frame.loc[1] = frame.loc[0]  # two customers with the same answers are still two customers
    source = tmp_path / "spend.csv"
    frame.to_csv(source, index=False)

    code, out, err = run(["inspect", str(source)], capsys)
    assert code == 0, err
    assert "no id column: customers are numbered by row" in out

    code, out, err = run(["segment", str(source), "--out", str(tmp_path / "run"), "--no-report"], capsys)
    assert code == 0, err
    assignments = pd.read_csv(tmp_path / "run" / "assignments.csv")
    assert list(assignments.columns[:3]) == ["row", "segment", "segment_name"]
    assert assignments["row"].tolist() == list(range(1, len(frame) + 1))
    assert pd.read_parquet(tmp_path / "run" / "features.parquet").columns[0] == "row"
    summary = json.loads((tmp_path / "run" / "run.json").read_text())
    assert summary["customer_id"] == "row" and summary["cleaning"]["rows_out"] == len(frame)

    code, _, err = run(["features", str(source), "--out", str(tmp_path / "f.csv")], capsys)
    assert code == 0, err
    written = pd.read_csv(tmp_path / "f.csv")
    assert written.columns[0] == "row" and written["row"].iloc[-1] == len(frame)

    # The report and the exports read the run through the same names.
    code, _, err = run(["report", str(tmp_path / "run")], capsys)
    assert code == 0, err
    code, _, err = run(["export", str(tmp_path / "run")], capsys)
    assert code == 0, err
    crm = pd.read_csv(tmp_path / "run" / "exports" / "crm_import.csv")
    assert crm["Customer ID"].tolist()[:3] == [1, 2, 3]


def test_map_customer_id_still_wins(tmp_path):
    frame, _ = planted(50)
    frame.insert(2, "Client", [f"K{i}" for i in range(50)])
    source = tmp_path / "t.csv"
    frame.to_csv(source, index=False)
    loaded = pipeline.load(SourceSpec(str(source), mapping={"customer_id": "Client"}))
    assert not loaded.column_map.row_ids
    made = pipeline.customer_table(loaded)
    assert made.id_name == "customer_id" and made.features["customer_id"].iloc[0] == "K0"


def test_a_transaction_log_without_customer_ids_is_still_refused(tmp_path, capsys):
    source = tmp_path / "log.csv"
    pd.DataFrame({"InvoiceNo": ["1", "2"], "InvoiceDate": ["2011-01-01", "2011-01-02"],
                  "amount": [3.0, 4.0]}).to_csv(source, index=False)
    code, _, err = run(["features", str(source), "--out", str(tmp_path / "f.csv")], capsys)
    assert code == 2 and "no customer id column found" in err


# --- outcome columns ---------------------------------------------------------------------

@pytest.mark.parametrize(("values", "positive"), [
    (["Yes", "No"], "yes"), ([0, 1], "1"), ([True, False], "true"), (["y", "n"], "y"),
    (["Existing Customer", "Attrited Customer"], "attrited customer"), ([1, 2], None),
    (["a", "b"], None), ([1, 2, 3], None),
])
def test_outcome_values(values, positive):
    assert schema.outcome_positive(values) == positive


@pytest.mark.parametrize("name", ["Churn", "churned", "Attrition_Flag", "Exited", "left", "Response",
                                  "responded", "converted", "subscribed", "AcceptedCmp2", "y"])
def test_outcome_names(name):
    assert schema.is_outcome_name(name)


@pytest.mark.parametrize("name", ["Income", "Year", "yearly_spend", "Recency", "country", "leftover"])
def test_trait_names_are_not_outcomes(name):
    assert not schema.is_outcome_name(name)


def test_a_planted_outcome_is_profiled_not_clustered(tmp_path, capsys):
    frame, group = planted()
    frame.insert(0, "customerID", [f"C{i:04d}" for i in range(len(frame))])
    source = tmp_path / "telco.csv"
    frame.to_csv(source, index=False)
    run_dir = tmp_path / "run"
    code, out, err = run(["segment", str(source), "--out", str(run_dir)], capsys)
    assert code == 0, err
    assert "Outcomes per segment" in out

    summary = json.loads((run_dir / "run.json").read_text())
    assert "Churn" not in summary["feature_columns"] and "Churn" not in summary["run"]["config"]["features"]
    assert summary["outcomes"] == ["Churn"]

    profiles = pd.read_csv(run_dir / "profiles.csv")
    assignments = pd.read_csv(run_dir / "assignments.csv")
    churned = frame.set_index("customerID")["Churn"].eq("Yes").reindex(assignments["customer_id"]).to_numpy()
    overall = churned.mean()
    for row in profiles.itertuples(index=False):
        member = assignments["segment"].to_numpy() == row.segment
        k, n = int(churned[member].sum()), int(member.sum())
        assert row.Churn_rate == pytest.approx(k / n)
        assert row.Churn_lift == pytest.approx(k / n / overall)
        # Wilson score interval, by its formula.
        z, p = 1.959963984540054, k / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        assert (row.Churn_rate_low, row.Churn_rate_high) == pytest.approx((centre - half, centre + half))
    # The planted groups are found, and their churn rates differ as planted.
    assert sorted(profiles["Churn_rate"].round(1)) == pytest.approx([0.0, 0.2, 0.6], abs=0.1)

    html = (run_dir / "report.html").read_text(encoding="utf-8")
    assert html.count('class="outcome">Churn: ') == len(profiles)
    assert "Churn rate" in html  # a column of the profile heatmap


def test_features_can_still_name_an_outcome(tmp_path):
    frame, _ = planted(120)
    source = tmp_path / "t.parquet"
    frame.to_parquet(source)
    loaded = pipeline.load(SourceSpec(str(source)))
    assert loaded.column_map.outcomes == {"Churn": "yes"}
    config = pipeline.SegmentConfig(features=("tenure", "Churn"), n_clusters=3, algorithm="kmeans")
    result = pipeline.run_segmentation(loaded, config=config)
    assert result.feature_columns == ["tenure", "Churn"]
    assert "Churn_rate" in result.profiles.table  # still profiled as an outcome


def test_an_outcome_with_missing_values_counts_the_known(tmp_path):
    frame, _ = planted(90)
    frame["Exited"] = (frame["Churn"] == "Yes").astype("float64")
    frame.loc[:9, "Exited"] = np.nan
    source = tmp_path / "bank.parquet"
    frame.drop(columns="Churn").to_parquet(source)
    made = pipeline.customer_table(pipeline.load(SourceSpec(str(source))))
    assert made.outcomes == ("Exited",)
    assert made.features["Exited"].isna().sum() == 10  # never imputed
    assert not any(note.startswith("'Exited'") for note in made.report.notes)


# --- value column ------------------------------------------------------------------------

def test_a_total_charges_column_is_the_value(tmp_path, capsys):
    frame, _ = planted(300)
    source = tmp_path / "t.csv"
    frame.to_csv(source, index=False)
    code, out, err = run(["segment", str(source), "--out", str(tmp_path / "a"), "--no-report"], capsys)
    assert code == 0, err
    summary = json.loads((tmp_path / "a" / "run.json").read_text())
    assert summary["value_column"] == "TotalCharges" and summary["best_segment"] is not None
    profiles = pd.read_csv(tmp_path / "a" / "profiles.csv")
    assert profiles["value_share"].sum() == pytest.approx(1.0)
    assert "Best segment by value per customer" in out

    code, _, err = run(["segment", str(source), "--out", str(tmp_path / "b"), "--no-report",
                        "--value", "MonthlyCharges"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "b" / "run.json").read_text())["value_column"] == "MonthlyCharges"

    code, _, err = run(["segment", str(source), "--out", str(tmp_path / "c"), "--no-report",
                        "--value", "Charges"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "--value Charges: no such column" in err and "TotalCharges" in err
    assert not (tmp_path / "c").exists()


# --- numbers with blanks, yyyymmdd dates -------------------------------------------------

def test_numbers_with_blank_cells_are_numbers_with_missing_values(tmp_path):
    frame, _ = planted(200)
    text = frame["TotalCharges"].astype(str)
    text.iloc[[3, 50, 120]] = [" ", "", "   "]
    frame["TotalCharges"] = text
    source = tmp_path / "t.csv"
    frame.to_csv(source, index=False)
    made = pipeline.customer_table(pipeline.load(SourceSpec(str(source))))
    assert made.features["TotalCharges"].dtype == "float64"
    assert "'TotalCharges': numbers with 3 blank cells, read as numbers with missing values" in made.report.notes
    median = pd.to_numeric(text, errors="coerce").median()
    assert f"'TotalCharges': 3 missing filled with the median ({median})" in made.report.notes


def test_text_with_a_few_numbers_stays_text(tmp_path):
    frame, _ = planted(200)
    frame["plan"] = np.where(np.arange(200) % 2, "basic", "12")
    source = tmp_path / "t.csv"
    frame.to_csv(source, index=False)
    made = pipeline.customer_table(pipeline.load(SourceSpec(str(source))))
    assert made.features["plan"].dtype == "string"


def test_yyyymmdd_dates_in_a_customer_table(tmp_path):
    frame, _ = planted(100)
    frame["signup_date"] = [19970101 + (i % 28) for i in range(100)]
    source = tmp_path / "t.csv"
    frame.to_csv(source, index=False)
    made = pipeline.customer_table(pipeline.load(SourceSpec(str(source))))
    assert "'signup_date': whole numbers written yyyymmdd, read as dates" in made.report.notes
    table = made.features
    assert "tenure_days" in table and "signup_date" not in table
    assert made.as_of.date().isoformat() == "1997-01-29"
    assert table["tenure_days"].iloc[0] == 28 and table["tenure_days"].iloc[27] == 1


def test_yyyymmdd_dates_in_a_transaction_log(tmp_path):
    source = tmp_path / "log.csv"
    pd.DataFrame({
        "customer_id": ["a", "a", "b"], "order_id": [1, 2, 3],
        "order_date": [19970101, 19970110, 19970105], "amount": [10.0, 5.0, 7.5],
    }).to_csv(source, index=False)
    made = pipeline.customer_table(pipeline.load(SourceSpec(str(source))))
    table = made.features.set_index("customer_id")
    assert made.as_of.date().isoformat() == "1997-01-11"
    assert table.loc["a", "recency_days"] == 1 and table.loc["b", "recency_days"] == 6
    assert table.loc["a", "monetary"] == 15.0


# --- a log without a header --------------------------------------------------------------

def test_a_whitespace_log_without_a_header_is_a_transaction_log(tmp_path, capsys):
    """The CDNOW master file's layout: customer id, yyyymmdd date, CDs bought, dollars."""
    lines = [
        "00001 19970101  1  11.77", "00002 19970112  1  12.00", "00002 19970112  5  77.00",
        "00003 19970102  2  20.76", "00003 19970330  2  20.76", "00003 19970402  2  19.54",
        "00004 19970101  2  29.33", "00004 19970118  2  29.73",
    ]
    source = tmp_path / "CDNOW_master.txt"
    source.write_text("\n".join(f"{line:>28}" for line in lines) + "\n")
    loaded = pipeline.load(SourceSpec(str(source)))
    assert loaded.kind == "transactions"
    assert loaded.column_map.roles == {"customer_id": "column_1", "ordered_at": "column_2",
                                       "quantity": "column_3", "amount": "column_4"}
    assert any(note.startswith("no header: roles read from the values") for note in loaded.notes)
    made = pipeline.customer_table(loaded)
    table = made.features.set_index("customer_id")
    assert made.as_of.date().isoformat() == "1997-04-03"
    assert table.loc["00003", "frequency"] == 3 and table.loc["00003", "monetary"] == pytest.approx(61.06)
    assert table.loc["00003", "recency_days"] == 1 and table.loc["00001", "tenure_days"] == 92

    code, out, err = run(["inspect", str(source)], capsys)
    assert code == 0, err
    assert re.search(r"a\s+transaction\s+log", out) and "no header: roles read from the values" in out
