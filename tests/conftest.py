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


@pytest.fixture(scope="session")
def retail_head(online_retail):
    """The first 5,000 rows of Online Retail as a DataFrame (copy it before changing it)."""
    import pyarrow.parquet as pq

    return pq.read_table(online_retail).slice(0, 5_000).to_pandas()


#: The PostgreSQL server of this machine and CI (trust auth); tests marked ``postgres`` use it.
POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """The URL of the test database; fails (never skips) when the server does not answer."""
    import sqlalchemy as sa

    engine = sa.create_engine(POSTGRES_URL)
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        pytest.fail(f"PostgreSQL at {POSTGRES_URL} does not answer ({exc.orig}); start it, these tests need it")
    finally:
        engine.dispose()
    return POSTGRES_URL


@pytest.fixture(scope="session")
def spark():
    """One local Spark session for the whole test run (``local[2]``, UI off, few shuffle
    partitions, UTC): a JVM takes 9-45 s to start here.  Skipped with a message only where Java
    is missing; where pyspark is missing it fails (the dev extra installs it)."""
    import shutil

    if shutil.which("java") is None and not __import__("os").environ.get("JAVA_HOME"):
        pytest.skip("Java is missing: the Spark engine's tests need a JDK (17 or newer)")
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[2]").appName("custseg-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.memory", "2g")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
