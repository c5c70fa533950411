"""What a run is asked to do: one frozen object for every edge.

The CLI builds a :class:`RunRequest` from its flags, the web API from a JSON body, a job carries
one, and ``run.json`` records it — so a run can be rebuilt exactly from its ``run.json``
(``RunRequest.from_json(summary["request"])``).  :meth:`RunRequest.validate` reports *every*
problem at once, each a :class:`~custseg.errors.ConfigError` naming its parameter, before any
work is done.

>>> request = RunRequest(SourceSpec("orders.csv"), segment=SegmentConfig(n_clusters=4))
>>> RunRequest.from_json(request.to_json()) == request
True
>>> RunRequest(SourceSpec("orders.csv"), segment=SegmentConfig(n_clusters=1)).problems()[0].render({"n_clusters": "--k"})
"--k must be auto or a whole number ≥ 2, got '1'"
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal

from custseg.cleaning import Policy
from custseg.errors import ConfigError, literal
from custseg.schema import parse_mapping

__all__ = ["RunRequest", "SourceSpec", "Policy", "SegmentConfig", "parse_as_of", "parse_k", "parse_mapping",
           "SCHEMA_VERSION"]

#: The version of the JSON form of a request (``to_json``).
SCHEMA_VERSION = 1

Kind = Literal["transactions", "customers"]


@dataclass(frozen=True)
class SourceSpec:
    """Where the data is and how to read it (the reading options of every command).

    ``label`` is what messages, the report and the run record call the source (default: its
    path, or its URL without the password) — e.g. a dataset's name where the path is a
    server's own business.
    """

    source: str
    sheet: str | None = None
    table: str | None = None
    query: str | None = None
    encoding: str | None = None
    delimiter: str | None = None
    mapping: Mapping[str, str] = field(default_factory=dict)
    kind: Kind | None = None
    label: str | None = None


@dataclass(frozen=True)
class SegmentConfig:
    """What ``custseg segment`` was asked to do.

    ``algorithm="auto"`` sweeps ``candidates`` and picks one; ``n_clusters=None`` picks k
    from ``k_values``; ``features=None`` uses the default columns for the kind of source;
    ``value_column`` names what "value share" adds up (default: see
    :func:`custseg.profiling.value_of`).
    """

    algorithm: str = "auto"
    n_clusters: int | None = None
    features: tuple[str, ...] | None = None
    random_state: int = 0
    k_values: tuple[int, ...] = tuple(range(2, 16))
    candidates: tuple[str, ...] = ("kmeans", "gmm")
    value_column: str | None = None


@dataclass(frozen=True)
class RunRequest:
    """A whole segmentation run: the source, cleaning, reference date, segmentation, RFM map.

    ``segment_map`` replaces the default RFM segment map (rows ``(pattern, segment)``);
    ``previous`` is the model file of an earlier run whose segment ids are kept;
    ``report`` builds ``report.html``.
    """

    source: SourceSpec
    policy: Policy = Policy()
    as_of: datetime | None = None
    segment: SegmentConfig = SegmentConfig()
    segment_map: tuple[tuple[str, str], ...] | None = None
    previous: str | None = None
    report: bool = True

    # --- validation --------------------------------------------------------------------

    def problems(self) -> list[ConfigError]:
        """Every problem of the request, in parameter order (empty when it is valid)."""
        from custseg import cluster, schema

        found: list[ConfigError] = []

        def problem(message: str, param: str) -> None:
            found.append(ConfigError(message, param=param))

        src, config, policy = self.source, self.segment, self.policy
        if not isinstance(src.source, str) or not src.source.strip():
            problem("{param} is empty; give a file path or a SQLAlchemy URL", "source")
        if src.kind not in (None, "transactions", "customers"):
            problem(f"{{param}} must be one of transactions, customers, got '{literal(src.kind)}'", "kind")
        for role in src.mapping:
            if role not in schema.ROLES:
                problem(f"{{param}} {literal(role)}={literal(src.mapping[role])}: unknown role '{literal(role)}'; the role must be one of "
                        f"{', '.join(schema.ROLES)}", "mapping")
        if policy.returns not in ("drop", "net"):
            problem(f"{{param}} must be one of drop, net, got '{literal(policy.returns)}'", "returns")
        if policy.bad_values not in ("error", "drop"):
            problem(f"{{param}} must be one of error, drop, got '{literal(policy.bad_values)}'", "bad_values")
        if config.algorithm != "auto" and config.algorithm not in cluster.ALGORITHMS:
            problem(f"{{param}} must be auto or one of {', '.join(cluster.ALGORITHMS)}, got '{literal(config.algorithm)}'",
                    "algorithm")
        if config.n_clusters is not None and not (_whole(config.n_clusters) and config.n_clusters >= 2):
            problem(f"{{param}} must be auto or a whole number ≥ 2, got '{literal(config.n_clusters)}'", "n_clusters")
        if not config.k_values or not all(_whole(k) and k >= 2 for k in config.k_values):
            problem(f"{{param}} must be whole numbers ≥ 2, got {literal(list(config.k_values))}", "k_values")
        unknown = [c for c in config.candidates if c not in cluster.ALGORITHMS]
        if not config.candidates or unknown:
            problem(f"{{param}} must name algorithms among {', '.join(cluster.ALGORITHMS)}, got "
                    f"{literal(list(config.candidates))}", "candidates")
        if config.features is not None:
            names = list(config.features)
            if not names or not all(isinstance(n, str) and n.strip() for n in names):
                problem(f"{{param}} must be column names, got {literal(names)}", "features")
            elif len(set(names)) < len(names):
                twice = sorted({n for n in names if names.count(n) > 1})
                problem(f"{{param}} names {literal(', '.join(twice))} more than once; name each column once", "features")
        if not (_whole(config.random_state) and 0 <= config.random_state < 2**32):
            problem(f"{{param}} must be a whole number from 0 to 4294967295, got '{literal(config.random_state)}'",
                    "random_state")
        if config.value_column is not None and not (isinstance(config.value_column, str) and config.value_column):
            problem(f"{{param}} must be a column name, got {literal(repr(config.value_column))}", "value_column")
        if self.segment_map is not None:
            from custseg import rfm

            try:  # the one check of a map: entries, patterns, and a segment for every code
                rfm.validate_segment_map(self.segment_map, source="{param}")
            except ConfigError as exc:
                found.append(exc)
        return found

    def validate(self) -> RunRequest:
        """The request itself when it is valid; else one :class:`ConfigError` with every problem
        (``problems``); its message is the problem's when there is one."""
        found = self.problems()
        if len(found) == 1:
            raise found[0]
        if found:
            raise ConfigError(
                f"{len(found)} problems: " + "; ".join(p.named_template for p in found), problems=found,
            )
        return self

    # --- JSON ----------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (``json.dumps`` it); :meth:`from_json` reads it back."""
        segment = asdict(self.segment)
        segment["features"] = None if self.segment.features is None else list(self.segment.features)
        segment["k_values"], segment["candidates"] = list(self.segment.k_values), list(self.segment.candidates)
        source = asdict(self.source)
        source["mapping"] = dict(self.source.mapping)
        return {
            "schema_version": SCHEMA_VERSION,
            "source": source,
            "policy": asdict(self.policy),
            "as_of": None if self.as_of is None else self.as_of.isoformat(),
            "segment": segment,
            "segment_map": None if self.segment_map is None else [list(row) for row in self.segment_map],
            "previous": self.previous,
            "report": self.report,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | str) -> RunRequest:
        """A request from :meth:`to_json`'s dict (or its JSON text); unknown fields are refused."""
        if isinstance(data, str):
            try:
                data = json.loads(data)
            except ValueError as exc:
                raise ConfigError(f"a run request must be a JSON object: {literal(exc)}", param="request") from None
        if not isinstance(data, Mapping):
            raise ConfigError("a run request must be a JSON object", param="request")
        data = dict(data)
        version = data.pop("schema_version", SCHEMA_VERSION)
        if version != SCHEMA_VERSION:
            raise ConfigError(f"a run request of schema version {version} cannot be read (this custseg reads "
                              f"{SCHEMA_VERSION})", param="schema_version")
        _refuse_unknown(data, {"source", "policy", "as_of", "segment", "segment_map", "previous", "report"}, "")
        if "source" not in data:
            raise ConfigError("a run request needs a source", param="source")
        source = data["source"]
        if isinstance(source, str):
            source = {"source": source}
        source = _fields(SourceSpec, source, "source.")
        if "mapping" in source:
            source["mapping"] = dict(source["mapping"] or {})
        segment = _fields(SegmentConfig, data.get("segment") or {}, "segment.")
        for name in ("features", "k_values", "candidates"):
            if segment.get(name) is not None:
                segment[name] = tuple(segment[name])
        segment_map = data.get("segment_map")
        return cls(
            source=SourceSpec(**source),
            policy=Policy(**_fields(Policy, data.get("policy") or {}, "policy.")),
            as_of=parse_as_of(data["as_of"]) if data.get("as_of") else None,
            segment=SegmentConfig(**segment),
            segment_map=None if segment_map is None else tuple(tuple(row) for row in segment_map),
            previous=data.get("previous"),
            report=bool(data.get("report", True)),
        )


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _fields(kind: type, data: object, prefix: str) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{{param}} must be a JSON object, got {literal(repr(data))}", param=prefix.rstrip("."))
    names = set(kind.__dataclass_fields__)
    _refuse_unknown(data, names, prefix)
    return dict(data)


def _refuse_unknown(data: Mapping[str, Any], known: set[str], prefix: str) -> None:
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"unknown field{'s' if len(unknown) > 1 else ''} {literal(', '.join(prefix + u for u in unknown))}; "
            f"known: {', '.join(prefix + k for k in sorted(known))}",
            param=prefix + unknown[0],
        )


def parse_as_of(value: str | datetime) -> datetime:
    """A reference date from text (``2011-12-10``, ``2011-12-10T12:30:00+01:00``)."""
    if isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        raise ConfigError(f"{{param}} must be a date like 2011-12-10, got '{literal(value)}'", param="as_of") from None


def parse_k(value: str | int | None) -> int | None:
    """``auto`` (None) or a whole number of segments from text."""
    if value is None or value == "auto":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value).strip()
    if not text.isdigit():
        raise ConfigError(f"{{param}} must be auto or a whole number ≥ 2, got '{literal(value)}'", param="n_clusters")
    return int(text)
