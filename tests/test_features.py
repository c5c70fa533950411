from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from custseg import cleaning, features, pipeline, sources
from custseg.pipeline import SourceSpec


def features_of(frame: pd.DataFrame, tmp_path, *, name="log.parquet", as_of=None, **policy):
    path = tmp_path / name
    if name.endswith(".csv"):
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    loaded = pipeline.load(SourceSpec(str(path)))
    return pipeline.customer_table(loaded, policy=cleaning.Policy(**policy), as_of=as_of)


def log(*rows):
    return pd.DataFrame(
        rows, columns=["InvoiceNo", "StockCode", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID", "Country"]
    ).astype({"InvoiceDate": "datetime64[us]"})


# --- the Online Retail oracle --------------------------------------------------------------

@pytest.fixture(scope="module")
def retail(online_retail):
    loaded = pipeline.load(SourceSpec(str(online_retail)))
    return pipeline.customer_table(loaded)


def test_online_retail_oracle(retail):
    table = retail.features
    assert len(table) == 4338
    assert round(table["monetary"].sum(), 2) == 8_887_208.89
    assert table["frequency"].sum() == 18_532
    assert table["customer_id"].is_unique
    assert retail.as_of == datetime(2011, 12, 10)


def test_online_retail_cleaning_report(retail):
    counts = {r.rule: r.rows for r in retail.report.dropped}
    assert retail.report.rows_in == 541_909
    assert counts["missing_customer_id"] == 135_080
    assert counts["duplicate_row"] == 5_225
    assert counts["cancellation"] == 8_872
    assert counts["non_positive_price"] == 40
    assert retail.report.rows_out == 392_692
    assert retail.report.rows_in == retail.report.rows_out + retail.report.rows_dropped


def test_rejects_match_the_report_row_for_row(retail):
    rejects = retail.clean.rejects().df()
    by_rule = rejects["rejected_by"].value_counts().to_dict()
    expected = {r.rule: r.rows for r in retail.report.dropped if r.rows}
    assert by_rule == expected
    assert rejects["row"].is_unique
    # The first rejected row of the file is a known cancellation.
    first = rejects.loc[rejects["rejected_by"] == "cancellation"].iloc[0]
    assert first["InvoiceNo"] == "C536379" and first["row"] == 142


def test_standalone_report_equals_report_from_features(retail):
    assert retail.clean.report() == retail.report


def test_source_is_not_modified(online_retail):
    before = online_retail.stat().st_mtime_ns, online_retail.stat().st_size
    pipeline.customer_table(pipeline.load(SourceSpec(str(online_retail))))
    assert (online_retail.stat().st_mtime_ns, online_retail.stat().st_size) == before


@pytest.mark.parametrize("parts", [2, 5])
def test_customer_partitions_give_the_same_table_and_report(online_retail, retail, monkeypatch, parts):
    # A log too large for the memory budget is summarised one partition of customers at a time.
    monkeypatch.setattr(features, "partitions", lambda rows, columns, budget: parts)
    made = pipeline.customer_table(pipeline.load(SourceSpec(str(online_retail))))
    assert made.report == retail.report
    pd.testing.assert_frame_equal(made.features, retail.features)


def test_partitions_follow_rows_columns_and_budget():
    assert features.partitions(0, 7, 10**9) == 1
    assert features.partitions(1_000, 7, 10**9) == 1
    one_budget = 10**9 // (12 * 7 + 16)  # rows of 7 columns that fit in 1 GB
    assert features.partitions(one_budget, 7, 10**9) == 1
    assert features.partitions(one_budget + 1, 7, 10**9) == 2
    assert features.partitions(40_000_000, 7, 10**9) == 4
    assert features.partitions(40_000_000, 7, 4 * 10**9) == 1
    assert features.partitions(40_000_000, 14, 10**9) > features.partitions(40_000_000, 7, 10**9)


def test_parquet_metadata_counts_the_rows_with_an_id(tmp_path):
    frame = log(*[("1", "A", 1, "2011-01-01", 1.0, None if i % 3 == 0 else 10 + i % 5, "UK") for i in range(30_000)])
    frame.to_parquet(tmp_path / "log.parquet", index=False, row_group_size=7_000)  # several row groups
    frame.to_csv(tmp_path / "log.csv", index=False)
    table = sources.read(str(tmp_path / "log.parquet"))
    assert table.non_null_rows("CustomerID") == 20_000 == frame["CustomerID"].notna().sum()
    assert table.non_null_rows("Country") == 30_000
    assert table.non_null_rows("no such column") is None
    assert sources.read(str(tmp_path / "log.csv")).non_null_rows("CustomerID") is None


@pytest.mark.parametrize("budget, scanned", [(10**9, False), (10**5, True)])
def test_parquet_partitions_are_decided_from_metadata_unless_it_is_not_enough(tmp_path, monkeypatch, budget, scanned):
    # Rows with a customer id bound the rows to deduplicate: when the bound fits one partition,
    # no query counts them; when it does not, the count decides (and it gives the same table).
    frame = log(*[(f"{i // 4}", "A", 1 + i % 2, "2011-01-01", 1.0, None if i % 3 == 0 else 10 + i % 5, "UK")
                  for i in range(3_000)])
    monkeypatch.setattr(features, "memory_budget", lambda con: budget)
    made = features_of(frame, tmp_path)
    assert (made.clean._pre_counts is not None) is scanned
    assert made.report.rows_in == 3_000
    assert {r.rule: r.rows for r in made.report.dropped}["missing_customer_id"] == 1_000
    monkeypatch.setattr(features, "memory_budget", lambda con: 10**9 if scanned else 10**5)
    other = features_of(frame, tmp_path, name="again.parquet")
    assert other.report.rows_out == made.report.rows_out
    pd.testing.assert_frame_equal(other.features, made.features)


def test_memory_budget_reads_the_connection_limit():
    assert sources.memory_budget(sources.connect(memory_limit="2GB")) == pytest.approx(2 * 10**9, rel=0.1)
    assert sources.memory_budget(sources.connect(memory_limit="500MB")) == pytest.approx(500 * 10**6, rel=0.1)


# --- exact features on hand-made logs ------------------------------------------------------

def test_features_by_hand(tmp_path):
    frame = log(
        ("1", "A", 2, "2024-01-01 10:00", 5.0, 1, "UK"),
        ("1", "B", 1, "2024-01-01 10:00", 10.0, 1, "UK"),
        ("2", "A", 1, "2024-01-11 10:00", 5.0, 1, "France"),
        ("3", "C", 4, "2024-01-31 23:00", 2.5, 1, "UK"),
        ("4", "A", 1, "2024-01-20 08:00", 7.0, 2, "Spain"),
    )
    made = features_of(frame, tmp_path)
    got = made.features.set_index("customer_id")
    assert made.as_of == datetime(2024, 2, 1)
    one = got.loc["1"]
    assert one["frequency"] == 3
    assert one["monetary"] == pytest.approx(35.0)
    assert one["avg_order_value"] == pytest.approx(35 / 3)
    # 23:00 the evening before as_of is 0 whole days ago; the first order 30 days and 14 hours.
    assert one["recency_days"] == 0
    assert one["tenure_days"] == 30
    assert one["avg_days_between_orders"] == pytest.approx((30 + 13 / 24) / 2)
    assert one["n_products"] == 3
    assert one["country"] == "UK"
    two = got.loc["2"]
    assert (two["frequency"], two["recency_days"], two["tenure_days"]) == (1, 11, 11)
    assert pd.isna(two["avg_days_between_orders"])


def test_country_ties_go_to_the_first_name(tmp_path):
    # Two rows in each of two countries: the table must not depend on arrival order.
    rows = [("1", "A", 1, "2024-01-01 10:00", 1.0, 7, "Spain"), ("2", "A", 1, "2024-01-02 10:00", 1.0, 7, "Belgium"),
            ("3", "A", 1, "2024-01-03 10:00", 1.0, 7, "Spain"), ("4", "A", 1, "2024-01-04 10:00", 1.0, 7, "Belgium"),
            ("5", "A", 1, "2024-01-05 10:00", 1.0, 8, "Spain")]
    for order in (rows, rows[::-1]):
        got = features_of(log(*order), tmp_path).features.set_index("customer_id")["country"]
        assert got.to_dict() == {"7": "Belgium", "8": "Spain"}


def test_returns_net_reduce_spend_but_are_not_orders(tmp_path):
    frame = log(
        ("1", "A", 4, "2024-01-01 10:00", 5.0, 1, "UK"),
        ("C2", "A", -1, "2024-01-05 10:00", 5.0, 1, "UK"),
        ("3", "A", 2, "2024-01-10 10:00", 5.0, 1, "UK"),
    )
    dropped = features_of(frame, tmp_path).features.iloc[0]
    netted = features_of(frame, tmp_path, returns="net").features.iloc[0]
    assert (dropped["frequency"], dropped["monetary"]) == (2, 30.0)
    assert (netted["frequency"], netted["monetary"]) == (2, 25.0)


def test_as_of_takes_a_snapshot(tmp_path):
    frame = log(
        ("1", "A", 1, "2024-01-01 10:00", 5.0, 1, "UK"),
        ("2", "A", 1, "2024-03-01 10:00", 5.0, 1, "UK"),
        ("3", "A", 1, "2024-03-01 10:00", 5.0, 2, "UK"),
    )
    made = features_of(frame, tmp_path, as_of=datetime(2024, 2, 1))
    assert list(made.features["customer_id"]) == ["1"]
    row = made.features.iloc[0]
    assert (row["frequency"], row["recency_days"], row["monetary"]) == (1, 30, 5.0)


def test_amount_only_log_without_order_ids(tmp_path):
    frame = pd.DataFrame({
        "customer_id": ["a", "a", "b"],
        "date": pd.to_datetime(["2024-01-01", "2024-01-03", "2024-01-02"]),
        "amount": [10.0, 20.0, 5.0],
    })
    table = features_of(frame, tmp_path).features.set_index("customer_id")
    assert table.loc["a", "frequency"] == 2
    assert table.loc["a", "monetary"] == 30.0
    assert "n_products" not in table.columns


def test_csv_and_parquet_give_the_same_features(online_retail, tmp_path):
    frame = pd.read_parquet(online_retail).head(20_000)
    from_parquet = features_of(frame, tmp_path).features
    from_csv = features_of(frame, tmp_path, name="log.csv").features
    pd.testing.assert_frame_equal(
        from_parquet.drop(columns=["first_order_at", "last_order_at"]),
        from_csv.drop(columns=["first_order_at", "last_order_at"]),
        check_dtype=False,
    )


# --- invariants ----------------------------------------------------------------------------

rows = st.lists(
    st.tuples(
        st.integers(1, 6),                     # customer
        st.integers(1, 12),                    # order
        st.integers(-3, 5),                    # quantity
        st.sampled_from([0.0, 1.5, 2.0, 10.0]),  # price
        st.integers(0, 60 * 24 * 90),          # minutes after the start
    ),
    min_size=1, max_size=40,
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=rows)
def test_feature_invariants(rows, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prop")
    start = pd.Timestamp("2024-01-01")
    frame = pd.DataFrame({
        "InvoiceNo": [f"{o}" for _, o, _, _, _ in rows],
        "CustomerID": [c for c, *_ in rows],
        "Quantity": [q for _, _, q, _, _ in rows],
        "UnitPrice": [p for *_, p, _ in rows],
        "InvoiceDate": [start + pd.Timedelta(minutes=m) for *_, m in rows],
    })
    kept = frame[(frame["Quantity"] >= 0) & (frame["UnitPrice"] > 0)].drop_duplicates()
    try:
        made = features_of(frame, tmp)
    except Exception as exc:  # no customer kept: a clear DataError, nothing else
        from custseg.errors import DataError

        assert isinstance(exc, DataError) and kept.empty
        return
    table = made.features
    assert table["customer_id"].is_unique
    assert set(table["customer_id"]) == {str(c) for c in kept["CustomerID"]}
    assert (table["recency_days"] >= 0).all()
    assert (table["recency_days"] <= table["tenure_days"]).all()
    assert (table["frequency"] >= 1).all()
    assert table["monetary"].sum() == pytest.approx((kept["Quantity"] * kept["UnitPrice"]).sum())
    assert np.allclose(table["avg_order_value"] * table["frequency"], table["monetary"])


def test_report_counts_every_copy_once_with_bad_values_dropped(tmp_path):
    # Copies of rows of every kind: each copy is counted once, under the first rule it meets,
    # and the report agrees with the rejects listing row for row.
    rows = [
        ("1", "A", "2", "2024-01-01 10:00", "5.0", "1", "UK"),
        ("1", "A", "2", "2024-01-01 10:00", "5.0", "1", "UK"),       # duplicate of a kept row
        ("2", "A", "1", "not a date", "5.0", "1", "UK"),             # unparseable date
        ("2", "A", "1", "not a date", "5.0", "1", "UK"),             # ... twice: both unparseable
        ("3", "A", "1", "2024-01-02 10:00", "lots", "2", "UK"),      # non-numeric price
        ("C4", "A", "-1", "2024-01-03 10:00", "5.0", "2", "UK"),     # cancellation
        ("C4", "A", "-1", "2024-01-03 10:00", "5.0", "2", "UK"),     # duplicate, then cancellation
        ("5", "B", "1", "2024-01-04 10:00", "0", "2", "UK"),         # non-positive price
        ("6", "B", "1", "2024-01-05 10:00", "3.0", "", "UK"),        # no customer id
        ("6", "B", "1", "2024-01-05 10:00", "3.0", "", "UK"),        # ... twice: both missing
        ("7", "C", "1", "2024-01-06 10:00", "3.0", "2", "France"),
    ]
    path = tmp_path / "log.csv"
    pd.DataFrame(rows, columns=["InvoiceNo", "StockCode", "Quantity", "InvoiceDate", "UnitPrice",
                                "CustomerID", "Country"]).to_csv(path, index=False)
    loaded = pipeline.load(SourceSpec(str(path)))
    made = pipeline.customer_table(loaded, policy=cleaning.Policy(bad_values="drop", date_format="%Y-%m-%d %H:%M"))
    counts = {r.rule: r.rows for r in made.report.dropped if r.rows}
    assert counts == {"missing_customer_id": 2, "unparseable_date": 2, "non_numeric_value": 1,
                      "duplicate_row": 2, "cancellation": 1, "non_positive_price": 1}
    assert (made.report.rows_in, made.report.rows_out) == (11, 2)
    assert made.clean.rejects().df()["rejected_by"].value_counts().to_dict() == counts
    assert made.clean.report() == made.report
    assert made.features.set_index("customer_id")["monetary"].to_dict() == {"1": 10.0, "2": 3.0}


# --- the table stays in the engine ---------------------------------------------------------

def test_customer_ids_become_text_once_per_customer(tmp_path):
    # A float id column (ids with gaps, as pandas writes them) gives '17850', not '17850.0';
    # a column with a fractional id keeps it as written.
    whole = log(("1", "A", 1, "2024-01-01 10:00", 5.0, 17850.0, "UK"),
                ("2", "A", 1, "2024-01-02 10:00", 5.0, np.nan, "UK"),
                ("3", "A", 1, "2024-01-03 10:00", 5.0, 12.0, "UK"))
    made = features_of(whole, tmp_path)
    assert made.features["customer_id"].tolist() == ["12", "17850"]
    assert str(made.features["customer_id"].dtype) == "string"
    fractional = log(("1", "A", 1, "2024-01-01 10:00", 5.0, 1.5, "UK"),
                     ("3", "A", 1, "2024-01-03 10:00", 5.0, 12.0, "UK"))
    assert features_of(fractional, tmp_path, name="frac.parquet").features["customer_id"].tolist() == ["1.5", "12.0"]


def test_shape_without_a_dataframe(retail):
    assert retail.shape == retail.features.shape == (4_338, 11)


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".xlsx"])
def test_engine_writes_what_pandas_writes(retail, tmp_path, suffix):
    """The feature table written by DuckDB (no DataFrame) reads back as the DataFrame would."""
    from custseg import outputs

    by_engine = outputs.write_table(retail.table, tmp_path / f"engine{suffix}")
    by_pandas = outputs.write_table(retail.features, tmp_path / f"pandas{suffix}")
    read = {".csv": pd.read_csv, ".parquet": pd.read_parquet,
            ".xlsx": lambda path: pd.read_excel(path, engine="calamine")}[suffix]
    engine, frame = read(by_engine), read(by_pandas)
    pd.testing.assert_frame_equal(engine, frame, check_dtype=suffix != ".parquet")
    if suffix == ".csv":  # the same text, byte for byte
        assert by_engine.read_bytes() == by_pandas.read_bytes()


