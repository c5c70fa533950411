"""The fast path of real-time assignment (custseg.web.fastlane), on SQLite and PostgreSQL.

It must answer exactly as the assign route does, hand everything else to the route unchanged,
and never keep access longer than it should: a revoked token or a removed member is refused at
once in this process, and within ``ACCESS_SECONDS`` when the store was changed elsewhere."""

from __future__ import annotations

import json
import time

import pandas as pd
import pytest
import sqlalchemy as sa

from test_api_runs import _dataset, _error, _member, _project, _records


def _lane(app):
    """The app's FastLane middleware (the stack is built on the first request)."""
    from custseg.web.fastlane import FastLane

    layer = app.middleware_stack
    while not isinstance(layer, FastLane):
        layer = layer.app
    return layer


@pytest.fixture
def done(web):
    """A done run of the bundled sample (run in this process, no report): ids, headers, features."""
    from custseg.web import jobs

    ann = web.user("ann@example.com")
    pid = _project(web, ann)
    did = _dataset(web, ann, pid)
    bob = _member(web, ann, pid, "bob@example.com", "viewer")
    answer = web.client.post(f"/api/v1/projects/{pid}/runs", headers=ann,
                             json={"dataset_id": did, "algorithm": "kmeans", "k": 4, "report": False})
    rid = answer.json()["id"]
    assert jobs.run_job(web.settings, rid, 1, store=web.app.state.store) == "done"
    folder = web.settings.data_dir / f"projects/{pid}/runs/{rid}"
    return {"pid": pid, "rid": rid, "ann": ann, "bob": bob, "url": f"/api/v1/projects/{pid}/runs/{rid}/assign",
            "records": _records(pd.read_parquet(folder / "features.parquet")), "folder": folder}


#: a cookie makes the fast path hand the request to the route (which authenticates by the token)
ROUTE = {"Cookie": "unrelated=1"}


def test_the_fast_path_answers_as_the_route(web, done):
    from custseg import model as model_io
    from custseg.web.app import CSP

    c, url, bob, records = web.client, done["url"], done["bob"], done["records"]
    c.post("/api/v1/echo", json={"customers": [{}]})  # builds the stack
    lane = _lane(web.app)
    feature = model_io.load(done["folder"] / "model.skops").feature_columns[0]
    text = next(k for k, v in records[0].items() if isinstance(v, str) and k != "customer_id" and "_at" not in k)
    drop = lambda r, key: {k: v for k, v in r.items() if k != key}  # noqa: E731
    wide = 123456789012345678901234567890
    odd_many = [  # read column by column (16 or more): every kind of value, as the route reads it
        {**records[4], "customer_id": wide}, {**records[5], feature: 10**400}, {**records[6], feature: wide},
        {**records[7], feature: "12"}, {**records[8], feature: True}, {**records[9], feature: [1]},
        drop(records[10], feature), {**records[11], feature: None}, {**records[12], text: "Atlantis"},
        {**records[13], text: 5}, drop(records[14], text), drop(records[15], "customer_id"),
        {**records[16], text: None}, {**records[17], feature: -1.5e308},
        *records[18:30],
    ]
    bodies = [
        {"customers": records[:1]},
        {"customers": [{**records[0], "customer_id": wide}]},  # an id wider than 64 bits stays whole
        {"customers": [{**r, "extra": "ignored"} for r in records]},
        {"customers": [{k: v for k, v in records[0].items() if k != feature}, {**records[1], feature: "lots"},
                       {**records[2], feature: None}, {feature: records[3][feature]}]},
        {"customers": odd_many, "other": [1, 2]},
    ]
    for body in bodies:
        before = lane.answered
        content = {"content": json.dumps(body), "headers": {**bob, "Content-Type": "application/json"}}
        fast = c.post(url, **content)
        assert lane.answered == before + 1, "the fast path did not answer"
        route = c.post(url, content=content["content"], headers={**content["headers"], **ROUTE})
        assert lane.answered == before + 1, "the route's request was answered by the fast path"
        assert fast.status_code == route.status_code == 200, (fast.text, route.text)
        assert fast.json() == route.json()
        assert fast.headers["content-type"] == "application/json"
        assert fast.headers["content-security-policy"] == CSP and fast.headers["x-content-type-options"] == "nosniff"
    # The segments are the library's.
    features = pd.read_parquet(done["folder"] / "features.parquet")
    expected = model_io.load(done["folder"] / "model.skops").assign(features)
    many = c.post(url, json=bodies[2], headers=bob).json()["assignments"]
    assert [a["segment"] for a in many] == expected["segment"].tolist()
    odd = c.post(url, json=bodies[3], headers=bob).json()["assignments"]
    assert [a["segment"] for a in odd[:2] + odd[3:]] == [-1, -1, -1]
    assert feature in odd[0]["reason"] and feature in odd[1]["reason"] and odd[3]["customer_id"] == 3  # no id: its position
    imputed = model_io.load(done["folder"] / "model.skops").assign(features.iloc[[2]].assign(**{feature: float("nan")}))
    assert odd[2]["segment"] == imputed["segment"].iloc[0]  # a null is imputed, as the library does
    # Echo too.
    before = lane.answered
    body = {"customers": [{"customer_id": "a", "x": 1.5, "é": [1, {"b": None}]}]}
    assert c.post("/api/v1/echo", json=body).json() == body and lane.answered == before + 1
    # Batches within a minute are one event counting their requests and customers.
    bulk = [e for e in c.get(f"/api/v1/projects/{done['pid']}/audit", headers=done["ann"]).json()
            if e["action"] == "assigned in bulk"]
    batches = [len(b["customers"]) for b in bodies if len(b["customers"]) > 1]
    batches = 2 * batches + [len(bodies[2]["customers"]), len(bodies[3]["customers"])]  # both paths, then fast
    assert bulk == [{**bulk[0], "detail": {"run_id": done["rid"], "requests": len(batches), "customers": sum(batches)}}]


