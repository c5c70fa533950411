"""Optional dependencies: imported when a feature needs them, with the install command if missing."""

from __future__ import annotations

import importlib
from types import ModuleType

from custseg.errors import ConfigError

__all__ = ["require", "EXTRAS"]

#: The extra that installs each optional module.
EXTRAS: dict[str, str] = {
    "psycopg": "postgres",
    "pyspark": "spark",
    "fastapi": "web",
    "uvicorn": "web",
    "alembic": "web",
    "huey": "web",
    "pwdlib": "web",
}


def require(module: str, *, feature: str) -> ModuleType:
    """Import ``module`` for ``feature`` (e.g. "PostgreSQL sources"), or raise a ConfigError
    that says how to install it.

    >>> require("json", feature="JSON").__name__
    'json'
    >>> require("no_such_module_here", feature="magic")
    Traceback (most recent call last):
    ...
    custseg.errors.ConfigError: magic needs the Python package 'no_such_module_here', which is not installed; install it with pip install no_such_module_here
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        extra = EXTRAS.get(module.split(".")[0])
        command = f"pip install 'custseg[{extra}]'" if extra else f"pip install {module.split('.')[0]}"
        raise ConfigError(
            f"{feature} needs the Python package '{module}', which is not installed; install it with {command}",
        ) from None
