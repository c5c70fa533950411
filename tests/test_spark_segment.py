"""`custseg segment --engine spark` on a table larger than spark_local_max_customers: clustered on
Spark (custseg.pipeline.on_spark), a complete run folder, the local flow's segments.

A synthetic transaction log with four planted segments (1,500 customers), with the threshold
at 100 and the profiling sample at 300 customers, takes the Spark path; the same source
segmented locally is the reference.  The errors are checked on the bundled Online Retail
sample (837 customers).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from custseg import cli, datasets, runs
from custseg.model import load

pytest.importorskip("pyspark")

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::ResourceWarning")]  # py4j's sockets

SAMPLE = 300  # customers profiled
N = 1_500  # customers of the synthetic log


@pytest.fixture(scope="module")
def folders(spark, tmp_path_factory):
    """The Spark path's run (through the CLI, with its report) and the local run of the same source."""
    from custseg.pipeline import on_spark

    root = tmp_path_factory.mktemp("runs")
    source = str(root / "orders.parquet")
    datasets.make_transactions(N, n_segments=4, separation=3.0, random_state=3).to_parquet(source)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(on_spark, "SAMPLE", SAMPLE)
        code = cli.main(["segment", source, "--out", str(root / "spark"), "--algorithm", "kmeans", "--k", "4",
                         "--engine", "spark", "--spark-local-max-customers", "100"])
    assert code == 0
    assert cli.main(["segment", source, "--out", str(root / "local"), "--algorithm", "kmeans", "--k", "4",
                     "--engine", "duckdb", "--no-report"]) == 0
    return root / "spark", root / "local", source


