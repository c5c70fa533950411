"""Runs as background jobs: the queue, the task that does a run, the workers, and recovery.

The queue is huey's, kept beside the store: ``jobs.sqlite`` in the data folder for the SQLite
store, tables ``huey_*`` in the same database for PostgreSQL (huey's SQL storage over peewee
and psycopg 3).  A queued run survives a restart of the server and of the workers.  A task
that was running when its worker died is *not* run again by huey, so the store's ``runs``
table is the truth: a worker claims a queued run (``queued`` → ``running``), reports progress
and a heartbeat while it works, and writes the outcome; a run still ``running`` whose
heartbeat is older than ``settings.stale_seconds`` was interrupted (:func:`mark_stale`, at the
start of every worker and of the server, and every few seconds in a worker).

A run writes into a hidden work folder beside its run folder and the whole folder is moved
into place only when the run is complete, so a run folder is never half-written; work folders
of runs that are no longer running are removed by :func:`mark_stale`.

Workers are separate processes (``custseg worker``; ``custseg serve`` starts
``settings.workers`` of them with :func:`start_workers`) at a lower CPU priority than the
server, so a run never starves the API.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from custseg.errors import Cancelled, CustsegError
from custseg.web.config import WebSettings
from custseg.web.store import Store
from custseg.web.store.models import Run, now

__all__ = ["FINAL_STATES", "ACTIVE_STATES", "queue", "enqueue", "run_job", "mark_stale", "work", "start_workers",
           "close_queues", "work_folder"]

log = logging.getLogger("custseg.web.jobs")

#: states a run does not leave by itself
FINAL_STATES = ("done", "failed", "interrupted", "cancelled")
#: states that count towards ``settings.runs_per_project``
ACTIVE_STATES = ("queued", "running")
QUEUE_NAME = "custseg-runs"
#: progress is written to the store at most this often (seconds)
PROGRESS_EVERY = 0.5
#: how ``run``'s steps share the progress bar: step -> (from, to)
_PHASES = {
    "reading the source": (0.0, 0.08),
    "segmenting": (0.08, 0.12),
    "sweep": (0.12, 0.75),
    "final fit": (0.75, 0.85),
    "writing the run": (0.85, 0.9),
    "writing the report": (0.9, 0.99),
}
_WORK = re.compile(r"\.work-(\d+)-(\d+)")


# --- the queue -------------------------------------------------------------------------------

_queues: OrderedDict[tuple[str, str], Any] = OrderedDict()
_queues_lock = threading.Lock()
_KEEP_QUEUES = 4


def queue(settings: WebSettings):
    """The huey instance of these settings' store, with the ``run_job`` task registered
    (one per store and data folder in a process)."""
    key = (settings.store_url, str(Path(settings.data_dir).resolve()))
    with _queues_lock:
        found = _queues.get(key)
        if found is not None:
            _queues.move_to_end(key)
            return found
        made = _make_queue(settings)
        _queues[key] = made
        while len(_queues) > _KEEP_QUEUES:
            _, old = _queues.popitem(last=False)
            _close(old)
        return made


def close_queues() -> None:
    """Close every queue this process opened (their database connections)."""
    with _queues_lock:
        while _queues:
            _close(_queues.popitem()[1])


def _close(huey) -> None:
    try:
        huey.storage.close()
    except Exception:  # closing is best effort
        log.debug("closing the queue failed", exc_info=True)


def _make_queue(settings: WebSettings):
    import huey

    url = sa.engine.make_url(settings.store_url)
    if url.get_backend_name() == "sqlite":
        Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
        made = huey.SqliteHuey(name=QUEUE_NAME, filename=str(Path(settings.data_dir) / "jobs.sqlite"),
                               results=False, utc=True, timeout=30)
    else:
        made = huey.Huey(name=QUEUE_NAME, results=False, utc=True, storage_class=_postgres_storage(),
                         database=url.set(drivername="psycopg3").render_as_string(hide_password=False))

    def run_job_task(run_id: int, attempt: int) -> None:
        run_job(settings, run_id, attempt)

    run_job_task.__module__ = __name__
    made.run_job = made.task(name="run_job", retries=0)(run_job_task)
    return made


def _postgres_storage():
    """huey's SQL storage with its tables named ``huey_*`` (they share the store's database),
    created safely when several processes start at once."""
    from huey.contrib.sql_huey import SqlStorage
    from peewee import ModelIndex

    class Storage(SqlStorage):
        def create_models(self):
            kv, schedule, task, counter = super().create_models()
            for model in (kv, schedule, task, counter):
                model._meta.set_table_name("huey_" + model._meta.table_name)
            # huey's index on its task table, made again on the renamed table
            task._meta.indexes = [ModelIndex(task, (task.priority.desc(), task.id))]
            return kv, schedule, task, counter

        def create_tables(self):
            for attempt in range(5):
                try:
                    return super().create_tables()
                except Exception:  # two processes creating the same table at once
                    if attempt == 4:
                        raise
                    self.database.close()
                    time.sleep(0.2 * (attempt + 1))

    return Storage


def enqueue(settings: WebSettings, run_id: int, attempt: int) -> None:
    """Put the run on the queue (its row must be committed: a worker may take it at once).
    The connection used is closed again: requests come from many threads, and the queue's
    connections are per thread."""
    huey = queue(settings)
    try:
        huey.run_job(run_id, attempt)
    finally:
        _close(huey)


# --- the task --------------------------------------------------------------------------------

_in_flight: set[int] = set()
_in_flight_lock = threading.Lock()
_stores: dict[str, Store] = {}


def _store_of(settings: WebSettings) -> Store:
    with _in_flight_lock:
        store = _stores.get(settings.store_url)
        if store is None:
            store = _stores[settings.store_url] = Store(settings.store_url)
        return store


def work_folder(folder: Path, run_id: int, attempt: int) -> Path:
    """Where attempt ``attempt`` of a run writes before its folder is moved into place."""
    return folder.parent / f".work-{run_id}-{attempt}"


class _Reporter:
    """Progress, heartbeat and the cancel flag of one running run, in the store."""

    def __init__(self, store: Store, run_id: int, attempt: int, beat_every: float) -> None:
        self.store, self.run_id, self.attempt, self.beat_every = store, run_id, attempt, beat_every
        self.cancelled = threading.Event()
        self.stopped = threading.Event()
        self.fraction = 0.0
        self.phase = "reading the source"
        self.last_write = 0.0
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._beat, name=f"heartbeat-{run_id}", daemon=True)

    def _where(self):
        return (Run.id == self.run_id, Run.attempt == self.attempt, Run.status == "running")

    def _write(self, **values: Any) -> None:
        with self.store.session() as db:
            db.execute(sa.update(Run).where(*self._where()).values(heartbeat_at=now(), **values))
            if db.scalar(sa.select(Run.cancel_requested).where(Run.id == self.run_id)):
                self.cancelled.set()

    def _beat(self) -> None:
        while not self.stopped.wait(self.beat_every):
            try:
                self._write()
            except Exception:  # the store is busy or away: the next beat tries again
                log.warning("run %s: heartbeat not written", self.run_id, exc_info=True)

    def progress(self, step: str, done: int, total: int) -> None:
        if self.cancelled.is_set():
            raise Cancelled("the run was cancelled")
        if step in _PHASES:
            self.phase = step
            low, high = _PHASES[step]
        elif self.phase in ("segmenting", "sweep"):
            self.phase = "sweep"
            low, high = _PHASES["sweep"]
        else:
            low, high = _PHASES[self.phase]
        share = min(max(done / total, 0.0), 1.0) if total else 0.0
        with self.lock:
            self.fraction = max(self.fraction, low + (high - low) * share)
            moment = time.monotonic()
            if (step in _PHASES and done == 0) or moment - self.last_write >= PROGRESS_EVERY:
                self.last_write = moment
                self._write(progress=round(self.fraction, 4), step=str(step)[:100])

    def cancel(self) -> bool:
        if not self.cancelled.is_set():
            with self.store.session() as db:
                if db.scalar(sa.select(Run.cancel_requested).where(Run.id == self.run_id)):
                    self.cancelled.set()
        return self.cancelled.is_set()


def _without_server_paths(work: Path, folder: Path, data_dir: Path) -> None:
    """The run record and the report as the project's members read them: the run's folder and
    the table it read named relative to the data folder (``projects/P/runs/R``,
    ``projects/P/datasets/…``), not by the server's own paths (the run itself is re-run from
    the request kept in the store, not from these files)."""
    import html

    final = folder.relative_to(data_dir).as_posix() if folder.is_relative_to(data_dir) else folder.name
    pairs = [(str(work.resolve()), final), (str(work), final)]
    pairs += [(str(data_dir.resolve()) + os.sep, ""), (str(data_dir) + os.sep, "")]
    for name in ("run.json", "report.html"):
        path = work / name
        if not path.is_file():
            continue
        text = original = path.read_text(encoding="utf-8")
        for old, new in pairs:
            text = text.replace(old, new)
            if name.endswith(".html"):
                text = text.replace(html.escape(old), html.escape(new))
        if text != original:
            aside = path.with_name(path.name + ".tmp")
            aside.write_text(text, encoding="utf-8")
            os.replace(aside, path)


def run_job(settings: WebSettings, run_id: int, attempt: int | None = None, *, store: Store | None = None) -> str | None:
    """Do attempt ``attempt`` of run ``run_id`` if it is still queued; return its final state
    (None when there was nothing to do: cancelled before it started, or retried since)."""
    from custseg import pipeline
    from custseg import runs as run_files
    from custseg.request import RunRequest
    from custseg.web.services import runs as service

    store = store or _store_of(settings)
    started = now()
    with store.session() as db:
        claim = [Run.id == run_id, Run.status == "queued"]
        if attempt is not None:
            claim.append(Run.attempt == attempt)
        claimed = db.execute(sa.update(Run).where(*claim).values(
            status="running", started_at=started, heartbeat_at=started, finished_at=None, progress=0.0,
            step="starting", error=None)).rowcount
        run = db.get(Run, run_id) if claimed else None
        if run is None:
            log.info("run %s (attempt %s): not queued any more, nothing to do", run_id, attempt)
            return None
        attempt, folder, recorded = run.attempt, Path(settings.data_dir) / run.folder, run.request
    with _in_flight_lock:
        _in_flight.add(run_id)
    log.info("run %s (attempt %s): started", run_id, attempt)
    reporter = _Reporter(store, run_id, attempt, beat_every=max(0.5, min(5.0, settings.stale_seconds / 4)))
    reporter.thread.start()
    work = work_folder(folder, run_id, attempt)
    outcome: dict[str, Any]
    try:
        shutil.rmtree(work, ignore_errors=True)
        if recorded is None:
            raise CustsegError("the run has no request recorded; start a new run")
        request = RunRequest.from_json(recorded)
        pipeline.run(request, work, settings=settings.library, progress=reporter.progress, cancel=reporter.cancel)
        _without_server_paths(work, folder, Path(settings.data_dir))
        summary = service.summarise(run_files.read_run(work))
        with store.session() as db:  # a retry started meanwhile owns the folder now
            current = db.scalar(sa.select(Run.attempt).where(Run.id == run_id))
        if current != attempt:
            raise Cancelled("the run was retried while this attempt ran")
        if folder.exists():
            shutil.rmtree(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        os.replace(work, folder)
        outcome = {"status": "done", "summary": summary, "progress": 1.0, "step": "done"}
    except Cancelled as exc:
        outcome = {"status": "cancelled", "step": "cancelled",
                   "error": {"code": "cancelled", "message": str(exc), "field": None}}
    except CustsegError as exc:
        outcome = {"status": "failed", "step": "failed", "error": service.error_of(exc)}
    except Exception as exc:
        log.exception("run %s (attempt %s) failed", run_id, attempt)
        outcome = {"status": "failed", "step": "failed",
                   "error": {"code": "internal", "message": f"internal error ({type(exc).__name__}); the worker's "
                             "log has the details", "field": None}}
    finally:
        reporter.stopped.set()
        reporter.thread.join(timeout=10)
        shutil.rmtree(work, ignore_errors=True)
        with _in_flight_lock:
            _in_flight.discard(run_id)
    with store.session() as db:
        db.execute(sa.update(Run).where(Run.id == run_id, Run.attempt == attempt,
                                        Run.status.in_(("running", "interrupted")))
                   .values(finished_at=now(), heartbeat_at=now(), **outcome))
        gone = db.get(Run, run_id) is None
    if gone:  # its project was deleted meanwhile: leave no folder of it behind
        for empty in (folder.parent, folder.parent.parent):
            try:
                empty.rmdir()
            except OSError:
                break
    log.info("run %s (attempt %s): %s", run_id, attempt, "deleted meanwhile" if gone else outcome["status"])
    return outcome["status"]


# --- recovery --------------------------------------------------------------------------------

def mark_stale(settings: WebSettings, store: Store | None = None, *, only: set[int] | None = None,
               reason: str | None = None) -> list[int]:
    """Mark interrupted the runs still ``running`` whose heartbeat is older than
    ``settings.stale_seconds`` (or, with ``only``, those runs whatever their heartbeat); remove
    the work folders of runs that are not running.  Returns the ids marked."""
    store = store or _store_of(settings)
    moment = now()
    cutoff = moment - timedelta(seconds=settings.stale_seconds)
    with store.session() as db:
        running = [Run.status == "running"]
        if only is not None:
            running.append(Run.id.in_(sorted(only)))
        else:
            running.append(sa.func.coalesce(Run.heartbeat_at, Run.started_at, Run.created_at) < cutoff)
        stale = db.execute(sa.select(Run.id, Run.heartbeat_at).where(*running)).all()
        for run_id, beat in stale:
            why = reason or (f"its worker stopped during the run (no sign of life for "
                             f"{int((moment - (beat or moment)).total_seconds())} s)")
            db.execute(sa.update(Run).where(Run.id == run_id, *running).values(
                status="interrupted", finished_at=moment, step="interrupted",
                error={"code": "interrupted", "message": f"{why}; retry the run", "field": None}))
        live = {(rid, attempt) for rid, attempt in db.execute(
            sa.select(Run.id, Run.attempt).where(Run.status == "running")).all()}
        # Before the new status is committed: whoever sees "interrupted" finds no work folder.
        _remove_work_folders(settings, live)
    for run_id, _ in stale:
        log.warning("run %s: interrupted (%s)", run_id, reason or "stale heartbeat")
    return [run_id for run_id, _ in stale]


def _remove_work_folders(settings: WebSettings, live: set[tuple[int, int]]) -> None:
    projects = Path(settings.projects_dir)
    if not projects.is_dir():
        return
    for work in projects.glob("*/runs/.work-*"):
        found = _WORK.fullmatch(work.name)
        if found and (int(found[1]), int(found[2])) not in live:
            shutil.rmtree(work, ignore_errors=True)


# --- workers ---------------------------------------------------------------------------------

def work(settings: WebSettings, *, processes: int = 1) -> None:
    """Run jobs in this process until stopped (SIGINT: finish the runs first; SIGTERM: stop
    now, the runs in progress are marked interrupted).  ``processes`` runs at once."""
    _lower_priority()
    _stop_with_server()
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    store = _store_of(settings)
    store.migrate()
    marked = mark_stale(settings, store)
    if marked:
        log.warning("runs %s were interrupted: marked so (retry them)", ", ".join(map(str, marked)))
    huey = queue(settings)
    consumer = huey.create_consumer(workers=max(1, processes), worker_type="thread", periodic=False,
                                    initial_delay=0.1, backoff=1.2, max_delay=1.0, check_worker_health=True)
    stop = threading.Event()

    def watch() -> None:  # runs of a worker that died since
        every = max(1.0, min(30.0, settings.stale_seconds / 2))
        while not stop.wait(every):
            try:
                mark_stale(settings, store)
            except Exception:
                log.warning("checking for interrupted runs failed", exc_info=True)

    watcher = threading.Thread(target=watch, name="stale-runs", daemon=True)
    watcher.start()
    log.info("worker %s: %s run(s) at once, store %s", os.getpid(), max(1, processes),
             store.url.render_as_string(hide_password=True))
    try:
        consumer.run()
    finally:
        stop.set()
        with _in_flight_lock:
            left = set(_in_flight)
        if left:
            mark_stale(settings, store, only=left, reason="the worker was stopped during the run")
        close_queues()
        store.dispose()
        if left:  # threads are still inside the library: do not wait for them
            logging.shutdown()
            os._exit(0)


_SERVER_PID = "CUSTSEG_SERVER_PID"


def _stop_with_server() -> None:
    """A worker started by :func:`start_workers` gets SIGTERM when its server ends, however it
    ends (Linux's parent-death signal)."""
    server = os.environ.pop(_SERVER_PID, None)
    if not server or not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if str(os.getppid()) != server:  # it ended before the signal was asked for
        os.kill(os.getpid(), signal.SIGTERM)


def _lower_priority() -> None:
    """Nice 10: a run never takes the CPU from the server (threads made later inherit it)."""
    try:
        os.nice(10)
    except OSError:  # not allowed here: run at the normal priority
        log.info("could not lower the worker's CPU priority")


def start_workers(settings: WebSettings, *, stdout=None, stderr=None) -> list[subprocess.Popen]:
    """Start ``settings.workers`` ``custseg worker`` processes on these settings' store and
    data folder (the store URL goes by environment, so a password never shows in ``ps``);
    their output goes to ``stdout``/``stderr`` (default: this process's).  They stop when the
    thread that started them ends, however it ends (call this from the main thread)."""
    environment = dict(os.environ)
    environment[_SERVER_PID] = str(os.getpid())  # the workers stop when this process ends
    environment["CUSTSEG_DATA_DIR"] = str(Path(settings.data_dir).resolve())
    if settings.db_url:
        environment["CUSTSEG_DB"] = settings.db_url
    else:
        environment.pop("CUSTSEG_DB", None)
    command = [sys.executable, "-m", "custseg.cli", "worker", "--data-dir", environment["CUSTSEG_DATA_DIR"]]
    return [subprocess.Popen(command, env=environment, stdout=stdout, stderr=stderr) for _ in range(settings.workers)]
