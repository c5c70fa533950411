"""Tests of custseg.cluster: the registry, every estimator's contract, sampling, RFM rules."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from scipy.cluster.hierarchy import fcluster, is_valid_linkage
from sklearn.base import clone
from sklearn.datasets import make_blobs
from sklearn.exceptions import NotFittedError
from sklearn.metrics import adjusted_rand_score
from sklearn.utils.estimator_checks import parametrize_with_checks
from threadpoolctl import threadpool_limits

from custseg.cluster import (
    ALGORITHMS,
    DEFAULT_MAX_FIT_SAMPLES,
    DEFAULT_N_CLUSTERS,
    DBSCANClustering,
    GaussianMixtureClustering,
    HDBSCANClustering,
    KPrototypesClustering,
    MeanShiftClustering,
    RFMSegmenter,
    WardClustering,
    make_estimator,
)
from custseg.errors import ConfigError, SchemaError

MATRIX_ALGORITHMS = [name for name, spec in ALGORITHMS.items() if spec.input == "matrix"]
SAMPLED_MATRIX_ALGORITHMS = [name for name in MATRIX_ALGORITHMS if not ALGORITHMS[name].scalable]


@pytest.fixture(autouse=True)
def _single_thread():
    """One BLAS/OpenMP thread: on these tiny inputs thread start-up costs more than it saves,
    and on a busy machine it dominates the run time."""
    with threadpool_limits(limits=1):
        yield


# --------------------------------------------------------------------------------------
# scikit-learn's common estimator checks


_RFM_COLUMNS_REASON = (
    "RFMSegmenter needs exactly the three columns recency_days, frequency, monetary; "
    "this check fits it on an array with a different number of columns"
)
_RFM_FAILING_CHECKS = (
    "check_estimators_overwrite_params",
    "check_estimators_fit_returns_self",
    "check_readonly_memmap_input",
    "check_n_features_in_after_fitting",
    "check_positive_only_tag_during_fit",
    "check_estimators_dtypes",
    "check_dtype_object",
    "check_clustering",
    "check_fit2d_1sample",
    "check_fit2d_1feature",
    "check_fit_idempotent",
    "check_fit_check_is_fitted",
    "check_n_features_in",
)


def _expected_failed_checks(estimator) -> dict[str, str]:
    if isinstance(estimator, RFMSegmenter):
        return dict.fromkeys(_RFM_FAILING_CHECKS, _RFM_COLUMNS_REASON)
    if isinstance(estimator, KPrototypesClustering):
        return {
            "check_fit2d_1feature": (
                "K-Prototypes needs a numeric and a categorical column; this check passes a "
                "single column (ConfigError naming the problem instead of ValueError)"
            )
        }
    return {}


# Small data in the checks: K-Prototypes treats column 1 of the checks' numeric arrays as
# categorical; the max_fit_samples=20 variants exercise fitting on a sample.
@parametrize_with_checks(
    [
        GaussianMixtureClustering(n_clusters=3),
        WardClustering(n_clusters=3),
        WardClustering(n_clusters=3, max_fit_samples=20),
        DBSCANClustering(),
        DBSCANClustering(max_fit_samples=20),
        HDBSCANClustering(),
        HDBSCANClustering(max_fit_samples=20),
        MeanShiftClustering(),
        MeanShiftClustering(max_fit_samples=20),
        KPrototypesClustering(n_clusters=3, categorical=[1], n_init=1),
        KPrototypesClustering(n_clusters=3, categorical=[1], n_init=1, max_fit_samples=20),
        RFMSegmenter(),
    ],
    expected_failed_checks=_expected_failed_checks,
    xfail_strict=True,
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# --------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def blobs() -> tuple[np.ndarray, np.ndarray]:
    """120 points in 3 tight, far-apart groups (40 each)."""
    X, y = make_blobs(
        n_samples=120, centers=[[0.0, 0.0], [6.0, 6.0], [-6.0, 6.0]], cluster_std=0.4, random_state=7
    )
    return X, y


def _mixed_customers(n_per_group: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Two planted groups that differ in a scaled number and in two categories."""
    rng = np.random.default_rng(seed)
    truth = np.repeat([0, 1], n_per_group)
    frame = pd.DataFrame(
        {
            "monetary": np.where(truth == 0, -1.0, 1.0) + rng.normal(0.0, 0.2, truth.size),
            "channel": np.where(truth == 0, "web", "store"),
            "country": np.where(truth == 0, "UK", "FR"),
            "recency_days": rng.normal(0.0, 0.2, truth.size),
        }
    )
    frame["country"] = frame["country"].astype("category")
    return frame, truth