def test_what_the_fast_path_does_not_answer_goes_to_the_route(web, done):
    c, url, bob, records = web.client, done["url"], done["bob"], done["records"]
    c.post("/api/v1/echo", json={"customers": [{}]})
    lane = _lane(web.app)
    before = lane.answered
    json_type = {"Content-Type": "application/json"}
    # An echoed id wider than 64 bits stays whole (orjson would read it as a float).
    wide = 123456789012345678901234567890
    answer = c.post("/api/v1/echo", content=json.dumps({"customers": [{"customer_id": wide}]}), headers=json_type)
    assert answer.status_code == 200 and answer.json()["customers"][0]["customer_id"] == wide
    # NaN (which Python's parser reads and orjson does not): the route's answer, null.
    answer = c.post(url, content=json.dumps({"customers": [{**records[0], "customer_id": float("nan")}]}),
                    headers={**bob, **json_type})
    assert answer.status_code == 200 and answer.json()["assignments"][0]["customer_id"] is None
    # The body's shape, the token, access: the route's errors.
    _error(c.post(url, json={"customers": []}, headers=bob), 422, "invalid", "customers")
    _error(c.post(url, json={"customers": [1]}, headers=bob), 422, "invalid")
    _error(c.post(url, json=[{"customer_id": 1}], headers=bob), 422, "invalid")
    _error(c.post(url, content=b'{"customers": [', headers={**bob, **json_type}), 422, "invalid")
    _error(c.post(url, json=records[:1], headers={"Authorization": "Bearer cs_nonsense"}), 401, "unauthorized")
    _error(c.post(url, json={"customers": records[:1]}), 401, "unauthorized")
    cat = web.user("cat@example.com")
    _error(c.post(url, json={"customers": records[:1]}, headers=cat), 404, "not_found")
    _error(c.post(url.replace(f"/runs/{done['rid']}/", "/runs/999999/"), json={"customers": records[:1]},
                  headers=bob), 404, "not_found")
    # A body without a declared length (sent in chunks) is read by the route.
    chunks = iter([b'{"customers": ', json.dumps(records[:2]).encode(), b"}"])
    answer = c.post(url, content=chunks, headers={**bob, **json_type})
    assert answer.status_code == 200 and len(answer.json()["assignments"]) == 2
    assert lane.answered == before


def test_access_taken_away_ends_at_once(web, done):
    from custseg.web import fastlane
    from custseg.web.store.models import ApiToken

    c, url, bob, records = web.client, done["url"], done["bob"], done["records"]
    body = {"customers": records[:1]}
    assert c.post(url, json=body, headers=bob).status_code == 200
    # Removing the member (through the service): refused at once.
    me = c.get("/api/v1/me", headers=bob).json()
    assert c.delete(f"/api/v1/projects/{done['pid']}/members/{me['id']}", headers=done["ann"]).status_code == 204
    _error(c.post(url, json=body, headers=bob), 404, "not_found")
    # Revoking a token (through the service): refused at once.
    ann = done["ann"]
    assert c.post(url, json=body, headers=ann).status_code == 200
    tokens = c.get("/api/v1/tokens", headers=ann).json()
    assert c.delete(f"/api/v1/tokens/{tokens[0]['id']}", headers=ann).status_code == 204
    _error(c.post(url, json=body, headers=ann), 401, "unauthorized")
    # A token revoked in the store by another process: refused within ACCESS_SECONDS.
    carol = _member(web, _owner_token(web), done["pid"], "carol@example.com", "viewer")
    assert c.post(url, json=body, headers=carol).status_code == 200
    carol_id = c.get("/api/v1/me", headers=carol).json()["id"]
    with web.app.state.store.session() as db:
        db.execute(sa.update(ApiToken).where(ApiToken.user_id == carol_id).values(revoked_at=sa.func.now()))
        db.commit()
    deadline = time.monotonic() + fastlane.ACCESS_SECONDS + 0.5
    while c.post(url, json=body, headers=carol).status_code == 200:
        assert time.monotonic() < deadline, "a token revoked in the store was still taken"
        time.sleep(0.05)
    _error(c.post(url, json=body, headers=carol), 401, "unauthorized")


