"""One exception tree for custseg.

Every error a user can cause is a :class:`CustsegError`.  Its message is one line that says
what is wrong, where (file, column, row) and how to fix it; the CLI prints it as
``custseg: error: <message>`` and exits with code 2.
"""

from __future__ import annotations

__all__ = [
    "CustsegError",
    "InputError",
    "SchemaError",
    "DataError",
    "ConfigError",
    "ModelError",
    "ResourceError",
]


class CustsegError(Exception):
    """Base class of every error custseg raises on purpose."""


class InputError(CustsegError):
    """A source cannot be read: missing path, wrong format, empty file, bad encoding, SQL failure."""


class SchemaError(CustsegError):
    """The columns are not what custseg needs: no customer id, duplicate names, bad mapping."""


class DataError(CustsegError):
    """Values cannot be used: unparseable dates, non-numeric amounts, too few customers."""


class ConfigError(CustsegError):
    """An option or configuration file is invalid."""


class ModelError(CustsegError):
    """A saved model cannot be loaded or applied."""


class ResourceError(CustsegError):
    """The machine ran out of memory or of temporary disk space for the work."""