def _rfm_table() -> pd.DataFrame:
    """Ten customers, two per recency quintile; frequency 1 is shared by four customers."""
    return pd.DataFrame(
        {
            "customer_id": [f"C{i}" for i in range(10)],
            "recency_days": [3, 10, 25, 40, 60, 90, 150, 200, 300, 400],
            "frequency": [12, 1, 6, 1, 3, 1, 20, 4, 1, 7],
            "monetary": [500.0, 40.0, 300.0, 35.0, 120.0, 60.0, 900.0, 150.0, 20.0, 250.0],
        }
    )


# --------------------------------------------------------------------------------------
# registry


def test_registry_names_and_capabilities():
    assert list(ALGORITHMS) == [
        "kmeans",
        "minibatch",
        "bisecting_kmeans",
        "gmm",
        "agglomerative",
        "dbscan",
        "hdbscan",
        "meanshift",
        "birch",
        "kprototypes",
        "rfm",
    ]
    assert {name for name, spec in ALGORITHMS.items() if not spec.scalable} == {
        "agglomerative",
        "dbscan",
        "hdbscan",
        "meanshift",
        "kprototypes",
    }
    assert [name for name, spec in ALGORITHMS.items() if spec.has_proba] == ["gmm"]
    assert [name for name, spec in ALGORITHMS.items() if spec.needs_categorical] == ["kprototypes"]
    assert ALGORITHMS["kmeans"].label == "K-Means"
    assert ALGORITHMS["bisecting_kmeans"].label == "Bisecting K-Means"
    assert [name for name, spec in ALGORITHMS.items() if spec.has_inertia] == ["kmeans", "minibatch", "bisecting_kmeans"]
    with pytest.raises(TypeError):
        ALGORITHMS["new"] = ALGORITHMS["kmeans"]  # read-only


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_make_estimator_follows_the_spec(name):
    spec = ALGORITHMS[name]
    estimator = make_estimator(name, n_clusters=3 if spec.takes_k else None, random_state=5)
    params = estimator.get_params()
    assert hasattr(estimator, "fit") and hasattr(estimator, "predict")
    assert hasattr(estimator, "predict_proba") == spec.has_proba
    if spec.takes_k:
        assert params["n_clusters"] == 3
    if "random_state" in params:
        assert params["random_state"] == 5
    if not spec.scalable:
        assert params["max_fit_samples"] == DEFAULT_MAX_FIT_SAMPLES


def test_make_estimator_default_k_and_params():
    assert make_estimator("kmeans").n_clusters == DEFAULT_N_CLUSTERS
    assert make_estimator("dbscan", eps=0.3, max_fit_samples=100).get_params()["eps"] == 0.3


def test_unknown_algorithm_error():
    with pytest.raises(ConfigError, match=r"algorithm must be one of kmeans, minibatch, .*, rfm, got 'kmedoids'"):
        make_estimator("kmedoids")


def test_n_clusters_for_density_algorithm_error():
    with pytest.raises(ConfigError, match=r"'dbscan' finds the number of segments itself, got n_clusters=3"):
        make_estimator("dbscan", n_clusters=3)


@pytest.mark.parametrize("n_clusters", [0, 2.5, "4"])
def test_bad_n_clusters_error(n_clusters):
    with pytest.raises(ConfigError, match=r"n_clusters must be an integer >= 1, got"):
        make_estimator("kmeans", n_clusters=n_clusters)


def test_unknown_parameter_error():
    with pytest.raises(ConfigError, match=r"unknown parameter\(s\) 'epsilon' for algorithm 'dbscan'; valid: eps, "):
        make_estimator("dbscan", epsilon=0.3)


# --------------------------------------------------------------------------------------
# behaviour shared by the algorithms


@pytest.mark.parametrize("name", MATRIX_ALGORITHMS)
def test_recovers_well_separated_groups(name, blobs):
    X, y = blobs
    n_clusters = 3 if ALGORITHMS[name].takes_k else None
    labels = make_estimator(name, n_clusters=n_clusters).fit(X).labels_
    assert adjusted_rand_score(y, labels) == pytest.approx(1.0)


