"""Jobs that outlive their worker: a worker killed (SIGKILL) in the middle of a run leaves the
run interrupted once a new worker starts, a retry succeeds, and nothing else of the project —
earlier runs, datasets — is touched, nor is any file half-written."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import time
from datetime import timedelta

import pytest

_WORKER = """
import sys
from custseg.web import jobs
from custseg.web.config import WebSettings
data_dir, db_url, stale = sys.argv[1], sys.argv[2] or None, int(sys.argv[3])
jobs.work(WebSettings(data_dir=data_dir, db_url=db_url, stale_seconds=stale))
"""


def _worker(web, log_path, stale_seconds: int) -> subprocess.Popen:
    """A worker process (``jobs.work``) on the test's store, with a short ``stale_seconds``."""
    with open(log_path, "ab") as log:
        return subprocess.Popen([sys.executable, "-c", _WORKER, str(web.settings.data_dir),
                                 web.settings.db_url or "", str(stale_seconds)], stdout=log, stderr=subprocess.STDOUT)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _setup(web):
    """A user, a project and the bundled sample uploaded into it; the dataset's folder."""
    from custseg.datasets import sample_path

    ann = web.user("ann@example.com")
    pid = web.client.post("/api/v1/projects", json={"name": "Spring"}, headers=ann).json()["id"]
    answer = web.client.post(f"/api/v1/projects/{pid}/datasets", headers=ann,
                             files={"file": ("online_retail_sample.parquet", sample_path().read_bytes())})
    assert answer.status_code == 201, answer.text
    return ann, pid, answer.json()["id"], web.settings.projects_dir / str(pid) / "datasets"


