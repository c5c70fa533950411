"""Runs over the API on SQLite and PostgreSQL: options checked before anything is queued,
roles, the limit of runs at once, cancel; and the whole flow on the bundled sample with a real
worker process — queue, progress, done, summary, files, the report's headers, the CRM export,
and assignment of one and many customers (the segments of the library's own ``assign``)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from dataclasses import replace

import pandas as pd
import pytest


def _error(answer, status, code=None, field=None):
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "field"}
    if code:
        assert body["error"]["code"] == code, body
    if field:
        assert body["error"]["field"] == field, body
    return body["error"]


def _project(web, headers, name="Spring") -> int:
    answer = web.client.post("/api/v1/projects", json={"name": name}, headers=headers)
    assert answer.status_code == 201, answer.text
    return answer.json()["id"]


def _dataset(web, headers, project_id: int) -> int:
    """The bundled sample, uploaded as a dataset of the project."""
    from custseg.datasets import sample_path

    answer = web.client.post(f"/api/v1/projects/{project_id}/datasets", headers=headers,
                             files={"file": ("online_retail_sample.parquet", sample_path().read_bytes())})
    assert answer.status_code == 201, answer.text
    assert answer.json()["kind"] == "transactions"
    return answer.json()["id"]


def _member(web, owner, project_id, email, role):
    headers = web.user(email)
    answer = web.client.post(f"/api/v1/projects/{project_id}/members", json={"email": email, "role": role},
                             headers=owner)
    assert answer.status_code == 201, answer.text
    return headers


def _start_worker(web, log_path):
    """A ``custseg worker`` process on the test's store and data folder (as ``custseg serve``
    starts them), its output in ``log_path``."""
    from custseg.web import jobs

    with open(log_path, "ab") as log:
        return jobs.start_workers(replace(web.settings, workers=1), stdout=log, stderr=subprocess.STDOUT)


def _stop(processes):
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait(web, headers, url, until, *, timeout=120, log_path=None, seen=None):
    """Poll the run until ``until(run)``; progress values go to ``seen``."""
    deadline = time.monotonic() + timeout
    while True:
        run = web.client.get(url, headers=headers).json()
        if seen is not None:
            seen.append((run["status"], run["progress"], run["step"]))
        if until(run):
            return run
        if time.monotonic() > deadline:
            worker_log = log_path.read_text(errors="replace")[-3000:] if log_path and log_path.exists() else ""
            pytest.fail(f"run still {run['status']} after {timeout} s: {run}\n{worker_log}")
        time.sleep(0.1)


# --- options, roles, limits (no worker) --------------------------------------------------------

def test_bad_options_are_refused_with_their_field(web):
    ann = web.user("ann@example.com")
    pid = _project(web, ann)
    did = _dataset(web, ann, pid)
    url = f"/api/v1/projects/{pid}/runs"
    c = web.client
    error = _error(c.post(url, json={"dataset_id": did, "k": 1}, headers=ann), 400, "bad_request", "k")
    assert error["message"].startswith("k must be auto or a whole number ≥ 2")
    error = _error(c.post(url, json={"dataset_id": did, "algorithm": "kmedoids"}, headers=ann), 400, field="algorithm")
    assert "'kmedoids'" in error["message"] and "kmeans" in error["message"]
    error = _error(c.post(url, json={"dataset_id": did, "features": ["monetary", "shoe_size"]}, headers=ann),
                   400, field="features")
    assert "'shoe_size'" in error["message"] and "recency_days" in error["message"]
    error = _error(c.post(url, json={"dataset_id": did, "as_of": "last tuesday"}, headers=ann), 400, field="as_of")
    assert "2011-12-10" in error["message"]
    _error(c.post(url, json={"dataset_id": did, "returns": "keep"}, headers=ann), 400, field="returns")
    _error(c.post(url, json={"dataset_id": did, "seed": -1}, headers=ann), 400, field="seed")
    _error(c.post(url, json={"dataset_id": did, "k_values": [1, 2]}, headers=ann), 400, field="k_values")
    # Several problems at once: the first (in the options' order) names the field, all are told.
    error = _error(c.post(url, json={"dataset_id": did, "algorithm": "x", "k": 1, "as_of": "soon"}, headers=ann),
                   400, field="algorithm")
    assert "k must be" in error["message"] and "as_of must be" in error["message"]
    # The body's shape: FastAPI's validation, the same error shape.
    for k in ("many", 3.5, True, [3]):
        _error(c.post(url, json={"dataset_id": did, "k": k}, headers=ann), 400, "bad_request", "k")
    _error(c.post(url, json={"dataset_id": did, "colour": "red"}, headers=ann), 422, "invalid", "colour")
    _error(c.post(url, json={}, headers=ann), 422, "invalid", "dataset_id")
    # A dataset of another project is not found.
    other = _project(web, ann, "Other")
    other_dataset = _dataset(web, ann, other)
    _error(c.post(url, json={"dataset_id": other_dataset}, headers=ann), 404, "not_found", "dataset_id")
    _error(c.post(url, json={"dataset_id": 99999}, headers=ann), 404, "not_found", "dataset_id")
    # A dataset whose roles still need naming (a log without a customer id) is refused until they are.
    log = b"InvoiceNo,InvoiceDate,Quantity,UnitPrice\n1,2011-01-02,3,1.5\n2,2011-01-03,1,2.0\n"
    answer = c.post(f"/api/v1/projects/{pid}/datasets", headers=ann, files={"file": ("log.csv", log)})
    assert answer.status_code == 201 and answer.json()["problem"], answer.text
    error = _error(c.post(url, json={"dataset_id": answer.json()["id"]}, headers=ann), 400, field="mapping")
    assert "customer id" in error["message"]
    # Nothing was queued.
    assert c.get(url, headers=ann).json() == []


def test_roles_and_outsiders(web):
    ann, cat = web.user("ann@example.com"), web.user("cat@example.com")
    pid = _project(web, ann)
    did = _dataset(web, ann, pid)
    bob = _member(web, ann, pid, "bob@example.com", "viewer")
    c = web.client
    base = f"/api/v1/projects/{pid}/runs"
    _error(c.post(base, json={"dataset_id": did, "k": 3}, headers=bob), 403, "forbidden")
    run = c.post(base, json={"dataset_id": did, "k": 3}, headers=ann)
    assert run.status_code == 202 and run.json()["status"] == "queued"
    rid = run.json()["id"]
    assert [r["id"] for r in c.get(base, headers=bob).json()] == [rid]
    assert c.get(f"{base}/{rid}", headers=bob).json()["status"] == "queued"
    _error(c.post(f"{base}/{rid}/cancel", headers=bob), 403, "forbidden")
    _error(c.post(f"{base}/{rid}/retry", headers=bob), 403, "forbidden")
    # Files and assignment wait for the run to be done.
    _error(c.get(f"{base}/{rid}/files", headers=bob), 409, "conflict")
    _error(c.post(f"{base}/{rid}/assign", json={"customers": [{"customer_id": "1"}]}, headers=bob), 409)
    # An outsider gets the 404 of a missing project on every run URL.
    for method, path, body in (
        ("get", "", None), ("post", "", {"dataset_id": did}), ("get", f"/{rid}", None),
        ("get", f"/{rid}/events", None), ("post", f"/{rid}/cancel", None), ("post", f"/{rid}/retry", None),
        ("get", f"/{rid}/files", None), ("get", f"/{rid}/files/report.html", None),
        ("get", f"/{rid}/files/exports/crm_import.csv", None),
        ("post", f"/{rid}/assign", {"customers": [{"customer_id": "1"}]}),
    ):
        kwargs = {"json": body} if body is not None else {}
        _error(getattr(c, method)(base + path, headers=cat, **kwargs), 404, "not_found")
    # A run id of another project is not found in this one.
    other = _project(web, cat, "Cat's")
    _error(c.get(f"/api/v1/projects/{other}/runs/{rid}", headers=cat), 404, "not_found")
    _error(c.get(f"{base}/{rid}", headers={}), 401, "unauthorized")
    actions = [e["action"] for e in c.get(f"/api/v1/projects/{pid}/audit", headers=ann).json()]
    assert "started a run" in actions


def test_runs_at_once_are_limited_and_queued_runs_cancel(web):
    ann = web.user("ann@example.com")
    pid = _project(web, ann)
    did = _dataset(web, ann, pid)
    c, base = web.client, f"/api/v1/projects/{pid}/runs"
    assert web.settings.runs_per_project == 2
    first = c.post(base, json={"dataset_id": did, "k": 3}, headers=ann).json()["id"]
    c.post(base, json={"dataset_id": did, "k": 4}, headers=ann)
    error = _error(c.post(base, json={"dataset_id": did}, headers=ann), 409, "conflict")
    assert "at most 2" in error["message"]
    cancelled = c.post(f"{base}/{first}/cancel", headers=ann)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["error"]["code"] == "cancelled"
    _error(c.post(f"{base}/{first}/cancel", headers=ann), 409, "conflict")
    third = c.post(base, json={"dataset_id": did}, headers=ann)
    assert third.status_code == 202
    # Retrying counts towards the limit too; a queued run cannot be retried.
    _error(c.post(f"{base}/{first}/retry", headers=ann), 409, "conflict")
    _error(c.post(f"{base}/{third.json()['id']}/retry", headers=ann), 409, "conflict")
    c.post(f"{base}/{third.json()['id']}/cancel", headers=ann)
    again = c.post(f"{base}/{first}/retry", headers=ann)
    assert again.status_code == 202 and again.json()["status"] == "queued" and again.json()["attempt"] == 2
    # A worker that takes a cancelled run's message does nothing.
    from custseg.web import jobs

    assert jobs.run_job(web.settings, third.json()["id"], 1, store=web.app.state.store) is None
    actions = [e["action"] for e in c.get(f"/api/v1/projects/{pid}/audit", headers=ann).json()]
    assert actions.count("cancelled a run") == 2 and "retried a run" in actions


def test_echo_validates_the_assign_body(web):
    body = {"customers": [{"customer_id": "a", "monetary": 1.5}, {"customer_id": 2, "country": None}]}
    answer = web.client.post("/api/v1/echo", json=body)
    assert answer.status_code == 200 and answer.json() == body
    _error(web.client.post("/api/v1/echo", json={"customers": []}), 422, "invalid", "customers")
    _error(web.client.post("/api/v1/echo", json={"customers": [1]}), 422, "invalid")


# --- the whole flow with a worker --------------------------------------------------------------

def _records(frame: pd.DataFrame) -> list[dict]:
    return json.loads(frame.to_json(orient="records", date_format="iso"))


@pytest.mark.slow
def test_whole_flow_with_a_worker(web, tmp_path):
    from custseg import model as model_io
    from custseg.runs import read_run
    from custseg.web.app import REPORT_CSP

    ann = web.user("ann@example.com")
    pid = _project(web, ann)
    did = _dataset(web, ann, pid)
    bob = _member(web, ann, pid, "bob@example.com", "viewer")
    c, base = web.client, f"/api/v1/projects/{pid}/runs"
    log_path = tmp_path / "worker.log"
    workers = _start_worker(web, log_path)
    try:
        answer = c.post(base, json={"dataset_id": did, "algorithm": "auto", "k": "auto", "k_values": [2, 3, 4, 5, 6],
                                    "returns": "drop", "seed": 7, "report": True}, headers=ann)
        assert answer.status_code == 202, answer.text
        assert answer.json()["status"] == "queued"
        rid = answer.json()["id"]
        seen: list = []
        run = _wait(web, ann, f"{base}/{rid}", lambda r: r["status"] not in ("queued", "running"),
                    log_path=log_path, seen=seen)
        assert run["status"] == "done", run
        # Progress was seen rising while it ran, never going back.
        running = [p for status, p, _ in seen if status == "running"]
        assert len(set(running)) >= 2 and all(0 <= p < 1 for p in running), seen
        assert running == sorted(running)
        assert {step for status, _, step in seen if status == "running"} - {"starting"}
        assert run["progress"] == 1.0 and run["error"] is None and run["started_at"] and run["finished_at"]
        summary = run["summary"]
        assert summary["recommendation"]["reasons"] and summary["recommendation"]["text"]
        assert summary["counts"]["customers"] == sum(s["customers"] for s in summary["segments"])
        assert len(summary["segments"]) == summary["n_clusters"] and all(s["name"] for s in summary["segments"])
        assert {r["n_clusters"] for r in summary["leaderboard"]} == {2, 3, 4, 5, 6}
        assert summary["kind"] == "transactions"
        # The run folder: complete, and read as the library reads a run.
        folder = web.settings.data_dir / f"projects/{pid}/runs/{rid}"
        assert read_run(folder).summary["n_clusters"] == summary["n_clusters"]
        assert not list(folder.parent.glob(".work-*"))

        # Files: the run's own, and the exports (made on demand).
        files = {f["name"]: f for f in c.get(f"{base}/{rid}/files", headers=bob).json()}
        assert {"assignments.csv", "profiles.csv", "model.skops", "report.html", "run.json"} <= set(files)
        assert files["exports/crm_import.csv"]["size"] is None
        report = c.get(f"{base}/{rid}/files/report.html", headers=bob)
        assert report.status_code == 200 and report.headers["content-security-policy"] == REPORT_CSP
        assert report.headers["content-disposition"].startswith("inline")
        assert report.headers["content-type"].startswith("text/html") and b"<html" in report.content[:2000].lower()
        assignments = c.get(f"{base}/{rid}/files/assignments.csv", headers=bob)
        assert assignments.headers["content-disposition"].startswith("attachment")
        # No file a member reads names the server's own folders.
        for name in files:
            if name.endswith((".json", ".csv", ".html")) and files[name]["size"] is not None:
                text = c.get(f"{base}/{rid}/files/{name}", headers=bob).text
                assert str(web.settings.data_dir.resolve()) not in text and str(web.settings.data_dir) not in text, name
        record = c.get(f"{base}/{rid}/files/run.json", headers=bob).json()
        assert record["request"]["source"]["source"].startswith(f"projects/{pid}/datasets/")
        for bad in ("../../../custseg.sqlite", "..%2F..%2Frun.json", "exports/..%2F..%2Frun.json", "custseg.sqlite",
                    "exports/.hidden", "exports/a/b.csv", "%2Fetc%2Fpasswd"):
            _error(c.get(f"{base}/{rid}/files/{bad}", headers=ann), 404, "not_found")
        _error(c.get(f"{base}/{rid}/files/exports/crm_import.csv", headers=bob), 403, "forbidden")
        crm = c.get(f"{base}/{rid}/files/exports/crm_import.csv", headers=ann)
        assert crm.status_code == 200 and crm.headers["content-disposition"].startswith("attachment")
        assert crm.text.splitlines()[0] == "Customer ID,Segment,Segment Name"
        assert len(crm.text.splitlines()) == summary["counts"]["customers"] + 1
        xlsx = c.get(f"{base}/{rid}/files/exports/segments.xlsx", headers=ann)
        assert xlsx.status_code == 200 and xlsx.content[:2] == b"PK"
        files = {f["name"]: f for f in c.get(f"{base}/{rid}/files", headers=ann).json()}
        assert files["exports/crm_import.csv"]["size"] > 0
        assert any(name.startswith("exports/segment-") for name in files)

        # Assignment: the segments of the library's own assign, one customer and all of them.
        features = pd.read_parquet(folder / "features.parquet")
        expected = model_io.load(folder / "model.skops").assign(features)
        records = _records(features)
        one = c.post(f"{base}/{rid}/assign", json={"customers": records[:1]}, headers=bob)
        assert one.status_code == 200, one.text
        assert one.json()["assignments"] == [{"customer_id": records[0]["customer_id"],
                                              "segment": int(expected["segment"][0]),
                                              "segment_name": expected["segment_name"][0], "reason": None}]
        many = c.post(f"{base}/{rid}/assign", json={"customers": [{**r, "extra": "ignored"} for r in records]},
                      headers=bob).json()["assignments"]
        assert [a["customer_id"] for a in many] == features["customer_id"].astype(str).tolist()
        assert [a["segment"] for a in many] == expected["segment"].tolist()
        assert [a["segment_name"] for a in many] == expected["segment_name"].tolist()
        # A missing or unknown value: segment -1 and the reason.
        feature = next(f for f in summary["feature_columns"] if f in records[0])
        lacking = {k: v for k, v in records[0].items() if k != feature}
        odd = c.post(f"{base}/{rid}/assign", json={"customers": [lacking, {**records[1], feature: "lots"}]},
                     headers=bob).json()["assignments"]
        assert [a["segment"] for a in odd] == [-1, -1]
        assert feature in odd[0]["reason"] and feature in odd[1]["reason"]
        # An id JSON cannot carry back (NaN, which Python's parser reads) is sent as null, not a 500.
        nan = c.post(f"{base}/{rid}/assign", content=json.dumps({"customers": [{**records[0], "customer_id": float("nan")}]}),
                     headers={**bob, "Content-Type": "application/json"})
        assert nan.status_code == 200 and nan.json()["assignments"][0]["customer_id"] is None
        events = c.get(f"/api/v1/projects/{pid}/audit", headers=ann).json()
        actions = [e["action"] for e in events]
        assert actions.count("exported") == 2
        # Two batches within a minute: one event counting both (one customer is not audited).
        assert [e["detail"] for e in events if e["action"] == "assigned in bulk"] == [
            {"run_id": rid, "requests": 2, "customers": len(records) + 2}]

        # Events of a done run: its final state, at once.
        with c.stream("GET", f"{base}/{rid}/events", headers=bob) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            text = stream.read().decode()
        events = [json.loads(line[5:]) for line in text.splitlines() if line.startswith("data:")]
        assert [e["status"] for e in events] == ["done"] and events[0]["summary"] == summary

        # Cancel a running run; its events stream until it is cancelled.
        # A long run (a wide sweep and the report), cancelled as soon as its stream says running:
        # a run of the default options on the sample can end before a fixed wait does.
        long_run = {"dataset_id": did, "algorithm": "auto", "k_values": list(range(2, 41)), "report": True}
        second = c.post(base, json=long_run, headers=ann).json()["id"]
        _wait(web, ann, f"{base}/{second}", lambda r: r["status"] == "running", log_path=log_path)
        streamed: list = []
        following = threading.Event()

        def follow():
            with c.stream("GET", f"{base}/{second}/events", headers=bob) as stream:
                for line in stream.iter_lines():
                    streamed.append(line)
                    if line.startswith("data:"):
                        following.set()

        follower = threading.Thread(target=follow, daemon=True)
        follower.start()
        assert following.wait(timeout=30), "the events stream sent nothing"
        answer = c.post(f"{base}/{second}/cancel", headers=ann)
        assert answer.status_code == 200 and answer.json()["cancel_requested"] is True
        run = _wait(web, ann, f"{base}/{second}", lambda r: r["status"] != "running", timeout=60, log_path=log_path)
        assert run["status"] == "cancelled" and run["error"]["code"] == "cancelled"
        follower.join(timeout=30)
        states = [json.loads(line[5:])["status"] for line in streamed if line.startswith("data:")]
        assert states[0] == "running" and states[-1] == "cancelled"
        assert not (web.settings.data_dir / f"projects/{pid}/runs/{second}").exists()
        assert not list(folder.parent.glob(".work-*"))
    finally:
        _stop(workers)
