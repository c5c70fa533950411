"""Tests for custseg.selection: the sweep, the elbow, the recommendation rule."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from sklearn.metrics import adjusted_rand_score
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from custseg.cluster import make_estimator
from custseg.datasets import make_customers
from custseg.errors import ConfigError, DataError, SchemaError
from custseg.selection import (
    LEADERBOARD_COLUMNS,
    Recommendation,
    SelectionResult,
    compare,
    kneedle,
    recommend,
)

K_VALUES = range(2, 9)


@pytest.fixture(scope="module", autouse=True)
def _single_thread():
    """These fits are tiny: OpenMP threads cost more than they save (far more on a busy host)."""
    with threadpool_limits(1):
        yield


def _matrix(customers: pd.DataFrame) -> pd.DataFrame:
    features = customers.drop(columns="customer_id")
    scaled = StandardScaler().fit_transform(np.log1p(features))
    return pd.DataFrame(scaled, columns=features.columns)


@pytest.fixture(scope="module")
def planted() -> tuple[pd.DataFrame, np.ndarray]:
    customers, labels = make_customers(1200, n_segments=4, random_state=0)
    return _matrix(customers), labels


@pytest.fixture(scope="module")
def result(planted) -> SelectionResult:
    X, _ = planted
    return compare(X, algorithms=("kmeans",), k_values=K_VALUES, n_bootstrap=3)


def _row(board: pd.DataFrame, algorithm: str, k: int) -> pd.Series:
    rows = board[(board["algorithm"] == algorithm) & (board["n_clusters"] == k)]
    assert len(rows) == 1
    return rows.iloc[0]


# --- compare on planted segments --------------------------------------------------------------


def test_recommends_the_planted_k_and_recovers_the_segments(planted, result):
    X, truth = planted
    assert isinstance(result.recommendation, Recommendation)
    assert (result.recommendation.algorithm, result.recommendation.n_clusters) == ("kmeans", 4)
    fitted = make_estimator("kmeans", n_clusters=4, random_state=0).fit(X)
    assert adjusted_rand_score(truth, fitted.labels_) >= 0.9


def test_leaderboard_has_one_row_per_k_with_the_documented_columns(result):
    board = result.leaderboard
    assert tuple(board.columns) == LEADERBOARD_COLUMNS
    assert list(board["algorithm"]) == ["kmeans"] * len(K_VALUES)
    assert list(board["n_clusters"]) == list(K_VALUES)
    assert not board["on_sample"].any()
    assert board["bic"].isna().all() and board["aic"].isna().all()  # K-Means has no likelihood
    assert (board["noise_share"] == 0).all()
    assert (np.diff(board["inertia"]) < 0).all()
    assert board["silhouette"].between(-1, 1).all()
    assert board["stability"].between(-1, 1).all()
    assert (board["min_share"] > 0).all() and (board["min_share"] <= 1 / board["n_clusters"]).all()
    assert (board["davies_bouldin"] > 0).all() and (board["calinski_harabasz"] > 0).all()
    assert (board["fit_seconds"] >= 0).all()
    best = board.loc[board["silhouette"].idxmax()]
    assert best["n_clusters"] == 4


def test_elbow_starts_at_k1_and_reports_the_knee(planted, result):
    X, _ = planted
    elbow = result.elbow
    assert list(elbow.columns) == ["k", "inertia"]
    assert list(elbow["k"]) == list(range(1, 16))
    # k = 1 is the total sum of squares around the mean: n * n_features for scaled data.
    assert elbow["inertia"].iloc[0] == pytest.approx(X.shape[0] * X.shape[1])
    # The swept k reuse the same fits as the leaderboard.
    swept = elbow.set_index("k").loc[list(K_VALUES), "inertia"].to_numpy()
    np.testing.assert_array_equal(swept, result.leaderboard["inertia"].to_numpy())
    assert result.knee == 4
    assert "knee of the elbow at 4" in result.recommendation.reasons


def test_text_quotes_the_measured_numbers(result):
    rec = result.recommendation
    row = _row(result.leaderboard, rec.algorithm, rec.n_clusters)
    assert rec.text.startswith("K-Means with 4 segments: ")
    assert f"silhouette {row['silhouette']:.2f}" in rec.text
    assert f"ARI {row['stability']:.2f}" in rec.text
    assert any(r.startswith("smallest segment ") for r in rec.reasons)


def test_same_seed_gives_the_same_leaderboard(planted):
    X, _ = planted
    runs = [
        compare(X, algorithms=("kmeans",), k_values=range(3, 6), n_bootstrap=2, random_state=7)
        for _ in range(2)
    ]
    pd.testing.assert_frame_equal(
        runs[0].leaderboard.drop(columns="fit_seconds"),
        runs[1].leaderboard.drop(columns="fit_seconds"),
    )
    pd.testing.assert_frame_equal(runs[0].elbow, runs[1].elbow)
    assert runs[0].recommendation == runs[1].recommendation


def test_does_not_modify_the_input(planted):
    X, _ = planted
    before = X.copy()
    compare(X, algorithms=("kmeans",), k_values=range(2, 4), n_bootstrap=1)
    pd.testing.assert_frame_equal(X, before)


def test_gaussian_mixture_rows_carry_bic_and_aic(planted):
    X, _ = planted
    res = compare(X, algorithms=("kmeans", "gmm"), k_values=range(3, 6), n_bootstrap=0)
    board = res.leaderboard
    assert list(zip(board["algorithm"], board["n_clusters"])) == [
        ("kmeans", 3), ("kmeans", 4), ("kmeans", 5), ("gmm", 3), ("gmm", 4), ("gmm", 5),
    ]
    gmm = board[board["algorithm"] == "gmm"]
    assert np.isfinite(gmm["bic"]).all() and np.isfinite(gmm["aic"]).all()
    assert gmm["inertia"].isna().all()
    assert board["stability"].isna().all()
    assert "stability not measured" in res.recommendation.reasons


def test_big_input_is_swept_on_a_sample_and_says_so():
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(centre, 0.4, (400, 2)) for centre in (0, 5, 10)])
    res = compare(X, algorithms=("kmeans",), k_values=range(2, 5), sample_size=300, n_bootstrap=1)
    assert res.leaderboard["on_sample"].all()
    assert res.recommendation.n_clusters == 3
    assert "metrics measured on a seeded random sample of the customers" in (
        res.recommendation.reasons
    )
    # k = 1 inertia is over the 300 sampled rows, not all 1200.
    assert res.elbow["inertia"].iloc[0] < ((X - X.mean(axis=0)) ** 2).sum() / 2


def test_progress_is_called_up_to_the_total(planted):
    X, _ = planted
    calls: list[tuple[str, int, int]] = []
    compare(
        X,
        algorithms=("kmeans",),
        k_values=range(2, 4),
        n_bootstrap=1,
        progress=lambda step, done, total: calls.append((step, done, total)),
    )
    # 2 swept k + the elbow's k = 4..15 not covered by the sweep.
    assert [done for _, done, _ in calls] == list(range(0, 15))
    assert {total for _, _, total in calls} == {14}
    assert [step for step, _, _ in calls[:4]] == ["start", "kmeans k=2", "kmeans k=3", "elbow k=4"]
    assert calls[-1][0] == "elbow k=15"


def test_algorithm_without_k_reports_segments_found_and_noise():
    rng = np.random.default_rng(1)
    X = np.vstack([rng.normal(centre, 0.15, (150, 2)) for centre in (0, 3, 6)])
    res = compare(X, algorithms=("dbscan",), n_bootstrap=2)
    board = res.leaderboard
    assert len(board) == 1 and board["algorithm"].iloc[0] == "dbscan"
    assert board["n_clusters"].iloc[0] == 3
    assert 0 <= board["noise_share"].iloc[0] < 0.1
    assert res.recommendation.n_clusters == 3
    assert "number of segments found by DBSCAN" in res.recommendation.reasons


# --- user override --------------------------------------------------------------------------


def test_forced_k_is_honoured_and_said(result):
    rec = recommend(result.leaderboard, knee=result.knee, n_clusters=6)
    row = _row(result.leaderboard, "kmeans", 6)
    assert (rec.algorithm, rec.n_clusters) == ("kmeans", 6)
    assert rec.reasons[0] == "number of segments chosen by the user"
    assert f"silhouette {row['silhouette']:.2f}" in rec.text
    assert any("automatic rule would pick K-Means with 4 segments" in r for r in rec.reasons)


def test_forced_algorithm_and_k_are_honoured_and_said(result):
    rec = recommend(result.leaderboard, knee=result.knee, algorithm="kmeans", n_clusters=2)
    assert (rec.algorithm, rec.n_clusters) == ("kmeans", 2)
    assert rec.reasons[0] == "algorithm and number of segments chosen by the user"
    assert rec.text.startswith("K-Means with 2 segments: algorithm and number of segments")


def test_forced_algorithm_alone_applies_the_rule_within_it(result):
    rec = recommend(result.leaderboard, knee=result.knee, algorithm="kmeans")
    assert (rec.algorithm, rec.n_clusters) == ("kmeans", 4)
    assert rec.reasons[0] == "algorithm chosen by the user"


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"n_clusters": 12}, r"n_clusters=12 is not in the leaderboard, which has k 2, 3"),
        ({"algorithm": "gmm"}, r"algorithm 'gmm' is not in the leaderboard"),
        ({"algorithm": "kmeans", "n_clusters": 1}, r"n_clusters=1 is not in the leaderboard"),
    ],
)
def test_forced_choice_missing_from_the_leaderboard_is_a_config_error(result, options, match):
    with pytest.raises(ConfigError, match=match):
        recommend(result.leaderboard, knee=result.knee, **options)


# --- the rule on hand-made leaderboards -------------------------------------------------------


def _board(rows: list[tuple[int, float, float, float]], algorithm: str = "kmeans") -> pd.DataFrame:
    """(k, silhouette, stability, min_share) rows of one algorithm."""
    k, sil, stab, share = zip(*rows)
    return pd.DataFrame(
        {
            "algorithm": algorithm,
            "n_clusters": k,
            "silhouette": sil,
            "stability": stab,
            "min_share": share,
            "noise_share": 0.0,
            "on_sample": False,
        }
    )


def test_knee_within_tolerance_beats_the_best_silhouette():
    board = _board([(3, 0.45, 0.9, 0.2), (4, 0.44, 0.9, 0.1), (5, 0.40, 0.9, 0.1)])
    rec = recommend(board, knee=4)
    assert rec.n_clusters == 4
    assert rec.text == (
        "K-Means with 4 segments: knee of the elbow at 4, silhouette 0.44, within 0.02 of the "
        "best 0.45 (K-Means, 3 segments), stable across resamples (ARI 0.90)"
    )


def test_knee_far_below_the_best_silhouette_loses():
    board = _board([(3, 0.50, 0.9, 0.2), (4, 0.22, 0.9, 0.1)])
    rec = recommend(board, knee=4)
    assert rec.n_clusters == 3
    assert any(r.startswith("the elbow's knee at 4 was not chosen") for r in rec.reasons)


def test_knee_with_a_real_structure_beats_a_two_segment_split():
    board = _board([(2, 0.32, 0.98, 0.37), (3, 0.30, 0.98, 0.3), (4, 0.26, 0.79, 0.18)])
    rec = recommend(board, knee=4)
    assert rec.n_clusters == 4
    assert rec.text == (
        "K-Means with 4 segments: knee of the elbow at 4, silhouette 0.26 (≥ 0.25, a real "
        "structure; the best, 0.32, splits into only 2 segments), stable across resamples (ARI 0.79)"
    )


def test_small_segments_and_unstable_rows_are_set_aside():
    board = _board([(3, 0.30, 0.9, 0.2), (4, 0.60, 0.9, 0.01), (5, 0.55, 0.3, 0.1)])
    rec = recommend(board, knee=None, min_share=0.02)
    assert rec.n_clusters == 3
    assert "silhouette 0.30 (best among stable k with every segment ≥ 2% of customers)" in (
        rec.reasons
    )
    assert "the elbow curve has no clear knee" in rec.reasons
    # Without the size floor the 1% segment is acceptable.
    assert recommend(board, knee=None, min_share=0.0).n_clusters == 4


def test_best_available_when_nothing_passes_and_it_is_said():
    board = _board([(3, 0.30, 0.4, 0.01), (4, 0.50, 0.5, 0.01)])
    rec = recommend(board, knee=None)
    assert rec.n_clusters == 4
    assert any(r.startswith("no configuration had every segment ≥ 2%") for r in rec.reasons)
    assert "unstable across resamples (ARI 0.50)" in rec.reasons


def test_equal_printed_silhouettes_go_to_the_more_stable_row():
    board = _board([(3, 0.412, 0.70, 0.2), (4, 0.408, 0.95, 0.1)])
    assert recommend(board, knee=None).n_clusters == 4


def test_no_usable_row_is_a_data_error():
    board = _board([(1, math.nan, 1.0, 1.0)], algorithm="dbscan")
    with pytest.raises(DataError, match="no configuration among 1 leaderboard row"):
        recommend(board, knee=None)


def test_leaderboard_without_the_columns_is_a_schema_error():
    with pytest.raises(SchemaError, match="leaderboard lacks column"):
        recommend(pd.DataFrame({"algorithm": ["kmeans"]}), knee=None)


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("X", "options", "match"),
    [
        (np.arange(20.0).reshape(10, 2), {}, r"k_values go up to 15 but X has only 10 rows"),
        (np.ones((50, 3)), {}, r"all 50 rows of X are identical"),
        (
            np.repeat([[0.0, 1.0], [1.0, 0.0], [2.0, 2.0]], 10, axis=0),
            {"k_values": range(2, 6)},
            r"k_values go up to 5 but X has only 3 distinct rows",
        ),
        (np.array([[1.0, 2.0], [3.0, np.nan], [0.0, 1.0]]), {"k_values": [2]},
         r"1 missing or infinite value\(s\), first in column '1' row 1"),
        (np.arange(5.0), {}, r"X must be 2-D"),
        (np.ones((2, 2)), {}, r"X has 2 row\(s\)"),
        (pd.DataFrame({"a": [1.0, 2.0, 3.0], "country": ["x", "y", "z"]}), {},
         r"non-numeric column\(s\) 'country'"),
    ],
)
def test_degenerate_input_is_a_data_error(X, options, match):
    with pytest.raises(DataError, match=match):
        compare(X, algorithms=("kmeans",), **options)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"algorithms": ("kmeans", "nope")}, r"unknown algorithm\(s\) 'nope'; choose from"),
        ({"algorithms": ()}, r"algorithms is empty"),
        ({"k_values": [1, 2]}, r"k_values must be integers >= 2, got 1"),
        ({"k_values": []}, r"k_values must be integers >= 2, got nothing"),
        ({"min_share": 1.5}, r"min_share must be a fraction in \[0, 1\), got 1.5"),
        ({"n_bootstrap": -1}, r"n_bootstrap must be an integer >= 0, got -1"),
        ({"sample_size": 2}, r"sample_size must be an integer >= 3, got 2"),
        ({"progress": "bar"}, r"progress must be a callable"),
    ],
)
def test_bad_options_are_config_errors(options, match):
    X = np.random.default_rng(0).normal(size=(30, 2))
    with pytest.raises(ConfigError, match=match):
        compare(X, **{"algorithms": ("kmeans",), "k_values": [2, 3], **options})


def test_forced_algorithm_without_usable_rows_is_a_data_error():
    board = pd.concat(
        [_board([(3, 0.5, 0.9, 0.2)]), _board([(1, math.nan, 1.0, 1.0)], algorithm="dbscan")],
        ignore_index=True,
    )
    with pytest.raises(DataError, match=r"no leaderboard row for algorithm 'dbscan' has 2 or more"):
        recommend(board, knee=None, algorithm="dbscan")
    rec = recommend(board, knee=None, algorithm="dbscan", n_clusters=1)
    assert (rec.algorithm, rec.n_clusters) == ("dbscan", 1)
    assert "silhouette not defined (fewer than 2 segments)" in rec.reasons


# --- what the sweep leaves out -----------------------------------------------------------------


@pytest.mark.parametrize("n, sample", [(300, 5_000), (900, 400)])
def test_shared_silhouette_equals_scikit_learns(n, sample):
    from sklearn.metrics import silhouette_score

    from custseg.selection import _SharedSilhouette

    rng = np.random.default_rng(3)
    data = rng.normal(size=(n, 3))
    shared = _SharedSilhouette(data, sample, 11)
    for k in (2, 3, 7):
        labels = make_estimator("kmeans", n_clusters=k, random_state=0).fit(data).labels_
        alone = silhouette_score(data, labels, sample_size=sample if n > sample else None, random_state=11)
        assert shared(labels) == pytest.approx(alone, rel=1e-12, abs=1e-12)


def test_configurations_with_too_small_a_segment_are_not_refitted(planted):
    X, _ = planted
    res = compare(X, algorithms=("kmeans",), k_values=range(2, 16), n_bootstrap=2, min_share=0.05)
    board = res.leaderboard
    small = board["min_share"] < 0.05
    assert small.any() and (~small).any()
    assert board.loc[small, "stability"].isna().all()
    assert board.loc[~small, "stability"].between(-1, 1).all()
    assert (res.recommendation.algorithm, res.recommendation.n_clusters) == ("kmeans", 4)


def test_all_configurations_are_refitted_when_none_passes_the_size_test(planted):
    X, _ = planted
    board = compare(X, algorithms=("kmeans",), k_values=range(3, 6), n_bootstrap=1, min_share=0.4).leaderboard
    assert (board["min_share"] < 0.4).all()
    assert board["stability"].notna().all()


def test_silhouette_from_distances_handles_segments_of_one_and_too_few_segments():
    from sklearn.metrics import pairwise_distances, silhouette_score

    from custseg.selection import _silhouette_from_distances

    X = np.array([[0.0, 0], [0, 1], [5, 5], [5, 6], [20, 20]])
    D = pairwise_distances(X)
    labels = np.array([3, 3, 7, 7, 9])  # a segment of one, labels not 0..k-1
    assert _silhouette_from_distances(D, labels) == pytest.approx(silhouette_score(X, labels), rel=1e-12)
    assert math.isnan(_silhouette_from_distances(D, np.zeros(5, dtype=int)))
    assert math.isnan(_silhouette_from_distances(D, np.arange(5)))


@pytest.mark.parametrize(
    ("agreements", "remaining", "settled"),
    [
        ([], 5, False),
        ([1.0, 1.0], 3, False),  # fewer than three made
        ([1.0, 0.95, 0.9], 2, True),  # three, each at 0.9 or more
        ([1.0, 0.95, 0.89], 2, False),
        ([1.0, 1.0, 1.0], 0, False),  # none left to skip
        ([0.1, 0.2], 3, False),  # (0.3 + 3) / 5 = 0.66 >= 0.6: perfect agreement could still reach it
        ([0.1, 0.2, 0.3], 2, True),  # (0.6 + 2) / 5 = 0.52 < 0.6 whatever the rest give
        ([0.3, 0.3, 0.3, 0.0], 1, True),  # (0.9 + 1) / 5 = 0.38
        ([0.5, 0.5, 0.5, 0.5], 1, False),  # (2 + 1) / 5 = 0.6: the rest decide
    ],
)
def test_stability_resampling_stops_only_when_the_answer_is_settled(agreements, remaining, settled):
    from custseg.selection import _settled

    assert _settled(agreements, remaining) is settled


def test_stability_is_the_mean_of_the_resamples_made_before_it_settled(planted):
    from custseg.selection import _base_seed, _resamples, _settled

    X, _ = planted
    data = X.to_numpy()
    seed = _base_seed(0)
    board = compare(X, algorithms=("kmeans",), k_values=range(2, 6), n_bootstrap=5).leaderboard
    labels = make_estimator("kmeans", n_clusters=4, random_state=seed).fit(data).labels_
    resamples = _resamples(len(data), 5, seed)
    every = [
        adjusted_rand_score(labels[rows], make_estimator("kmeans", n_clusters=4, random_state=s).fit(data[rows]).labels_)
        for rows, s in resamples
    ]
    made = next(i for i in range(len(every) + 1) if i == len(every) or _settled(every[:i], len(every) - i))
    assert made == 3  # four planted segments agree every time: two refits are saved
    stability = board.loc[board["n_clusters"] == 4, "stability"].item()
    assert stability == pytest.approx(np.mean(every[:made]), abs=1e-12)


def test_the_stability_of_a_labelling_made_elsewhere_is_the_sweeps_measure(planted):
    """selection.stability (what the Spark sweep uses on its sample) gives a labelling's
    leaderboard stability: the sweep's own fit gets the sweep's number; labels that no refit
    agrees with get about 0."""
    from custseg.selection import _base_seed, stability

    X, _ = planted
    data = X.to_numpy()
    seed = _base_seed(0)
    board = compare(X, algorithms=("kmeans",), k_values=range(2, 6), n_bootstrap=5).leaderboard
    labels = make_estimator("kmeans", n_clusters=4, random_state=seed).fit(data).labels_
    assert stability("kmeans", 4, data, labels, random_state=seed) == pytest.approx(
        board.loc[board["n_clusters"] == 4, "stability"].item(), abs=1e-12)
    shuffled = np.random.default_rng(1).permutation(labels)
    assert abs(stability("kmeans", 4, data, shuffled, random_state=seed)) < 0.05
    with pytest.raises(ConfigError, match="n_bootstrap must be an integer >= 1"):
        stability("kmeans", 4, data, labels, n_bootstrap=0)


def test_the_silhouettes_of_many_labelings_are_each_labelings_own():
    from sklearn.metrics import silhouette_score

    from custseg.selection import _SharedSilhouette

    rng = np.random.default_rng(3)
    data = rng.normal(size=(400, 3))
    shared = _SharedSilhouette(data, 300, 5)
    labelings = [make_estimator("kmeans", n_clusters=k, random_state=0).fit(data).labels_ for k in (2, 5, 9)]
    labelings.insert(1, np.zeros(400, dtype=int))  # one segment: NaN, the others still scored
    got = shared.many(labelings)
    assert math.isnan(got[1])
    for labels, score in zip([labelings[0], *labelings[2:]], [got[0], *got[2:]]):
        alone = silhouette_score(data, labels, sample_size=300, random_state=5)
        assert score == pytest.approx(alone, rel=1e-12, abs=1e-12)


# --- the sweep shared among worker processes --------------------------------------------------

fork_only = pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="workers are forked on Linux only")


_NOTED: dict = {}  # "file": where _noted_measure writes each fit's process; "task": the real one


def _noted_measure(sweep, name, k):
    """The sweep's fit task, noting which process ran it (a module function: tasks are sent to
    the workers by reference)."""
    import os

    with open(_NOTED["file"], "a") as out:
        out.write(f"{os.getpid()}\n")
    return _NOTED["task"](sweep, name, k)


def _broken_stability(sweep, name, k, labels):
    raise RuntimeError(f"refit of {name} k={k} failed")


@fork_only
def test_a_sweep_shared_among_workers_gives_the_serial_leaderboard(planted, tmp_path, monkeypatch):
    import os

    from custseg import selection

    X, _ = planted
    options = dict(algorithms=("kmeans", "gmm"), k_values=range(2, 9), n_bootstrap=3)
    serial = compare(X, n_jobs=1, **options)

    pids = tmp_path / "pids"
    monkeypatch.setitem(_NOTED, "file", pids)
    monkeypatch.setitem(_NOTED, "task", selection._measure_task)
    monkeypatch.setattr(selection, "_measure_task", _noted_measure)
    calls: list[tuple[str, int, int]] = []
    shared = compare(X, n_jobs=2, progress=lambda *call: calls.append(call), **options)
    # The fits ran in two other processes, not here.
    seen = set(pids.read_text().split())
    assert len(seen) == 2 and str(os.getpid()) not in seen
    pd.testing.assert_frame_equal(
        serial.leaderboard.drop(columns="fit_seconds"), shared.leaderboard.drop(columns="fit_seconds")
    )
    pd.testing.assert_frame_equal(serial.elbow, shared.elbow)
    assert serial.knee == shared.knee
    assert serial.recommendation == shared.recommendation
    # Progress in the leaderboard's order, as in this process.
    assert [step for step, _, _ in calls[1:15]] == [f"{a} k={k}" for a in ("kmeans", "gmm") for k in range(2, 9)]
    assert [done for _, done, _ in calls] == list(range(len(calls)))
    assert calls[-1][1] == calls[-1][2]


@fork_only
def test_an_error_in_a_worker_reaches_the_caller(planted, monkeypatch):
    from custseg import selection

    monkeypatch.setattr(selection, "_stability_task", _broken_stability)
    with pytest.raises(RuntimeError, match="refit of kmeans k=2 failed"):
        compare(planted[0], algorithms=("kmeans",), k_values=range(2, 5), n_bootstrap=2, n_jobs=2)


def test_how_many_workers_a_sweep_gets(monkeypatch):
    from custseg import selection

    monkeypatch.setattr(selection, "can_fork", lambda **_: True)
    monkeypatch.setattr(selection, "cores", lambda: 2)
    assert selection._workers(None, 4_338, 28) == 2  # every core
    assert selection._workers(None, 1_000, 28) == 1  # too small to be worth the workers
    assert selection._workers(3, 1_000, 28) == 3  # asked for
    assert selection._workers(4, 4_338, 3) == 3  # no more workers than tasks
    assert selection._workers(1, 4_338, 28) == 1
    assert selection._workers(None, 300_000, 28) == 1  # large fits use the threads themselves
    assert selection._workers(None, 4_338, 28, busy_cores=1) == 1  # a core left to the caller's map
    monkeypatch.setattr(selection, "cores", lambda: 4)
    assert selection._workers(None, 4_338, 28, busy_cores=1) == 3
    assert selection._workers(2, 4_338, 28, busy_cores=1) == 2  # asked for
    monkeypatch.setattr(selection, "cores", lambda: 2)
    monkeypatch.setattr(selection, "can_fork", lambda **_: False)
    assert selection._workers(2, 4_338, 28) == 1


def test_no_fork_while_another_thread_runs():
    """A process with a second thread (the web app's job worker and its heartbeat) forks no
    workers: a lock that thread holds would be held for ever in the child."""
    import threading

    from custseg._fork import can_fork

    assert can_fork()  # the test process: Linux, one thread
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert not can_fork()
    finally:
        stop.set()
        other.join()
    assert can_fork() and not can_fork(min_cores=10_000)


def test_n_jobs_must_be_a_positive_integer(planted):
    with pytest.raises(ConfigError, match="n_jobs must be an integer >= 1"):
        compare(planted[0], algorithms=("kmeans",), k_values=range(2, 4), n_jobs=0)
    with pytest.raises(ConfigError, match="busy_cores must be an integer >= 0"):
        compare(planted[0], algorithms=("kmeans",), k_values=range(2, 4), busy_cores=-1)


@fork_only
def test_the_callers_work_runs_beside_the_workers_and_is_finished_when_compare_returns(planted):
    import threading
    import time

    ran: list[str] = []

    def work():
        time.sleep(0.2)
        ran.append(threading.current_thread().name)

    compare(planted[0], algorithms=("kmeans",), k_values=range(2, 5), n_bootstrap=1, n_jobs=2, meanwhile=work)
    assert ran and ran[0] != threading.current_thread().name
    ran.clear()
    compare(planted[0], algorithms=("kmeans",), k_values=range(2, 5), n_bootstrap=1, n_jobs=1, meanwhile=work)
    assert ran == []  # nothing to run beside: the caller does its work itself

    def broken():
        raise ImportError("no such module")

    res = compare(planted[0], algorithms=("kmeans",), k_values=range(2, 5), n_bootstrap=1, n_jobs=2, meanwhile=broken)
    assert res.recommendation.n_clusters >= 2


@fork_only
def test_a_cancel_from_progress_stops_the_workers(planted):
    import multiprocessing

    class Stop(Exception):
        pass

    def progress(step, done, total):
        if done == 2:
            raise Stop(step)

    with pytest.raises(Stop, match="kmeans k=3"):
        compare(planted[0], algorithms=("kmeans", "gmm"), k_values=range(2, 9), n_bootstrap=2, n_jobs=2,
                progress=progress)
    assert multiprocessing.active_children() == []


# --- refitting only the rows that can be recommended ------------------------------------------

def test_deciding_refits_give_the_recommendation_of_refitting_every_row(planted):
    X, _ = planted
    options = dict(algorithms=("kmeans", "gmm"), k_values=range(2, 11), n_bootstrap=3)
    every = compare(X, **options)
    deciding = compare(X, stability_for="deciding", **options)
    assert deciding.recommendation.text == every.recommendation.text
    assert deciding.recommendation.reasons[:-1] == every.recommendation.reasons
    assert deciding.recommendation.reasons[-1].startswith("stability measured for the ")
    for algorithm in ("kmeans", "gmm"):
        assert recommend(deciding.leaderboard, knee=deciding.knee, algorithm=algorithm) == recommend(
            every.leaderboard, knee=every.knee, algorithm=algorithm)
    measured = deciding.leaderboard["stability"].notna()
    assert 0 < measured.sum() < every.leaderboard["stability"].notna().sum()
    assert (deciding.leaderboard.loc[measured, "stability"] == every.leaderboard.loc[measured, "stability"]).all()
    # The knee's rows are always measured.
    assert deciding.leaderboard.loc[deciding.leaderboard["n_clusters"] == deciding.knee, "stability"].notna().all()
    if __import__("sys").platform.startswith("linux"):
        shared = compare(X, stability_for="deciding", n_jobs=2, **options)
        pd.testing.assert_frame_equal(shared.leaderboard.drop(columns="fit_seconds"),
                                      deciding.leaderboard.drop(columns="fit_seconds"))


class _Known:
    def __init__(self, value):
        self.value = value

    def ready(self):
        return True

    def get(self):
        return self.value


def test_deciding_refits_walk_down_the_silhouettes_to_the_first_stable_row():
    from custseg.selection import _refit_deciding

    def row(k, silhouette, share=0.2):
        return (k, {"n_clusters": k, "silhouette": silhouette, "min_share": share}, np.zeros(3))

    measured = {"kmeans": [row(2, 0.50), row(3, 0.45), row(4, 0.451), row(5, 0.40), row(6, 0.30), row(7, 0.60, 0.01)],
                "gmm": [row(2, 0.20), row(3, 0.10), row(4, 0.05)]}
    truth = {("kmeans", 2): 0.3, ("kmeans", 3): 0.7, ("kmeans", 4): 0.2, ("kmeans", 5): 0.9, ("kmeans", 6): 0.9,
             ("gmm", 2): 0.95, ("gmm", 3): 0.1, ("gmm", 4): 0.1}
    stabilities: dict = {}
    asked = []

    def refit(name, k, labels):
        asked.append((name, k))
        return _Known(truth[(name, k)])

    made = _refit_deciding(measured, ["kmeans", "gmm"], 6, 0.02, stabilities, refit)
    # K-Means: 0.50 is unstable, 0.45 (k = 3 and 4, printed alike) holds a stable row: stop there;
    # k = 6 is the knee; k = 7 has too small a segment.  GMM: 0.20 is stable; its k = 6 does not exist.
    assert sorted(stabilities) == sorted([("kmeans", 2), ("kmeans", 3), ("kmeans", 4), ("kmeans", 6), ("gmm", 2)])
    assert made == 5 and len(asked) == 5


def test_stability_for_must_be_all_or_deciding(planted):
    with pytest.raises(ConfigError, match="stability_for must be 'all' or 'deciding'"):
        compare(planted[0], algorithms=("kmeans",), k_values=range(2, 4), stability_for="some")


@pytest.mark.parametrize("k", [2, 3, 7, 15])
def test_spread_scores_are_scikit_learns(k):
    """Davies-Bouldin and Calinski-Harabasz from one pass equal scikit-learn's, also with labels
    that skip numbers and a segment of one customer."""
    from sklearn.metrics import calinski_harabasz_score, davies_bouldin_score

    from custseg.selection import _spread_scores

    rng = np.random.default_rng(k)
    X = np.vstack([rng.normal(c, 1.0, (60, 4)) for c in rng.normal(0, 5, (k, 4))])
    labels = np.repeat(np.arange(k) * 3, 60)  # 0, 3, 6, ...: not 0..k-1
    cases = [labels, rng.permutation(labels)]
    single = labels.copy()
    single[0] = 1000
    cases.append(single)
    for case in cases:
        davies, calinski = _spread_scores(X, case)
        assert davies == pytest.approx(davies_bouldin_score(X, case), rel=1e-9)
        assert calinski == pytest.approx(calinski_harabasz_score(X, case), rel=1e-9)


def test_information_criteria_are_the_mixtures_own():
    from sklearn.mixture import GaussianMixture

    from custseg.selection import _information_criteria

    X = np.random.default_rng(1).normal(size=(300, 3))
    mixture = GaussianMixture(3, random_state=0).fit(X)
    assert _information_criteria(mixture, X) == pytest.approx((mixture.bic(X), mixture.aic(X)), rel=1e-12)


# --- the knee ------------------------------------------------------------------------------

@st.composite
def _curves(draw):
    """A curve as an elbow gives one, and its odd cases: x increasing (evenly or not), y
    falling with bends, flats (ties) and bumps."""
    n = draw(st.integers(3, 20))
    if draw(st.booleans()):
        x = list(range(1, n + 1))
    else:
        x = sorted(draw(st.sets(st.integers(0, 200), min_size=n, max_size=n)))
    if draw(st.booleans()):
        steps = draw(st.lists(st.integers(0, 40), min_size=n - 1, max_size=n - 1))
        y = [float(sum(steps) + draw(st.integers(0, 5)))]
        for step in sorted(steps, reverse=draw(st.booleans())):
            y.append(y[-1] - step)
    else:
        y = [float(v) for v in draw(st.lists(st.integers(0, 30), min_size=n, max_size=n))]
    assume(max(y) > min(y))
    return np.asarray(x, dtype="float64"), np.asarray(y, dtype="float64")


@settings(max_examples=500, deadline=None)
@given(_curves())
def test_kneedle_finds_the_knee_kneed_finds(curve):
    import warnings

    from kneed import KneeLocator

    x, y = curve
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # kneed warns where there is no knee
        expected = KneeLocator(x, y, curve="convex", direction="decreasing").knee
    assert kneedle(x, y) == expected


def test_kneedle_on_an_elbow():
    k = np.arange(1, 11)
    inertia = np.array([1000, 420, 180, 90, 80, 72, 66, 61, 57, 54], dtype="float64")
    assert kneedle(k, inertia) == 3
    assert kneedle(k, np.linspace(10, 1, 10)) is None  # a straight line has no knee
