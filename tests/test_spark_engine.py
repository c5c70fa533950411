"""The Spark engine: every dialect construct reads the same on Spark as on DuckDB, and the
cleaning counts and customer features are the DuckDB engine's (one local[2] session, the
``spark`` fixture)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

import duckdb
import numpy as np
import pandas as pd
import pytest

from custseg import cleaning, cohorts, datasets, features, pipeline
from custseg.engines import DUCKDB
from custseg.engines.spark import SPARK, SparkRunner, java_pattern
from custseg.errors import ConfigError, InputError
from custseg.pipeline import SourceSpec
from custseg.settings import Settings

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")  # py4j's sockets at session end


@pytest.fixture(scope="module")
def runner(spark):
    return SparkRunner(spark)


def _both(runner, rows: list[tuple], names: list[str], expr_of) -> tuple[list, list]:
    """``expr_of(dialect)`` over the same rows on DuckDB and on Spark: both answers, in row order."""
    frame = pd.DataFrame(rows, columns=["__i", *names])
    con = duckdb.connect()
    con.register("t", frame)
    duck = [r[0] for r in con.execute(f"SELECT {expr_of(DUCKDB)} FROM t ORDER BY __i").fetchall()]
    runner.spark.createDataFrame(rows, ["__i", *names]).createOrReplaceTempView("t")
    spark = [r[0] for r in runner.execute(f"SELECT {expr_of(SPARK)} FROM t ORDER BY __i").fetchall()]
    return duck, spark


# --- one test per construct ----------------------------------------------------------------

@pytest.mark.parametrize("type_name", ["DOUBLE", "TIMESTAMP"])
def test_try_cast(runner, type_name):
    values = ["3.5", "-2", "1e3", "abc", "", "2011-12-09 12:50:00", "2011-12-09", None]
    duck, spark = _both(runner, list(enumerate(values)), ["x"], lambda d: d.try_cast("x", type_name))
    assert duck == spark
    assert sum(v is None for v in duck) >= 2  # some values do not convert: NULL, not an error


@pytest.mark.parametrize("fmt", cleaning._DATE_FORMATS)
def test_parse_time_reads_every_probed_format_alike(runner, fmt):
    moments = [datetime(2011, 1, 2, 8, 5, 9), datetime(2011, 12, 31, 23, 59, 0), datetime(2010, 10, 10, 10, 10, 10)]
    texts = [m.strftime(fmt) for m in moments]
    # Values written with single digits, and values of other formats, as a log mixes them.
    texts += [t.replace("/0", "/").replace(" 0", " ").replace("-0", "-") for t in texts]
    texts += ["2011-13-45 10:00", "not a date", "31.12.2011x", None]
    duck, spark = _both(runner, list(enumerate(texts)), ["x"], lambda d: d.epoch_us(d.parse_time("x", fmt)))
    assert duck == spark
    assert duck[0] is not None


def test_java_patterns():
    assert java_pattern("%d/%m/%Y %H:%M") == "d/M/yyyy H:m"
    assert java_pattern("%Y%m%d") == "yyyyMMdd"
    assert java_pattern("%Y-%m-%dT%H:%M:%S") == "yyyy-M-d'T'H:m:s"
    with pytest.raises(ConfigError, match="date_format.*does not read the directive %j"):
        java_pattern("%Y-%j")


def test_epoch_us_of_timestamps_without_a_zone(runner):
    moments = [datetime(1970, 1, 1), datetime(2011, 3, 27, 1, 30), datetime(2011, 10, 30, 1, 30), None]
    duck, spark = _both(runner, list(enumerate(moments)), ["x"], lambda d: d.epoch_us("x"))
    assert duck == spark
    assert duck[0] == 0


@pytest.mark.parametrize("pattern", ["-?[0-9]+,[0-9]+", "[A-Z]{2}"])
def test_matches_the_whole_text(runner, pattern):
    values = ["3,50", "-12,5", "x3,50", "3,50x", "3.50", "AB", "ABC", "", None]
    duck, spark = _both(runner, list(enumerate(values)), ["x"], lambda d: d.matches("x", pattern))
    assert duck == spark
    assert True in duck and False in duck


def test_bucket_is_a_partition_number(runner):
    values = [str(i) for i in range(200)] + ["17850", "17850"]
    duck, spark = _both(runner, list(enumerate(values)), ["x"], lambda d: d.bucket("x", 3))
    for answer in (duck, spark):
        assert set(answer) == {0, 1, 2}
        assert answer[-1] == answer[-2]


def test_arg_min_with_a_row_key_breaks_ties_alike(runner):
    rows = [(0, "a", 2, "France"), (1, "a", 2, "Belgium"), (2, "a", 1, "Spain"), (3, "b", 5, "Spain"),
            (4, "b", 5, "Austria")]

    def most_frequent(d):
        return f"{d.arg_min('country', d.row_key('-n', 'country'))}"

    con = duckdb.connect()
    con.register("t", pd.DataFrame(rows, columns=["__i", "customer", "n", "country"]))
    sql = "SELECT customer, {} FROM t GROUP BY customer ORDER BY customer"
    duck = con.execute(sql.format(most_frequent(DUCKDB))).fetchall()
    runner.spark.createDataFrame(rows, ["__i", "customer", "n", "country"]).createOrReplaceTempView("t")
    spark = runner.execute(sql.format(most_frequent(SPARK))).fetchall()
    assert duck == spark == [("a", "Belgium"), ("b", "Austria")]


def test_mode_without_ties(runner):
    rows = [(0, "a", "x"), (1, "a", "y"), (2, "a", "y"), (3, "b", "z")]
    con = duckdb.connect()
    con.register("t", pd.DataFrame(rows, columns=["__i", "g", "v"]))
    sql = "SELECT g, {} FROM t GROUP BY g ORDER BY g"
    duck = con.execute(sql.format(DUCKDB.mode("v"))).fetchall()
    runner.spark.createDataFrame(rows, ["__i", "g", "v"]).createOrReplaceTempView("t")
    assert duck == runner.execute(sql.format(SPARK.mode("v"))).fetchall() == [("a", "y"), ("b", "z")]


def test_month_start_and_months_between(runner):
    pairs = [(datetime(2010, 12, 1, 8, 26), datetime(2011, 12, 9, 12, 50)),
             (datetime(2011, 1, 31, 23, 59), datetime(2011, 2, 1)),
             (datetime(2011, 5, 5), datetime(2011, 5, 31))]
    rows = [(i, a, b) for i, (a, b) in enumerate(pairs)]
    duck, spark = _both(runner, rows, ["a", "b"],
                        lambda d: d.months_between(d.month_start("a"), d.month_start("b")))
    assert duck == spark == [12, 1, 0]
    duck, spark = _both(runner, rows, ["a", "b"], lambda d: d.epoch_us(d.month_start("a")))
    assert duck == spark


def test_source_row_follows_the_file(runner, tmp_path):
    path = tmp_path / "rows.csv"
    pd.DataFrame({"x": [f"v{i}" for i in range(1000)]}).to_csv(path, index=False)
    con = duckdb.connect()
    con.execute(f"CREATE VIEW source AS SELECT * FROM read_csv('{path}')")
    sql = "SELECT {} AS r, x FROM source ORDER BY r"
    duck = con.execute(sql.format(DUCKDB.source_row())).fetchall()
    runner.spark.read.option("header", "true").csv(str(path)).createOrReplaceTempView("source")
    assert runner.execute(sql.format(SPARK.source_row())).fetchall() == duck
    assert duck[0] == (1, "v0")


@pytest.mark.parametrize("name", ["Customer ID", "we`ird", 'quo"te', "naïve"])
def test_quote_and_literal(runner, name):
    value = "it's a \\ back, \\n not a new line"
    runner.spark.createDataFrame([(1, value)], ["__i", name]).createOrReplaceTempView("t")
    [(got, same)] = runner.execute(f"SELECT {SPARK.quote(name)}, {SPARK.quote(name)} = {SPARK.literal(value)} FROM t").fetchall()
    assert (got, same) == (value, True)  # quotes and backslashes are kept as written


def test_temporary_tables_outlive_what_they_were_made_from(runner):
    runner.execute(SPARK.create_table("tmp_a", "SELECT id FROM range(5)"))
    runner.execute(SPARK.create_table("tmp_b", "SELECT sum(id) AS s FROM tmp_a"))
    runner.execute(SPARK.drop_table("tmp_a"))
    assert runner.execute("SELECT s FROM tmp_b").fetchall() == [(10,)]
    runner.execute(SPARK.drop_table("tmp_b"))
    with pytest.raises(NotImplementedError):
        SPARK.insert("tmp_b", "SELECT 1")


def test_two_runners_do_not_meet(spark, tmp_path):
    paths = []
    for n in (10, 20):
        paths.append(tmp_path / f"log{n}.parquet")
        datasets.make_transactions(n, random_state=n).to_parquet(paths[-1])
    first, second = (pipeline.load(SourceSpec(str(p)), settings=Settings(engine="spark")) for p in paths)
    assert first.table.count() != second.table.count()  # each its own view named source
    first.table.con.close()
    assert second.table.count() > 0
    with pytest.raises(Exception, match="TABLE_OR_VIEW_NOT_FOUND"):
        first.table.count()


def test_spark_type_names():
    assert [SPARK.kind(t) for t in ("string", "bigint", "int", "double", "decimal(10,2)", "timestamp_ntz",
                                    "timestamp", "date", "boolean")] == \
        ["text", "integer", "integer", "float", "decimal", "timestamp", "timestamp", "date", "other"]


# --- parity --------------------------------------------------------------------------------

def _made(source: str, engine: str, **kwargs) -> pipeline.CustomerTable:
    loaded = pipeline.load(SourceSpec(source), settings=Settings(engine=engine))
    assert loaded.table.dialect.name == engine
    return pipeline.customer_table(loaded, **kwargs)


def _assert_same(spark_made: pipeline.CustomerTable, duck_made: pipeline.CustomerTable) -> None:
    assert spark_made.report == duck_made.report  # every count exact
    assert spark_made.as_of == duck_made.as_of
    ours, theirs = spark_made.features, duck_made.features
    assert list(ours.columns) == list(theirs.columns)
    assert ours.dtypes.to_dict() == theirs.dtypes.to_dict()
    exact = [c for c in ours.columns if c not in ("monetary", "avg_order_value", "avg_days_between_orders")]
    pd.testing.assert_frame_equal(ours[exact], theirs[exact], check_exact=True)  # ids, counts, days, dates
    for column in ("monetary", "avg_order_value", "avg_days_between_orders"):
        np.testing.assert_allclose(ours[column], theirs[column], rtol=1e-9, atol=0)  # sums in another order


def test_online_retail_gives_the_same_report_and_features(spark, online_retail):
    duck = _made(str(online_retail), "duckdb")
    made = _made(str(online_retail), "spark")
    _assert_same(made, duck)
    assert made.report.rows_in == 541_909 and made.shape == duck.shape == (4338, 11)


def _dirty_log(tmp_path, n_customers=300) -> pd.DataFrame:
    """A synthetic log with every rule's rows: no id, copies, cancellations, zero prices, dates
    that cannot be read, decimal commas; written as text, as exports are."""
    log = datasets.make_transactions(n_customers, random_state=7)
    log = log.rename(columns={"order_id": "InvoiceNo", "customer_id": "CustomerID", "product_id": "StockCode",
                              "quantity": "Quantity", "unit_price": "UnitPrice", "ordered_at": "InvoiceDate"})
    rng = np.random.default_rng(3)
    log["Country"] = rng.choice(["United Kingdom", "France", "Germany"], len(log))
    log["InvoiceDate"] = log["InvoiceDate"].dt.strftime("%d/%m/%Y %H:%M")
    picks = rng.choice(len(log), 40, replace=False)
    log.loc[picks[:10], "CustomerID"] = ""
    log.loc[picks[10:20], "InvoiceNo"] = "C" + log.loc[picks[10:20], "InvoiceNo"]
    log.loc[picks[20:25], "UnitPrice"] = 0.0
    log.loc[picks[25:30], "InvoiceDate"] = "31/02/2011 10:00"
    log.loc[picks[30:35], "Quantity"] = -1
    copies = log.iloc[rng.choice(len(log), 25, replace=False)]
    return pd.concat([log, copies], ignore_index=True)


@pytest.mark.parametrize("returns", ["drop", "net"])
def test_a_synthetic_log_in_text_gives_the_same_report_and_features(spark, tmp_path, returns):
    path = tmp_path / "log.csv"
    _dirty_log(tmp_path).to_csv(path, index=False)
    policy = cleaning.Policy(returns=returns, bad_values="drop")
    duck = _made(str(path), "duckdb", policy=policy)
    made = _made(str(path), "spark", policy=policy)
    _assert_same(made, duck)
    dropped = {r.rule: r.rows for r in made.report.dropped}
    assert dropped["missing_customer_id"] == 10 and dropped["unparseable_date"] == 5
    assert dropped["duplicate_row"] > 0 and dropped["non_positive_price"] > 0
    assert (dropped["cancellation"] > 0) == (returns == "drop")


def test_a_synthetic_log_in_parquet_at_a_reference_date(spark, tmp_path):
    log = datasets.make_transactions(400, random_state=11)
    log["customer_id"] = log["customer_id"].str.extract(r"(\d+)")[0].astype("float64")  # ids held as 17850.0
    path = tmp_path / "log.parquet"
    log.to_parquet(path)
    as_of = datetime(2024, 6, 1, 12, 0)
    duck = _made(str(path), "duckdb", as_of=as_of)
    made = _made(str(path), "spark", as_of=as_of)
    _assert_same(made, duck)
    assert not made.features["customer_id"].str.contains(".", regex=False).any()


def test_cohorts_and_rejects_are_the_same(spark, tmp_path):
    path = tmp_path / "log.csv"
    _dirty_log(tmp_path, 120).to_csv(path, index=False)
    policy = cleaning.Policy(bad_values="drop")
    cleaned = {}
    for engine in ("duckdb", "spark"):
        loaded = pipeline.load(SourceSpec(str(path)), settings=Settings(engine=engine))
        cleaned[engine] = pipeline.clean(loaded, policy=policy)
    pd.testing.assert_frame_equal(cohorts.retention(cleaned["spark"]).matrix,
                                  cohorts.retention(cleaned["duckdb"]).matrix)
    duck = cleaned["duckdb"].rejects().df()
    ours = cleaned["spark"].rejects().df()
    assert list(ours["row"]) == list(duck["row"]) and list(ours["rejected_by"]) == list(duck["rejected_by"])


def test_unreadable_dates_stop_with_the_same_message(spark, tmp_path):
    path = tmp_path / "log.csv"
    _dirty_log(tmp_path, 80).to_csv(path, index=False)
    messages = []
    for engine in ("duckdb", "spark"):
        loaded = pipeline.load(SourceSpec(str(path)), settings=Settings(engine=engine))
        with pytest.raises(cleaning.DataError, match="5 unparseable dates, e.g. '31/02/2011 10:00' on data row") as caught:
            pipeline.clean(loaded)
        messages.append(str(caught.value).replace(str(path), "SOURCE"))
    assert messages[0] == messages[1]


# --- settings and errors -------------------------------------------------------------------

def test_engine_settings():
    assert Settings.from_env({}).engine == "duckdb"
    got = Settings.from_env({"CUSTSEG_ENGINE": "Spark", "CUSTSEG_SPARK_MASTER": "spark://h:7077"})
    assert (got.engine, got.spark_master) == ("spark", "spark://h:7077")
    with pytest.raises(ConfigError, match="CUSTSEG_ENGINE must be one of duckdb, spark, got 'polars'"):
        Settings.from_env({"CUSTSEG_ENGINE": "polars"})
    with pytest.raises(ConfigError, match="must be one of duckdb, spark") as caught:
        Settings(engine="polars")
    assert caught.value.param == "engine"


def test_missing_sources_are_one_line(spark, tmp_path):
    with pytest.raises(InputError, match="no such file or folder"):
        pipeline.load(SourceSpec(str(tmp_path / "none.parquet")), settings=Settings(engine="spark"))
    with pytest.raises(InputError, match="no such table in the Spark catalog"):
        pipeline.load(SourceSpec("spark:no_such_table_here"), settings=Settings(engine="spark"))
    with pytest.raises(InputError, match=r"reads \.parquet, \.csv"):
        pipeline.load(SourceSpec(str(tmp_path / "book.xlsx")), settings=Settings(engine="spark"))


def test_a_table_of_the_catalog_and_a_query(spark, tmp_path):
    datasets.make_transactions(50, random_state=2).to_parquet(tmp_path / "orders.parquet")
    spark.read.parquet(str(tmp_path / "orders.parquet")).createOrReplaceGlobalTempView("orders_view")
    by_table = _made("spark:global_temp.orders_view", "spark")
    loaded = pipeline.load(SourceSpec("spark:", query="SELECT * FROM global_temp.orders_view WHERE quantity > 0"),
                           settings=Settings(engine="spark"))
    assert pipeline.customer_table(loaded).shape == by_table.shape == (50, 10)


def test_without_pyspark_the_error_says_what_to_install(monkeypatch):
    import sys

    from custseg.engines import spark as engine

    monkeypatch.setitem(sys.modules, "pyspark.sql", None)
    with pytest.raises(ConfigError, match=r"pip install 'custseg\[spark\]'"):
        engine.session()


def test_the_cli_writes_the_same_features(spark, tmp_path, online_retail, monkeypatch):
    from custseg import cli

    head = tmp_path / "head.parquet"
    duckdb.connect().execute(f"COPY (SELECT * FROM read_parquet('{online_retail}') LIMIT 20000) TO '{head}'")
    monkeypatch.setenv("CUSTSEG_ENGINE", "duckdb")
    assert cli.main(["features", str(head), "--out", str(tmp_path / "duck.parquet")]) == 0
    assert cli.main(["features", str(head), "--out", str(tmp_path / "spark.parquet"), "--engine", "spark"]) == 0
    duck, ours = pd.read_parquet(tmp_path / "duck.parquet"), pd.read_parquet(tmp_path / "spark.parquet")
    pd.testing.assert_frame_equal(ours, duck, check_exact=False, rtol=1e-9)
    assert cli.main(["features", str(head), "--out", str(tmp_path / "x.csv"), "--engine", "polars"]) == 2


def test_segment_and_assign_on_spark_give_the_duckdb_engine_s_segments(spark, tmp_path, online_retail):
    """With --engine spark the features come from Spark and the clustering runs here: the same
    segments, and a saved model assigns the customers of a Spark source."""
    from custseg import cli

    head = tmp_path / "head.parquet"
    duckdb.connect().execute(f"COPY (SELECT * FROM read_parquet('{online_retail}') LIMIT 30000) TO '{head}'")
    runs = {}
    for engine in ("duckdb", "spark"):
        out = tmp_path / engine
        assert cli.main(["segment", str(head), "--out", str(out), "--algorithm", "kmeans", "--k", "3",
                         "--no-report", "--engine", engine]) == 0
        runs[engine] = pd.read_csv(out / "assignments.csv", dtype={"customer_id": str})
    pd.testing.assert_frame_equal(runs["spark"], runs["duckdb"])
    assert cli.main(["assign", str(head), "--model", str(tmp_path / "duckdb"), "--out", str(tmp_path / "a.csv"),
                     "--engine", "spark"]) == 0
    assigned = pd.read_csv(tmp_path / "a.csv", dtype={"customer_id": str})
    assert list(assigned["segment"]) == list(runs["duckdb"]["segment"])
