"""Defects found in review, each pinned by a test that failed before its fix."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from custseg.cli import main


def _category_table(path, n: int = 60, seed: int = 0):
    """Customers with an id and two categorical columns that carry three groups."""
    rng = np.random.default_rng(seed)
    group = np.arange(n) % 3
    plan = np.where(rng.random(n) < 0.9, np.array(["basic", "pro", "team"])[group], "basic")
    region = np.array(["north", "south", "west"])[group]
    pd.DataFrame({"customer_id": [f"C{i}" for i in range(n)], "plan": plan, "region": region}).to_csv(path, index=False)
    return path


# --- 1: a customer table of categories only is named from its categories -------------------

def test_categories_only_table_segments_and_names_from_categories(tmp_path, capsys):
    source = _category_table(tmp_path / "cats.csv")
    out = tmp_path / "run"
    assert main(["segment", str(source), "--out", str(out), "--k", "3", "--no-report"]) == 0, capsys.readouterr().err
    profiles = pd.read_csv(out / "profiles.csv")
    assert len(profiles) == 3
    assert profiles["name"].is_unique
    # Each segment is one region: its name says which, in the words of the table.
    assigned = pd.read_csv(out / "assignments.csv").merge(pd.read_csv(source), on="customer_id")
    for segment, members in assigned.groupby("segment"):
        name = profiles.set_index("segment").loc[segment, "name"]
        assert f"region {members['region'].mode()[0]}" in name.lower()
    assert profiles["description"].str.contains("% overall").all()


def test_profile_of_categories_only_names_every_segment_uniquely():
    from custseg import profiling

    features = pd.DataFrame({
        "customer_id": range(8),
        "plan": ["pro"] * 4 + ["basic"] * 4,
        "region": ["north"] * 4 + ["south"] * 4,
        "channel": ["web", "web", "store", "store"] * 2,
    })
    profiles = profiling.profile(features, np.array([0, 0, 1, 1, 2, 2, 2, 2]))
    # 0 and 1 share plan and region: the next level that sets them apart is added.
    assert [p.name for p in profiles.segments] == [
        "Plan pro, region north (channel web)", "Plan pro, region north (channel store)", "Plan basic, region south",
    ]


# --- 5: files get the usual permissions without the umask being touched ---------------------

@pytest.mark.parametrize("name", ["t.csv", "t.parquet", "t.xlsx", "run.json", "model"])
def test_published_files_get_the_usual_mode_without_touching_the_umask(tmp_path, monkeypatch, name):
    import os
    import stat

    from custseg import outputs

    current = os.umask(0o027)  # the test's own umask (set before the guard goes in)
    try:
        def forbidden(mask):
            raise AssertionError("os.umask called while publishing: it changes the umask of every thread")

        monkeypatch.setattr(os, "umask", forbidden)
        frame = pd.DataFrame({"a": [1, 2]})
        target = tmp_path / name
        if name == "run.json":
            outputs.write_text("{}", target)
        elif name == "model":
            from custseg.model import SegmentationModel

            SegmentationModel(None, None, "kmeans", [], {}, [], {}, np.empty((0, 0)), 1.0).save(target)
        else:
            outputs.write_table(frame, target)
        monkeypatch.undo()
    finally:
        os.umask(current)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~0o027
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary file left


# --- 7: an output that cannot be written is an OutputError ----------------------------------

def test_unwritable_outputs_are_output_errors(tmp_path, monkeypatch):
    import os

    from custseg import outputs
    from custseg.errors import InputError, OutputError

    def read_only(path, mode, *, effective_ids=False, dir_fd=None, follow_symlinks=True):
        return False

    monkeypatch.setattr(os, "access", read_only)
    with pytest.raises(OutputError) as caught:
        outputs.check_target(tmp_path / "out.csv")
    assert not isinstance(caught.value, InputError)
    assert str(caught.value) == (f"--out {tmp_path / 'out.csv'}: cannot write in '{tmp_path}' "
                                 "(read-only, or no permission); choose another place")
    monkeypatch.undo()

    error = outputs.cannot_write(tmp_path / "x.csv", OSError(27, "File too large"), option="--rejects")
    assert type(error) is OutputError and str(error) == f"--rejects {tmp_path / 'x.csv'}: cannot write (File too large)"

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(outputs, "_write_one", full)
    with pytest.raises(OutputError, match=r"--out .*t\.csv: cannot write \(No space left on device\)$"):
        outputs.write_table(pd.DataFrame({"a": [1]}), tmp_path / "t.csv")
    assert list(tmp_path.iterdir()) == []


def test_cli_prints_an_unwritable_output_as_before(tmp_path, monkeypatch, capsys):
    import os

    source = _category_table(tmp_path / "cats.csv")
    folder = tmp_path / "locked"
    folder.mkdir()
    access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False if mode & os.W_OK else access(path, mode, **kw))
    assert main(["features", str(source), "--out", str(folder / "f.csv")]) == 2
    assert capsys.readouterr().err.strip() == (f"custseg: error: --out {folder / 'f.csv'}: cannot write in '{folder}' "
                                               "(read-only, or no permission); choose another place")


# --- 6: align measures in standard deviations of the table segmented now -------------------

def test_align_documents_its_units_with_an_example_that_runs():
    import doctest

    from custseg import model

    assert "standardized feature units" not in model.__doc__
    tests = doctest.DocTestFinder().find(model.align, "align", globs={"align": model.align})
    assert tests and tests[0].examples
    result = doctest.DocTestRunner().run(tests[0])
    assert result.failed == 0 and result.attempted >= 3


def test_retraining_distances_are_in_the_new_tables_standard_deviations(tmp_path):
    from custseg import pipeline

    rng = np.random.default_rng(3)
    centres = np.array([[100.0, 2.0], [900.0, 10.0], [400.0, 30.0]])
    rows = centres[np.arange(300) % 3] + rng.normal(0, [30.0, 1.0], (300, 2))
    first = pd.DataFrame({"customer_id": range(300), "spend": rows[:, 0], "visits": rows[:, 1]})
    second = first.assign(spend=first["spend"] * 1.5)  # the spread of spend changes
    for name, frame in (("one.csv", first), ("two.csv", second)):
        frame.to_csv(tmp_path / name, index=False)
    config = pipeline.SegmentConfig(algorithm="kmeans", n_clusters=3)
    old = pipeline.run_segmentation(pipeline.load(pipeline.SourceSpec(str(tmp_path / "one.csv"))), config=config)
    new = pipeline.run_segmentation(pipeline.load(pipeline.SourceSpec(str(tmp_path / "two.csv"))), config=config,
                                    previous=old.model)
    assert len(new.alignment.matched) == 3
    std = second[["spend", "visits"]].std()
    segment = new.labels
    for _, old_id, distance in new.alignment.matched:
        mean_new = second.loc[segment == old_id, ["spend", "visits"]].mean()
        mean_old = pd.Series(old.model.reference_means[old_id])
        expected = float(np.sqrt((((mean_new - mean_old) / std) ** 2).mean()))
        assert distance == pytest.approx(expected)


# --- 8: rfm.score checks the segment map it is given ----------------------------------------

def _rfm_customers(n: int = 20) -> pd.DataFrame:
    return pd.DataFrame({"customer_id": [f"c{i}" for i in range(n)], "recency_days": range(n),
                         "frequency": range(1, n + 1), "monetary": np.linspace(10, 500, n)})


@pytest.mark.parametrize(("segment_map", "message"), [
    ([("5..", "Recent")],
     "segment_map: codes 111, 112, 113, 114, 115 … match no pattern; add a catch-all line such as '...,Other'"),
    ([("[1-", "Broken"), ("...", "Rest")], "segment_map: pattern '[1-' on line 1 is not a regular expression"),
    ([("...",)], "segment_map: entry 1 ('...',) is not a (pattern, segment) pair of texts; "
                 "write it as ('5[4-5].', 'Champions')"),
    ([], "segment_map: is empty; give at least one 'pattern,segment' line"),
])
def test_score_refuses_a_segment_map_that_leaves_customers_unnamed(segment_map, message):
    from custseg import rfm
    from custseg.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        rfm.score(_rfm_customers(), segment_map=segment_map)
    assert caught.value.param == "segment_map"
    assert str(caught.value).startswith(message)
    assert caught.value.render({"segment_map": "--segment-map"}).startswith("--segment-map: ")


def test_score_and_load_segment_map_share_one_check(tmp_path, monkeypatch):
    from custseg import rfm
    from custseg.errors import ConfigError

    path = tmp_path / "map.csv"
    path.write_text("pattern,segment\n5..,Recent\n", encoding="utf-8")
    with pytest.raises(ConfigError) as from_file:
        rfm.load_segment_map(path)
    with pytest.raises(ConfigError) as given:
        rfm.score(_rfm_customers(), segment_map=[("5..", "Recent")])
    assert str(from_file.value).removeprefix(str(path)) == str(given.value).removeprefix("segment_map")
    assert from_file.value.param == given.value.param == "segment_map"
    # A complete map scores every customer; the default map is used as it is.
    scored = rfm.score(_rfm_customers(), segment_map=[("5..", "Recent"), ("...", "Other")])
    assert scored["rfm_segment"].notna().all()
    assert rfm.score(_rfm_customers())["rfm_segment"].notna().all()


# --- 3: K-Prototypes chooses its k on the numbers and categories it clusters ----------------

def _mixed_table(path, n: int = 160, seed: int = 0):
    """Four segments: two levels of spend times two plans (with the channel that goes with the
    plan); the numbers alone show two."""
    rng = np.random.default_rng(seed)
    group = np.arange(n) % 4
    pd.DataFrame({
        "customer_id": [f"C{i}" for i in range(n)],
        "spend": np.where(group % 2, 1000.0, 100.0) * rng.normal(1, 0.05, n),
        "plan": np.array(["basic", "pro"])[group // 2],
        "channel": np.array(["web", "store"])[group // 2],
    }).to_csv(path, index=False)
    return path, group


def test_kprototypes_k_comes_from_a_kprototypes_sweep_on_the_mixed_table(tmp_path):
    from sklearn.metrics import adjusted_rand_score

    from custseg import pipeline, selection

    path, truth = _mixed_table(tmp_path / "mixed.csv")
    loaded = pipeline.load(pipeline.SourceSpec(str(path)))
    result = pipeline.run_segmentation(loaded, config=pipeline.SegmentConfig(algorithm="kprototypes"))
    board = result.selection.leaderboard
    assert set(board["algorithm"]) == {"kprototypes"} and len(board) > 1
    assert result.selection.recommendation.algorithm == "kprototypes"
    assert result.selection.recommendation.n_clusters == result.n_clusters == 4
    assert adjusted_rand_score(truth, result.labels) > 0.9
    assert list(result.selection.elbow["k"])[:2] == [1, 2]  # the K-Prototypes cost, from one segment on
    # The numbers alone (what the K-Means sweep saw) say two.
    prepared = pipeline.prepare(loaded, config=pipeline.SegmentConfig(algorithm="kprototypes"))
    numeric_only = selection.compare(prepared.numeric, algorithms=("kmeans",), k_values=range(2, 16))
    assert numeric_only.recommendation.n_clusters == 2


def test_kprototypes_at_a_given_k_is_measured_as_kprototypes(tmp_path):
    from custseg import pipeline

    path, _ = _mixed_table(tmp_path / "mixed.csv", n=80)
    result = pipeline.run_segmentation(pipeline.load(pipeline.SourceSpec(str(path))),
                                       config=pipeline.SegmentConfig(algorithm="kprototypes", n_clusters=3))
    assert result.n_clusters == 3
    assert result.selection.leaderboard[["algorithm", "n_clusters"]].values.tolist() == [["kprototypes", 3]]


def test_kprototypes_on_categories_only_says_what_to_do(tmp_path, capsys):
    source = _category_table(tmp_path / "cats.csv")
    assert main(["segment", str(source), "--out", str(tmp_path / "run"), "--algorithm", "kprototypes"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"custseg: error: {source}: --algorithm kprototypes mixes numbers and categories, but the features plan, "
        "region are all categories; the table has no number, or choose kmeans")


# --- 9: the report's maps hide only a preprocessor that does not fit, not bugs --------------

@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    from custseg import pipeline

    folder = tmp_path_factory.mktemp("small")
    path, _ = _mixed_table(folder / "mixed.csv", n=60)
    result = pipeline.run_segmentation(pipeline.load(pipeline.SourceSpec(str(path))),
                                       config=pipeline.SegmentConfig(algorithm="kmeans", n_clusters=3))
    pipeline.write_run(result, folder / "run")
    return folder / "run"


def test_report_maps_say_so_when_the_saved_preprocessor_does_not_fit(small_run, tmp_path, monkeypatch):
    from custseg.report import _build, build_report

    def does_not_fit(run):
        raise ValueError("columns are missing: {'spend'}")

    monkeypatch.setattr(_build, "_matrix", does_not_fit)
    html = build_report(small_run, out=tmp_path / "r.html").read_text(encoding="utf-8")
    assert "The saved model could not transform the feature table (ValueError), so no maps are drawn." in html


def test_report_maps_let_a_bug_through(small_run, tmp_path, monkeypatch):
    from custseg.report import _build, build_report

    def bug(run):
        raise AttributeError("'NoneType' object has no attribute 'transform'")

    monkeypatch.setattr(_build, "_matrix", bug)
    with pytest.raises(AttributeError, match="has no attribute 'transform'"):
        build_report(small_run, out=tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


def test_model_uses_the_one_noise_label_and_the_registry_input(monkeypatch):
    from custseg import cluster, model

    assert model.NOISE is cluster.NOISE
    from pathlib import Path

    assert "NOISE = " not in Path(model.__file__).read_text(encoding="utf-8")
    assert model._takes_the_table("rfm") and not model._takes_the_table("kmeans")
    assert not model._takes_the_table("an algorithm of a later version")
