from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score
from threadpoolctl import threadpool_limits

from custseg import model as model_io
from custseg import pipeline
from custseg.datasets import make_customers, make_transactions
from custseg.errors import ModelError

SMALL = pipeline.SegmentConfig(k_values=(2, 3, 4, 5, 6))


@pytest.fixture(autouse=True)
def one_thread():
    with threadpool_limits(1):
        yield


def run_on(frame: pd.DataFrame, tmp_path, config=SMALL, name="data.parquet"):
    path = tmp_path / name
    frame.to_parquet(path, index=False)
    return pipeline.run_segmentation(pipeline.load(pipeline.SourceSpec(str(path))), config=config)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    customers, truth = make_customers(1500, n_segments=4, random_state=3)
    with threadpool_limits(1):
        result = run_on(customers, tmp_path_factory.mktemp("planted"))
    return customers, truth, result


def test_auto_mode_recovers_planted_segments(planted):
    customers, truth, result = planted
    assert result.n_clusters == 4
    order = result.assignments.set_index("customer_id").loc[customers["customer_id"], "segment"]
    assert adjusted_rand_score(truth, order) >= 0.9


def test_auto_mode_recovers_segments_from_a_transaction_log(tmp_path):
    log = make_transactions(600, n_segments=4, random_state=5)
    horizon = (pd.Timestamp("2024-12-31") - pd.Timestamp("2022-01-01")).days
    customers, truth = make_customers(600, n_segments=4, random_state=5, horizon_days=horizon)
    result = run_on(log, tmp_path)
    assert result.customers.kind == "transactions"
    labels = result.assignments.set_index("customer_id")["segment"]
    assert adjusted_rand_score(truth, labels.loc[customers["customer_id"]]) >= 0.9


def test_save_load_assign_round_trip(planted, tmp_path):
    customers, _, result = planted
    path = result.model.save(tmp_path / "model.skops")
    loaded = model_io.load(path)
    assigned = loaded.assign(customers)
    assert list(assigned.columns[:3]) == ["customer_id", "segment", "segment_name"]
    assert (assigned["segment"].to_numpy() == result.labels).mean() >= 0.999
    assert loaded.run["config"]["algorithm"] == result.algorithm
    assert loaded.run["fingerprint"].startswith("sha256:")
    assert set(loaded.run["versions"]) >= {"custseg", "scikit-learn", "numpy"}


def test_one_customer_and_odd_customers(planted):
    customers, _, result = planted
    one = result.model.assign(customers.head(1))
    assert len(one) == 1 and one["segment"].iloc[0] == result.labels[0]
    far = customers.head(2).copy()
    far.loc[far.index[0], "monetary"] = 1e12
    far.loc[far.index[0], "avg_order_value"] = 1e12
    assigned = result.model.assign(far)
    assert assigned["segment"].iloc[0] == -1
    assert assigned["reason"].iloc[0].startswith("far from every segment")
    assert assigned["segment_name"].iloc[0] == "Unassigned"
    assert assigned["segment"].iloc[1] == result.labels[1]


def test_unknown_category_is_unassigned_with_a_reason(tmp_path):
    customers, _ = make_customers(400, n_segments=3, random_state=1)
    customers["channel"] = np.where(np.arange(400) % 2, "web", "store")
    result = run_on(customers, tmp_path, pipeline.SegmentConfig(algorithm="kmeans", n_clusters=3))
    odd = customers.head(3).copy()
    odd["channel"] = ["web", "carrier pigeon", "store"]
    assigned = result.model.assign(odd)
    assert list(assigned["segment"] == -1) == [False, True, False]
    assert assigned["reason"].iloc[1] == "unknown channel 'carrier pigeon'"


def test_missing_columns_are_named(planted):
    customers, _, result = planted
    with pytest.raises(ModelError, match="lacks column monetary that the model was trained on"):
        result.model.assign(customers.drop(columns="monetary"))


def test_gmm_gives_probabilities(tmp_path):
    customers, _ = make_customers(500, n_segments=3, random_state=2)
    result = run_on(customers, tmp_path, pipeline.SegmentConfig(algorithm="gmm", n_clusters=3))
    assert result.algorithm == "gmm"
    probability = result.assignments["probability"]
    assert ((probability > 0) & (probability <= 1)).all()
    assigned = result.model.assign(customers)
    assert np.allclose(assigned["probability"], probability)


def test_same_seed_same_segments(tmp_path):
    customers, _ = make_customers(500, n_segments=3, random_state=4)
    first = run_on(customers, tmp_path, name="first.parquet")
    second = run_on(customers, tmp_path, name="second.parquet")
    assert np.array_equal(first.labels, second.labels)
    pd.testing.assert_frame_equal(first.profiles.table, second.profiles.table)


