"""Real-time assignment: customers into the segments of a done run.

Each run's model is read from the run folder the app wrote (never from an upload), compiled
once into array operations (:func:`custseg.scoring.compile_model`) and kept in an in-process
LRU cache, so an assign request touches no file.  A customer is a JSON object shaped like a
row of the run's ``features.parquet``; extra fields are ignored, a missing or unknown value
leaves that customer unassigned (segment -1) with the reason.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

from custseg.web.config import WebSettings
from custseg.web.errors import Conflict, NotFound
from custseg.web.services.projects import audit, is_id
from custseg.web.services.runs import get_run
from custseg.web.store.models import Member, Project, Run, User

__all__ = ["assign", "model_of", "forget_models", "CACHE_SIZE"]

#: compiled models kept in memory (one per run)
CACHE_SIZE = 32

_models: OrderedDict[tuple, Any] = OrderedDict()
_models_lock = threading.Lock()
_loading: dict[tuple, threading.Lock] = {}


def _compile(model):
    try:
        from custseg.scoring import compile_model
    except ImportError:  # an older library: the model's own assign, one table per call
        return _Plain(model)
    return compile_model(model)


class _Plain:
    """``model.assign`` behind :meth:`assign_records` (records lacking a feature are
    unassigned, the others assigned as one table)."""

    def __init__(self, model) -> None:
        self.model = model

    def assign_records(self, records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        import pandas as pd

        out = []
        complete = [i for i, r in enumerate(records) if all(c in r for c in self.model.feature_columns)]
        assigned = {}
        if complete:
            table = self.model.assign(pd.DataFrame([records[i] for i in complete]))
            for i, row in zip(complete, table.itertuples(index=False)):
                assigned[i] = (int(row.segment), str(row.segment_name), row.reason or None)
        for i, record in enumerate(records):
            missing = next((c for c in self.model.feature_columns if c not in record), None)
            segment, name, reason = assigned.get(i, (-1, self.model.segment_names.get(-1, "Unassigned"),
                                                     f"missing {missing}"))
            out.append({"customer_id": record.get("customer_id", i), "segment": segment, "segment_name": name,
                        "reason": reason})
        return out


def model_of(settings: WebSettings, folder: str, run_id: int, finished_at: Any = None):
    """The compiled model of the done run whose folder (relative to the data folder) is
    ``folder``: read and compiled on first use, then from memory.  A done run's model never
    changes; ``finished_at`` tells apart a run that took the place of a deleted one."""
    from custseg import model as model_io

    key = (str(settings.data_dir), folder, run_id, str(finished_at))
    with _models_lock:
        found = _models.get(key)
        if found is not None:
            _models.move_to_end(key)
            return found
        loading = _loading.setdefault(key, threading.Lock())
    with loading:  # one reader per model; the others wait for it
        with _models_lock:
            found = _models.get(key)
        if found is None:
            path = Path(settings.data_dir) / folder / "model.skops"
            if not path.is_file():
                raise NotFound(f"run {run_id} has no model file")
            found = _compile(model_io.load(path))
            with _models_lock:
                _models[key] = found
                while len(_models) > CACHE_SIZE:
                    _models.popitem(last=False)
                _loading.pop(key, None)
    return found


def forget_models() -> None:
    """Empty the cache (tests)."""
    with _models_lock:
        _models.clear()


#: the hot path's one query: the run, if the user is a member of its project (built once: a third
#: of the cost of the same select through the ORM each time)
_RUN_OF_MEMBER = (sa.select(Run.id, Run.status, Run.folder, Run.finished_at)
                  .join(Member, (Member.project_id == Run.project_id) & (Member.user_id == sa.bindparam("user")))
                  .where(Run.id == sa.bindparam("run"), Run.project_id == sa.bindparam("project")))


def assign(db: Session, settings: WebSettings, user: User, project_id: int, run_id: int,
           customers: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``customer_id, segment, segment_name, reason`` for each customer, in order (viewer
    role; a batch of more than one customer is audited as an assignment in bulk)."""
    found = None
    if is_id(project_id) and is_id(run_id):  # one query on the hot path
        found = db.connection().execute(_RUN_OF_MEMBER, {"user": user.id, "run": run_id, "project": project_id}).first()
    if found is None:  # not found, or not a member: the answers (and messages) of get_run
        get_run(db, user, project_id, run_id)
        raise NotFound(f"no run {run_id} in project {project_id}")
    if found.status != "done":
        raise Conflict(f"run {run_id} is {found.status}; customers can be assigned once it is done")
    if len(customers) > 1:
        project = db.get(Project, project_id)
        audit(db, project, user, "assigned in bulk", run_id=run_id, customers=len(customers))
    db.commit()  # what this request writes (sign-in bookkeeping, audit) is not held while it scores
    model = model_of(settings, found.folder, found.id, found.finished_at)
    # A value out of the model's range (a negative amount under a log, 1e308 squared) is scored
    # as NaN or inf and then reported as the customer's reason: numpy's warnings about it are
    # expected, and must not fail the request where warnings are errors.
    with np.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
        try:
            return model.assign_records(customers)
        except OverflowError:  # a whole number beyond any float (JSON allows 1 followed by 400 zeros)
            return model.assign_records([_as_floats(customer) for customer in customers])


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