def _owner_token(web) -> dict[str, str]:
    """A fresh token of ann, the project's owner."""
    answer = web.client.post("/api/v1/tokens", json={"email": "ann@example.com", "password": web.password})
    return {"Authorization": f"Bearer {answer.json()['token']}"}


def test_many_requests_finding_an_answer_expired_ask_the_store_once():
    import asyncio
    import threading

    from custseg.web import auth
    from custseg.web.fastlane import FastLane

    lane = FastLane(None, settings=None, store=None)
    asked = []

    def ask(key):
        asked.append(threading.get_ident())
        time.sleep(0.05)
        return f"answer for {key}"

    async def burst():
        return await asyncio.gather(*(lane._recent(lane.access, "k", ask, "k") for _ in range(50)))

    assert asyncio.run(burst()) == ["answer for k"] * 50
    assert len(asked) == 1 and not lane._asking
    assert lane.access.get("k", 1.0) == "answer for k"
    # an answer asked before access was forgotten is not kept after it
    generation = lane.access.generation()
    auth.forget_access()
    lane.access.put("k2", "stale", generation)
    assert lane.access.get("k2", 1.0) is None


def test_an_answer_about_to_expire_is_given_while_a_fresh_one_is_asked_for(monkeypatch):
    import asyncio

    from custseg.web import fastlane
    from custseg.web.fastlane import FastLane

    lane = FastLane(None, settings=None, store=None)
    answers = iter(["first", "second"])
    asked = []

    def ask(key):
        asked.append(key)
        time.sleep(0.05)
        return next(answers)

    def failing(key):
        raise RuntimeError("the store is down")

    monkeypatch.setattr(fastlane, "REFRESH_SECONDS", 0.1)

    async def scenario():
        first = await lane._recent(lane.access, "k", ask, "k")  # nothing kept: waits for the store
        fresh = await lane._recent(lane.access, "k", ask, "k")  # kept and fresh: the store is not asked
        await asyncio.sleep(0.15)
        # older than REFRESH_SECONDS: given at once, and a refresh starts (once)
        started = time.monotonic()
        stale = await asyncio.gather(*(lane._recent(lane.access, "k", ask, "k") for _ in range(20)))
        waited = time.monotonic() - started
        await asyncio.sleep(0.1)
        refreshed = await lane._recent(lane.access, "k", ask, "k")
        with pytest.raises(fastlane._Decline):  # a store error goes to the route, which answers it
            await lane._recent(lane.access, "other", failing, "other")
        return first, fresh, stale, waited, refreshed

    first, fresh, stale, waited, refreshed = asyncio.run(scenario())
    assert (first, fresh) == ("first", "first")
    assert stale == ["first"] * 20 and waited < 0.04
    assert refreshed == "second" and asked == ["k", "k"]
    assert not lane._asking and lane.access.get("other", 1.0) is None


def test_batches_are_audited_once_per_window_and_the_sums_are_written_when_it_closes(web, done, monkeypatch):
    from fastapi.testclient import TestClient

    from custseg.web.services import projects
    from custseg.web.store.models import AuditEvent

    monkeypatch.setattr(projects, "COUNTED_SECONDS", 0.5)
    records, url, bob = done["records"], done["url"], done["bob"]

    def sums():
        with web.app.state.store.session() as db:
            return [e.detail for e in db.scalars(sa.select(AuditEvent).where(AuditEvent.action == "assigned in bulk")
                                                 .order_by(AuditEvent.id))]

    with TestClient(web.app) as client:  # its own lifespan: the sums are written when it stops
        for _ in range(3):
            assert client.post(url, json={"customers": records[:2]}, headers=bob).status_code == 200
        assert sums() == [{"run_id": done["rid"], "requests": 1, "customers": 2}]  # later ones kept in memory
    assert sums() == [{"run_id": done["rid"], "requests": 3, "customers": 6}]
    time.sleep(0.6)  # the window is over: the next batch opens another event
    assert web.client.post(url, json={"customers": records[:3]}, headers=bob).status_code == 200
    assert sums()[1:] == [{"run_id": done["rid"], "requests": 1, "customers": 3}]
