"""custseg: customer segmentation from transaction logs and customer tables.

>>> import custseg
>>> loaded = custseg.load(custseg.SourceSpec(str(custseg.datasets.sample_path())))
>>> made = custseg.customer_table(loaded)
>>> len(made.features)
837
"""

from custseg.cleaning import CleaningReport, Policy
from custseg.errors import (
    ConfigError, CustsegError, DataError, InputError, ModelError, ResourceError, SchemaError,
)
from custseg.pipeline import CustomerTable, Loaded, SourceSpec, customer_table, inspect, load

__version__ = "0.1.0"

__all__ = [
    "CleaningReport",
    "ConfigError",
    "CustomerTable",
    "CustsegError",
    "DataError",
    "InputError",
    "Loaded",
    "ModelError",
    "Policy",
    "ResourceError",
    "SchemaError",
    "SourceSpec",
    "customer_table",
    "datasets",
    "inspect",
    "load",
    "rfm_score",
]


def __getattr__(name: str):
    """``datasets`` and ``rfm_score`` load pandas: they are imported on first use, so that
    ``import custseg`` (and the command line) starts without it."""
    import importlib

    if name == "datasets":
        return importlib.import_module("custseg.datasets")
    if name == "rfm_score":
        return importlib.import_module("custseg.rfm").score
    raise AttributeError(f"module 'custseg' has no attribute {name!r}")
