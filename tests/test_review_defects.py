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
