"""Accounts, tokens, projects, members and roles over the API, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest




def _error(answer, status, code=None, field=None):
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "field"}
    if code:
        assert body["error"]["code"] == code
    if field:
        assert body["error"]["field"] == field
    return body["error"]


def test_token_me_and_revocation(web):
    ann = web.user("ann@example.com")
    assert web.client.get("/api/v1/me", headers=ann).json()["email"] == "ann@example.com"
    tokens = web.client.get("/api/v1/tokens", headers=ann).json()
    assert len(tokens) == 1 and tokens[0]["revoked"] is False and "token" not in tokens[0]
    assert web.client.delete(f"/api/v1/tokens/{tokens[0]['id']}", headers=ann).status_code == 204
    _error(web.client.get("/api/v1/me", headers=ann), 401, "unauthorized")


def test_wrong_password_and_throttling(web):
    web.user("ann@example.com")
    for _ in range(web.settings.login_attempts):
        _error(web.client.post("/api/v1/tokens", json={"email": "ann@example.com", "password": "wrong one!"}),
               401, "unauthorized")
    # Past the limit even the right password waits.
    _error(web.client.post("/api/v1/tokens", json={"email": "ann@example.com", "password": web.password}),
           429, "throttled")


def test_weak_passwords_are_refused(web):
    from custseg.errors import ConfigError
    from custseg.web import auth

    with web.app.state.store.session() as db:
        for weak in ("short", "password123", "Qwerty123"):
            with pytest.raises(ConfigError):
                auth.create_user(db, "bob@example.com", weak)
        user = auth.create_user(db, "bob@example.com", "a long enough one")
        assert user.password_hash.startswith("$argon2")


def test_projects_roles_and_404_for_outsiders(web):
    ann, bob, cat = web.user("ann@example.com"), web.user("bob@example.com"), web.user("cat@example.com")
    c = web.client
    project = c.post("/api/v1/projects", json={"name": "Spring", "description": "d"}, headers=ann).json()
    pid = project["id"]
    assert project["role"] == "owner"
    # Outsiders get exactly what a missing project gives.
    missing = _error(c.get("/api/v1/projects/999999", headers=bob), 404, "not_found")
    hidden = _error(c.get(f"/api/v1/projects/{pid}", headers=bob), 404, "not_found")
    assert hidden["message"].replace(str(pid), "N") == missing["message"].replace("999999", "N")
    for method, url in (("patch", ""), ("delete", ""), ("get", "/members"), ("post", "/members"), ("get", "/audit")):
        answer = getattr(c, method)(f"/api/v1/projects/{pid}{url}", headers=bob,
                                    **({"json": {"email": "bob@example.com", "role": "owner"}}
                                       if method in ("post", "patch") else {}))
        _error(answer, 404, "not_found")
    # The owner makes bob a viewer and cat an editor.
    assert c.post(f"/api/v1/projects/{pid}/members", json={"email": "bob@example.com", "role": "viewer"},
                  headers=ann).status_code == 201
    assert c.post(f"/api/v1/projects/{pid}/members", json={"email": "cat@example.com", "role": "editor"},
                  headers=ann).status_code == 201
    assert c.get(f"/api/v1/projects/{pid}", headers=bob).json()["role"] == "viewer"
    _error(c.patch(f"/api/v1/projects/{pid}", json={"description": "x"}, headers=bob), 403, "forbidden")
    assert c.patch(f"/api/v1/projects/{pid}", json={"description": "x"}, headers=cat).json()["description"] == "x"
    _error(c.patch(f"/api/v1/projects/{pid}", json={"name": "Renamed"}, headers=cat), 403, "forbidden")
    _error(c.post(f"/api/v1/projects/{pid}/members", json={"email": "bob@example.com", "role": "owner"},
                  headers=cat), 403, "forbidden")
    assert c.patch(f"/api/v1/projects/{pid}", json={"name": "Renamed"}, headers=ann).json()["name"] == "Renamed"
    # The last owner stays.
    me = c.get("/api/v1/me", headers=ann).json()["id"]
    _error(c.delete(f"/api/v1/projects/{pid}/members/{me}", headers=ann), 409, "conflict", "role")
    # Listing shows only one's projects; the audit log records the member changes.
    assert [p["name"] for p in c.get("/api/v1/projects", headers=bob).json()] == ["Renamed"]
    assert c.get("/api/v1/projects", headers=web.user("dan@example.com")).json() == []
    actions = [e["action"] for e in c.get(f"/api/v1/projects/{pid}/audit", headers=bob).json()]
    assert actions.count("set a member's role") == 2 and "created the project" in actions
    # Deleting needs the name typed again, and the owner role.
    _error(c.delete(f"/api/v1/projects/{pid}", headers=cat, params={"confirm": "Renamed"}), 403)
    _error(c.delete(f"/api/v1/projects/{pid}", headers=ann, params={"confirm": "nope"}), 400, field="confirm")
    assert c.delete(f"/api/v1/projects/{pid}", headers=ann, params={"confirm": "Renamed"}).status_code == 204
    _error(c.get(f"/api/v1/projects/{pid}", headers=ann), 404)


def test_bad_bodies_get_the_error_shape(web):
    ann = web.user("ann@example.com")
    c = web.client
    _error(c.post("/api/v1/projects", json={"name": "  "}, headers=ann), 400, "bad_request", "name")
    _error(c.post("/api/v1/projects", json={"nam": "x"}, headers=ann), 422, "invalid", "name")
    _error(c.post("/api/v1/projects", content=b"{not json", headers={**ann, "content-type": "application/json"}),
           422, "invalid")
    _error(c.post("/api/v1/projects", json={"name": "x", "preview_rows": 0}, headers=ann), 422, field="preview_rows")
    _error(c.get("/api/v1/projects/abc", headers=ann), 422, field="project_id")
    _error(c.get("/api/v1/nowhere", headers=ann), 404, "not_found")
    _error(c.post("/api/v1/projects", content=b"x" * (web.settings.json_limit + 1),
                  headers={**ann, "content-type": "application/json"}), 413, "too_large")
    _error(c.get("/api/v1/projects", headers={"Authorization": "Bearer cs_nope"}), 401)


def test_security_headers(sqlite_web):
    answer = sqlite_web.client.get("/api/v1/me")
    assert "default-src 'self'" in answer.headers["content-security-policy"]
    assert answer.headers["x-content-type-options"] == "nosniff"


def test_a_tokens_last_use_is_written_at_most_once_a_minute(sqlite_web):
    from datetime import timedelta

    import sqlalchemy as sa

    from custseg.web.store.models import ApiToken

    ann = sqlite_web.user("ann@example.com")
    store = sqlite_web.app.state.store

    def last_used():
        with store.session() as db:
            return db.scalar(sa.select(ApiToken.last_used_at))

    assert sqlite_web.client.get("/api/v1/me", headers=ann).status_code == 200
    first = last_used()
    assert first is not None
    for _ in range(3):
        sqlite_web.client.get("/api/v1/me", headers=ann)
    assert last_used() == first  # no write per request
    with store.session() as db:
        db.execute(sa.update(ApiToken).values(last_used_at=first - timedelta(minutes=2)))
    sqlite_web.client.get("/api/v1/me", headers=ann)
    assert last_used() > first - timedelta(minutes=2)


def test_settings_from_the_environment():
    from custseg.errors import CustsegError
    from custseg.web.config import WebSettings

    settings = WebSettings.from_env({"CUSTSEG_STALE_SECONDS": "15", "CUSTSEG_ACCESS_LOG": "on",
                                     "CUSTSEG_JSON_LIMIT": "2MB", "CUSTSEG_WORKERS": "0"})
    assert (settings.stale_seconds, settings.access_log, settings.json_limit, settings.workers) == (15, True, 2 * 10**6, 0)
    defaults = WebSettings.from_env({})
    assert (defaults.stale_seconds, defaults.access_log) == (60, False)
    assert WebSettings.from_env({"CUSTSEG_ACCESS_LOG": "on"}, access_log=False).access_log is False  # the flag wins
    with pytest.raises(CustsegError, match="CUSTSEG_STALE_SECONDS"):
        WebSettings.from_env({"CUSTSEG_STALE_SECONDS": "soon"})
