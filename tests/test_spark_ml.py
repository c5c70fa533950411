"""Clustering on Spark MLlib (custseg.engines.spark_ml) against the local scikit-learn flow."""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from custseg.cluster import make_estimator
from custseg.datasets import make_customers
from custseg.errors import ConfigError, CustsegError, DataError
from custseg.model import load
from custseg.preprocessing import build_preprocessor
from custseg.scoring import compile_model
from custseg.selection import LEADERBOARD_COLUMNS

spark_ml = pytest.importorskip("custseg.engines.spark_ml")

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::ResourceWarning")]  # py4j's sockets

COLUMNS = ["recency_days", "frequency", "monetary", "tenure_days", "avg_order_value"]
N_CUSTOMERS = 10_000


@contextlib.contextmanager
def quiet():
    """pyspark 4 warns that it was not tested with pandas 3 on every conversion, and its Arrow
    conversion passes pandas 3 a deprecated ``copy`` keyword."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)
        warnings.filterwarnings("ignore", message="The copy keyword is deprecated")
        yield


def to_spark(spark, frame: pd.DataFrame):
    with quiet():
        return spark.createDataFrame(frame)


def to_pandas(frame) -> pd.DataFrame:
    with quiet():
        return frame.toPandas()


@pytest.fixture(scope="module")
def planted():
    table, labels = make_customers(N_CUSTOMERS, n_segments=4, random_state=1, separation=3.0)
    return table, labels


@pytest.fixture(scope="module")
def customers(spark, planted):
    return to_spark(spark, planted[0]).repartition(3)


@pytest.fixture(scope="module")
def local_matrix(planted):
    table = planted[0]
    prep = build_preprocessor(table, columns=COLUMNS)
    return prep, prep.fit_transform(table[COLUMNS])


@pytest.fixture(scope="module")
def kmeans_run(customers):
    return spark_ml.segment_on_spark(customers, COLUMNS, algorithms=("kmeans",), k_values=[3, 4], seeds=2,
                                     n_clusters=4, random_state=0)


@pytest.fixture(scope="module")
def gmm_run(customers):
    return spark_ml.segment_on_spark(customers, COLUMNS, algorithms=("gmm",), k_values=[4], seeds=1, random_state=0)


def _spark_segments(labels, table: pd.DataFrame) -> pd.DataFrame:
    got = to_pandas(labels)
    return table[["customer_id"]].merge(got, on="customer_id", how="left", validate="one_to_one")


# --- the preprocessing ---------------------------------------------------------------------


def test_preprocessing_statistics_are_those_of_the_whole_table(kmeans_run, local_matrix, planted):
    model = kmeans_run[0]
    prep, matrix = local_matrix
    # The same decisions as the local build_preprocessor on the whole table...
    assert list(model.preprocessor.get_feature_names_out()) == list(matrix.columns)
    # ...and statistics computed on all rows: the exported transform gives the local matrix.
    exported = model.preprocessor.transform(planted[0][COLUMNS])
    np.testing.assert_allclose(exported.to_numpy(), matrix.to_numpy(), rtol=1e-9, atol=1e-9)
    local_scaler = prep.transformer.named_transformers_["log1p"].named_steps["scale"]
    spark_scaler = model.preprocessor.named_transformers_["log1p"].named_steps["scale"]
    np.testing.assert_allclose(spark_scaler.mean_, local_scaler.mean_, rtol=1e-12)
    np.testing.assert_allclose(spark_scaler.scale_, local_scaler.scale_, rtol=1e-10)


def test_matrix_on_spark_equals_the_exported_transform(spark, kmeans_run, planted):
    model = kmeans_run[0]
    names, build = spark_ml.matrix_columns(model.preprocessor)
    table = planted[0].head(500).copy()
    table.loc[3, "monetary"] = np.nan  # imputed with the median, as locally
    frame = to_spark(spark, table)
    from pyspark.sql import functions as F

    got = to_pandas(frame.select("customer_id", *[e.alias(f"m{i}") for i, e in enumerate(build(F))]))
    got = got.set_index("customer_id").loc[table["customer_id"]]
    expected = model.preprocessor.transform(table[COLUMNS]).to_numpy()
    np.testing.assert_allclose(got.to_numpy(), expected, rtol=1e-12, atol=1e-12)


# --- the sweep -----------------------------------------------------------------------------


def test_kmeans_sweep_recovers_the_segments(kmeans_run, local_matrix, planted):
    model, board, labels = kmeans_run
    table, truth = planted
    got = _spark_segments(labels, table)
    local = make_estimator("kmeans", n_clusters=4, random_state=0).fit(local_matrix[1])
    assert model.algorithm == "kmeans" and len(model.segment_ids) == 4
    assert adjusted_rand_score(local.labels_, got["segment"]) >= 0.99
    assert adjusted_rand_score(truth, got["segment"]) >= 0.95


def test_gmm_sweep_recovers_the_segments(gmm_run, local_matrix, planted):
    model, board, labels = gmm_run
    table, truth = planted
    got = _spark_segments(labels, table)
    local = make_estimator("gmm", n_clusters=4, random_state=0).fit(local_matrix[1])
    assert model.algorithm == "gmm"
    assert adjusted_rand_score(local.labels_, got["segment"]) >= 0.99
    assert adjusted_rand_score(truth, got["segment"]) >= 0.95
    # Memberships as assign gives them.
    assigned = model.assign(table)
    np.testing.assert_allclose(got["probability"], assigned["probability"], rtol=1e-9, atol=1e-12)
    assert board.loc[0, "bic"] > board.loc[0, "aic"] > -np.inf


def test_bisecting_kmeans_on_spark(customers, planted):
    model, board, labels = spark_ml.segment_on_spark(customers, COLUMNS, algorithms="bisecting_kmeans",
                                                     k_values=[4], seeds=1)
    table, truth = planted
    got = _spark_segments(labels, table)
    assert model.algorithm == "bisecting_kmeans" and list(board["algorithm"]) == ["bisecting_kmeans"]
    assert adjusted_rand_score(truth, got["segment"]) >= 0.95
    assert (got["segment"].to_numpy() == model.assign(table)["segment"].to_numpy()).all()


def test_leaderboard_has_the_local_columns_measured_on_all_rows(kmeans_run, planted):
    model, board, labels = kmeans_run
    table = planted[0]
    assert list(board.columns) == list(LEADERBOARD_COLUMNS)
    assert list(board["n_clusters"]) == [3, 4] and not board["on_sample"].any()
    row = board[board["n_clusters"] == 4].iloc[0]
    got = _spark_segments(labels, table)
    counts = got["segment"].value_counts()
    assert row["min_share"] == pytest.approx(counts.min() / len(table), abs=1e-12)
    X = model.preprocessor.transform(table[COLUMNS]).to_numpy()
    centres = model.estimator.cluster_centers_
    inertia = ((X[:, None, :] - centres[None]) ** 2).sum(axis=2).min(axis=1).sum()
    assert row["inertia"] == pytest.approx(inertia, rel=1e-9)
    assert -1 <= row["silhouette"] <= 1 and row["davies_bouldin"] > 0 and row["calinski_harabasz"] > 0
    assert np.isnan(row["bic"])
    # Stability as the local sweep measures it, on the sample: the planted four segments are
    # found again by every refit; three of them are not a stable answer.
    assert row["stability"] >= 0.95
    assert board.loc[board["n_clusters"] == 3, "stability"].iloc[0] < row["stability"]


def test_several_seeds_keep_the_lowest_cost(spark):
    from pyspark.ml.clustering import KMeans
    from pyspark.ml.feature import VectorAssembler

    rng = np.random.default_rng(5)
    points = pd.DataFrame(rng.uniform(size=(400, 2)), columns=["a", "b"])
    vectors = VectorAssembler(inputCols=["a", "b"], outputCol="features").transform(to_spark(spark, points))
    vectors = vectors.select("features").persist()
    seeds = [11, 12, 13]
    fit = spark_ml._fit_one("kmeans", 9, vectors, seeds, ["a", "b"], len(points))
    direct = [KMeans(k=9, seed=s, maxIter=100, tol=1e-6).fit(vectors).summary.trainingCost for s in seeds]
    vectors.unpersist()
    assert len({round(c, 9) for c in direct}) > 1  # the seeds do disagree here
    np.testing.assert_allclose(fit.costs, direct, rtol=1e-12)
    assert fit.seed == seeds[int(np.argmin(direct))]
    centres = fit.estimator.cluster_centers_
    X = points.to_numpy()
    kept = ((X[:, None, :] - centres[None]) ** 2).sum(axis=2).min(axis=1).sum()
    assert kept == pytest.approx(min(direct), rel=1e-9)


# --- assignment ----------------------------------------------------------------------------


def test_spark_assignment_is_the_local_assign(kmeans_run, planted, tmp_path):
    model, _, labels = kmeans_run
    table = planted[0]
    got = _spark_segments(labels, table)
    local = model.assign(table)
    assert list(got.columns) == list(local.columns)
    assert (got["segment"].to_numpy() == local["segment"].to_numpy()).all()
    assert (got["segment_name"].to_numpy() == local["segment_name"].to_numpy()).all()
    # Written to model.skops and read back: the same segments, also through compile_model.
    loaded = load(model.save(tmp_path / "model.skops"))
    again = loaded.assign(table)
    assert (again["segment"].to_numpy() == local["segment"].to_numpy()).all()
    compiled = compile_model(loaded)
    assert compiled.fallback is None
    assert (compiled.assign_frame(table)["segment"].to_numpy() == local["segment"].to_numpy()).all()


def test_spark_assignment_rules_for_unknown_categories_and_far_customers(spark):
    rng = np.random.default_rng(3)
    n = 3_000
    table = pd.DataFrame({
        "customer_id": [f"K{i:05d}" for i in range(n)],
        "spend": np.r_[rng.normal(10, 1, n // 2), rng.normal(30, 1, n - n // 2)],
        "channel": rng.choice(["web", "shop", "phone"], size=n),
    })
    model, _, _ = spark_ml.segment_on_spark(to_spark(spark, table), ["spend", "channel"], k_values=[2], seeds=1)
    assert model.categories == {"channel": ["phone", "shop", "web"]}
    new = pd.DataFrame({"customer_id": ["a", "b", "c", "d", "e"], "spend": [10.0, 30.0, 500.0, None, 12.0],
                        "channel": ["web", "fax", "shop", "phone", None]})
    got = to_pandas(spark_ml.assign_on_spark(model, to_spark(spark, new)))
    expected = model.assign(new)
    pd.testing.assert_frame_equal(got[["customer_id", "segment", "segment_name"]],
                                  expected[["customer_id", "segment", "segment_name"]], check_dtype=False)
    assert got["reason"].tolist()[:2] == expected["reason"].tolist()[:2]
    assert got.loc[1, "reason"] == "unknown channel 'fax'" and got.loc[1, "segment"] == -1
    assert got.loc[2, "reason"].startswith("far from every segment") and got.loc[2, "segment"] == -1


# --- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(("kwargs", "error", "param", "match"), [
    ({"k_values": [2, 10]}, DataError, "k_values", "only 8 customers"),
    ({"algorithms": ("kmeans", "spectral")}, ConfigError, "algorithms", "'spectral'"),
    ({"algorithms": ("dbscan",)}, ConfigError, "algorithms", "run locally"),
    ({"feature_columns": ["spend", "joined"]}, ConfigError, "feature_columns", "'joined' has type date"),
    ({"feature_columns": ["spend", "nope"]}, ConfigError, "feature_columns", "unknown column 'nope'"),
    ({"k_values": [1]}, ConfigError, "k_values", "integers >= 2"),
    ({"seeds": 0}, ConfigError, "seeds", ">= 1"),
])
def test_bad_input_is_one_line_naming_the_parameter(spark, kwargs, error, param, match):
    import datetime as dt

    table = pd.DataFrame({"customer_id": [f"c{i}" for i in range(8)], "spend": np.arange(8.0),
                          "joined": [dt.date(2024, 1, i + 1) for i in range(8)]})
    frame = to_spark(spark, table)
    options = {"feature_columns": ["spend"], "k_values": [2]} | kwargs
    columns = options.pop("feature_columns")
    with pytest.raises(error, match=match) as caught:
        spark_ml.segment_on_spark(frame, columns, **options)
    assert caught.value.param == param
    assert "\n" not in str(caught.value) and isinstance(caught.value, CustsegError)


def test_every_preprocessing_step_on_spark(spark):
    """Flags, categories, log1p, Yeo-Johnson and robust scaling: with the whole table as the
    sample, the statistics are the local ones, and Spark's matrix is the exported transform's."""
    rng = np.random.default_rng(8)
    n = 600
    table = pd.DataFrame({
        "customer_id": np.arange(n),
        "spend": rng.lognormal(3, 1, n),
        "balance": rng.lognormal(2, 1.2, n) - 3,  # skewed with negative values: Yeo-Johnson
        "visits": rng.poisson(4, n).astype("float64"),
        "member": rng.integers(0, 2, n),
        "channel": rng.choice(["web", "shop", "phone"], size=n, p=[0.6, 0.3, 0.1]),
    })
    table.loc[[1, 5], "spend"] = np.nan
    table.loc[[2], "channel"] = None
    columns = ["spend", "balance", "visits", "member", "channel"]
    frame = to_spark(spark, table)
    got = spark_ml.fit_preprocessing_on_spark(frame, columns, sample_rows=table, scaler="robust")
    local = build_preprocessor(table, columns=columns, scaler="robust")
    expected = local.fit_transform(table[local.columns])
    assert [r["action"] for r in got.records] == [r["action"] for r in local.records]
    assert {"yeo_johnson", "log1p", "keep_flag", "one_hot"} <= {r["action"] for r in got.records}
    exported = got.transformer.transform(table[got.columns])
    assert list(exported.columns) == list(expected.columns)
    np.testing.assert_allclose(exported.to_numpy(), expected.to_numpy(), rtol=1e-9, atol=1e-12)
    names, build = spark_ml.matrix_columns(got.transformer)
    from pyspark.sql import functions as F

    on_spark = to_pandas(frame.select("customer_id", *[e.alias(f"m{i}") for i, e in enumerate(build(F))]))
    on_spark = on_spark.sort_values("customer_id").drop(columns="customer_id").to_numpy()
    np.testing.assert_allclose(on_spark, exported.to_numpy(), rtol=1e-12, atol=1e-12)