@pytest.mark.parametrize("name", MATRIX_ALGORITHMS)
def test_same_seed_same_labels(name, blobs):
    X, _ = blobs
    X = X + np.random.default_rng(0).normal(0.0, 1.5, X.shape)  # blur the groups: seeds matter
    n_clusters = 4 if ALGORITHMS[name].takes_k else None
    first = make_estimator(name, n_clusters=n_clusters, random_state=3, max_fit_samples=60).fit(X)
    second = make_estimator(name, n_clusters=n_clusters, random_state=3, max_fit_samples=60).fit(X)
    np.testing.assert_array_equal(first.labels_, second.labels_)


@pytest.mark.parametrize("name", ["kmeans", "minibatch", "bisecting_kmeans", "gmm", "birch", "meanshift"])
def test_predict_on_training_data_equals_labels(name, blobs):
    X, _ = blobs
    X = X + np.random.default_rng(1).normal(0.0, 1.0, X.shape)
    n_clusters = 3 if ALGORITHMS[name].takes_k else None
    estimator = make_estimator(name, n_clusters=n_clusters).fit(X)
    np.testing.assert_array_equal(estimator.predict(X), estimator.labels_)


@pytest.mark.parametrize("name", SAMPLED_MATRIX_ALGORITHMS)
def test_sampled_fit_labels_every_row(name):
    X, y = make_blobs(
        n_samples=30_000, centers=[[0.0, 0.0], [6.0, 6.0], [-6.0, 6.0]], cluster_std=0.4, random_state=0
    )
    n_clusters = 3 if ALGORITHMS[name].takes_k else None
    estimator = make_estimator(name, n_clusters=n_clusters, max_fit_samples=1_000).fit(X)
    assert estimator.sampled_ is True
    assert estimator.n_fit_samples_ == 1_000
    assert estimator.fit_indices_.shape == (1_000,)
    assert estimator.labels_.shape == (30_000,)
    assert adjusted_rand_score(y, estimator.labels_) > 0.99


@pytest.mark.parametrize("name", SAMPLED_MATRIX_ALGORITHMS)
def test_small_data_is_not_sampled(name, blobs):
    X, _ = blobs
    estimator = make_estimator(name, n_clusters=3 if ALGORITHMS[name].takes_k else None).fit(X)
    assert estimator.sampled_ is False
    assert estimator.n_fit_samples_ == X.shape[0]


def test_sample_depends_on_seed(blobs):
    X, _ = blobs
    first = WardClustering(n_clusters=3, max_fit_samples=50, random_state=1).fit(X)
    again = WardClustering(n_clusters=3, max_fit_samples=50, random_state=1).fit(X)
    other = WardClustering(n_clusters=3, max_fit_samples=50, random_state=2).fit(X)
    np.testing.assert_array_equal(first.fit_indices_, again.fit_indices_)
    assert not np.array_equal(first.fit_indices_, other.fit_indices_)


@pytest.mark.parametrize("name", MATRIX_ALGORITHMS)
def test_estimator_pickles(name, blobs):
    X, _ = blobs
    estimator = make_estimator(name, n_clusters=3 if ALGORITHMS[name].takes_k else None).fit(X)
    restored = pickle.loads(pickle.dumps(estimator))
    np.testing.assert_array_equal(restored.predict(X[:10]), estimator.predict(X[:10]))


# --------------------------------------------------------------------------------------
# one algorithm at a time


@pytest.mark.parametrize("cls", [DBSCANClustering, HDBSCANClustering])
def test_obvious_outlier_is_noise(cls, blobs):
    X, _ = blobs
    X = np.vstack([X, [[40.0, -40.0]]])
    estimator = cls().fit(X)
    assert estimator.labels_[-1] == -1
    assert (estimator.labels_[:-1] >= 0).all()
    assert estimator.predict([[-40.0, 40.0]]).tolist() == [-1]
    assert estimator.predict(X[:1]).tolist() == [estimator.labels_[0]]
    assert estimator.n_clusters_ == 3


def test_meanshift_cluster_all_false_marks_far_points_as_noise(blobs):
    X, _ = blobs
    estimator = MeanShiftClustering(bandwidth=1.0, cluster_all=False).fit(X)
    assert estimator.predict([[40.0, -40.0]]).tolist() == [-1]


