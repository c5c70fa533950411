"""Settings: spark_local_max_customers (the largest table the Spark engine clusters locally)."""

from __future__ import annotations

import pytest

from custseg import cli
from custseg.errors import ConfigError
from custseg.settings import DEFAULT_SPARK_LOCAL_MAX_CUSTOMERS, Settings


def test_spark_local_max_customers_default_and_environment():
    assert Settings().spark_local_max_customers == DEFAULT_SPARK_LOCAL_MAX_CUSTOMERS == 1_000_000
    assert Settings.from_env({}).spark_local_max_customers == 1_000_000
    assert Settings.from_env({"CUSTSEG_SPARK_LOCAL_MAX_CUSTOMERS": " 250000 "}).spark_local_max_customers == 250_000
    assert Settings.from_env({"CUSTSEG_SPARK_LOCAL_MAX_CUSTOMERS": "2_000_000"}).spark_local_max_customers == 2_000_000
    assert Settings.from_env({"CUSTSEG_SPARK_LOCAL_MAX_CUSTOMERS": "0"}).spark_local_max_customers == 0


@pytest.mark.parametrize("value", [-1, 1.5, "100", True, None])
def test_spark_local_max_customers_must_be_a_whole_number(value):
    with pytest.raises(ConfigError, match=r"must be a whole number ≥ 0 \(customers\)") as caught:
        Settings(spark_local_max_customers=value)
    assert caught.value.param == "spark_local_max_customers"
    assert "\n" not in str(caught.value)
    assert caught.value.render({"spark_local_max_customers": "--spark-local-max-customers"}).startswith(
        "--spark-local-max-customers must be")


@pytest.mark.parametrize("value", ["many", "-5", "1e6"])
def test_spark_local_max_customers_from_the_environment_is_checked(value):
    with pytest.raises(ConfigError, match="CUSTSEG_SPARK_LOCAL_MAX_CUSTOMERS must be a whole number") as caught:
        Settings.from_env({"CUSTSEG_SPARK_LOCAL_MAX_CUSTOMERS": value})
    assert caught.value.param == "spark_local_max_customers"


def test_the_cli_flag_is_checked_before_any_work(tmp_path, capsys):
    code = cli.main(["segment", str(tmp_path / "none.parquet"), "--out", str(tmp_path / "run"),
                     "--engine", "spark", "--spark-local-max-customers", "-3"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("custseg: error: --spark-local-max-customers must be a whole number ≥ 0 (customers), got -3")
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()
    code = cli.main(["segment", str(tmp_path / "none.parquet"), "--out", str(tmp_path / "run"),
                     "--spark-local-max-customers", "lots"])
    assert code == 2 and "--spark-local-max-customers" in capsys.readouterr().err
