"""Benchmark: the assign endpoint of the web app under a fixed-rate load, against its echo.

Sets up a data folder with a user, a project, the bundled sample uploaded as a dataset and a
done run of it (K-Means, k=4), then starts ``custseg serve --workers 0`` (one server process,
no job workers) and drives it from a separate process on the same machine with **hey**
(Debian's package ``hey``; ``apt-get install hey``):

``echo``     ``POST /api/v1/echo`` with one customer: the app's plain endpoint that only
             validates and returns the assign body (no sign-in, no store): the baseline
``assign``   ``POST /api/v1/projects/P/runs/R/assign`` with one customer (a row of the run's
             ``features.parquet``, a different customer each worker), signed in by API token
``batch``    the assign endpoint with 1,000 customers a request, as fast as it answers
             (``--batch-workers`` at once, no rate limit): customers per second
``busy``     ``assign`` again while a ``custseg worker`` (CPU priority lowered, nice 10) does
             segmentation runs back to back on the same machine

Two load generators, each in its own process on the same machine:

- **bench/loadgen.py** (the open model; the targets are judged on it): request *i* is sent at
  ``start + i / rate`` — evenly spaced, 1,000 a second — over a pool of keep-alive connections,
  one request in flight on each, opening more when all are busy; the latency of a request runs
  from its *scheduled* time to the moment its whole answer is read, so a late generator or a
  wait for a free connection counts against the server (no coordinated omission).
- **hey** ``-c 50 -q 20`` (``-c C -q Q``: C workers that each send at most Q requests per second
  over keep-alive connections; a worker sends its next request at its next tick after the
  answer came; the latency runs from the moment hey starts the request to the moment the
  whole answer is read — ``-o csv``: every request's time).  hey's workers start together and
  tick together, so its 1,000 a second arrive as a burst of 50 requests every 50 ms: the
  "burst" phases record that pattern (the share of requests started in the busiest fifth of
  each tick is in the results) and its p99, beside the open model's.  A hey worker waits for
  its answer, so a slow server gets fewer requests instead of a queue: the rate each phase
  held is recorded next to its percentiles.  The batch phase uses hey without a rate limit.

Results go to ``bench/results/serve-YYYY-MM-DD.md`` and ``.json`` with the machine, the date
and the targets (p99 ≤ 10 ms at 1,000 req/s with 0 errors and ≤ 1.5 × echo's p99; batch ≥
300,000 customers/s) marked MET or NOT MET.  Nothing here asserts a time.

Each phase runs on SQLite and on PostgreSQL (a database made for the run on the local server).
Before the load, each endpoint is also called one request at a time to record the server's CPU
time per request.  The echo and assign requests measured here are the ones the app's fast lane
answers in the event loop (custseg.web.fastlane: a bearer token, a JSON body, no cookie); a
request it declines takes the FastAPI route, which is slower (the "GET /me" line: the token
check through the routes' dependencies).

    python bench/serve.py [--rate 1000] [--seconds 30] [--workers 50] [--batch-seconds 15]
                          [--batch-workers 4] [--skip-busy] [--skip-burst] [--stores sqlite,postgresql]
                          [--tag TAG] [--notes TEXT]
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
PASSWORD = "bench password 1"


def machine() -> dict:
    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    hey = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "hey"], capture_output=True, text=True).stdout
    return {"uname": " ".join(platform.uname()), "cpu": cpu, "cores": os.cpu_count(), "python": sys.version.split()[0],
            "hey": hey or "?", "load_before": os.getloadavg(), "http": _http_implementation()}


def _http_implementation() -> str:
    """The HTTP parser and event loop uvicorn picks here ("auto": httptools and uvloop if installed)."""
    import importlib.util

    parser = "httptools" if importlib.util.find_spec("httptools") else "h11"
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    return f"{parser}, {loop}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- setting up a done run --------------------------------------------------------------------

def set_up(data_dir: Path, db_url: str | None) -> dict:
    """A user with a token, a project, the sample as a dataset and a done run (in this process)."""
    from fastapi.testclient import TestClient

    from custseg.datasets import sample_path
    from custseg.web import auth, jobs
    from custseg.web.app import create_app
    from custseg.web.config import WebSettings

    settings = WebSettings(data_dir=data_dir, db_url=db_url, workers=0)
    app = create_app(settings)
    with app.state.store.session() as db:
        user = auth.create_user(db, "bench@example.com", PASSWORD)
        token, _ = auth.create_token(db, user, "bench")
    headers = {"Authorization": f"Bearer {token}"}
    with TestClient(app) as client:
        pid = client.post("/api/v1/projects", json={"name": "bench"}, headers=headers).json()["id"]
        answer = client.post(f"/api/v1/projects/{pid}/datasets", headers=headers,
                             files={"file": ("online_retail_sample.parquet", sample_path().read_bytes())})
        answer.raise_for_status()
        did = answer.json()["id"]
        rid = client.post(f"/api/v1/projects/{pid}/runs", headers=headers,
                          json={"dataset_id": did, "algorithm": "kmeans", "k": 4, "report": False}).json()["id"]
        assert jobs.run_job(settings, rid, 1, store=app.state.store) == "done"
        run = client.get(f"/api/v1/projects/{pid}/runs/{rid}", headers=headers).json()
    jobs.close_queues()
    app.state.store.dispose()
    return {"token": token, "project": pid, "dataset": did, "run": rid,
            "folder": data_dir / f"projects/{pid}/runs/{rid}", "segments": run["summary"]["n_clusters"]}


def customers(folder: Path) -> list[dict]:
    import pandas as pd

    features = pd.read_parquet(folder / "features.parquet")
    return json.loads(features.to_json(orient="records", date_format="iso"))


# --- the server and the load ------------------------------------------------------------------

def start_server(data_dir: Path, db_url: str | None, port: int, token: str, log) -> subprocess.Popen:
    """``custseg serve --workers 0``."""
    env = dict(os.environ, CUSTSEG_DATA_DIR=str(data_dir))
    if db_url:
        env["CUSTSEG_DB"] = db_url
    server = subprocess.Popen([sys.executable, "-m", "custseg.cli", "serve", "--data-dir", str(data_dir),
                               "--workers", "0", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/v1/me", headers={"Authorization": f"Bearer {token}"},
                         timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if server.poll() is not None:
            break
        time.sleep(0.2)
    server.kill()
    raise SystemExit("the server did not start; see its log")


def hey(url: str, body: Path, *, seconds: float, workers: int, rate_per_worker: float | None,
        token: str | None) -> dict:
    """Run hey; every request's latency from its CSV."""
    command = ["hey", "-z", f"{seconds}s", "-c", str(workers), "-m", "POST", "-T", "application/json",
               "-D", str(body), "-o", "csv", "-t", "10"]
    if rate_per_worker:
        command += ["-q", str(rate_per_worker)]
    if token:
        command += ["-H", f"Authorization: Bearer {token}"]
    started = time.monotonic()
    done = subprocess.run(command + [url], capture_output=True, text=True)
    elapsed = time.monotonic() - started
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    latency = np.array([float(r["response-time"]) for r in rows]) * 1000.0
    statuses = [int(r["status-code"]) for r in rows]
    bad = sum(1 for s in statuses if not 200 <= s < 300)
    # hey's CSV lists the requests that got an answer; ones that failed (refused, timed out)
    # are only in its summary: count them from the schedule they missed.
    expected = workers * rate_per_worker * seconds if rate_per_worker else None
    burst = None
    if rate_per_worker and rows:
        # where in its tick each request started: with workers ticking together, in one place
        tick = 1.0 / rate_per_worker
        phase = np.array([float(r["offset"]) for r in rows]) % tick
        burst = round(float(np.histogram(phase, bins=5, range=(0, tick))[0].max()) / len(rows), 3)
    out = {
        "requests": len(rows), "seconds": seconds, "wall_seconds": round(elapsed, 2),
        "held_rate": round(len(rows) / seconds, 1), "non_2xx": bad,
        "missing_from_schedule": None if expected is None else max(0, int(round(expected)) - len(rows)),
        "p50_ms": pct(latency, 50), "p90_ms": pct(latency, 90), "p99_ms": pct(latency, 99),
        "p99.9_ms": pct(latency, 99.9), "max_ms": round(float(latency.max()), 3) if len(latency) else None,
        "mean_ms": round(float(latency.mean()), 3) if len(latency) else None,
        "stderr": done.stderr.strip()[-500:], "generator": f"hey -c {workers}" + (
            f" -q {rate_per_worker:g}" if rate_per_worker else ""), "started_in_busiest_fifth_of_tick": burst,
    }
    return out