def test_gmm_probabilities_sum_to_one(blobs):
    X, _ = blobs
    gmm = make_estimator("gmm", n_clusters=3).fit(X)
    proba = gmm.predict_proba(X)
    assert proba.shape == (120, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(proba.argmax(axis=1), gmm.labels_)


def test_ward_linkage_matches_scipy_cut(blobs):
    X, _ = blobs
    ward = WardClustering(n_clusters=3).fit(X)
    assert ward.linkage_.shape == (119, 4)
    assert is_valid_linkage(ward.linkage_)
    assert ward.linkage_[-1, 3] == 120
    cut = fcluster(ward.linkage_, t=3, criterion="maxclust")
    assert adjusted_rand_score(cut, ward.labels_) == 1.0


def test_kprototypes_recovers_planted_groups_with_detected_categoricals():
    frame, truth = _mixed_customers(30, seed=0)
    model = make_estimator("kprototypes", n_clusters=2).fit(frame)
    assert model.categorical_ == [1, 2]
    assert adjusted_rand_score(truth, model.labels_) == 1.0
    np.testing.assert_array_equal(model.predict(frame), model.labels_)
    prototype_channels = set(model.cluster_centroids_[:, 1])
    assert prototype_channels == {"web", "store"}


def test_kprototypes_categorical_by_name_and_unknown_category():
    frame, truth = _mixed_customers(30, seed=1)
    model = KPrototypesClustering(n_clusters=2, categorical=["channel"]).fit(frame.drop(columns="country"))
    assert adjusted_rand_score(truth, model.labels_) == 1.0
    new = pd.DataFrame({"monetary": [-1.0], "channel": ["phone"], "recency_days": [0.0]})
    assert model.predict(new).tolist() == [model.labels_[0]]


def test_kprototypes_sampled_on_many_rows():
    frame, truth = _mixed_customers(15_000, seed=2)
    model = KPrototypesClustering(n_clusters=2, n_init=1, max_fit_samples=1_000).fit(frame)
    assert model.sampled_ is True and model.n_fit_samples_ == 1_000
    assert model.labels_.shape == (30_000,)
    assert adjusted_rand_score(truth, model.labels_) == 1.0


def test_kprototypes_without_categoricals_error(blobs):
    X, _ = blobs
    with pytest.raises(ConfigError, match="K-Prototypes found no categorical columns; pass categorical="):
        KPrototypesClustering(n_clusters=2).fit(X)


def test_kprototypes_unknown_categorical_name_error():
    frame, _ = _mixed_customers(5, seed=0)
    with pytest.raises(ConfigError, match=r"categorical column 'plan' is not in X; available: monetary, channel"):
        KPrototypesClustering(n_clusters=2, categorical=["plan"]).fit(frame)


# --------------------------------------------------------------------------------------
# RFM segments


def test_rfm_names_on_hand_made_table():
    table = _rfm_table()
    rfm = make_estimator("rfm").fit(table)
    names = [rfm.segment_names_[code] for code in rfm.labels_]
    assert names == [
        "Champions",  # R5 F5
        "New",  # R5 F1
        "Loyal",  # R4 F4
        "Promising",  # R4 F1
        "Need Attention",  # R3 F3
        "About to Sleep",  # R3 F2: 4th of the four customers with frequency 1
        "Can't Lose Them",  # R2 F5
        "At Risk",  # R2 F3
        "Hibernating",  # R1 F2
        "At Risk",  # R1 F4
    ]
    assert rfm.n_clusters_ == 9


def test_rfm_scores_and_edges():
    table = _rfm_table()
    rfm = RFMSegmenter().fit(table)
    scores = rfm.rfm_scores(table)
    assert scores["r_score"].tolist() == [5, 5, 4, 4, 3, 3, 2, 2, 1, 1]
    assert scores["m_score"].tolist() == [5, 2, 4, 1, 3, 2, 5, 3, 1, 4]
    np.testing.assert_array_equal(rfm.frequency_edges_, [1, 1, 4, 7])
    # Tied frequencies split by row order at fit; new customers with the tie get the lowest bin.
    assert scores["f_score"].tolist() == [5, 1, 4, 1, 3, 1, 5, 3, 1, 4]


def test_rfm_predict_new_customers_uses_fitted_edges():
    # Fitted edges: recency 10, 40, 90, 200; frequency 1, 1, 4, 7 (so a new frequency 2 is F3).
    rfm = RFMSegmenter().fit(_rfm_table())
    new = pd.DataFrame(
        {
            "recency_days": [1, 1000, 30, 120],
            "frequency": [100, 1, 3, 2],
            "monetary": [10_000.0, 1.0, 100.0, 50.0],
        }
    )
    names = [rfm.segment_names_[code] for code in rfm.predict(new)]
    assert names == ["Champions", "Lost", "Potential Loyalist", "At Risk"]


def test_rfm_ties_and_tiny_tables_do_not_crash():
    tied = pd.DataFrame({"recency_days": [5, 5, 5, 5, 90], "frequency": [1] * 5, "monetary": [10.0] * 5})
    labels = RFMSegmenter().fit(tied).labels_
    assert labels.shape == (5,) and (labels >= 0).all()
    single = RFMSegmenter().fit(tied.iloc[:1])
    assert single.segment_names_[single.labels_[0]] == "Need Attention"


def test_rfm_custom_map_leaves_unmatched_unassigned():
    rfm = RFMSegmenter(segment_map=[("5[4-5]", "Champions")]).fit(_rfm_table())
    assert rfm.segment_names_ == {0: "Champions"}
    assert rfm.labels_.tolist() == [0] + [-1] * 9


def test_rfm_estimator_contract():
    table = _rfm_table()
    rfm = RFMSegmenter()
    with pytest.raises(NotFittedError):
        rfm.predict(table)
    assert rfm.fit(table) is rfm
    refit = clone(rfm).fit(table)
    np.testing.assert_array_equal(refit.labels_, rfm.labels_)
    restored = pickle.loads(pickle.dumps(rfm))
    np.testing.assert_array_equal(restored.predict(table), rfm.predict(table))
    assert list(rfm.feature_names_in_) == ["recency_days", "frequency", "monetary"]
    array_fit = RFMSegmenter().fit(table[["recency_days", "frequency", "monetary"]].to_numpy())
    np.testing.assert_array_equal(array_fit.labels_, rfm.labels_)


def test_rfm_missing_column_error():
    message = r"RFM segments need columns recency_days, frequency, monetary; missing 'monetary'"
    with pytest.raises(SchemaError, match=message):
        RFMSegmenter().fit(_rfm_table().drop(columns="monetary"))


def test_rfm_bad_segment_map_error():
    with pytest.raises(ConfigError, match="segment_map must be a sequence of"):
        RFMSegmenter(segment_map=[("[1-", "Broken")]).fit(_rfm_table())


def test_rfm_map_on_three_digit_codes_and_as_mapping():
    table = _rfm_table()
    by_code = RFMSegmenter(segment_map=[("..[4-5]", "Big spenders"), ("...", "Others")]).fit(table)
    names = [by_code.segment_names_[code] for code in by_code.labels_]
    assert names == ["Big spenders", "Others", "Big spenders"] + ["Others"] * 3 + ["Big spenders"] + ["Others"] * 2 + [
        "Big spenders"
    ]
    as_mapping = RFMSegmenter(segment_map={"5[4-5]": "Champions", "..": "Others"}).fit(table)
    assert as_mapping.segment_names_ == {0: "Champions", 1: "Others"}
    assert as_mapping.labels_.tolist() == [0] + [1] * 9


def test_bisecting_kmeans_is_scikit_learns_with_its_tree_of_splits():
    from sklearn.cluster import BisectingKMeans

    X, _ = make_blobs(n_samples=3_000, n_features=3, centers=6, cluster_std=2.5, random_state=2)
    estimator = make_estimator("bisecting_kmeans", n_clusters=5, random_state=4)
    assert isinstance(estimator, BisectingKMeans) and estimator.get_params()["random_state"] == 4
    estimator.fit(X)
    assert estimator.cluster_centers_.shape == (5, 3) and sorted(set(estimator.labels_.tolist())) == [0, 1, 2, 3, 4]
    nearest = ((X[:, None, :] - estimator.cluster_centers_[None]) ** 2).sum(axis=2).argmin(axis=1)
    assert estimator.inertia_ == pytest.approx(((X - estimator.cluster_centers_[estimator.labels_]) ** 2).sum())
    # New customers go down the tree of splits: near a border of an early split, that is not
    # the nearest leaf centre (custseg.scoring reproduces this rule).
    grid = np.random.default_rng(0).uniform(X.min(axis=0), X.max(axis=0), size=(5_000, 3))
    walked = estimator.predict(grid)
    closest = ((grid[:, None, :] - estimator.cluster_centers_[None]) ** 2).sum(axis=2).argmin(axis=1)
    assert 0 < (walked != closest).sum() < len(grid) // 4
    assert (nearest == estimator.labels_).mean() > 0.9
