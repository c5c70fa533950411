"""The pipeline's steps on their own, and the defects a review found in them."""

from __future__ import annotations

import pytest

from custseg import datasets, pipeline
from custseg.errors import ConfigError
from custseg.pipeline.choose import choose
from custseg.pipeline.prepare import prepare
from custseg.request import SegmentConfig, SourceSpec


@pytest.fixture(scope="module")
def sample():
    return pipeline.load(SourceSpec(str(datasets.sample_path())))


def test_rfm_rules_run_no_unused_sweep(sample):
    result = pipeline.run_segmentation(sample, config=SegmentConfig(algorithm="rfm"))
    assert result.selection.leaderboard.empty and result.selection.elbow.empty
    recommendation = result.selection.recommendation
    assert recommendation.algorithm == "rfm" and recommendation.n_clusters == result.n_clusters
    assert result.n_clusters == result.assignments["segment"].nunique()
    assert result.model.run["config"]["n_clusters"] is None  # the rules found their number
    assert "no algorithm or k was compared" in recommendation.text


@pytest.mark.parametrize("k", [0, 1, -3])
def test_a_k_below_two_is_refused_before_any_work_naming_n_clusters(sample, k):
    with pytest.raises(ConfigError) as caught:
        pipeline.run_segmentation(sample, config=SegmentConfig(n_clusters=k))
    assert caught.value.param == "n_clusters"
    assert str(caught.value) == f"n_clusters must be auto or a whole number ≥ 2, got '{k}'"


def test_the_steps_compose_to_the_same_choice(sample):
    config = SegmentConfig(k_values=(2, 3, 4), candidates=("kmeans",))
    prepared = prepare(sample, config=config)
    assert prepared.columns == list(pipeline.run_segmentation(sample, config=config).feature_columns)
    assert prepared.numeric.shape == (837, len(prepared.columns))
    choice = choose(prepared, config=config)
    assert choice.algorithm == "kmeans" and choice.n_clusters in (2, 3, 4)
    assert set(choice.selection.leaderboard["n_clusters"]) == {2, 3, 4}
