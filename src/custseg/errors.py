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
A message names parameters only through placeholders, so the library never speaks in one
edge's terms: ``{param}`` is the error's own ``param``, ``{param:NAME}`` any other parameter
(``{param:date_format}``).  ``str(error)`` spells each as the library name, and
:meth:`CustsegError.render` as the edge calls it — the CLI's ``--k``, the API's field — with
the library name for a parameter the edge does not list.

>>> error = ConfigError("{param} must be a whole number ≥ 2, got 1", param="n_clusters")
>>> str(error), error.render({"n_clusters": "--k"})
('n_clusters must be a whole number ≥ 2, got 1', '--k must be a whole number ≥ 2, got 1')
>>> error = DataError("orders.csv: dates like '01/02/2011' read both ways; pass {param} '%d/%m/%Y' "
...                   "or drop them with {param:bad_values} drop", param="date_format")
>>> str(error)
"orders.csv: dates like '01/02/2011' read both ways; pass date_format '%d/%m/%Y' or drop them with bad_values drop"
>>> error.render({"date_format": "--date-format", "bad_values": "--bad-values"})
"orders.csv: dates like '01/02/2011' read both ways; pass --date-format '%d/%m/%Y' or drop them with --bad-values drop"
>>> isinstance(error, ValueError), DataError.http_status
(True, 422)

Only those exact forms are placeholders: other braces in a message (a column ``{a}``, a path
``data{2024}.csv``) are text and stay as they are.  User text that could hold a placeholder
form itself — a file, column or cell value — goes into a message through :func:`literal`,
which escapes it (``{{param}}`` is shown as ``{param}``), so it is shown exactly as given:

>>> column = "{param:out}"
>>> str(SchemaError(f"orders.csv: column '{literal(column)}' is empty; name another with {{param}}",
...                 param="mapping"))
"orders.csv: column '{param:out}' is empty; name another with mapping"
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

__all__ = [
    "literal",
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


#: A parameter's library name: an identifier, or a dotted path of them (``segment.n_clusters``).
_NAME = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
#: ``{param}`` or ``{param:NAME}``, with any number of braces around: one on each side is a
#: placeholder, more on both sides the escaped text of one (see :func:`literal`).
_PLACEHOLDER = re.compile(r"(\{+)param(?::(" + _NAME + r"))?(\}+)")


def literal(text: object) -> str:
    """``text`` (a file name, a column name, a value) made safe to put into a message: shown as
    it is, whatever braces it holds.  Only the placeholder forms ``{param}`` and ``{param:NAME}``
    need it, and only they are changed (their braces doubled, which a message shows single).

    >>> literal("Sales {param}"), literal("data{2024}.csv")
    ('Sales {{param}}', 'data{2024}.csv')
    """
    return _PLACEHOLDER.sub(lambda m: "{" + m.group(0) + "}", str(text))


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
        """The message with each parameter spelled as the edge calls it: ``{param}`` as
        ``names[param]``, ``{param:NAME}`` as ``names[NAME]``, the library name for one that
        ``names`` lacks (all of them without ``names``)."""
        names = names or {}

        def spell(match: re.Match[str]) -> str:
            opening, name, closing = match.group(1), match.group(2), match.group(3)
            if len(opening) > 1 and len(closing) > 1:  # escaped: the text of a placeholder
                return match.group(0)[1:-1]
            if len(opening) > 1 or len(closing) > 1:  # not a placeholder
                return match.group(0)
            name = name or self.param
            if name is None:  # ``{param}`` of an error without one: text
                return match.group(0)
            return names.get(name, name)

        return _PLACEHOLDER.sub(spell, self.template)

    def __str__(self) -> str:
        return self.render()

    @property
    def named_template(self) -> str:
        """The template with its own ``{param}`` written ``{param:NAME}``: to put this message
        into another error's (a list of problems, a wrapping error) and keep its parameter.  (A
        ``param`` that is not a name, such as an unknown JSON field, is written as text.)"""
        if self.param is None:
            return self.template
        own = "{param:" + self.param + "}" if re.fullmatch(_NAME, self.param) else literal(self.param)

        def name(match: re.Match[str]) -> str:
            if match.group(2) is None and len(match.group(1)) == len(match.group(3)) == 1:
                return own
            return match.group(0)

        return _PLACEHOLDER.sub(name, self.template)

    def with_prefix(self, prefix: str) -> CustsegError:
        """The same error with ``prefix`` (plain text, e.g. the source's name) in front of its message."""
        error = type(self)(literal(prefix) + self.template, param=self.param, problems=self.problems)
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