def test_features_command_does_not_load_pandas(online_retail, tmp_path):
    """`custseg features` on a file runs in the engine: pandas, numpy and pyarrow (a second
    of start-up on a small machine) are never imported."""
    import subprocess
    import sys

    csv = tmp_path / "orders.csv"
    pd.read_parquet(online_retail).head(2_000).to_csv(csv, index=False)
    for source in (online_retail, csv):
        script = (
            "import sys; from custseg import cli; "
            f"code = cli.main(['features', {str(source)!r}, '--out', {str(tmp_path / 'f.parquet')!r}, "
            f"'--rejects', {str(tmp_path / 'r.csv')!r}]); "
            "print(code, sorted({m.split('.')[0] for m in sys.modules} & {'pandas', 'numpy', 'pyarrow'}))"
        )
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
        assert done.stdout.splitlines()[-1] == "0 []", (source, done.stdout, done.stderr)


def test_as_of_with_a_time_zone_is_this_machines_local_time(online_retail, marketing_campaign):
    """An --as-of with an offset is the same instant in local time (the data's dates are
    compared in the machine's time zone); it used to stop with a pandas TypeError."""
    from datetime import timedelta, timezone

    aware = datetime(2011, 12, 9, 12, 30, tzinfo=timezone(timedelta(hours=1)))
    local = aware.astimezone().replace(tzinfo=None)
    loaded = pipeline.load(SourceSpec(str(online_retail)))
    with_offset, as_local = (pipeline.customer_table(loaded, as_of=when) for when in (aware, local))
    assert with_offset.as_of == as_local.as_of == local
    pd.testing.assert_frame_equal(with_offset.features, as_local.features)
    customers = pipeline.customer_table(pipeline.load(SourceSpec(str(marketing_campaign))),
                                        as_of=datetime(2015, 1, 1, tzinfo=timezone.utc))
    assert customers.as_of == datetime(2015, 1, 1, tzinfo=timezone.utc).astimezone().replace(tzinfo=None)