def open_load(url: str, body: Path, *, seconds: float, rate: float, token: str | None, connections: int,
              arrivals: str = "even") -> dict:
    """Run bench/loadgen.py (the open model): latency from each request's scheduled time."""
    out_path = body.with_name(f"loadgen-{os.getpid()}-{time.monotonic_ns()}.json")
    command = [sys.executable, str(Path(__file__).with_name("loadgen.py")), url, "--rate", str(rate),
               "--seconds", str(seconds), "--body", str(body), "--out", str(out_path),
               "--connections", str(connections), "--arrivals", arrivals]
    if token:
        command += ["--header", f"Authorization: Bearer {token}"]
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True)
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"bench/loadgen.py failed: {done.stderr.strip()[-500:]}")
    found = json.loads(out_path.read_text())
    out_path.unlink()
    latency = np.array(found["latency_s"], dtype=float) * 1000.0
    service = np.array(found["service_s"], dtype=float) * 1000.0
    answered = latency[~np.isnan(latency)]
    statuses = np.array(found["status"])
    return {
        "requests": len(answered), "seconds": seconds, "wall_seconds": round(elapsed, 2),
        "held_rate": round(len(answered) / seconds, 1),
        "non_2xx": int(((statuses < 200) | (statuses >= 300))[~np.isnan(latency)].sum()),
        "missing_from_schedule": found["requests"] - len(answered),
        "p50_ms": pct(answered, 50), "p90_ms": pct(answered, 90), "p99_ms": pct(answered, 99),
        "p99.9_ms": pct(answered, 99.9), "max_ms": round(float(answered.max()), 3) if len(answered) else None,
        "mean_ms": round(float(answered.mean()), 3) if len(answered) else None,
        "service_p99_ms": pct(service[~np.isnan(service)], 99),
        "connections_opened": found["connections_opened"], "schedule_overrun_s": found["schedule_overrun_s"],
        "generator": f"bench/loadgen.py --rate {rate:g} --arrivals {arrivals}", "stderr": "",
    }


