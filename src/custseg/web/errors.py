"""The errors only the service has (each a :class:`custseg.errors.CustsegError` with its status).

Every error reaches the client as ``{"error": {"code", "message", "field"}}``; ``code`` is the
class's ``code``, ``field`` the error's ``param``.
"""

from __future__ import annotations

from custseg.errors import CustsegError

__all__ = ["NotFound", "Unauthorized", "Forbidden", "Conflict", "TooLarge", "Throttled", "code_of", "FIELDS", "field_of"]

#: the service's name of each library parameter it takes under another name (the others keep theirs)
FIELDS = {"n_clusters": "k", "random_state": "seed", "source": "dataset_id"}


def field_of(param: str | None) -> str | None:
    """The service's name of a library parameter (an error's ``field``)."""
    return None if param is None else FIELDS.get(param, param)


class NotFound(CustsegError):
    """No such thing — or one the user may not see (the same answer, so nothing leaks)."""

    http_status = 404
    code = "not_found"


class Unauthorized(CustsegError):
    """Not signed in, or the session or token is no longer valid."""

    http_status = 401
    code = "unauthorized"


class Forbidden(CustsegError):
    """Signed in and a member, but the role does not allow it (or the CSRF check failed)."""

    http_status = 403
    code = "forbidden"


class Conflict(CustsegError):
    """The request clashes with the current state (a taken e-mail, too many runs at once)."""

    http_status = 409
    code = "conflict"


class TooLarge(CustsegError):
    """An upload or request body over its limit."""

    http_status = 413
    code = "too_large"


class Throttled(CustsegError):
    """Too many failed sign-ins: wait before trying again."""

    http_status = 429
    code = "throttled"


_CODES = {
    "DataError": "bad_data", "InputError": "bad_input", "SchemaError": "bad_columns", "ModelError": "bad_model",
    "ConfigError": "bad_request", "OutputError": "cannot_write", "ResourceError": "out_of_resources",
    "Cancelled": "cancelled",
}


def code_of(error: CustsegError) -> str:
    """The machine-readable code of an error (its class's ``code``, else from its class name)."""
    code = getattr(type(error), "code", None)
    if code:
        return code
    for cls in type(error).__mro__:
        if cls.__name__ in _CODES:
            return _CODES[cls.__name__]
    return "error"
