"""Where and within what limits custseg works: passed explicitly, read from the environment once.

The library never reads environment variables while it works: an edge (the CLI, the web app, a
worker) builds one :class:`Settings` — usually :meth:`Settings.from_env` — and passes it down.
Two runs with different settings can then share one process.

=====================================  ===============================  ==============================
variable                               field                            default
=====================================  ===============================  ==============================
``CUSTSEG_MEMORY_LIMIT``               ``memory_limit`` (DuckDB's)      ``1GB`` (DuckDB's budget)
``CUSTSEG_TEMP_DIR``                   ``temp_dir`` (spill, staging)    ``TMPDIR`` / the system's temp dir
``CUSTSEG_DATA_DIR``                   ``data_dir`` (the web app's)     ``./custseg-data``
``CUSTSEG_THREADS``                    ``threads`` (DuckDB's threads)   all cores
``CUSTSEG_ENGINE``                     ``engine``: duckdb or spark      ``duckdb``
``CUSTSEG_SPARK_MASTER``               ``spark_master`` (the master)    spark-submit's, else ``local[*]``
``CUSTSEG_SPARK_LOCAL_MAX_CUSTOMERS``  ``spark_local_max_customers``    ``1000000``
=====================================  ===============================  ==============================

The engine is where the cleaning and customer features run (:mod:`custseg.engines`): the
same source gives the same features on either.  With the Spark engine, a customer table of at
most ``spark_local_max_customers`` customers is brought to this machine and clustered here (the
local flow's answers); a larger one is clustered on Spark (:mod:`custseg.pipeline.on_spark`).

>>> Settings.from_env({"CUSTSEG_MEMORY_LIMIT": "4GB", "CUSTSEG_THREADS": "2"}).memory_limit
'4GB'
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from custseg.errors import ConfigError

__all__ = ["Settings", "DEFAULT_MEMORY_LIMIT", "DEFAULT_SPARK_LOCAL_MAX_CUSTOMERS", "ENGINES"]

#: DuckDB's memory budget unless configured otherwise: what does not fit is spilled to the
#: temporary folder, so 50M transactions are summarised in about 1.5 GB.
DEFAULT_MEMORY_LIMIT = "1GB"
#: The engines the cleaning and features run on.
ENGINES = ("duckdb", "spark")
Engine = Literal["duckdb", "spark"]
#: With the Spark engine, the largest customer table clustered on this machine.
DEFAULT_SPARK_LOCAL_MAX_CUSTOMERS = 1_000_000

@dataclass(frozen=True)
class Settings:
    """Limits and places of the work (see the module docstring)."""

    memory_limit: str = DEFAULT_MEMORY_LIMIT
    temp_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()))
    data_dir: Path = Path("custseg-data")
    threads: int | None = None
    engine: Engine = "duckdb"
    spark_master: str | None = None
    spark_local_max_customers: int = DEFAULT_SPARK_LOCAL_MAX_CUSTOMERS

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ConfigError(f"{{param}} must be one of {', '.join(ENGINES)}, got '{self.engine}'", param="engine")
        if self.spark_master is not None and not str(self.spark_master).strip():
            raise ConfigError("{param} is empty; give a master URL such as local[*], spark://host:7077 or "
                              "sc://host:15002", param="spark_master")
        limit = self.spark_local_max_customers
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ConfigError(f"{{param}} must be a whole number ≥ 0 (customers), got {limit!r}; give e.g. "
                              f"{DEFAULT_SPARK_LOCAL_MAX_CUSTOMERS}", param="spark_local_max_customers")
        # memory_limit is checked by DuckDB when a connection starts (sources.connect).
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ConfigError(f"{{param}} must be a whole number ≥ 1, got {self.threads!r}", param="threads")
        object.__setattr__(self, "temp_dir", Path(self.temp_dir))
        object.__setattr__(self, "data_dir", Path(self.data_dir))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from ``CUSTSEG_*`` variables (``environ`` defaults to ``os.environ``)."""
        env = os.environ if environ is None else environ
        threads = env.get("CUSTSEG_THREADS") or None
        if threads is not None:
            if not threads.strip().isdigit():
                raise ConfigError(f"CUSTSEG_THREADS must be a whole number ≥ 1, got {threads!r}",
                                  param="threads")
            threads = int(threads)
        engine = (env.get("CUSTSEG_ENGINE") or "duckdb").strip().lower()
        if engine not in ENGINES:
            raise ConfigError(f"CUSTSEG_ENGINE must be one of {', '.join(ENGINES)}, got {engine!r}", param="engine")
        limit = (env.get("CUSTSEG_SPARK_LOCAL_MAX_CUSTOMERS") or "").strip().replace("_", "")
        if limit and not limit.isdigit():
            raise ConfigError(f"CUSTSEG_SPARK_LOCAL_MAX_CUSTOMERS must be a whole number ≥ 0 (customers), got "
                              f"{env['CUSTSEG_SPARK_LOCAL_MAX_CUSTOMERS']!r}; give e.g. "
                              f"{DEFAULT_SPARK_LOCAL_MAX_CUSTOMERS}", param="spark_local_max_customers")
        temp = env.get("CUSTSEG_TEMP_DIR") or env.get("TMPDIR") or tempfile.gettempdir()
        return cls(
            memory_limit=env.get("CUSTSEG_MEMORY_LIMIT") or DEFAULT_MEMORY_LIMIT,
            temp_dir=Path(temp),
            data_dir=Path(env.get("CUSTSEG_DATA_DIR") or "custseg-data"),
            threads=threads,
            engine=engine,  # type: ignore[arg-type]
            spark_master=env.get("CUSTSEG_SPARK_MASTER") or None,
            spark_local_max_customers=int(limit) if limit else DEFAULT_SPARK_LOCAL_MAX_CUSTOMERS,
        )
