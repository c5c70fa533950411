"""What `custseg segment` and `custseg report` do with what they are asked for, on the bundled sample."""

from __future__ import annotations

import re

import pytest

from custseg import cli, datasets, pipeline
from custseg.cli import main
from custseg.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def sample():
    return pipeline.load(pipeline.SourceSpec(str(datasets.sample_path())))


def test_a_k_past_the_default_sweep_is_compared_and_used(sample):
    result = pipeline.run_segmentation(sample, config=pipeline.SegmentConfig(n_clusters=20))
    assert result.n_clusters == 20 and result.assignments["segment"].nunique() == 20
    assert 20 in set(result.selection.leaderboard["n_clusters"])
    assert {2, 15} <= set(result.selection.leaderboard["n_clusters"])  # the evidence for other k stays


def test_a_k_as_large_as_the_table_is_refused(sample):
    with pytest.raises(DataError, match=r"online_retail_sample\.parquet: n_clusters 837 needs more than 837 customers, "
                                        r"found 837; lower n_clusters$") as caught:
        pipeline.run_segmentation(sample, config=pipeline.SegmentConfig(n_clusters=837))
    assert caught.value.render(cli.FLAGS).endswith(
        "online_retail_sample.parquet: --k 837 needs more than 837 customers, found 837; lower --k")


def test_kprototypes_without_a_category_says_which_to_add(sample):
    with pytest.raises(ConfigError, match=r"algorithm kprototypes mixes numbers and categories, but the features "
                                          r"recency_days, .* are all numbers; add a category with features "
                                          r"recency_days,.*,country, or choose kmeans") as caught:
        pipeline.run_segmentation(sample, config=pipeline.SegmentConfig(algorithm="kprototypes", n_clusters=3))
    assert re.search(r": --algorithm kprototypes mixes numbers and categories, but the features recency_days, .* are "
                     r"all numbers; add a category with --features recency_days,.*,country, or choose kmeans$",
                     caught.value.render(cli.FLAGS))
    with_country = pipeline.SegmentConfig(algorithm="kprototypes", n_clusters=3,
                                          features=("recency_days", "frequency", "monetary", "country"))
    result = pipeline.run_segmentation(sample, config=with_country)
    assert result.n_clusters == 3 and "country" in result.feature_columns


@pytest.mark.parametrize("k", ["1", "0", "-2", "three"])
def test_cli_refuses_a_k_below_two(k, tmp_path, capsys):
    code = main(["segment", str(datasets.sample_path()), "--out", str(tmp_path / "run"), "--k", k])
    err = capsys.readouterr().err
    assert code == 2 and err.strip() == f"custseg: error: --k must be auto or a whole number ≥ 2, got '{k}'"
    assert not (tmp_path / "run").exists()


def test_an_unknown_feature_is_named_with_the_source(sample):
    with pytest.raises(ConfigError, match=r"online_retail_sample\.parquet: unknown column\(s\) 'nope' in the feature "
                                          r"columns asked for; available: recency_days, frequency"):
        pipeline.run_segmentation(sample, config=pipeline.SegmentConfig(features=("nope", "frequency")))


@pytest.mark.parametrize("points", ["0", "-5"])
def test_report_refuses_too_few_points(points, tmp_path, capsys):
    code = main(["report", str(tmp_path), "--max-points", points])
    assert code == 2
    assert capsys.readouterr().err.strip() == f"custseg: error: --max-points must be a whole number ≥ 10, got {points}"


def test_a_run_writes_only_the_files_it_declares(sample, tmp_path):
    """pipeline.RUN_FILES guards sources against being written over by a run: it must be whole."""
    result = pipeline.run_segmentation(sample, config=pipeline.SegmentConfig(n_clusters=3, algorithm="kmeans"))
    written = {path.name for path in pipeline.write_run(result, tmp_path)}
    assert written <= set(pipeline.RUN_FILES) and {"assignments.csv", "model.skops", "rfm.csv"} <= written


def test_a_run_over_an_earlier_run_leaves_nothing_of_it(sample, tmp_path):
    """The earlier run's contacts.parquet would give these customers its e-mail addresses."""
    from custseg.datasets import make_customers

    customers, _ = make_customers(120, n_segments=3, random_state=1)
    customers["email"] = [f"person{i}@example.com" for i in range(120)]
    customers["customer_id"] = [str(12346 + i) for i in range(120)]  # ids the sample has too
    customers.to_csv(tmp_path / "customers.csv", index=False)
    earlier = pipeline.run_segmentation(pipeline.load(pipeline.SourceSpec(str(tmp_path / "customers.csv"))),
                                        config=pipeline.SegmentConfig(n_clusters=3, algorithm="kmeans"))
    folder = tmp_path / "run"
    pipeline.write_run(earlier, folder)
    (folder / "report.html").write_text("the earlier run's report", encoding="utf-8")
    assert (folder / "contacts.parquet").is_file()
    result = pipeline.run_segmentation(sample, config=pipeline.SegmentConfig(n_clusters=3, algorithm="kmeans"))
    written = {path.name for path in pipeline.write_run(result, folder)}
    assert {path.name for path in folder.iterdir()} == written
    assert not (folder / "contacts.parquet").exists() and not (folder / "report.html").exists()


def test_a_folder_without_a_run_keeps_its_other_files(sample, tmp_path):
    (tmp_path / "report.html").write_text("mine", encoding="utf-8")
    result = pipeline.run_segmentation(sample, config=pipeline.SegmentConfig(n_clusters=3, algorithm="kmeans"))
    pipeline.write_run(result, tmp_path)
    assert (tmp_path / "report.html").read_text(encoding="utf-8") == "mine"


def test_a_segment_map_leaving_codes_unnamed_is_refused_before_any_work():
    from custseg.errors import ConfigError
    from custseg.request import RunRequest, SourceSpec

    request = RunRequest(source=SourceSpec("never-read.csv"), segment_map=(("5..", "Recent"),))
    with pytest.raises(ConfigError) as caught:
        request.validate()
    assert caught.value.param == "segment_map"
    assert "codes 111, 112, 113, 114, 115 … match no pattern" in str(caught.value)
