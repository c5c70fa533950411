"""Shared fixtures: the reference datasets in ../shared/data (read-only; copy before writing)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def _dataset(relative: str) -> Path:
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.fail(f"reference dataset missing: {path} (the tests expect ../shared/data beside the repository)")
    return path


@pytest.fixture(scope="session")
def online_retail() -> Path:
    return _dataset("online_retail/online_retail.parquet")


@pytest.fixture(scope="session")
def marketing_campaign() -> Path:
    return _dataset("customer_personality/marketing_campaign.csv")


@pytest.fixture(scope="session")
def mall_customers() -> Path:
    return _dataset("mall_customers/Mall_Customers.csv")
