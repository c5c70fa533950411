from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from custseg import pipeline, rfm
from custseg.errors import ConfigError, DataError
from custseg.pipeline import SourceSpec


def table(recency, frequency, monetary):
    return pd.DataFrame({
        "customer_id": [str(i) for i in range(len(recency))],
        "recency_days": recency, "frequency": frequency, "monetary": monetary,
    })


def test_scores_follow_the_walkthrough():
    scored = rfm.score(table(
        recency=[1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
        frequency=[10, 9, 8, 7, 6, 5, 4, 3, 2, 1],
        monetary=[100, 90, 80, 70, 60, 50, 40, 30, 20, 10],
    ))
    assert list(scored["r_score"]) == [5, 5, 4, 4, 3, 3, 2, 2, 1, 1]
    assert list(scored["f_score"]) == [5, 5, 4, 4, 3, 3, 2, 2, 1, 1]
    assert list(scored["m_score"]) == [5, 5, 4, 4, 3, 3, 2, 2, 1, 1]
    assert list(scored["rfm_code"][:3]) == ["555", "555", "444"]
    assert list(scored["rfm_segment"]) == [
        "Champions", "Champions", "Loyal", "Loyal", "Need Attention", "Need Attention",
        "Hibernating", "Hibernating", "Lost", "Lost",
    ]


def test_frequency_ties_are_ranked_first():
    # Most customers order once: quintile edges collide, ranks break the ties by order.
    scored = rfm.score(table(
        recency=list(range(10)), frequency=[1] * 8 + [2, 5], monetary=list(range(10)),
    ))
    assert list(scored["f_score"]) == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_small_customer_counts_do_not_crash(n):
    scored = rfm.score(table([5] * n, [1] * n, [10.0] * n))
    assert len(scored) == n
    assert scored["rfm_segment"].notna().all()
    assert scored[["r_score", "f_score", "m_score"]].isin(range(1, 6)).all().all()


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 400), st.integers(1, 30), st.floats(0.01, 1e5)), min_size=1, max_size=60))
def test_every_customer_gets_scores_and_a_segment(rows):
    scored = rfm.score(table(*map(list, zip(*rows))))
    assert len(scored) == len(rows)
    assert scored[["r_score", "f_score", "m_score"]].isin(range(1, 6)).all().all()
    assert scored["rfm_segment"].isin(rfm.SEGMENTS).all()
    summary = rfm.summary(scored)
    assert summary["share"].sum() == pytest.approx(1.0)
    assert summary["revenue_share"].sum() == pytest.approx(1.0)


def test_more_recent_never_scores_lower():
    scored = rfm.score(table(list(range(50)), [1] * 50, [1.0] * 50))
    assert scored["r_score"].is_monotonic_decreasing


def test_default_map_covers_every_code():
    assert rfm.validate_segment_map(rfm.DEFAULT_SEGMENT_MAP) == rfm.DEFAULT_SEGMENT_MAP


def test_segment_map_from_a_file(tmp_path):
    path = tmp_path / "map.csv"
    path.write_text("pattern,segment\n5..,Recent\n...,Everyone else\n", encoding="utf-8")
    mapping = rfm.load_segment_map(path)
    scored = rfm.score(table(list(range(10)), list(range(10)), list(range(10))), segment_map=mapping)
    assert scored["rfm_segment"].value_counts().to_dict() == {"Recent": 2, "Everyone else": 8}


def test_segment_map_that_misses_codes_is_refused(tmp_path):
    path = tmp_path / "map.csv"
    path.write_text("pattern,segment\n5..,Recent\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"codes 111, 112, .* match no pattern; add a catch-all"):
        rfm.load_segment_map(path)


def test_segment_map_json_and_bad_regex(tmp_path):
    good = tmp_path / "map.json"
    good.write_text('[{"pattern": "...", "segment": "All"}]', encoding="utf-8")
    assert rfm.load_segment_map(good) == (("...", "All"),)
    bad = tmp_path / "bad.csv"
    bad.write_text("pattern,segment\n[1-,Broken\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="line 1 is not a regular expression"):
        rfm.load_segment_map(bad)


def test_missing_columns_are_named():
    with pytest.raises(DataError, match="missing frequency, monetary"):
        rfm.score(pd.DataFrame({"customer_id": ["a"], "recency_days": [1]}))


def test_online_retail_segments(online_retail):
    scored, made = pipeline.rfm_table(pipeline.load(SourceSpec(str(online_retail))))
    assert len(scored) == 4338
    summary = rfm.summary(scored).set_index("rfm_segment")
    assert set(summary.index) == set(rfm.SEGMENTS)
    # Champions are few and bring a large share of revenue; Lost customers bring little.
    assert summary.loc["Champions", "revenue_share"] > 3 * summary.loc["Champions", "share"]
    assert summary.loc["Lost", "revenue_share"] < summary.loc["Lost", "share"]
    assert scored["r_score"].value_counts().min() >= 800  # quintiles: about a fifth each
