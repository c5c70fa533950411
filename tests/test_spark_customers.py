"""A customer table cleaned and segmented on Spark (custseg.engines.spark_customers,
custseg.pipeline.on_spark): the local cleaning's answers, and a complete run folder.

The reference is the local path: the same file read by DuckDB and cleaned by
custseg.cleaning.clean_customers.  The CRM-shaped table is the Customer Personality table
(2,240 customers) with dirt added: rows without an id, exact copies, and repeated ids (one of
them before the customer's original row, so that the order of the source decides).  Everything
is compared exactly but the medians that fill gaps, which Spark approximates
(percentile_approx): there the Spark median must lie between the two middle values.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from custseg import cleaning, cli, pipeline
from custseg.errors import DataError
from custseg.pipeline import SourceSpec
from custseg.settings import Settings

pytest.importorskip("pyspark")

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::ResourceWarning")]  # py4j's sockets

SAMPLE = 500  # customers profiled in the end-to-end run
CHANGED = "99999"  # the Income of customer 5524's first row, which comes before its original row


@pytest.fixture(scope="module")
def crm(marketing_campaign, tmp_path_factory):
    """The Customer Personality table with 3 rows without an id, 5 exact copies and 5 later
    rows of a repeated id (the original row of 5524, behind a changed one, and 4 changed rows)."""
    lines = marketing_campaign.read_text(encoding="utf-8").splitlines()
    header, rows = lines[0], lines[1:]
    first = rows[0].split("\t")
    assert first[0] == "5524" and header.split("\t")[4] == "Income"
    first[4] = CHANGED
    no_id = ["\t".join(["", *r.split("\t")[1:]]) for r in rows[100:103]]
    changed = []
    for r in rows[10:14]:
        cells = r.split("\t")
        cells[8] = str(int(cells[8]) + 1)  # Recency
        changed.append("\t".join(cells))
    path = tmp_path_factory.mktemp("crm") / "crm.tsv"
    path.write_text("\n".join([header, "\t".join(first), *rows, *rows[:5], *no_id, *changed]) + "\n",
                    encoding="utf-8")
    return path


def _spark_loaded(spark, path, **spec):
    return pipeline.load(SourceSpec(str(path), delimiter="\t", **spec), settings=Settings(engine="spark"))


@pytest.fixture(scope="module")
def both(spark, crm):
    """The local cleaning (DuckDB's reading, pandas' rules) and the Spark one of ``crm``."""
    from custseg.engines import spark_customers

    local_loaded = pipeline.load(SourceSpec(str(crm)))
    local = cleaning.clean_customers(local_loaded.table, local_loaded.column_map)
    loaded = _spark_loaded(spark, crm)
    assert loaded.kind == local_loaded.kind == "customers"
    assert loaded.column_map.outcomes == local_loaded.column_map.outcomes
    made = spark_customers.clean_customers(loaded.table, loaded.column_map)
    ours = _local(made.features)
    made.features.unpersist()
    return local, made, ours


def _local(frame) -> pd.DataFrame:
    """A Spark DataFrame brought here (through Arrow, as the engine brings tables)."""
    from custseg.engines.spark import SparkRelation

    return SparkRelation(frame).df()


def _by_id(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values("customer_id").reset_index(drop=True)


def test_the_report_counts_every_rule_as_locally(both):
    local, made, _ = both
    counts = {r.rule: r.rows for r in made.report.dropped}
    assert counts == {r.rule: r.rows for r in local.report.dropped}
    assert counts == {"missing_customer_id": 3, "duplicate_row": 5, "duplicate_customer_id": 5}
    assert (made.report.rows_in, made.report.rows_out, made.customers) == (2253, 2240, 2240)
    assert (local.report.rows_in, local.report.rows_out) == (2253, 2240)


def test_the_columns_are_decided_as_locally(both):
    local, made, ours = both
    assert made.dropped_columns == local.dropped_columns == {"Z_CostContact": "has a single value",
                                                             "Z_Revenue": "has a single value"}
    assert list(ours.columns) == list(local.features.columns)
    assert {"tenure_days", "age"} <= set(ours.columns) and "ID" not in ours.columns
    assert made.as_of == local.as_of == pd.Timestamp("2014-06-30").to_pydatetime()
    text = [c for c in ours.columns if not pd.api.types.is_numeric_dtype(ours[c])]
    assert text == [c for c in local.features.columns if local.features[c].dtype == "string"]
    assert text == ["customer_id", "Education", "Marital_Status"]
    # The notes are the same words, the median's value aside (see the imputation test).
    median_note = "'Income': 24 missing filled with the median"
    strip = [n.split(" (")[0] if n.startswith(median_note) else n for n in made.report.notes]
    assert strip == [n.split(" (")[0] if n.startswith(median_note) else n for n in local.report.notes]


def test_the_kept_customers_and_their_values_are_the_local_ones(both):
    local, made, ours = both
    theirs = local.features
    assert ours["customer_id"].tolist() == theirs["customer_id"].tolist()  # in the source's order, as locally
    assert ours["customer_id"].is_unique and len(ours) == 2240
    # The first row of an id is kept: 5524's changed income, not its original row's.
    assert ours.set_index("customer_id").loc["5524", "Income"] == float(CHANGED)
    imputed = theirs["Income"] != ours["Income"]
    assert imputed.sum() == 24  # only the filled gaps differ
    pd.testing.assert_frame_equal(ours.loc[~imputed].astype(theirs.dtypes.to_dict()), theirs.loc[~imputed],
                                  check_exact=True)


def test_the_gaps_are_filled_with_a_median_within_the_middle_values(both, crm):
    local, made, ours = both
    assert made.imputed[["column", "missing", "method"]].equals(local.imputed[["column", "missing", "method"]])
    theirs = float(local.imputed.loc[0, "value"])
    spark_median = float(made.imputed.loc[0, "value"])
    raw = pd.read_csv(crm, sep="\t").dropna(subset=["ID"]).drop_duplicates().drop_duplicates("ID")
    values = np.sort(raw["Income"].dropna().to_numpy())
    low, high = values[(len(values) - 1) // 2], values[len(values) // 2]
    assert theirs == (low + high) / 2  # pandas' median: the mean of the two middle values
    assert low <= spark_median <= high and abs(spark_median - theirs) <= (high - low) / 2
    assert (spark_median, theirs) == (51373.0, 51381.5)  # as the module docstring says
    filled = ours.loc[ours["customer_id"].isin(local.features.loc[local.features["Income"] == theirs,
                                                                  "customer_id"]), "Income"]
    assert (filled == spark_median).all() and len(filled) == 24


def test_a_table_without_ids_with_contacts_flags_and_yyyymmdd_dates(spark, tmp_path):
    """Customers numbered by row, an email kept apart, true/false read as flags, yyyymmdd
    dates, free text and a missing category: the local answers."""
    from custseg.engines import spark_customers

    rng = np.random.default_rng(1)
    n = 80
    frame = pd.DataFrame({
        "email": [f"c{i}@example.com" for i in range(n)],
        "signup_date": [int(f"2020{1 + i % 12:02d}{1 + i % 28:02d}") for i in range(n)],
        "spend": rng.integers(1, 500, n),
        "vip": rng.choice(["true", "false"], n),
        "plan": [None if i % 9 == 0 else ("gold" if i % 3 else "basic") for i in range(n)],
        "note": [f"called on day {i}" for i in range(n)],
    })
    path = tmp_path / "people.tsv"
    frame.to_csv(path, sep="\t", index=False)
    loaded = pipeline.load(SourceSpec(str(path)))
    local = cleaning.clean_customers(loaded.table, loaded.column_map)
    spark_loaded = _spark_loaded(spark, path)
    assert spark_loaded.column_map.row_ids and loaded.column_map.row_ids
    made = spark_customers.clean_customers(spark_loaded.table, spark_loaded.column_map)
    ours = _local(made.features)
    made.features.unpersist()
    assert made.dropped_columns == local.dropped_columns
    assert set(made.dropped_columns) == {"email", "note"}
    assert made.report.notes == local.report.notes
    assert list(ours.columns) == list(local.features.columns) == ["customer_id", "tenure_days", "spend", "vip", "plan"]
    pd.testing.assert_frame_equal(ours.astype(local.features.dtypes.to_dict()), local.features, check_exact=True)
    assert made.imputed.equals(local.imputed) and made.imputed.loc[0, "value"] == "gold"
    contacts = _local(made.contacts)
    assert contacts["customer_id"].tolist() == local.contacts["customer_id"].tolist()
    assert contacts["email"].tolist() == local.contacts["email"].tolist()


def test_a_typed_table_with_float_ids_timestamps_and_boolean_outcomes(spark, tmp_path):
    """Parquet keeps the types: whole-number float ids, timestamps, booleans (a trait, and an
    outcome), a yyyymmdd integer date and gaps in numbers and text: the local answers."""
    from custseg.engines import spark_customers

    rng = np.random.default_rng(2)
    n = 60
    frame = pd.DataFrame({
        "customer_id": np.arange(101, 101 + n, dtype="float64"),
        "signup_date": pd.to_datetime("2021-01-01") + pd.to_timedelta(rng.integers(0, 900, n), unit="D")
        + pd.to_timedelta(rng.integers(0, 86_400, n), unit="s"),
        "first_order_date": [int(f"2022{1 + i % 12:02d}{1 + i % 27:02d}") for i in range(n)],
        "birth_year": rng.integers(1950, 2000, n),
        "premium": rng.choice([True, False], n),
        "score": np.where(np.arange(n) % 7 == 0, np.nan, rng.normal(50, 10, n)),
        "region": [None if i % 8 == 0 else ["north", "south", "east"][i % 3] for i in range(n)],
        "churned": rng.choice([True, False], n),
    })
    frame["signup_date"] = frame["signup_date"].astype("datetime64[us]")
    frame = pd.concat([frame, frame.iloc[[3, 4]], frame.iloc[[5]].assign(score=1.0)], ignore_index=True)
    path = tmp_path / "typed.parquet"
    frame.to_parquet(path, index=False)
    loaded = pipeline.load(SourceSpec(str(path)))
    local = cleaning.clean_customers(loaded.table, loaded.column_map)
    spark_loaded = pipeline.load(SourceSpec(str(path)), settings=Settings(engine="spark"))
    assert spark_loaded.column_map.outcomes == loaded.column_map.outcomes == {"churned": "true"}
    made = spark_customers.clean_customers(spark_loaded.table, spark_loaded.column_map)
    ours = _local(made.features)
    made.features.unpersist()
    counts = {r.rule: r.rows for r in made.report.dropped}
    assert counts == {r.rule: r.rows for r in local.report.dropped} == {
        "missing_customer_id": 0, "duplicate_row": 2, "duplicate_customer_id": 1}
    assert made.dropped_columns == local.dropped_columns and made.as_of == local.as_of
    assert list(ours.columns) == list(local.features.columns)
    assert {"tenure_days", "days_since_first_order_date", "age", "premium", "churned"} <= set(ours.columns)
    ids = sorted(ours["customer_id"], key=float)
    assert ids == sorted(local.features["customer_id"], key=float) and ids[:2] == ["101", "102"]  # not "101.0"
    assert made.imputed[["column", "missing", "method"]].equals(local.imputed[["column", "missing", "method"]])
    gaps = [c for c, how in zip(local.imputed["column"], local.imputed["method"]) if how == "median"]
    exact = [c for c in ours.columns if c not in gaps]
    pd.testing.assert_frame_equal(ours[exact].astype(local.features[exact].dtypes.to_dict()),
                                  local.features[exact], check_exact=True)
    for column in gaps:  # the median within the two middle values
        values = np.sort(frame.drop_duplicates().drop_duplicates("customer_id")[column].dropna().to_numpy())
        low, high = values[(len(values) - 1) // 2], values[len(values) // 2]
        assert low <= made.imputed.set_index("column").loc[column, "value"] <= high


def test_a_table_numbered_by_row_is_segmented_on_spark_with_its_contacts(spark, tmp_path):
    """Outputs call the row number 'row' and contacts.parquet is written from Spark, as locally."""
    from custseg.pipeline import on_spark

    rng = np.random.default_rng(4)
    n = 120
    pd.DataFrame({"email": [f"c{i}@example.com" for i in range(n)], "spend": rng.integers(1, 500, n),
                  "visits": rng.integers(1, 40, n)}).to_csv(tmp_path / "people.csv", index=False)
    runs_ = {}
    for engine in ("spark", "duckdb"):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(on_spark, "SAMPLE", 100)
            assert cli.main(["segment", str(tmp_path / "people.csv"), "--out", str(tmp_path / engine), "--algorithm",
                             "kmeans", "--k", "3", "--engine", engine, "--spark-local-max-customers", "50",
                             "--no-report"]) == 0
        runs_[engine] = tmp_path / engine
    assert json.loads((runs_["spark"] / "run.json").read_text())["run"]["clustered_on"] == "spark"
    for name in ("assignments.csv", "contacts.parquet", "features.parquet"):
        read = pd.read_csv if name.endswith(".csv") else pd.read_parquet
        ours, theirs = (read(runs_[e] / name) for e in ("spark", "duckdb"))
        assert list(ours.columns) == list(theirs.columns) and ours.columns[0] == "row", name
        assert ours["row"].astype(str).tolist() == theirs["row"].astype(str).tolist() and len(ours) == n, name
    contacts = pd.read_parquet(runs_["spark"] / "contacts.parquet")
    assert contacts["email"].tolist() == [f"c{i}@example.com" for i in range(n)]


@pytest.fixture(scope="module")
def run_folders(spark, crm, tmp_path_factory):
    """``crm`` segmented with --engine spark above the limit (cleaned and clustered on Spark),
    and locally."""
    from custseg.pipeline import on_spark

    root = tmp_path_factory.mktemp("runs")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(on_spark, "SAMPLE", SAMPLE)
        assert cli.main(["segment", str(crm), "--out", str(root / "spark"), "--algorithm", "kmeans", "--k", "4",
                         "--engine", "spark", "--delimiter", "\t", "--spark-local-max-customers", "1000",
                         "--no-report"]) == 0
    assert cli.main(["segment", str(crm), "--out", str(root / "local"), "--algorithm", "kmeans", "--k", "4",
                     "--engine", "duckdb", "--no-report"]) == 0
    return root / "spark", root / "local"


def test_a_customer_table_above_the_limit_is_segmented_on_spark(run_folders):
    spark_dir, local_dir = run_folders
    summary = json.loads((spark_dir / "run.json").read_text())
    assert summary["kind"] == "customers" and summary["run"]["clustered_on"] == "spark"
    assert summary["run"]["customers"] == 2240 and summary["run"]["sample"]["customers"] == SAMPLE
    assert summary["cleaning"]["rows_in"] == 2253 and summary["cleaning"]["rows_out"] == 2240
    assert summary["outcomes"] == json.loads((local_dir / "run.json").read_text())["outcomes"]
    assert {p.name for p in spark_dir.iterdir()} == {p.name for p in local_dir.iterdir()}
    assert not [p for p in spark_dir.iterdir() if p.name.startswith(".")]


def test_the_assignments_cover_every_customer_and_the_features_are_the_local_ones(run_folders):
    spark_dir, local_dir = run_folders
    assigned = pd.read_csv(spark_dir / "assignments.csv", dtype={"customer_id": str})
    local = pd.read_csv(local_dir / "assignments.csv", dtype={"customer_id": str})
    assert assigned["customer_id"].tolist() == local["customer_id"].tolist()  # the source's order
    assert assigned["customer_id"].is_unique and (assigned["segment"] >= 0).all()
    assert set(assigned["segment"]) == {0, 1, 2, 3} and assigned["segment_name"].notna().all()
    ours = pd.read_parquet(spark_dir / "features.parquet")
    theirs = pd.read_parquet(local_dir / "features.parquet")
    assert dict(ours.dtypes.astype(str)) == dict(theirs.dtypes.astype(str))
    same = ours["Income"] == theirs["Income"]
    assert (~same).sum() == 24  # the filled gaps: the approximate median
    pd.testing.assert_frame_equal(ours.loc[same], theirs.loc[same])
    sizes = pd.read_csv(spark_dir / "profiles.csv").set_index("segment")["customers"]
    assert sizes.to_dict() == assigned["segment"].value_counts().to_dict()  # counted over every customer


def test_the_model_assigns_the_source_with_the_run_s_segments(run_folders, crm, tmp_path):
    spark_dir, _ = run_folders
    out = tmp_path / "assigned.csv"
    assert cli.main(["assign", str(crm), "--model", str(spark_dir), "--out", str(out)]) == 0
    again = _by_id(pd.read_csv(out, dtype={"customer_id": str}))
    assigned = _by_id(pd.read_csv(spark_dir / "assignments.csv", dtype={"customer_id": str}))
    assert again["customer_id"].tolist() == assigned["customer_id"].tolist()
    imputed = _by_id(pd.read_parquet(spark_dir / "features.parquet"))["Income"] == 51373.0
    # assign marks a customer far from every segment -1 (the run's own customers all get their
    # nearest); the others get the run's segment: the model's rule, here, on the local cleaning.
    seen = again["segment"] != -1
    assert seen.mean() >= 0.99
    agree = again["segment"] == assigned["segment"]
    assert agree[seen & ~imputed].all() and agree[seen].mean() >= 0.99


@pytest.mark.parametrize(
    "text, message",
    [
        ("customer_id,plan\n" + "".join(f"{i},gold\n" for i in range(1, 40)),
         "customers.csv: no column describes the customers besides the id 'customer_id' ('plan' has a single "
         "value); a customer table needs columns such as income, age, spend or visits"),
        ("customer_id,age\n" + ",30\n" * 40,
         "customers.csv: no customer left after cleaning (40 rows in, 40 without a customer id in 'customer_id'); "
         "check that column or map another with --map customer_id=COLUMN"),
    ],
    ids=["no-feature", "no-ids"],
)
def test_bad_input_gives_the_local_one_line_error(spark, tmp_path, capsys, text, message):
    path = tmp_path / "customers.csv"
    path.write_text(text, encoding="utf-8")
    lines = {}
    for engine in ("duckdb", "spark"):
        code = cli.main(["segment", str(path), "--out", str(tmp_path / engine), "--engine", engine, "--kind",
                         "customers", "--spark-local-max-customers", "10", "--no-report"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1, err
        lines[engine] = err
    assert lines["spark"] == lines["duckdb"]
    assert lines["spark"].endswith(message) and str(path) in lines["spark"]


def test_the_limit_decides_where_the_table_is_cleaned(spark, crm):
    loaded = _spark_loaded(spark, crm)
    big = pipeline.customer_table(loaded, local_max=2000)  # 2,253 rows, 2,240 customers: kept on Spark
    assert big.on_engine and big.customers == 2240
    with pytest.raises(DataError, match="2,240 customers, more than this step brings"):
        big.features
    big.table.frame.unpersist()
    # More rows than the limit, but not more customers once cleaned: cleaned there, brought here.
    brought = pipeline.customer_table(loaded, local_max=2245)
    assert not brought.on_engine and brought.customers is None
    assert brought.features["tenure_days"].max() == 700 and len(brought.features) == 2240
    # Below the limit, and without one, the same cleaning on Spark: the same customers and columns.
    for local_max in (10_000, None):
        small = pipeline.customer_table(loaded, local_max=local_max)
        assert not small.on_engine and small.report == brought.report
        pd.testing.assert_frame_equal(small.features, brought.features)


def test_a_date_format_is_taken_only_if_it_reads_every_row_not_only_the_probe(spark):
    """The formats are tried on the first rows, then on every row: a value past the probe that
    no format reads leaves the column text."""
    from custseg.engines import spark_customers

    dates = [(f"2014-01-{i % 28 + 1:02d}",) for i in range(spark_customers._DATE_PROBE_ROWS + 2_000)]
    good = spark.createDataFrame(dates, ["joined"])
    read = spark_customers._read_dates(good, ["joined"])
    assert set(read) == {"joined"} and read["joined"].kind == "date"
    assert good.selectExpr(f"count_if({read['joined'].expr} IS NULL)").first()[0] == 0
    bad = spark.createDataFrame(dates + [("not a date",)], ["joined"]).coalesce(1)
    assert spark_customers._read_dates(bad, ["joined"]) == {}