def _ids(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values("customer_id").reset_index(drop=True)


def test_a_large_table_takes_the_spark_path_and_says_what_the_sample_covers(folders):
    spark_dir, local_dir, _ = folders
    summary = json.loads((spark_dir / "run.json").read_text())
    record = summary["run"]
    assert record["clustered_on"] == "spark" and record["spark_local_max_customers"] == 100
    assert record["customers"] == N
    assert record["sample"]["customers"] == SAMPLE and record["sample"]["of"] == N
    assert len(record["spark"]["seeds"]) == 3  # fitted on Spark: every seed's cost recorded
    assert "clustered_on" not in json.loads((local_dir / "run.json").read_text())["run"]
    note = next(n for n in summary["cleaning"]["notes"] if n.startswith("clustered on Spark"))
    assert f"seeded sample of {SAMPLE} customers" in note and f"assignments and features cover all {N:,}" in note
    assert any("measured on a seeded sample of" in r for r in summary["recommendation"]["reasons"])
    assert note in (spark_dir / "report.html").read_text(encoding="utf-8")  # the report says it too


def test_the_run_folder_is_complete(folders):
    spark_dir, local_dir, _ = folders
    written = {p.name for p in spark_dir.iterdir()}
    assert set(runs.REQUIRED_FILES) | {"cohorts.csv", "rfm.csv", "report.html", "segment_means.csv"} <= written
    assert written == {p.name for p in local_dir.iterdir()} | {"report.html"}
    assert not [p for p in spark_dir.iterdir() if p.name.startswith(".")]  # no staging left behind
    folder = runs.read_run(spark_dir)  # what the report, exports and assign read
    assert len(folder.features) == len(folder.assignments) == N
    pd.testing.assert_frame_equal(pd.read_csv(spark_dir / "cohorts.csv"), pd.read_csv(local_dir / "cohorts.csv"))
    board = pd.read_csv(spark_dir / "leaderboard.csv")
    assert list(board[["algorithm", "n_clusters"]].itertuples(index=False, name=None)) == [("kmeans", 4)]
    assert (pd.read_csv(spark_dir / "elbow.csv")["k"].iloc[:3] == [1, 2, 3]).all()


def test_every_customer_is_assigned_and_the_features_are_the_local_ones(folders):
    spark_dir, local_dir, _ = folders
    ours = _ids(pd.read_csv(spark_dir / "assignments.csv", dtype={"customer_id": str}))
    theirs = _ids(pd.read_csv(local_dir / "assignments.csv", dtype={"customer_id": str}))
    assert list(ours.columns) == list(theirs.columns) == ["customer_id", "segment", "segment_name"]
    assert ours["customer_id"].tolist() == theirs["customer_id"].tolist()
    assert ours["customer_id"].is_unique and (ours["segment"] >= 0).all() and ours["segment_name"].notna().all()
    features = _ids(pd.read_parquet(spark_dir / "features.parquet"))
    local = _ids(pd.read_parquet(local_dir / "features.parquet"))
    assert dict(features.dtypes.astype(str)) == dict(local.dtypes.astype(str))
    pd.testing.assert_frame_equal(features, local, check_exact=False, rtol=1e-9)


def test_rfm_scores_of_every_customer_are_the_local_ones(folders):
    spark_dir, local_dir, _ = folders
    read = {"customer_id": str, "rfm_code": str}
    ours = _ids(pd.read_csv(spark_dir / "rfm.csv", dtype=read))
    theirs = _ids(pd.read_csv(local_dir / "rfm.csv", dtype=read))
    assert list(ours.columns) == list(theirs.columns) and len(ours) == N
    assert ours["customer_id"].tolist() == theirs["customer_id"].tolist()
    for column in ("r_score", "m_score"):  # quintiles of the values: the same edges
        assert (ours[column] == theirs[column]).all(), column
    # Frequency is scored by rank, ties in order of appearance: the same where the ties fall in one bin.
    settled = theirs.groupby("frequency")["f_score"].transform("nunique") == 1
    assert settled.mean() > 0.3 and (ours.loc[settled, "f_score"] == theirs.loc[settled, "f_score"]).all()
    assert (ours["f_score"].value_counts().sort_index() == theirs["f_score"].value_counts().sort_index()).all()
    same = ours["rfm_code"] == theirs["rfm_code"]
    assert (ours.loc[same, "rfm_segment"] == theirs.loc[same, "rfm_segment"]).all()
    assert (ours["rfm_code"] == ours["r_score"].astype(str) + ours["f_score"].astype(str)
            + ours["m_score"].astype(str)).all()


def test_the_segments_are_those_of_the_local_flow(folders):
    spark_dir, local_dir, _ = folders
    ours = pd.read_csv(spark_dir / "assignments.csv", dtype={"customer_id": str})
    theirs = pd.read_csv(local_dir / "assignments.csv", dtype={"customer_id": str})
    both = ours.merge(theirs, on="customer_id", suffixes=("_spark", "_local"), validate="one_to_one")
    assert len(both) == N
    assert adjusted_rand_score(both["segment_local"], both["segment_spark"]) >= 0.99


def test_sizes_cover_every_customer_and_names_match_the_model(folders):
    spark_dir, _, _ = folders
    profiles = pd.read_csv(spark_dir / "profiles.csv")
    assigned = pd.read_csv(spark_dir / "assignments.csv", dtype={"customer_id": str})
    counts = assigned["segment"].value_counts()
    assert profiles.set_index("segment")["customers"].to_dict() == counts.to_dict()
    assert profiles["customers"].sum() == N and np.isclose(profiles["share"].sum(), 1.0)
    assert np.isclose(profiles["value_share"].sum(), 1.0)
    features = pd.read_parquet(spark_dir / "features.parquet").merge(assigned, on="customer_id")
    spend = features.groupby("segment")["monetary"].sum()
    np.testing.assert_allclose(profiles.set_index("segment")["value_share"], spend / spend.sum(), rtol=1e-9)
    names = dict(zip(profiles["segment"], profiles["name"]))
    assert (assigned["segment_name"] == assigned["segment"].map(names)).all()
    model = load(spark_dir / "model.skops")
    assert model.segment_names == names
    again = model.assign(pd.read_parquet(spark_dir / "features.parquet"))
    merged = again.merge(assigned, on="customer_id", suffixes=("_model", "_run"))
    assert (merged["segment_model"] == merged["segment_run"]).mean() >= 0.99  # outliers aside


def test_a_small_table_is_still_clustered_here(spark, folders, tmp_path):
    _, local_dir, source = folders
    out = tmp_path / "small"
    assert cli.main(["segment", source, "--out", str(out), "--algorithm", "kmeans", "--k", "4",
                     "--engine", "spark", "--spark-local-max-customers", str(N), "--no-report"]) == 0
    assert "clustered_on" not in json.loads((out / "run.json").read_text())["run"]
    pd.testing.assert_frame_equal(pd.read_csv(out / "assignments.csv", dtype={"customer_id": str}),
                                  pd.read_csv(local_dir / "assignments.csv", dtype={"customer_id": str}))


def test_an_algorithm_spark_lacks_is_one_line(spark, tmp_path, capsys):
    code = cli.main(["segment", str(datasets.sample_path()), "--out", str(tmp_path / "run"), "--engine", "spark",
                     "--spark-local-max-customers", "100", "--no-report", "--algorithm", "dbscan"])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1
    assert err == ("custseg: error: --algorithm dbscan clusters on this machine only, and the customer table has 837 "
                   "customers (more than --spark-local-max-customers 100); choose kmeans, bisecting_kmeans or gmm "
                   "(clustered on Spark), or raise --spark-local-max-customers to 837 to segment it here")
    assert not (tmp_path / "run").exists()


def test_bisecting_kmeans_is_clustered_on_spark_as_here(folders, tmp_path):
    """The registry's bisecting_kmeans (scikit-learn here, MLlib on Spark): the same leaf centres.

    A model fitted on Spark assigns the nearest leaf centre (MLlib's model keeps no tree of
    splits); scikit-learn's walks down its tree, which differs near the border of an early split."""
    from custseg.model import _nearest
    from custseg.pipeline import on_spark

    _, _, source = folders
    asked = ["--algorithm", "bisecting_kmeans", "--k", "4", "--no-report"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(on_spark, "SAMPLE", SAMPLE)
        assert cli.main(["segment", source, "--out", str(tmp_path / "spark"), *asked, "--engine", "spark",
                         "--spark-local-max-customers", "100"]) == 0
    assert cli.main(["segment", source, "--out", str(tmp_path / "local"), *asked, "--engine", "duckdb"]) == 0
    summary = json.loads((tmp_path / "spark" / "run.json").read_text())
    assert summary["run"]["clustered_on"] == "spark"
    assert (summary["algorithm"], summary["n_clusters"]) == ("bisecting_kmeans", 4)
    board = pd.read_csv(tmp_path / "spark" / "leaderboard.csv")
    assert list(board[["algorithm", "n_clusters"]].itertuples(index=False, name=None)) == [("bisecting_kmeans", 4)]
    model = load(tmp_path / "spark" / "model.skops")
    assert model.algorithm == "bisecting_kmeans" and len(model.segment_ids) == 4
    ours, theirs = (pd.read_csv(tmp_path / side / "assignments.csv", dtype={"customer_id": str})
                    for side in ("spark", "local"))
    both = ours.merge(theirs, on="customer_id", suffixes=("_spark", "_local"), validate="one_to_one")
    assert len(both) == N
    assert adjusted_rand_score(both["segment_local"], both["segment_spark"]) >= 0.9
    here = load(tmp_path / "local" / "model.skops")
    features = pd.read_parquet(tmp_path / "local" / "features.parquet")
    matrix = here.preprocessor.transform(features[here.feature_columns]).to_numpy(dtype="float64")
    nearest = pd.Series(_nearest(matrix, here.estimator.cluster_centers_)[0], index=features["customer_id"].astype(str))
    assert adjusted_rand_score(nearest.loc[both["customer_id"]], both["segment_spark"]) >= 0.99


def test_previous_model_ids_are_kept_on_spark_as_here(folders, tmp_path):
    """--previous on the Spark path: the new segments get the ids of the previous model's segments
    they match, the ids the local path gives with the same previous model, and run.json records
    the alignment as a local run does.  The previous model is the local run's with its ids
    renumbered (0, 1, 2, 3 -> 7, 3, 5, 1), so that keeping the estimator's labels would fail."""
    from dataclasses import replace

    import numpy as np

    from custseg.pipeline import on_spark

    _, local_dir, source = folders
    old = load(local_dir / "model.skops")
    renumber = {0: 7, 1: 3, 2: 5, 3: 1}
    order = sorted(old.segment_ids, key=renumber.get)
    previous = replace(
        old, segment_ids=[renumber[s] for s in order],
        centers=np.asarray(old.centers)[[old.segment_ids.index(s) for s in order]],
        segment_names={renumber[s]: v for s, v in old.segment_names.items()},
        reference_means={renumber[s]: v for s, v in old.reference_means.items()},
        label_map={label: renumber[old.label_map.get(label, label)] for label in range(4)},
    )
    previous.save(tmp_path / "previous.skops")
    asked = ["--algorithm", "kmeans", "--k", "4", "--seed", "5", "--previous", str(tmp_path / "previous.skops"),
             "--no-report"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(on_spark, "SAMPLE", SAMPLE)
        assert cli.main(["segment", source, "--out", str(tmp_path / "spark"), *asked, "--engine", "spark",
                         "--spark-local-max-customers", "100"]) == 0
    assert cli.main(["segment", source, "--out", str(tmp_path / "here"), *asked, "--engine", "duckdb"]) == 0
    spark_run, local_run = (json.loads((tmp_path / side / "run.json").read_text()) for side in ("spark", "here"))
    assert spark_run["run"]["clustered_on"] == "spark"
    ours, theirs = (_ids(pd.read_csv(tmp_path / side / "assignments.csv", dtype={"customer_id": str}))
                    for side in ("spark", "here"))
    assert set(ours["segment"]) == set(theirs["segment"]) == {1, 3, 5, 7}
    assert (ours["segment"] == theirs["segment"]).mean() >= 0.99  # the same ids, not only the same groups
    first = _ids(pd.read_csv(local_dir / "assignments.csv", dtype={"customer_id": str}))
    assert (ours["segment"] == first["segment"].map(renumber)).mean() >= 0.99
    for record in (spark_run, local_run):
        alignment = record["alignment"]
        assert sorted(m["segment"] for m in alignment["matched"]) == [1, 3, 5, 7]
        assert alignment["new"] == [] and alignment["gone"] == []
    distances = {m["segment"]: m["distance"] for m in local_run["alignment"]["matched"]}
    for matched in spark_run["alignment"]["matched"]:
        assert matched["distance"] == pytest.approx(distances[matched["segment"]], abs=0.05)
    profiles = pd.read_csv(tmp_path / "spark" / "profiles.csv")
    assert sorted(profiles["segment"]) == [1, 3, 5, 7]
    assert profiles.set_index("segment")["customers"].to_dict() == ours["segment"].value_counts().to_dict()
    model = load(tmp_path / "spark" / "model.skops")
    assert sorted(model.segment_ids) == [1, 3, 5, 7] and sorted(model.label_map.values()) == [1, 3, 5, 7]
    again = _ids(model.assign(pd.read_parquet(tmp_path / "spark" / "features.parquet")))
    assert (again["segment"].to_numpy() == ours["segment"].to_numpy()).mean() >= 0.99  # outliers aside
    names = dict(zip(profiles["segment"], profiles["name"]))
    assert (ours["segment_name"] == ours["segment"].map(names)).all()


@pytest.mark.parametrize(("config", "previous", "param", "says"), [
    ({"algorithm": "kprototypes"}, False, "algorithm", "{param} kprototypes clusters on this machine only"),
    ({"candidates": ("kmeans", "birch")}, False, "candidates", "{param} birch: cluster on this machine only"),
])
def test_what_spark_cannot_do_is_refused_before_any_work(spark, folders, config, previous, param, says):
    from custseg.engines.spark import SparkRelation
    from custseg.errors import ConfigError
    from custseg.pipeline import SegmentConfig, on_spark
    from custseg.pipeline.prepare import CustomerTable

    _, local_dir, _ = folders
    made = CustomerTable(SparkRelation(spark.range(5)), None, None, "transactions", customers=5_000)
    with pytest.raises(ConfigError) as caught:
        on_spark.segment_on_engine(None, made, config=SegmentConfig(**config), limit=1_000, started=0.0,
                                   previous=load(local_dir / "model.skops") if previous else None)
    assert caught.value.param == param and caught.value.template.startswith(says)
    assert "5,000 customers (more than {param:spark_local_max_customers} 1,000)" in caught.value.template
    assert caught.value.template.endswith("raise {param:spark_local_max_customers} to 5000 to segment it here")


@pytest.mark.parametrize("through_driver", [False, True])
def test_files_written_from_spark_are_those_a_local_run_writes(spark, tmp_path, through_driver):
    from datetime import datetime

    from custseg import outputs
    from custseg.engines.spark import SparkRelation, to_local
    from custseg.features import to_frame
    from custseg.pipeline.on_spark import write_from_spark

    rows = [(f"C{i}" if i % 7 else f"=1+{i}", i * 0.5 if i % 5 else None, i, datetime(2024, 1, 1 + i % 28, 12, 30),
             "-12" if i % 3 == 0 else "x, \"y\"") for i in range(250)]
    frame = spark.createDataFrame(rows, "customer_id string, value double, n long, at timestamp_ntz, text string")
    frame = frame.repartition(3)
    local = to_frame(to_local(SparkRelation(frame)))
    for name in ("table.csv", "table.parquet"):
        written = write_from_spark(frame, tmp_path / f"spark-{name}", through_driver=through_driver)
        expected = outputs.write_table(local, tmp_path / f"local-{name}")
        read = pd.read_csv if name.endswith(".csv") else pd.read_parquet
        ours, theirs = (_ids(read(p)) for p in (written, expected))
        pd.testing.assert_frame_equal(ours, theirs)
    assert "'=1+7" in (tmp_path / "spark-table.csv").read_text()  # neutralised for spreadsheets
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_assign_on_spark_writes_a_large_table_from_spark_with_the_local_answers(folders, tmp_path, monkeypatch, capsys):
    """`custseg assign --engine spark` on more customers than the limit assigns them on Spark and
    writes the file from there: the rows `custseg assign` gives locally, all or nothing."""
    from custseg.engines import spark as spark_engine

    spark_dir, local_dir, source = folders
    model = str(local_dir / "model.skops")
    for suffix in (".csv", ".parquet"):
        assert cli.main(["assign", source, "--model", model, "--out", str(tmp_path / f"here{suffix}"),
                         "--engine", "duckdb"]) == 0
    brought = []
    monkeypatch.setattr(spark_engine, "to_local", lambda *a, **k: brought.append(1) or pytest.fail("brought here"))
    monkeypatch.setenv("CUSTSEG_SPARK_LOCAL_MAX_CUSTOMERS", "100")
    capsys.readouterr()
    for suffix in (".csv", ".parquet"):
        there = tmp_path / f"there{suffix}"
        assert cli.main(["assign", source, "--model", model, "--out", str(there), "--engine", "spark"]) == 0
        def read(path):
            return pd.read_csv(path, dtype={"customer_id": "string"}) if suffix == ".csv" else pd.read_parquet(path)
        expected = read(tmp_path / f"here{suffix}")
        got = read(there)
        assert list(got.columns) == list(expected.columns)
        pd.testing.assert_frame_equal(_ids(got).astype({"customer_id": "string"}),
                                      _ids(expected).astype({"customer_id": "string"}), check_dtype=False)
        printed = capsys.readouterr().out
        assert f"{N:,} customers assigned → {there}" in printed
        for name, n in expected["segment_name"].value_counts().items():
            assert f"  {name}: {n:,}" in printed
    assert not brought and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no part file left

    code = cli.main(["assign", source, "--model", model, "--out", str(tmp_path / "there.xlsx"), "--engine", "spark"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("custseg: error: --out") and "give one of those" in err
    assert not (tmp_path / "there.xlsx").exists()


def test_features_on_spark_writes_a_large_table_and_its_rejects_from_spark(folders, tmp_path, monkeypatch, capsys):
    """`custseg features --engine spark` on more customers than the limit writes the features
    (and --rejects) from Spark: the local command's customers and values, both files or none."""
    from custseg.engines import spark as spark_engine

    _, _, source = folders
    here, here_rejects = tmp_path / "here.parquet", tmp_path / "here-rejects.csv"
    assert cli.main(["features", source, "--out", str(here), "--rejects", str(here_rejects), "--engine", "duckdb"]) == 0
    monkeypatch.setenv("CUSTSEG_SPARK_LOCAL_MAX_CUSTOMERS", "100")
    monkeypatch.setattr(spark_engine, "to_local", lambda *a, **k: pytest.fail("brought here"))
    there, there_rejects = tmp_path / "there.parquet", tmp_path / "there-rejects.csv"
    capsys.readouterr()
    assert cli.main(["features", source, "--out", str(there), "--rejects", str(there_rejects), "--engine", "spark"]) == 0
    printed = capsys.readouterr().out
    assert f"{N:,} customers × " in printed and f"rejected rows → {there_rejects}" in printed
    got, expected = pd.read_parquet(there), pd.read_parquet(here)
    assert list(got.columns) == list(expected.columns) and len(got) == N
    pd.testing.assert_frame_equal(_ids(got).astype({"customer_id": "string"}),
                                  _ids(expected).astype({"customer_id": "string"}), check_dtype=False)
    rejected = pd.read_csv(there_rejects).sort_values("row", ignore_index=True)
    pd.testing.assert_frame_equal(rejected, pd.read_csv(here_rejects).sort_values("row", ignore_index=True),
                                  check_dtype=False)

    code = cli.main(["features", source, "--out", str(tmp_path / "again.parquet"), "--rejects",
                     str(tmp_path / "again.xlsx"), "--engine", "spark"])
    assert code == 2 and "--rejects" in capsys.readouterr().err
    assert not (tmp_path / "again.parquet").exists()  # neither file
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_rfm_on_spark_scores_and_summarises_a_large_table_there(folders, tmp_path, monkeypatch, capsys):
    """`custseg rfm --engine spark` on more customers than the limit scores, summarises and
    writes them from Spark: the local scores (frequency ties aside) and the local summary."""
    from custseg.engines import spark as spark_engine

    _, _, source = folders
    read = {"customer_id": str, "rfm_code": str}
    assert cli.main(["rfm", source, "--out", str(tmp_path / "here.csv"), "--engine", "duckdb"]) == 0
    monkeypatch.setenv("CUSTSEG_SPARK_LOCAL_MAX_CUSTOMERS", "100")
    monkeypatch.setattr(spark_engine, "to_local", lambda *a, **k: pytest.fail("brought here"))
    assert cli.main(["rfm", source, "--out", str(tmp_path / "there.csv"), "--engine", "spark"]) == 0
    printed = capsys.readouterr().out
    ours, theirs = (_ids(pd.read_csv(tmp_path / f"{n}.csv", dtype=read)) for n in ("there", "here"))
    assert list(ours.columns) == list(theirs.columns) and len(ours) == N
    for column in ("r_score", "m_score"):
        assert (ours[column] == theirs[column]).all(), column
    assert (ours["f_score"].value_counts().sort_index() == theirs["f_score"].value_counts().sort_index()).all()
    assert f"{N:,} customers scored" in printed
    summary_printed = printed.split("RFM segments")[1]
    assert all(f"│ {name} " in summary_printed for name in ours["rfm_segment"].unique())
    # The summary counted on Spark is the local summary of the scores Spark wrote.
    from custseg import pipeline
    from custseg.request import SourceSpec
    from custseg.settings import Settings

    loaded = pipeline.load(SourceSpec(source), settings=Settings(engine="spark", spark_local_max_customers=100))
    summary, made = pipeline.write_rfm(loaded, tmp_path / "again.csv",
                                       settings=Settings(engine="spark", spark_local_max_customers=100))
    assert made.on_engine and made.customers == N
    expected = pipeline.rfm_summary(pd.read_csv(tmp_path / "again.csv", dtype=read))
    pd.testing.assert_frame_equal(summary, expected, check_dtype=False, rtol=1e-9)

    capsys.readouterr()
    code = cli.main(["rfm", source, "--out", str(tmp_path / "there.xlsx"), "--engine", "spark"])
    assert code == 2 and "--out" in capsys.readouterr().err and not (tmp_path / "there.xlsx").exists()
