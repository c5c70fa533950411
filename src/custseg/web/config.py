"""The web app's settings: from ``custseg serve`` flags, else ``CUSTSEG_*`` variables, read once.

==============================  ===============================  ==============================
variable                        field                            default
==============================  ===============================  ==============================
``CUSTSEG_DB``                  ``db_url`` (the store)           SQLite in the data folder
``CUSTSEG_DATA_DIR``            ``data_dir``                     ``./custseg-data``
``CUSTSEG_UPLOAD_LIMIT``        ``upload_limit`` (bytes)         2 GB
``CUSTSEG_JSON_LIMIT``          ``json_limit`` (bytes)           10 MB
``CUSTSEG_RUNS_PER_PROJECT``    ``runs_per_project`` (at once)   2
``CUSTSEG_SESSION_HOURS``       ``session_hours``                336 (two weeks)
``CUSTSEG_SECURE_COOKIES``      ``secure_cookies``               when served over HTTPS
``CUSTSEG_WORKERS``             ``workers`` (job processes)      1
``CUSTSEG_STALE_SECONDS``       ``stale_seconds``                60 (a silent run was interrupted)
``CUSTSEG_ACCESS_LOG``          ``access_log`` (a line a request) off
==============================  ===============================  ==============================

The library's own settings (memory limit, temporary folder, threads) come from
:class:`custseg.settings.Settings` and are passed to every run.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from custseg.errors import ConfigError
from custseg.settings import Settings

__all__ = ["WebSettings"]

_SIZES = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def parse_size(text: str, name: str) -> int:
    """``"2GB"``, ``"500 MB"`` or ``"1048576"`` as bytes."""
    value = str(text).strip().lower().replace(" ", "")
    number = value.rstrip("abgikm")
    unit = value[len(number):]
    try:
        size = float(number) * _SIZES[unit]
    except (KeyError, ValueError):
        raise ConfigError(f"{name} must be a size like 2GB or 500MB, got {text!r}", param=name) from None
    if size <= 0:
        raise ConfigError(f"{name} must be a size above 0, got {text!r}", param=name)
    return int(size)


def _whole(text: str, name: str, low: int = 1) -> int:
    if not str(text).strip().isdigit() or int(text) < low:
        raise ConfigError(f"{name} must be a whole number ≥ {low}, got {text!r}", param=name)
    return int(text)


@dataclass(frozen=True)
class WebSettings:
    """Where the app keeps its data and within what limits it serves (module docstring)."""

    data_dir: Path = Path("custseg-data")
    db_url: str | None = None
    upload_limit: int = 2 * 10**9
    json_limit: int = 10 * 10**6
    runs_per_project: int = 2
    session_hours: int = 24 * 14
    secure_cookies: bool | None = None
    workers: int = 1
    #: failed sign-ins allowed per e-mail address (and per client) in ``throttle_minutes``
    login_attempts: int = 5
    throttle_minutes: int = 15
    #: a running job that has not reported for this long was interrupted (its worker died)
    stale_seconds: int = 60
    #: a line per request on the server's output
    access_log: bool = False
    library: Settings = field(default_factory=Settings)

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", Path(self.data_dir))

    @property
    def store_url(self) -> str:
        """The SQLAlchemy URL of the store: ``db_url``, or SQLite in the data folder."""
        return self.db_url or f"sqlite:///{(self.data_dir / 'custseg.sqlite').resolve()}"

    @property
    def projects_dir(self) -> Path:
        return self.data_dir / "projects"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides) -> WebSettings:
        """Settings from ``CUSTSEG_*`` variables, then ``overrides`` (the flags given)."""
        env = os.environ if environ is None else environ
        library = Settings.from_env(env)
        values: dict = {"library": library, "data_dir": library.data_dir}
        if env.get("CUSTSEG_DB"):
            values["db_url"] = env["CUSTSEG_DB"]
        if env.get("CUSTSEG_UPLOAD_LIMIT"):
            values["upload_limit"] = parse_size(env["CUSTSEG_UPLOAD_LIMIT"], "CUSTSEG_UPLOAD_LIMIT")
        if env.get("CUSTSEG_JSON_LIMIT"):
            values["json_limit"] = parse_size(env["CUSTSEG_JSON_LIMIT"], "CUSTSEG_JSON_LIMIT")
        for variable, name in (("CUSTSEG_RUNS_PER_PROJECT", "runs_per_project"),
                               ("CUSTSEG_SESSION_HOURS", "session_hours")):
            if env.get(variable):
                values[name] = _whole(env[variable], variable)
        if env.get("CUSTSEG_WORKERS"):
            values["workers"] = _whole(env["CUSTSEG_WORKERS"], "CUSTSEG_WORKERS", low=0)
        if env.get("CUSTSEG_STALE_SECONDS"):
            values["stale_seconds"] = _whole(env["CUSTSEG_STALE_SECONDS"], "CUSTSEG_STALE_SECONDS")
        if env.get("CUSTSEG_ACCESS_LOG"):
            values["access_log"] = env["CUSTSEG_ACCESS_LOG"].strip().lower() in ("1", "true", "yes", "on")
        if env.get("CUSTSEG_SECURE_COOKIES"):
            values["secure_cookies"] = env["CUSTSEG_SECURE_COOKIES"].strip().lower() in ("1", "true", "yes", "on")
        settings = cls(**values)
        overrides = {k: v for k, v in overrides.items() if v is not None}
        if "data_dir" in overrides:
            overrides["library"] = replace(library, data_dir=Path(overrides["data_dir"]))
        return replace(settings, **overrides)
