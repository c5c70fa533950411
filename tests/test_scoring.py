"""custseg.scoring: a compiled model gives ``model.assign``'s segments for every customer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from custseg import model as model_io
from custseg import pipeline
from custseg.cluster import ALGORITHMS, make_estimator
from custseg.errors import ModelError
from custseg.model import SegmentationModel
from custseg.preprocessing import build_preprocessor
from custseg.request import SegmentConfig, SourceSpec
from custseg.scoring import compile_model


@pytest.fixture(autouse=True)
def one_thread():
    with threadpool_limits(1):
        yield


def run(path, **config):
    with threadpool_limits(1):
        return pipeline.run_segmentation(pipeline.load(SourceSpec(str(path))), config=SegmentConfig(**config))


def fit_model(features: pd.DataFrame, algorithm: str, *, base: SegmentationModel | None = None,
              scaler: str = "standard", label_map: dict[int, int] | None = None, **params) -> SegmentationModel:
    """A model as the describe step builds one: ``base``'s fitted preprocessing (or a new one),
    the estimator fitted on its matrix, ``SegmentationModel.from_fit``."""
    spec = ALGORITHMS[algorithm]
    if base is None:
        prep = build_preprocessor(features, scaler=scaler, one_hot=not spec.needs_categorical)
        transformer, columns = prep.transformer, prep.columns
        matrix = prep.fit_transform(features[columns])
    else:
        transformer, columns = base.preprocessor, base.feature_columns
        matrix = transformer.transform(features[columns])
    with threadpool_limits(1):
        estimator = make_estimator(algorithm, **params).fit(matrix)
    labels = np.asarray(estimator.labels_).astype("int64")
    if label_map:
        labels = np.array([label_map.get(int(s), int(s)) for s in labels], dtype="int64")
    names = {int(s): f"segment {s}" for s in set(labels.tolist()) if s != -1}
    return SegmentationModel.from_fit(
        features=features, matrix=matrix.select_dtypes("number"), labels=labels, preprocessor=transformer,
        estimator=estimator, algorithm=algorithm, feature_columns=columns, segment_names=names, label_map=label_map,
    )


def assert_same_segments(model: SegmentationModel, features: pd.DataFrame, *, singles: int = 25) -> None:
    """The compiled model answers as ``model.assign`` for every customer: the whole table as a
    frame, as records and as arrays, and ``singles`` customers one at a time (one-row frames)."""
    compiled = compile_model(model)
    assert compiled.fallback is None
    expected = model.assign(features)
    got = compiled.assign_frame(features)
    for column in ("customer_id", "segment", "segment_name", "reason"):
        assert got[column].tolist() == expected[column].tolist(), column
    records = features.to_dict("records")
    answers = compiled.assign_records(records)
    assert [a["segment"] for a in answers] == expected["segment"].tolist()
    assert [a["segment_name"] for a in answers] == expected["segment_name"].tolist()
    assert [a["reason"] for a in answers] == [r or None for r in expected["reason"]]
    numbers = features[compiled.numeric_columns].to_numpy(dtype="float64")
    categories = features[compiled.categorical_columns].to_numpy(dtype=object) if compiled.categorical_columns else None
    arrays = compiled.assign_matrix(numbers, categories, customer_id=features["customer_id"].to_numpy())
    assert arrays["segment"].tolist() == expected["segment"].tolist()
    assert arrays["reason"].tolist() == expected["reason"].tolist()
    picks = np.random.default_rng(0).choice(len(records), size=min(singles, len(records)), replace=False)
    for i in picks.tolist():
        alone = model.assign(pd.DataFrame([records[i]])).iloc[0]
        (answer,) = compiled.assign_records([records[i]])
        assert (answer["segment"], answer["segment_name"], answer["reason"] or "") == (
            alone["segment"], alone["segment_name"], alone["reason"])


# --- Online Retail ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def retail(online_retail):
    return run(online_retail, algorithm="kmeans", n_clusters=4)


def test_online_retail_run_and_its_saved_model(retail, tmp_path):
    features = retail.customers.features
    assert_same_segments(retail.model, features)
    loaded = model_io.load(retail.model.save(tmp_path / "model.skops"))
    assert_same_segments(loaded, features)
    assert compile_model(loaded).assign_frame(features)["segment"].tolist() == retail.labels.tolist()


def test_online_retail_matrix_is_the_preprocessors_bit_for_bit(retail):
    model, features = retail.model, retail.customers.features
    expected = model.preprocessor.transform(features[model.feature_columns]).to_numpy(dtype="float64")
    assert np.array_equal(compile_model(model).matrix(features), expected)


def test_online_retail_rfm_rules_read_the_raw_features(online_retail):
    result = run(online_retail, algorithm="rfm")
    features = result.customers.features
    assert_same_segments(result.model, features)
    compiled = compile_model(result.model)
    record = features.iloc[0].to_dict()
    # assign cannot score a missing RFM value (the rules need all three numbers): unassigned here.
    with pytest.raises(ValueError):
        result.model.assign(pd.DataFrame([{**record, "frequency": None}]))
    (answer,) = compiled.assign_records([{**record, "frequency": None}])
    assert (answer["segment"], answer["reason"]) == (-1, "missing frequency")
    # Read column by column in a batch, record by record alone: the same answers.
    odd = [{**record, "frequency": None}, {**record, "monetary": float("nan")}, {**record, "recency_days": "x"},
           {k: v for k, v in record.items() if k != "monetary"}, {**record, "frequency": float("-inf")}]
    batch = [*odd, *features.iloc[:30].to_dict("records"), *odd]
    assert compiled.assign_records(batch) == [compiled.assign_records([r])[0] for r in batch]


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_online_retail_gaussian_mixture(retail, covariance_type):
    features = retail.customers.features
    model = fit_model(features, "gmm", base=retail.model, n_clusters=4, covariance_type=covariance_type)
    assert_same_segments(model, features, singles=10)
    # The log-probabilities themselves are scikit-learn's, bit for bit.
    compiled = compile_model(model)
    matrix = model.preprocessor.transform(features[model.feature_columns]).to_numpy(dtype="float64")
    expected = model.estimator.mixture_._estimate_weighted_log_prob(matrix)
    assert np.array_equal(compiled._rule.weighted_log_prob(compiled.matrix(features)), expected)


@pytest.mark.parametrize(("algorithm", "params"), [
    ("minibatch", {"n_clusters": 4}),
    ("agglomerative", {"n_clusters": 4}),
    ("birch", {"n_clusters": 4}),
    ("bisecting_kmeans", {"n_clusters": 7}),
    ("meanshift", {"bandwidth": 1.5}),
    ("dbscan", {"eps": 0.5}),
    ("hdbscan", {"min_cluster_size": 30}),
])
def test_online_retail_other_algorithms(retail, algorithm, params):
    features = retail.customers.features
    model = fit_model(features, algorithm, base=retail.model, **params)
    if algorithm in ("dbscan", "hdbscan"):
        assert (model.assign(features)["segment"] == -1).any()  # noise is part of what is compared
    assert_same_segments(model, features, singles=10)


def test_online_retail_bisecting_kmeans_run_and_its_saved_model(online_retail, tmp_path):
    """The segments of a Bisecting K-Means model are its estimator's ``predict``: down the tree of
    splits, which here differs from the nearest leaf centre for some customers."""
    from custseg.model import _nearest

    result = run(online_retail, algorithm="bisecting_kmeans", n_clusters=6)
    model, features = result.model, result.customers.features
    assert result.algorithm == "bisecting_kmeans" and type(model.estimator).__name__ == "BisectingKMeans"
    matrix = model.preprocessor.transform(features[model.feature_columns])
    predicted = np.asarray(model.estimator.predict(matrix)).astype("int64")
    nearest = _nearest(matrix.to_numpy(dtype="float64"), model.estimator.cluster_centers_)[0]
    assert (predicted != nearest).sum() > 0  # the walk down the tree is what is compared
    assert predicted.tolist() == result.labels.tolist()
    loaded = model_io.load(model.save(tmp_path / "model.skops"))
    assigned = loaded.assign(features)
    kept = assigned["reason"] == ""
    assert kept.mean() > 0.99
    assert (assigned.loc[kept, "segment"].to_numpy() == predicted[kept.to_numpy()]).all()
    assert_same_segments(loaded, features)
    got = compile_model(loaded).assign_frame(features)
    assert (got.loc[kept, "segment"].to_numpy() == predicted[kept.to_numpy()]).all()


def test_online_retail_gmm_run(online_retail):
    result = run(online_retail, algorithm="gmm", n_clusters=3)
    assert_same_segments(result.model, result.customers.features, singles=10)


# --- Customer Personality ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def personality(marketing_campaign):
    return run(marketing_campaign, algorithm="kmeans", n_clusters=4)


@pytest.fixture(scope="module")
def personality_odd(personality):
    """The table with a skewed column that has negative values (Yeo-Johnson), missing numbers
    and missing categories."""
    features = personality.customers.features.copy()
    features["balance"] = np.random.default_rng(0).lognormal(0, 1.2, len(features)) - 2
    features.loc[features.index[::7], "Income"] = np.nan
    features.loc[features.index[::11], "Education"] = None
    return features


def test_customer_personality_run(personality):
    from custseg.model import _nearest

    model, features = personality.model, personality.customers.features
    assert model.categories and any(t == "flag" for t, *_ in model.preprocessor.transformers_)
    assert_same_segments(model, features)
    compiled = compile_model(model)
    expected = model.preprocessor.transform(features[model.feature_columns]).to_numpy(dtype="float64")
    assert np.array_equal(compiled.matrix(features), expected)
    # The distance behind "far from every segment" is assign's, bit for bit (one-hot columns too).
    assert np.array_equal(compiled._nearest_distance(compiled.matrix(features)), _nearest(expected, model.centers)[1])


@pytest.mark.parametrize(("algorithm", "scaler", "params"), [
    ("kmeans", "robust", {"n_clusters": 4}),
    ("gmm", "standard", {"n_clusters": 3}),
    ("gmm", "robust", {"n_clusters": 3, "covariance_type": "diag"}),
    ("gmm", "standard", {"n_clusters": 3, "covariance_type": "spherical"}),
    ("kprototypes", "standard", {"n_clusters": 3, "n_init": 1}),
    ("bisecting_kmeans", "standard", {"n_clusters": 5}),
])
def test_customer_personality_yeo_johnson_robust_scaling_and_mixed_types(personality_odd, algorithm, scaler, params):
    model = fit_model(personality_odd, algorithm, scaler=scaler, **params)
    assert "yeo_johnson" in [name for name, *_ in model.preprocessor.transformers_]
    assert_same_segments(model, personality_odd, singles=10)


def test_customer_personality_kprototypes_run(marketing_campaign):
    result = run(marketing_campaign, algorithm="kprototypes", n_clusters=3,
                 features=("Income", "MntWines", "Recency", "Education", "Marital_Status"))
    assert result.model.categories
    assert_same_segments(result.model, result.customers.features, singles=10)


def test_odd_records_as_assign_treats_them(personality_odd):
    model = fit_model(personality_odd, "kmeans", n_clusters=4)
    compiled = compile_model(model)
    base = personality_odd.iloc[3].to_dict()
    answers = {
        "none": {"Income": None},
        "nan text": {"Income": "nan"},
        "number as text": {"Income": "52000.5", "MntWines": " 120 "},
        "missing category": {"Education": None},
        "unknown category": {"Education": "Wizard"},
        "two unknown categories": {"Education": "Wizard", "Marital_Status": "Hermit"},
        "number for a category": {"Education": 5},
        "far": {"Income": 1e12, "MntWines": 1e9},
        "flag as bool": {"Complain": True},
        "negative Yeo-Johnson": {"balance": -1e5},
    }
    for case, change in answers.items():
        record = {**base, **change}
        expected = model.assign(pd.DataFrame([record])).iloc[0]
        (got,) = compiled.assign_records([record])
        assert (got["segment"], got["segment_name"], got["reason"] or "") == (
            expected["segment"], expected["segment_name"], expected["reason"]), case
        frame = compiled.assign_frame(pd.DataFrame([record])).iloc[0]
        assert (frame["segment"], frame["reason"]) == (expected["segment"], expected["reason"]), case
    assert compiled.assign_records([{**base, "Education": "Wizard"}])[0]["reason"] == "unknown Education 'Wizard'"
    assert compiled.assign_records([{**base, "Income": 1e12}])[0]["reason"].startswith("far from every segment")

    # Where assign raises for the whole table, only that customer is unassigned, with a reason.
    absent = {k: v for k, v in base.items() if k != "Income"}
    not_a_number = {**base, "MntWines": "abc"}
    infinite = {**base, "Income": float("inf")}
    with pytest.raises(ModelError):
        model.assign(pd.DataFrame([absent]))
    for record in (not_a_number, infinite):
        with pytest.raises(ValueError):
            model.assign(pd.DataFrame([record]))
    got = compiled.assign_records([absent, not_a_number, infinite, base])
    assert [(g["segment"], g["segment_name"], g["reason"]) for g in got[:3]] == [
        (-1, "Unassigned", "missing Income"),
        (-1, "Unassigned", "MntWines 'abc' is not a number"),
        (-1, "Unassigned", "Income inf is not a finite number"),
    ]
    assert got[3]["segment"] == model.assign(pd.DataFrame([base]))["segment"].iloc[0]
    frame = compiled.assign_frame(pd.DataFrame([not_a_number, infinite, base]))
    assert frame["reason"].tolist()[:2] == ["MntWines 'abc' is not a number", "Income inf is not a finite number"]
    with pytest.raises(ModelError, match="lacks column Income"):
        compiled.assign_frame(pd.DataFrame([absent]))


def test_a_batch_of_records_is_read_as_each_record_alone(personality_odd):
    """Many records are read column by column, one or a few value by value: same segments, names
    and reasons (the first problem of each record), whatever the other records hold."""
    model = fit_model(personality_odd, "kmeans", n_clusters=4)
    compiled = compile_model(model)
    plain = personality_odd.iloc[:40].to_dict("records")
    base = plain[3]
    odd = [
        {**base, "Income": None}, {**base, "Income": "nan"}, {**base, "Income": "52000.5", "MntWines": " 120 "},
        {**base, "Education": None}, {**base, "Education": "Wizard"},
        {**base, "Education": "Wizard", "Marital_Status": "Hermit"}, {**base, "Education": 5},
        {**base, "Income": 1e12, "MntWines": 1e9}, {**base, "Complain": True},
        {k: v for k, v in base.items() if k != "Income"}, {**base, "MntWines": "abc"},
        {**base, "Income": float("inf")}, {**base, "Income": float("-inf"), "MntWines": "abc"},
        {**base, "MntWines": "abc", "Income": float("inf"), "Education": "Wizard"},
        {**{k: v for k, v in base.items() if k != "Education"}, "Marital_Status": "Hermit"},
        {**base, "Income": np.float32(51000.0), "MntWines": np.int64(7)}, {**base, "Income": [1, 2]},
    ]
    alone = [compiled.assign_records([r])[0] for r in plain + odd]
    assert compiled.assign_records(plain) == alone[:len(plain)]
    mixed = plain[:20] + odd + plain[20:]
    assert compiled.assign_records(mixed) == alone[:20] + alone[len(plain):] + alone[20:len(plain)]
    reasons = {a["reason"] for a in alone[len(plain):]}
    assert {"missing Income", "MntWines 'abc' is not a number", "Income inf is not a finite number",
            "unknown Education 'Wizard'", "missing Education"} <= reasons


def test_a_large_batch_is_scored_in_blocks_with_the_same_answers(personality_odd, monkeypatch):
    """Blocks of rows on each core (from _PARALLEL_MIN_ROWS rows): the answers of one block."""
    import custseg.scoring as scoring

    model = fit_model(personality_odd, "kmeans", n_clusters=4)
    compiled = compile_model(model)
    features = personality_odd.copy()
    features.loc[features.index[::13], "Education"] = "Wizard"  # reasons in every block
    whole = compiled.assign_frame(features)
    numbers = features[compiled.numeric_columns].to_numpy(dtype="float64")
    categories = features[compiled.categorical_columns].to_numpy(dtype=object)
    matrix = compiled.assign_matrix(numbers, categories)
    blocks = []
    monkeypatch.setattr(scoring, "_PARALLEL_MIN_ROWS", 200)
    monkeypatch.setattr(scoring.os, "cpu_count", lambda: 3)
    score = scoring.CompiledModel._score
    monkeypatch.setattr(scoring.CompiledModel, "_score",
                        lambda self, n, c, p, **kw: blocks.append(len(n)) or score(self, n, c, p, **kw))
    pd.testing.assert_frame_equal(compiled.assign_frame(features), whole)
    assert len(blocks) == 3 and sum(blocks) == len(features)
    in_blocks = compiled.assign_matrix(numbers, categories)
    assert all(np.array_equal(in_blocks[k], matrix[k]) for k in matrix)
    assert (whole["segment"] == -1).sum() >= len(features) // 13


def test_a_large_frame_gets_its_text_columns_from_their_distinct_strings(personality_odd, monkeypatch):
    """From _TEXT_MIN_ROWS rows the segment names and reasons are made from the few distinct
    strings: the same frame, dtypes included, as from one Python string per row."""
    import custseg.scoring as scoring

    model = fit_model(personality_odd, "kmeans", n_clusters=4)
    compiled = compile_model(model)
    features = personality_odd.copy()
    features.loc[features.index[::13], "Education"] = "Wizard"
    for table in (features, personality_odd.dropna()):  # with reasons, and (maybe) without
        per_row = compiled.assign_frame(table)
        monkeypatch.setattr(scoring, "_TEXT_MIN_ROWS", 0)
        from_dictionary = compiled.assign_frame(table)
        monkeypatch.setattr(scoring, "_TEXT_MIN_ROWS", 10**9)
        pd.testing.assert_frame_equal(from_dictionary, per_row)
        expected = model.assign(table)
        assert from_dictionary["segment_name"].tolist() == expected["segment_name"].tolist()
        assert from_dictionary["reason"].tolist() == expected["reason"].tolist()


# --- Mall Customers ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mall(mall_customers):
    return run(mall_customers, algorithm="kmeans", n_clusters=5)


def test_mall_customers_run(mall):
    assert_same_segments(mall.model, mall.customers.features)


@pytest.mark.parametrize(("algorithm", "params"), [
    ("kmeans", {"n_clusters": 5, "label_map": {0: 7, 1: 3, 2: 0, 3: 1, 4: 2}}),
    ("bisecting_kmeans", {"n_clusters": 5, "label_map": {0: 4, 1: 9, 2: 0, 3: 2, 4: 1}}),
    ("dbscan", {"eps": 0.6, "min_samples": 4}),
    ("meanshift", {"bandwidth": 0.8, "cluster_all": False}),
])
def test_mall_customers_stable_ids_and_noise(mall, algorithm, params):
    features = mall.customers.features
    model = fit_model(features, algorithm, base=mall.model, **params)
    assert_same_segments(model, features)


def test_a_model_it_cannot_compile_is_answered_by_assign(mall):
    from sklearn.cluster import AffinityPropagation

    features = mall.customers.features
    matrix = mall.model.preprocessor.transform(features[mall.model.feature_columns])
    estimator = AffinityPropagation(random_state=0).fit(matrix)
    model = SegmentationModel.from_fit(
        features=features, matrix=matrix, labels=estimator.labels_, preprocessor=mall.model.preprocessor,
        estimator=estimator, algorithm="affinity", feature_columns=mall.model.feature_columns,
        segment_names={int(s): f"s{s}" for s in set(estimator.labels_.tolist())},
    )
    compiled = compile_model(model)
    assert "AffinityPropagation" in compiled.fallback
    expected = model.assign(features)
    assert compiled.assign_frame(features)["segment"].tolist() == expected["segment"].tolist()
    records = features.to_dict("records")
    assert [a["segment"] for a in compiled.assign_records(records)] == expected["segment"].tolist()
    missing = {k: v for k, v in records[0].items() if k != "Age"}
    assert compiled.assign_records([missing])[0]["reason"] == "missing Age"
