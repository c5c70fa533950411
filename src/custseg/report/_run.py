"""The report reads a run only through :mod:`custseg.runs`."""

from custseg.runs import OPTIONAL_FILES, REQUIRED_FILES, RunFolder, read_run

__all__ = ["RunFolder", "read_run", "REQUIRED_FILES", "OPTIONAL_FILES"]
