"""custseg: customer segmentation from transaction logs and customer tables.

>>> import custseg
>>> loaded = custseg.load(custseg.SourceSpec(str(custseg.datasets.sample_path())))
>>> made = custseg.customer_table(loaded)
>>> len(made.features)
837
"""

__version__ = "0.1.0"  # the one version source (pyproject.toml reads it)

from custseg.cleaning import CleaningReport, Policy
from custseg.errors import (
    Cancelled, ConfigError, CustsegError, DataError, InputError, ModelError, OutputError, ResourceError,
    SchemaError,
)
from custseg.pipeline import (
    CustomerTable, Loaded, SegmentationResult, customer_table, inspect, load, run, run_segmentation,
)
from custseg.request import RunRequest, SegmentConfig, SourceSpec
from custseg.settings import Settings

__all__ = [
    # the entry point and what it takes
    "run",
    "RunRequest",
    "SourceSpec",
    "Policy",
    "SegmentConfig",
    "Settings",
    # what it gives
    "RunFolder",
    "SegmentationResult",
    "CleaningReport",
    # steps, for notebooks
    "load",
    "inspect",
    "customer_table",
    "run_segmentation",
    "rfm_score",
    "datasets",
    # saved models, reports, exports
    "load_model",
    "build_report",
    "export_run",
    # errors
    "CustsegError",
    "DataError",
    "InputError",
    "SchemaError",
    "ModelError",
    "ConfigError",
    "OutputError",
    "ResourceError",
    "Cancelled",
    "CustomerTable",
    "Loaded",
]


def __getattr__(name: str):
    """``datasets``, ``rfm_score`` and the run folder, model, report and export entry points load
    pandas: they are imported on first use, so that
    ``import custseg`` (and the command line) starts without it."""
    import importlib

    if name == "datasets":
        return importlib.import_module("custseg.datasets")
    if name == "rfm_score":
        return importlib.import_module("custseg.rfm").score
    lazy = {"RunFolder": ("custseg.runs", "RunFolder"), "load_model": ("custseg.model", "load"),
            "build_report": ("custseg.report", "build_report"), "export_run": ("custseg.exports", "export_run")}
    if name in lazy:
        module, attribute = lazy[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'custseg' has no attribute {name!r}")
