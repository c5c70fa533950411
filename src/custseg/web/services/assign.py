"""Real-time assignment: customers into the segments of a done run.

Each run's model is read from the run folder the app wrote (never from an upload), compiled
once into array operations (:func:`custseg.scoring.compile_model`) and kept in an in-process
LRU cache, so an assign request touches no file.  A customer is a JSON object shaped like a
row of the run's ``features.parquet``; extra fields are ignored, a missing or unknown value
leaves that customer unassigned (segment -1) with the reason.
"""

from __future__ import annotations

import math
import operator
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

from custseg.web.config import WebSettings
from custseg.web.errors import Conflict, NotFound
from custseg.web.services.projects import audit_counted, count_if_open, is_id
from custseg.web.services.runs import get_run
from custseg.web.store.models import Member, Run, User

__all__ = ["assign", "done_run", "audit_bulk", "score", "read_customers", "score_customers", "model_of", "cached_model",
           "forget_models", "CACHE_SIZE", "UnreadBody"]

#: compiled models kept in memory (one per run)
CACHE_SIZE = 32

_models: OrderedDict[tuple, Any] = OrderedDict()
_models_lock = threading.Lock()
_loading: dict[tuple, threading.Lock] = {}


def model_of(settings: WebSettings, folder: str, run_id: int, finished_at: Any = None):
    """The compiled model of the done run whose folder (relative to the data folder) is
    ``folder``: read and compiled on first use, then from memory.  A done run's model never
    changes; ``finished_at`` tells apart a run that took the place of a deleted one."""
    from custseg import model as model_io
    from custseg.scoring import compile_model

    key = _key(settings, folder, run_id, finished_at)
    found = cached_model(settings, folder, run_id, finished_at)
    if found is not None:
        return found
    with _models_lock:
        loading = _loading.setdefault(key, threading.Lock())
    with loading:  # one reader per model; the others wait for it
        with _models_lock:
            found = _models.get(key)
        if found is None:
            path = Path(settings.data_dir) / folder / "model.skops"
            if not path.is_file():
                raise NotFound(f"run {run_id} has no model file")
            found = compile_model(model_io.load(path))
            with _models_lock:
                _models[key] = found
                while len(_models) > CACHE_SIZE:
                    _models.popitem(last=False)
                _loading.pop(key, None)
    return found


def cached_model(settings: WebSettings, folder: str, run_id: int, finished_at: Any = None):
    """The compiled model if :func:`model_of` has it in memory already, else None."""
    key = _key(settings, folder, run_id, finished_at)
    with _models_lock:
        found = _models.get(key)
        if found is not None:
            _models.move_to_end(key)
        return found


def _key(settings: WebSettings, folder: str, run_id: int, finished_at: Any) -> tuple:
    return str(settings.data_dir), folder, run_id, str(finished_at)


def forget_models() -> None:
    """Empty the cache (tests)."""
    with _models_lock:
        _models.clear()


#: the hot path's one query: the run, if the user is a member of its project (built once: a third
#: of the cost of the same select through the ORM each time)
_RUN_OF_MEMBER = (sa.select(Run.id, Run.status, Run.folder, Run.finished_at)
                  .join(Member, (Member.project_id == Run.project_id) & (Member.user_id == sa.bindparam("user")))
                  .where(Run.id == sa.bindparam("run"), Run.project_id == sa.bindparam("project")))


def done_run(db: Session, user_id: int, project_id: int, run_id: int) -> tuple[str, int, Any]:
    """``(folder, run id, finished_at)`` of the done run ``run_id`` of the project, if the user
    is a member (any role reads); else :class:`NotFound` (also for a project the user may not
    see), or :class:`Conflict` while the run is not done."""
    found = None
    if is_id(project_id) and is_id(run_id):  # one query on the hot path
        found = db.connection().execute(_RUN_OF_MEMBER, {"user": user_id, "run": run_id, "project": project_id}).first()
    if found is None:  # not found, or not a member: the answers (and messages) of get_run
        get_run(db, db.get(User, user_id), project_id, run_id)
        raise NotFound(f"no run {run_id} in project {project_id}")
    if found.status != "done":
        raise Conflict(f"run {run_id} is {found.status}; customers can be assigned once it is done")
    return found.folder, found.id, found.finished_at


def audit_bulk(db: Session, user_id: int, project_id: int, run_id: int, customers: int) -> None:
    """Record an assignment of more than one customer (one customer is not audited): one event
    per user, run and minute, counting its requests and customers (:func:`audit_counted`)."""
    if customers > 1:
        audit_counted(db, project_id, user_id, "assigned in bulk", {"requests": 1, "customers": customers},
                      run_id=run_id)