def pct(values: np.ndarray, q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if len(values) else None


def cpu_busy_others(seconds: float) -> float:
    """Cores kept busy meanwhile by every process (from /proc/stat), for the record."""
    def read():
        fields = [float(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        return sum(fields), fields[3] + fields[4]
    total0, idle0 = read()
    time.sleep(seconds)
    total1, idle1 = read()
    return round((1 - (idle1 - idle0) / (total1 - total0)) * (os.cpu_count() or 1), 2)


def server_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def costs(server: subprocess.Popen, base: str, assign_url: str, token: str, one: Path, batch: Path,
          calls: int) -> dict:
    """One request at a time (one connection): the server's CPU time and the wall time per
    request of each endpoint — where a request's time goes, whatever the load."""
    import httpx

    json_type = {"Content-Type": "application/json"}
    signed = {"Authorization": f"Bearer {token}"}
    cases = {
        "echo (1 customer)": ("POST", f"{base}/echo", one, json_type, calls),
        "GET /me (the token check alone)": ("GET", f"{base}/me", None, signed, calls),
        "assign (1 customer)": ("POST", assign_url, one, {**signed, **json_type}, calls),
        "echo (1,000 customers)": ("POST", f"{base}/echo", batch, json_type, max(20, calls // 20)),
        "assign (1,000 customers)": ("POST", assign_url, batch, {**signed, **json_type}, max(20, calls // 20)),
    }
    out = {}
    with httpx.Client(timeout=60) as client:
        for name, (method, url, body, headers, n) in cases.items():
            content = body.read_bytes() if body else None
            for _ in range(10):
                client.request(method, url, content=content, headers=headers)
            cpu, wall = server_cpu(server.pid), time.perf_counter()
            walls = []
            for _ in range(n):
                started = time.perf_counter()
                answer = client.request(method, url, content=content, headers=headers)
                walls.append(time.perf_counter() - started)
                answer.raise_for_status()
            out[name] = {"calls": n, "server_cpu_ms": round((server_cpu(server.pid) - cpu) / n * 1000, 3),
                         "wall_median_ms": round(float(np.median(walls)) * 1000, 3)}
            print(f"  {name}: {out[name]}", flush=True)
    return out


def token_check(data_dir: Path, db_url: str | None, token: str, calls: int) -> dict:
    """In this process: the API token check as every request does it (``auth.user_for_token``,
    which records ``last_used_at``: one write and commit per request), and the same check with
    that write left out — how much of a request the bookkeeping write costs."""
    from custseg.web import auth
    from custseg.web.config import WebSettings
    from custseg.web.store import Store

    store = Store(WebSettings(data_dir=data_dir, db_url=db_url).store_url)

    def check(write: bool) -> None:
        with store.session() as db:
            auth.user_for_token(db, token)
            if not write:
                db.expunge_all()  # the change to last_used_at is forgotten, not written

    out = {}
    for name, write in (("with its write (as served)", True), ("without the write", False)):
        for _ in range(30):
            check(write)
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(calls):
            check(write)
        out[name] = {"calls": calls, "cpu_ms": round((time.process_time() - cpu) / calls * 1000, 3),
                     "wall_ms": round((time.perf_counter() - wall) / calls * 1000, 3)}
    store.dispose()
    return out


class RunsInProgress:
    """A ``custseg worker`` doing runs back to back (each started when the last one ends)."""

    def __init__(self, data_dir: Path, db_url: str | None, port: int, setup: dict, log) -> None:
        env = dict(os.environ, CUSTSEG_DATA_DIR=str(data_dir))
        if db_url:
            env["CUSTSEG_DB"] = db_url
        self.worker = subprocess.Popen([sys.executable, "-m", "custseg.cli", "worker", "--data-dir", str(data_dir)],
                                       env=env, stdout=log, stderr=subprocess.STDOUT)
        self.base = f"http://127.0.0.1:{port}/api/v1/projects/{setup['project']}/runs"
        self.headers = {"Authorization": f"Bearer {setup['token']}"}
        self.dataset = setup["dataset"]
        self.stop = threading.Event()
        self.states: list[str] = []
        self.running_seconds = 0.0
        self.thread = threading.Thread(target=self._feed, daemon=True)

    def _feed(self) -> None:
        import httpx

        with httpx.Client(timeout=120) as client:
            while not self.stop.is_set():
                try:
                    rid = client.post(self.base, headers=self.headers, json={
                        "dataset_id": self.dataset, "algorithm": "auto", "report": True}).json()["id"]
                except (httpx.HTTPError, KeyError):
                    time.sleep(1)
                    continue
                while not self.stop.is_set():
                    try:
                        run = client.get(f"{self.base}/{rid}", headers=self.headers).json()
                    except httpx.HTTPError:
                        time.sleep(0.25)
                        continue
                    if run["status"] == "running":
                        self.running_seconds += 0.25
                    if run["status"] not in ("queued", "running"):
                        self.states.append(run["status"])
                        break
                    time.sleep(0.25)
                if self.stop.is_set():
                    try:
                        client.post(f"{self.base}/{rid}/cancel", headers=self.headers)
                    except httpx.HTTPError:
                        pass

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 60
        while self.running_seconds == 0 and time.monotonic() < deadline:  # a run has begun
            time.sleep(0.1)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
        self.worker.send_signal(signal.SIGTERM)
        try:
            self.worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.worker.kill()


# --- the report -------------------------------------------------------------------------------

def verdict(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


def _phase_rows(phases: dict) -> list[str]:
    rows = ["| phase | generator | answered | held rate (req/s) | non-2xx | not sent or not answered | p50 ms | p90 ms |"
            " p99 ms | p99.9 ms | max ms | cores busy | connections / started in the tick's busiest fifth |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, phase in phases.items():
        missing = phase["missing_from_schedule"]
        shape = phase.get("connections_opened", phase.get("started_in_busiest_fifth_of_tick"))
        rows.append(f"| {name} | {phase.get('generator', 'hey')} | {phase['requests']:,} | {phase['held_rate']:,} | "
                    f"{phase['non_2xx']} | {'–' if missing is None else f'{missing:,}'} | {phase['p50_ms']} | "
                    f"{phase['p90_ms']} | {phase['p99_ms']} | {phase['p99.9_ms']} | {phase['max_ms']} | "
                    f"{phase.get('cores_busy', '–')} | {'–' if shape is None else shape} |")
    return rows


def write_results(results: dict, day: str, tag: str = "") -> tuple[Path, Path]:
    RESULTS.mkdir(exist_ok=True)
    stem = f"serve-{day}" + (f"-{tag}" if tag else "")
    json_path, md_path = RESULTS / f"{stem}.json", RESULTS / f"{stem}.md"
    json_path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    m = results["machine"]
    rate, workers = results["rate"], results["workers"]
    lines = [
        f"# Serving benchmark — {results['date']}",
        "",
        f"`python bench/serve.py {results['command']}`",
        "",
        f"- machine: {m['cpu']}, {m['cores']} cores; `{m['uname']}`; Python {m['python']}; hey {m['hey']}",
        f"- load average at start {', '.join(f'{x:.2f}' for x in m['load_before'])}; cores kept busy by other "
        f"processes just before: {results.get('cores_busy_before')} (the machine is shared: the 'cores busy' "
        "column counts every process — server, hey, others — during each phase)",
        f"- one `custseg serve --workers 0` process (uvicorn with {m.get('http', '?')}, one event loop; the fast "
        "lane answers echo and assign in it, FastAPI's thread pool serves the routes); the load generators in other processes on the same machine; the run: the bundled sample (837 customers), "
        "K-Means k=4, its model compiled once and kept in memory",
        f"- load: {rate:,} requests/s for {results['seconds']:g} s a phase from bench/loadgen.py (the open model: "
        "request i sent at start + i / rate, evenly spaced, over keep-alive connections, one request in flight on "
        "each, more opened when all are busy; a request's latency runs from its scheduled time to the moment its "
        "whole answer is read, so waiting for a connection or a late generator counts against the server). The "
        "targets are judged on these phases ('echo', 'assign', 'busy').",
        f"- the 'hey burst' phases: hey `-c {workers} -q {rate / workers:g}` (the same {rate:,}/s as {workers} "
        "workers that start and tick together: a burst of requests at once each tick — the share of requests "
        "started in the busiest fifth of the tick is in the table); hey's latency runs from the moment it starts "
        "a request to the moment it has read the whole answer, and a worker waits for its answer before its next "
        "tick (a server that cannot keep up gets fewer requests: the rate held is beside each phase). The batch "
        "phase is hey without a rate limit.",
        "",
        "## Summary",
        "",
        "| configuration | echo p99 ms (held/s) | assign p99 ms (held/s) | assign ÷ echo p99 | batch customers/s |"
        " assign p99 ms with a run (held/s) | hey burst: echo / assign p99 ms | p99 ≤ 10 ms at rate, 0 errors |"
        " ≤ 1.5 × echo | batch ≥ 300k/s |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for name, c in results["configurations"].items():
        p, t = c["phases"], c["targets"]
        busy = p.get("busy")
        with_run = "–" if not busy else f"{busy['p99_ms']} ({busy['held_rate']:,})"
        bursts = " / ".join(str(p[k]["p99_ms"]) for k in ("echo, hey burst", "assign, hey burst") if k in p) or "–"
        lines.append(
            f"| {name} | {p['echo']['p99_ms']} ({p['echo']['held_rate']:,}) | {p['assign']['p99_ms']} "
            f"({p['assign']['held_rate']:,}) | {t['ratio_to_echo']:.2f} | {t['batch_customers_per_s']:,.0f} | "
            f"{with_run} | {bursts} | {verdict(t['p99_met'])} | {verdict(t['ratio_met'])} | {verdict(t['batch_met'])} |")
    for name, c in results["configurations"].items():
        lines += ["", f"## {name}", "", *_phase_rows(c["phases"]), "",
                  f"Batch: {c['batch_customers']:,} customers a request, {c['batch_workers']} at once, no rate "
                  f"limit: {c['targets']['batch_customers_per_s']:,.0f} customers/s. Runs during 'busy': "
                  f"{c.get('busy_runs') or '–'}.", "",
                  "One request at a time (one connection): the server's CPU time per request (from /proc) and the "
                  "median wall time:", "", "| request | calls | server CPU ms | wall ms (median) |",
                  "|---|---:|---:|---:|"]
        lines += [f"| {k} | {v['calls']:,} | {v['server_cpu_ms']} | {v['wall_median_ms']} |"
                  for k, v in c["costs"].items()]
        lines += ["", "The API token check alone in one process, one call at a time (`auth.user_for_token` and the "
                  "session's commit):", "", "| token check | calls | CPU ms | wall ms |", "|---|---:|---:|---:|"]
        lines += [f"| {k} | {v['calls']:,} | {v['cpu_ms']} | {v['wall_ms']} |" for k, v in c["token_check"].items()]
    lines += ["", "## Notes", ""] + [f"- {n}" for n in results.get("notes", [])]
    md_path.write_text("\n".join(lines) + "\n")
    return json_path, md_path


# --- main ---------------------------------------------------------------------------------------



def pg_database() -> tuple[str, callable]:
    """A fresh database on the local PostgreSQL server, and how to drop it."""
    import uuid

    import sqlalchemy as sa

    server = os.environ.get("CUSTSEG_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    name = f"custseg_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as con:
        con.execute(sa.text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as con:
            con.execute(sa.text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"))
            con.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()

    return sa.engine.make_url(server).set(database=name).render_as_string(hide_password=False), drop


def configuration(args, store: str) -> dict:
    """Every phase on one store."""
    from custseg.web import jobs

    db_url, drop = pg_database() if store == "postgresql" else (None, None)
    data_dir = Path(tempfile.mkdtemp(prefix="custseg-serve-bench-"))
    out: dict = {"store": store, "phases": {}}
    server = runs = None
    log = open(data_dir / "server.log", "ab")
    try:
        setup = set_up(data_dir, db_url)
        out["setup"] = {k: v for k, v in setup.items() if k not in ("token", "folder")}
        records = customers(setup["folder"])
        one, batch = data_dir / "one.json", data_dir / "batch.json"
        one.write_text(json.dumps({"customers": records[:1]}))
        many = [dict(records[i % len(records)], customer_id=f"c{i}") for i in range(args.batch_size)]
        batch.write_text(json.dumps({"customers": many}))
        port = free_port()
        server = start_server(data_dir, db_url, port, setup["token"], log)
        base = f"http://127.0.0.1:{port}/api/v1"
        assign_url = f"{base}/projects/{setup['project']}/runs/{setup['run']}/assign"
        echo_url = f"{base}/echo"
        per_worker = args.rate / args.workers

        def phase(name, url, body, token, *, generator="open", **kw):
            print(f"  {name} …", flush=True)
            busy: dict = {}
            watcher = threading.Thread(target=lambda: busy.setdefault("cores", cpu_busy_others(kw["seconds"] - 1)))
            watcher.start()
            if generator == "open":
                found = open_load(url, body, token=token, rate=args.rate, connections=args.connections, **kw)
            else:
                found = hey(url, body, token=token, **kw)
            watcher.join()
            found["cores_busy"] = busy.get("cores")
            out["phases"][name] = found
            print(f"    {found['requests']:,} answered, held {found['held_rate']}/s, p50 {found['p50_ms']} ms, "
                  f"p99 {found['p99_ms']} ms, p99.9 {found['p99.9_ms']} ms, non-2xx {found['non_2xx']}"
                  + (f"; hey: {found['stderr']}" if not found["requests"] and found["stderr"] else ""), flush=True)
            return found

        # Warm up both (the first assign compiles the model; hey opens its connections).
        for url, token in ((echo_url, None), (assign_url, setup["token"])):
            hey(url, one, seconds=args.warmup, workers=args.workers, rate_per_worker=per_worker, token=token)
        out["token_check"] = token_check(data_dir, db_url, setup["token"], args.cost_calls)
        out["costs"] = costs(server, base, assign_url, setup["token"], one, batch, args.cost_calls)
        phase("echo", echo_url, one, None, seconds=args.seconds)
        phase("assign", assign_url, one, setup["token"], seconds=args.seconds)
        if not args.skip_burst:
            phase("echo, hey burst", echo_url, one, None, generator="hey", seconds=args.seconds,
                  workers=args.workers, rate_per_worker=per_worker)
            phase("assign, hey burst", assign_url, one, setup["token"], generator="hey", seconds=args.seconds,
                  workers=args.workers, rate_per_worker=per_worker)
        found = phase("batch", assign_url, batch, setup["token"], generator="hey", seconds=args.batch_seconds,
                      workers=args.batch_workers, rate_per_worker=None)
        batch_rate = found["requests"] / args.batch_seconds * args.batch_size if not found["non_2xx"] else 0.0
        if not args.skip_busy:
            runs = RunsInProgress(data_dir, db_url, port, setup, log)
            runs.start()
            phase("busy", assign_url, one, setup["token"], seconds=args.seconds)
            runs.close()
            out["busy_runs"] = runs.states
            runs = None
        p = out["phases"]
        out["batch_customers"], out["batch_workers"] = args.batch_size, args.batch_workers
        assign_p99, echo_p99 = p["assign"]["p99_ms"] or float("inf"), p["echo"]["p99_ms"] or float("inf")
        out["targets"] = {
            "p99_met": (assign_p99 <= 10 and p["assign"]["non_2xx"] == 0 and not p["assign"]["missing_from_schedule"]
                        and p["assign"]["held_rate"] >= 0.99 * args.rate),
            "ratio_to_echo": assign_p99 / echo_p99,
            "ratio_met": assign_p99 <= 1.5 * echo_p99,
            "batch_customers_per_s": batch_rate,
            "batch_met": batch_rate >= 300_000,
        }
    finally:
        if runs is not None:
            runs.close()
        if server is not None:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
        log.close()
        jobs.close_queues()
        if args.keep:
            print(f"  data folder kept: {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)
        if drop is not None:
            drop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=1000, help="requests per second (default 1000)")
    parser.add_argument("--seconds", type=float, default=30, help="seconds per fixed-rate phase (default 30)")
    parser.add_argument("--workers", type=int, default=50, help="hey workers (the rate is shared; default 50)")
    parser.add_argument("--warmup", type=float, default=5, help="seconds of load before measuring (default 5)")
    parser.add_argument("--batch-seconds", type=float, default=15)
    parser.add_argument("--batch-workers", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--skip-busy", action="store_true", help="no phase with a run in progress")
    parser.add_argument("--skip-burst", action="store_true", help="no hey phases at the fixed rate")
    parser.add_argument("--connections", type=int, default=256,
                        help="most connections bench/loadgen.py opens (default 256)")
    parser.add_argument("--cost-calls", type=int, default=1000, help="sequential calls per endpoint (default 1000)")
    parser.add_argument("--quiet-wait", type=float, default=300,
                        help="wait up to this long for other processes to leave the CPUs idle (default 300 s)")
    parser.add_argument("--stores", default="sqlite,postgresql", help="sqlite and/or postgresql (default both)")
    parser.add_argument("--tag", default="", help="results go to serve-DATE-TAG.md/.json (default serve-DATE)")
    parser.add_argument("--notes", action="append", default=[], help="a line for the results' notes (repeatable)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data folders")
    parser.add_argument("--no-write", action="store_true", help="print the results only")
    args = parser.parse_args()
    if shutil.which("hey") is None:
        raise SystemExit("hey is not installed: apt-get install hey")
    deadline = time.monotonic() + args.quiet_wait
    busy = cpu_busy_others(2)
    while busy > 0.3 and time.monotonic() < deadline:  # the machine may be shared: wait for it to calm
        print(f"other processes keep {busy} cores busy; waiting …", flush=True)
        busy = cpu_busy_others(5)
    results: dict = {"date": dt.datetime.now().isoformat(timespec="seconds"), "command": " ".join(sys.argv[1:]),
                     "machine": machine(), "cores_busy_before": busy, "rate": args.rate, "seconds": args.seconds,
                     "workers": args.workers, "configurations": {}, "notes": list(args.notes)}
    for store in args.stores.split(","):
        name = "SQLite" if store == "sqlite" else "PostgreSQL"
        print(name, flush=True)
        results["configurations"][name] = configuration(args, store)
    if args.no_write:
        print(json.dumps(results, indent=2, default=str))
    else:
        print("written:", *write_results(results, dt.date.today().isoformat(), args.tag))


if __name__ == "__main__":
    main()
