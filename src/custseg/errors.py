"""One exception tree for custseg.

Every error a user can cause is a :class:`CustsegError`.  Its message is one line that says
what is wrong, where (file, column, row) and how to fix it.  One class per cause, each with
the HTTP status the service answers it with:

=====================  ======  =================================================================
:class:`DataError`     422     the input data cannot be used (also a ``ValueError``):
  :class:`InputError`          a source cannot be read (missing path, wrong format, encoding, SQL)
  :class:`SchemaError`         its columns are not what custseg needs (no customer id, duplicates)
  :class:`ModelError`          a saved model cannot be loaded or applied
:class:`ConfigError`   400     a parameter or configuration file is invalid (also a ``ValueError``)
:class:`OutputError`   507     an output cannot be written (full disk, read-only place)
:class:`ResourceError` 503     the machine ran out of memory or temporary disk space for the work
:class:`Cancelled`     409     the caller cancelled the run
=====================  ======  =================================================================

``param`` names the library parameter at fault (``n_clusters``, ``source``, ``out``) and
``problems`` lists every problem when there are several (:meth:`custseg.request.RunRequest.validate`).
A message may hold the placeholder ``{param}``: ``str(error)`` names the library parameter,
:meth:`CustsegError.render` the edge's own name for it — the CLI's ``--k``, the API's field —
so the library never speaks in one edge's terms.

>>> error = ConfigError("{param} must be a whole number ≥ 2, got 1", param="n_clusters")
>>> str(error), error.render({"n_clusters": "--k"})
('n_clusters must be a whole number ≥ 2, got 1', '--k must be a whole number ≥ 2, got 1')
>>> isinstance(error, ValueError), ConfigError.http_status
(True, 400)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = [
    "CustsegError",
    "DataError",
    "InputError",
    "SchemaError",
    "ModelError",
    "ConfigError",
    "OutputError",
    "ResourceError",
    "Cancelled",
]


class CustsegError(Exception):
    """Base class of every error custseg raises on purpose."""

    #: The status the web API answers with.
    http_status = 400

    def __init__(self, message: str = "", *, param: str | None = None,
                 problems: Sequence[CustsegError] = ()) -> None:
        super().__init__(message)
        self.template = str(message)
        self.param = param
        self.problems = tuple(problems)

    def render(self, names: Mapping[str, str] | None = None) -> str:
        """The message with ``{param}`` spelled as the edge calls it (``names[param]``)."""
        name = (names or {}).get(self.param or "", self.param or "")
        return self.template.replace("{param}", name) if "{param}" in self.template else self.template

    def __str__(self) -> str:
        return self.render()

    def with_prefix(self, prefix: str) -> CustsegError:
        """The same error with ``prefix`` (e.g. the source's name) in front of its message."""
        error = type(self)(prefix + self.template, param=self.param, problems=self.problems)
        return error


class DataError(CustsegError, ValueError):
    """The input data cannot be used: unparseable dates, non-numeric amounts, too few customers."""

    http_status = 422


class InputError(DataError):
    """A source cannot be read: missing path, wrong format, empty file, bad encoding, SQL failure."""


class SchemaError(DataError):
    """The columns are not what custseg needs: no customer id, duplicate names, bad mapping."""


class ModelError(DataError):
    """A saved model cannot be loaded or applied."""


class ConfigError(CustsegError, ValueError):
    """A parameter or configuration file is invalid."""

    http_status = 400


class OutputError(CustsegError):
    """An output cannot be written: a full disk, a read-only or foreign folder, a file size limit."""

    http_status = 507


class ResourceError(CustsegError):
    """The machine ran out of memory or of temporary disk space for the work."""

    http_status = 503


class Cancelled(CustsegError):
    """The run was cancelled by its caller (a job's cancel button); nothing half-written remains."""

    http_status = 409