def counted_bulk(store_url: str, user_id: int, project_id: int, run_id: int, customers: int) -> bool:
    """:func:`audit_bulk` done in memory, if it can be (True: nothing to write now — one
    customer, or the minute's event for this user and run is open); False: call audit_bulk."""
    return customers <= 1 or count_if_open(store_url, project_id, user_id, "assigned in bulk",
                                           {"requests": 1, "customers": customers}, run_id=run_id)


def score(model, customers: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The model's ``customer_id, segment, segment_name, reason`` of each customer."""
    # A value out of the model's range (a negative amount under a log, 1e308 squared) is scored
    # as NaN or inf and then reported as the customer's reason: numpy's warnings about it are
    # expected, and must not fail the request where warnings are errors.
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        try:
            return model.assign_records(customers)
        except OverflowError:  # a whole number beyond any float (JSON allows 1 followed by 400 zeros)
            return model.assign_records([_as_floats(customer) for customer in customers])


def assign(db: Session, settings: WebSettings, user: User, project_id: int, run_id: int,
           customers: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``customer_id, segment, segment_name, reason`` for each customer, in order (viewer
    role; a batch of more than one customer is audited as an assignment in bulk)."""
    folder, run, finished_at = done_run(db, user.id, project_id, run_id)
    audit_bulk(db, user.id, project_id, run_id, len(customers))
    db.commit()  # what this request writes (sign-in bookkeeping, audit) is not held while it scores
    return score(model_of(settings, folder, run, finished_at), customers)


class UnreadBody(ValueError):
    """A body :func:`read_customers` does not read as ``{"customers": [{…}, …]}`` (the route
    answers it, with its error)."""


def _reader(model) -> tuple[msgspec.json.Decoder, list[str], dict[str, Any]]:
    """The JSON reader of an assign body for ``model``: only the fields the model reads are
    kept (the others are skipped while parsing, never made into Python objects), whole numbers
    of any width are kept whole, and a field a customer lacks is :data:`custseg.scoring.ABSENT`.
    Made once per compiled model."""
    found = getattr(model, "_assign_reader", None)
    if found is None:
        from custseg.scoring import ABSENT

        fields = [f for f in model.record_fields if f != "customer_id"]
        # attribute names of our own (a column name need not be an identifier), JSON names theirs
        spec = [("id", Any, msgspec.field(default=ABSENT, name="customer_id"))]
        spec += [(f"f{i}", Any, msgspec.field(default=ABSENT, name=name)) for i, name in enumerate(fields)]
        customer = msgspec.defstruct("Customer", spec)
        body = msgspec.defstruct("AssignBody", [("customers", list[customer])])
        getters = {name: operator.attrgetter(f"f{i}") for i, name in enumerate(fields)}
        found = (msgspec.json.Decoder(body), fields, getters)
        model._assign_reader = found
    return found


def read_customers(model, body: bytes) -> list:
    """The customers of an assign request's JSON ``body`` as ``model`` reads them (for
    :func:`score_customers`); :class:`UnreadBody` if it is not ``{"customers": [{…}, …]}``."""
    decoder = _reader(model)[0]
    try:
        return decoder.decode(body).customers
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise UnreadBody(str(exc)) from None


def score_customers(model, customers: list) -> list[dict[str, Any]]:
    """:func:`score` of the customers :func:`read_customers` read: the same answers, read
    column by column from the parsed objects."""
    from custseg.scoring import ABSENT, COLUMNWISE_MIN_RECORDS

    _, fields, getters = _reader(model)
    if model.fallback is not None or len(customers) < COLUMNWISE_MIN_RECORDS:
        return score(model, [_as_record(c, fields) for c in customers])
    ids = [i if c.id is ABSENT else c.id for i, c in enumerate(customers)]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        try:
            return model.assign_columns(ids, lambda name: list(map(getters[name], customers)))
        except OverflowError:  # a whole number beyond any float: as the route reads it
            return score(model, [_as_record(c, fields) for c in customers])


def _as_record(customer, fields: list[str]) -> dict[str, Any]:
    from custseg.scoring import ABSENT

    values = msgspec.structs.astuple(customer)
    return {name: v for name, v in zip(["customer_id", *fields], values) if v is not ABSENT}


def _as_floats(customer: Mapping[str, Any]) -> Mapping[str, Any]:
    """The customer with each whole number too large for a float as an infinite one (which
    leaves the customer unassigned: the value is not a finite number); its id as it is."""
    def fits(key: str, value: Any) -> Any:
        if type(value) is int and key != "customer_id":
            try:
                float(value)
            except OverflowError:
                return math.inf if value > 0 else -math.inf
        return value

    return {key: fits(key, value) for key, value in customer.items()}