def _wait(web, headers, url, until, log_path, timeout=120):
    deadline = time.monotonic() + timeout
    while True:
        run = web.client.get(url, headers=headers).json()
        if until(run):
            return run
        if time.monotonic() > deadline:
            pytest.fail(f"run still {run['status']} after {timeout} s: {run}\n"
                        + log_path.read_text(errors="replace")[-3000:])
        time.sleep(0.1)


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _snapshot(folder) -> dict[str, str]:
    return {str(p.relative_to(folder)): _digest(p) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_a_killed_worker_leaves_the_run_interrupted_and_a_retry_succeeds(web, tmp_path):
    from custseg.runs import RUN_FILES, read_run

    ann, pid, did, datasets = _setup(web)
    c, base = web.client, f"/api/v1/projects/{pid}/runs"
    runs_dir = web.settings.projects_dir / str(pid) / "runs"
    log_path = tmp_path / "worker.log"
    first = _worker(web, log_path, stale_seconds=2)
    second = None
    try:
        earlier = c.post(base, json={"dataset_id": did, "algorithm": "kmeans", "k": 3, "report": False},
                         headers=ann).json()["id"]
        assert _wait(web, ann, f"{base}/{earlier}", lambda r: r["status"] not in ("queued", "running"),
                     log_path)["status"] == "done"
        earlier_files, dataset_files = _snapshot(runs_dir / str(earlier)), _snapshot(datasets)

        # Killed while it writes its files (the report comes last): the worst moment.
        rid = c.post(base, json={"dataset_id": did, "algorithm": "kmeans", "report": True}, headers=ann).json()["id"]
        _wait(web, ann, f"{base}/{rid}", lambda r: r["step"] == "writing the report", log_path)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        assert c.get(f"{base}/{rid}", headers=ann).json()["status"] == "running"  # nobody knows yet
        work = runs_dir / f".work-{rid}-1"
        assert (work / "run.json").is_file() and not (work / "report.html").exists()  # written aside, unfinished
        assert not (runs_dir / str(rid)).exists()

        second = _worker(web, log_path, stale_seconds=2)
        run = _wait(web, ann, f"{base}/{rid}", lambda r: r["status"] != "running", log_path, timeout=60)
        assert run["status"] == "interrupted" and run["error"]["code"] == "interrupted"
        assert "retry" in run["error"]["message"] and run["finished_at"]
        # Nothing half-written: no run folder, no work folder left; the rest of the project as it was.
        assert not (runs_dir / str(rid)).exists()
        assert not list(runs_dir.glob(".work-*"))
        assert _snapshot(runs_dir / str(earlier)) == earlier_files and _snapshot(datasets) == dataset_files
        assert c.get(f"{base}/{earlier}", headers=ann).json()["status"] == "done"
        assert [r["id"] for r in c.get(base, headers=ann).json()] == [rid, earlier]

        again = c.post(f"{base}/{rid}/retry", headers=ann)
        assert again.status_code == 202 and again.json()["attempt"] == 2 and again.json()["status"] == "queued"
        run = _wait(web, ann, f"{base}/{rid}", lambda r: r["status"] not in ("queued", "running"), log_path)
        assert run["status"] == "done" and run["attempt"] == 2 and run["error"] is None, run
        folder = read_run(runs_dir / str(rid))
        assert {p.name for p in (runs_dir / str(rid)).iterdir()} <= set(RUN_FILES)
        assert folder.summary["n_clusters"] == run["summary"]["n_clusters"]
        assert _snapshot(runs_dir / str(earlier)) == earlier_files
        assert not list(runs_dir.glob(".work-*"))
    finally:
        if first.poll() is None:
            first.kill()
        if second is not None:
            _stop(second)


def test_stale_runs_are_marked_interrupted_and_their_work_folders_removed(web):
    from custseg.web import jobs
    from custseg.web.store.models import Run, now

    ann, pid, did, _ = _setup(web)
    runs_dir = web.settings.projects_dir / str(pid) / "runs"
    moment = now()
    with web.app.state.store.session() as db:
        made = {}
        for name, beat in (("dead", moment - timedelta(seconds=600)), ("alive", moment)):
            run = Run(project_id=pid, dataset_id=did, status="running", started_at=beat, heartbeat_at=beat,
                      folder=f"projects/{pid}/runs/{name}")
            db.add(run)
            db.flush()
            made[name] = run.id
        done = Run(project_id=pid, dataset_id=did, status="done", folder=f"projects/{pid}/runs/x")
        db.add(done)
        db.flush()
    for name in ("dead", "alive"):
        (runs_dir / f".work-{made[name]}-1").mkdir(parents=True)
        (runs_dir / f".work-{made[name]}-1" / "assignments.csv").write_text("half")
    (runs_dir / f".work-{done.id}-1").mkdir()
    assert jobs.mark_stale(web.settings, web.app.state.store) == [made["dead"]]
    with web.app.state.store.session() as db:
        states = {name: db.get(Run, rid).status for name, rid in made.items()}
        dead = db.get(Run, made["dead"])
        assert dead.error["code"] == "interrupted" and "600 s" in dead.error["message"]
    assert states == {"dead": "interrupted", "alive": "running"}
    assert sorted(p.name for p in runs_dir.iterdir()) == [f".work-{made['alive']}-1"]
    # A message for a run that is not queued (running elsewhere) does nothing.
    assert jobs.run_job(web.settings, made["alive"], 1, store=web.app.state.store) is None


@pytest.mark.slow
def test_a_stopped_worker_marks_its_run_interrupted_at_once(sqlite_web, tmp_path):
    web = sqlite_web
    ann, pid, did, _ = _setup(web)
    c, base = web.client, f"/api/v1/projects/{pid}/runs"
    log_path = tmp_path / "worker.log"
    worker = _worker(web, log_path, stale_seconds=600)
    try:
        rid = c.post(base, json={"dataset_id": did, "algorithm": "auto", "report": False}, headers=ann).json()["id"]
        _wait(web, ann, f"{base}/{rid}", lambda r: r["status"] == "running" and r["progress"] > 0.1, log_path)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
        run = c.get(f"{base}/{rid}", headers=ann).json()
        assert run["status"] == "interrupted" and "stopped" in run["error"]["message"]
        assert not (web.settings.projects_dir / str(pid) / "runs" / str(rid)).exists()
    finally:
        _stop(worker)