@pytest.mark.parametrize("content, message", [
    (b"not a zip at all", "not a custseg model"),
    (None, "no such model file"),
])
def test_bad_model_files(tmp_path, content, message):
    path = tmp_path / "model.skops"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ModelError, match=message):
        model_io.load(path)


def test_a_run_folder_stands_for_its_model(planted, tmp_path):
    customers, _, result = planted
    result.model.save(tmp_path / "model.skops")
    assert model_io.load(tmp_path).assign(customers)["segment"].tolist() == result.model.assign(customers)["segment"].tolist()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match=r"empty: is a folder without model\.skops; give a model file"):
        model_io.load(tmp_path / "empty")


def test_assigning_a_table_without_the_model_columns_names_it(planted, mall_customers):
    _, _, result = planted
    loaded = pipeline.load(pipeline.SourceSpec(str(mall_customers)))
    with pytest.raises(ModelError, match=r"Mall_Customers\.csv: the data lacks columns .* that the model was trained on"):
        pipeline.assign_segments(loaded, result.model)


def test_foreign_and_newer_files_are_refused(planted, tmp_path):
    import skops.io as sio

    foreign = tmp_path / "foreign.skops"
    sio.dump({"hello": np.arange(3)}, foreign)
    with pytest.raises(ModelError, match="is a skops file but not a custseg model"):
        model_io.load(foreign)
    _, _, result = planted
    newer = tmp_path / "newer.skops"
    original = model_io.FORMAT_VERSION
    model_io.FORMAT_VERSION = original + 1
    try:
        result.model.save(newer)
    finally:
        model_io.FORMAT_VERSION = original
    with pytest.raises(ModelError, match=r"written by a newer custseg \(model format 2"):
        model_io.load(newer)


def test_corrupt_archive_is_refused(planted, tmp_path):
    _, _, result = planted
    path = result.model.save(tmp_path / "model.skops")
    data = bytearray(path.read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = b"\0" * 64
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="cannot be read as a custseg model|not a custseg model"):
        model_io.load(path)


def test_align_keeps_ids_and_reports_new_and_gone():
    old = {0: {"x": 0.0, "y": 0.0}, 1: {"x": 10.0, "y": 10.0}, 2: {"x": -10.0, "y": 5.0}}
    new = {0: {"x": 10.2, "y": 9.9}, 1: {"x": 0.1, "y": -0.1}, 2: {"x": 50.0, "y": 50.0}}
    got = model_io.align(new, old, scale={"x": 1.0, "y": 1.0})
    assert got.mapping[0] == 1 and got.mapping[1] == 0
    assert got.mapping[2] == 3 and got.new == (3,)
    assert got.gone == (2,)


def test_retraining_keeps_segment_ids(tmp_path):
    customers, _ = make_customers(900, n_segments=3, random_state=11)
    first = run_on(customers, tmp_path, pipeline.SegmentConfig(algorithm="kmeans", n_clusters=3), name="one.parquet")
    # The same customers in another order, with another seed: labels come out permuted.
    shuffled = customers.sample(frac=1.0, random_state=1).reset_index(drop=True)
    path = tmp_path / "two.parquet"
    shuffled.to_parquet(path, index=False)
    second = pipeline.run_segmentation(
        pipeline.load(pipeline.SourceSpec(str(path))),
        config=pipeline.SegmentConfig(algorithm="kmeans", n_clusters=3, random_state=5),
        previous=first.model,
    )
    before = first.assignments.set_index("customer_id")["segment"]
    after = second.assignments.set_index("customer_id")["segment"].loc[before.index]
    assert (before == after).mean() >= 0.98
    assert second.alignment.new == () and second.alignment.gone == ()
    assert sorted(old for _, old, _ in second.alignment.matched) == [0, 1, 2]
    # The saved model applies the same ids to new data.
    saved = model_io.load(second.model.save(tmp_path / "two.skops"))
    assert (saved.assign(customers)["segment"].to_numpy() == before.to_numpy()).mean() >= 0.98


def test_retraining_reports_new_and_gone_segments(tmp_path):
    customers, _ = make_customers(900, n_segments=3, random_state=11)
    first = run_on(customers, tmp_path, pipeline.SegmentConfig(algorithm="kmeans", n_clusters=2), name="one.parquet")
    second = run_on(customers, tmp_path, pipeline.SegmentConfig(algorithm="kmeans", n_clusters=4), name="two.parquet")
    path = tmp_path / "two.parquet"
    again = pipeline.run_segmentation(
        pipeline.load(pipeline.SourceSpec(str(path))),
        config=pipeline.SegmentConfig(algorithm="kmeans", n_clusters=4), previous=first.model,
    )
    assert len(again.alignment.new) >= 2 and set(again.alignment.new) >= {2, 3}
    assert len(second.profiles.table) == 4
