"""The HTML pages with the TestClient, on SQLite and PostgreSQL: signing in through the form
(cookie flags, throttling), the CSRF token every form must carry, the 404 of another user's
project, errors shown on the page as one line (never a 500), no inline script or style (the
Content-Security-Policy forbids them), and the pages of a whole run."""

from __future__ import annotations

import re
from html import unescape

import pytest
from fastapi.testclient import TestClient

PASSWORD = "correct horse battery"
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64


class Visitor:
    """A browser of the app: its own cookies, signed in through the form."""

    def __init__(self, app, email: str | None = None, *, base_url: str = "http://testserver"):
        self.client = TestClient(app, follow_redirects=False, base_url=base_url)
        self.csrf = ""
        if email is not None:
            answer = self.sign_in(email)
            assert answer.status_code == 303, answer.text
            self.csrf = _meta_csrf(self.get("/app"))

    def sign_in(self, email: str, password: str = PASSWORD):
        form = self.client.get("/app/signin")
        assert form.status_code == 200, form.text
        token = _hidden(form.text, "csrf_token")
        return self.client.post("/app/signin", data={"email": email, "password": password, "csrf_token": token})

    def get(self, url: str, **kwargs):
        return self.client.get(url, **kwargs)

    def post(self, url: str, data: dict | None = None, *, csrf: bool | str = True, **kwargs):
        data = dict(data or {})
        if csrf is True:
            data["csrf_token"] = self.csrf
        elif csrf:
            data["csrf_token"] = csrf
        return self.client.post(url, data=data, **kwargs)


def _hidden(html: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert found, f"no field {name}"
    return unescape(found.group(1))


def _meta_csrf(answer) -> str:
    found = re.search(r'<meta name="csrf-token" content="([^"]*)">', answer.text)
    assert found and found.group(1), answer.text[:500]
    return found.group(1)


def _errors(answer) -> list[str]:
    return [unescape(re.sub(r"<[^>]+>", "", m)).strip()
            for m in re.findall(r'<p class="error"[^>]*>(.*?)</p>', answer.text, flags=re.S)]


def _page_error(answer, status: int, text: str) -> str:
    """The page answered ``status`` and shows one error line containing ``text``."""
    assert answer.status_code == status, (answer.status_code, answer.text[:2000])
    assert answer.headers["content-type"].startswith("text/html")
    shown = [e for e in _errors(answer) if e]
    assert any(text in e for e in shown), (text, shown)
    return next(e for e in shown if text in e)


def _users(web, *emails: str) -> None:
    from custseg.web import auth

    with web.app.state.store.session() as db:
        for email in emails:
            auth.create_user(db, email, PASSWORD)


def _project(visitor: Visitor, name: str = "Spring", **fields) -> int:
    answer = visitor.post("/app/projects", {"name": name, "description": "", "preview_mode": "first",
                                            "preview_rows": "50", **fields})
    assert answer.status_code == 303, answer.text
    found = re.fullmatch(r"/app/projects/(\d+)", answer.headers["location"])
    assert found, answer.headers["location"]
    return int(found.group(1))


def _upload(visitor: Visitor, project_id: int, name: str, content: bytes, *, csrf: bool | str = True):
    """The upload form as a browser without script sends it (multipart to the page route)."""
    data = {"name": ""}
    if csrf is True:
        data["csrf_token"] = visitor.csrf
    elif csrf:
        data["csrf_token"] = csrf
    return visitor.client.post(f"/app/projects/{project_id}/datasets/upload", data=data,
                               files={"file": (name, content)})


def _sample_dataset(visitor: Visitor, project_id: int) -> int:
    from custseg.datasets import sample_path

    answer = _upload(visitor, project_id, "online_retail_sample.parquet", sample_path().read_bytes())
    assert answer.status_code == 303, answer.text
    return int(answer.headers["location"].rsplit("/", 1)[1])


# --- signing in and out ------------------------------------------------------------------------

def test_root_and_pages_send_a_stranger_to_sign_in(web):
    client = TestClient(web.app, follow_redirects=False)
    assert client.get("/").status_code == 303 and client.get("/").headers["location"] == "/app"
    answer = client.get("/app")
    assert answer.status_code == 303 and answer.headers["location"] == "/app/signin"
    answer = client.get("/app/projects/1/runs/2")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/app/signin?next=%2Fapp%2Fprojects%2F1%2Fruns%2F2"
    page = client.get(answer.headers["location"])
    assert _hidden(page.text, "next") == "/app/projects/1/runs/2"
    assert client.post("/app/projects", data={"name": "x"}).status_code == 303  # to sign in; nothing made


def test_sign_in_through_the_form_and_out(web):
    _users(web, "ann@example.com")
    ann = Visitor(web.app)
    wrong = ann.sign_in("ann@example.com", "not the password")
    _page_error(wrong, 401, "wrong e-mail address or password")
    assert 'value="ann@example.com"' in wrong.text  # the address stays in the form
    answer = ann.sign_in("ann@example.com")
    assert answer.status_code == 303 and answer.headers["location"] == "/app"
    cookie = next(c for c in answer.headers.get_list("set-cookie") if c.startswith("custseg_session="))
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # plain HTTP, secure_cookies not set
    page = ann.get("/app")
    assert page.status_code == 200 and "ann@example.com" in page.text
    ann.csrf = _meta_csrf(page)
    # Signed in, the sign-in page sends on; ``next`` goes only to pages of the app.
    assert ann.get("/app/signin").headers["location"] == "/app"
    assert ann.get("/app/signin?next=https://elsewhere.example/").headers["location"] == "/app"
    # Signing out needs the token, and ends the session at once.
    _page_error(ann.post("/app/signout", csrf=False), 403, "CSRF token")
    assert ann.get("/app").status_code == 200
    out = ann.post("/app/signout")
    assert out.status_code == 303 and out.headers["location"] == "/app/signin"
    assert ann.get("/app").status_code == 303


def test_sign_in_goes_back_to_the_page_asked_for(sqlite_web):
    _users(sqlite_web, "ann@example.com")
    ann = Visitor(sqlite_web.app)
    form = ann.get("/app/signin?next=%2Fapp%2Fprojects%2F7")
    answer = ann.client.post("/app/signin", data={"email": "ann@example.com", "password": PASSWORD,
                                                  "csrf_token": _hidden(form.text, "csrf_token"),
                                                  "next": _hidden(form.text, "next")})
    assert answer.headers["location"] == "/app/projects/7"


def test_the_sign_in_form_needs_its_own_token(web):
    _users(web, "ann@example.com")
    stranger = TestClient(web.app, follow_redirects=False)
    # Posted from elsewhere (no token, or one that is not this browser's): refused, no session.
    for token in (None, "made-up"):
        data = {"email": "ann@example.com", "password": PASSWORD}
        if token:
            data["csrf_token"] = token
        answer = stranger.post("/app/signin", data=data)
        _page_error(answer, 403, "the sign-in form has expired")
        assert not any(c.startswith("custseg_session=") for c in answer.headers.get_list("set-cookie"))


def test_secure_cookies_when_configured_or_over_https(tmp_path):
    """Secure over HTTPS, and when ``secure_cookies`` says so (behind a proxy that ends TLS the
    app sees plain HTTP while the browser is on HTTPS)."""
    from custseg.web import WebSettings, auth, create_app

    for settings, base in ((WebSettings(data_dir=tmp_path / "a", workers=0, secure_cookies=True), "http://testserver"),
                           (WebSettings(data_dir=tmp_path / "b", workers=0), "https://testserver")):
        app = create_app(settings)
        with app.state.store.session() as db:
            auth.create_user(db, "ann@example.com", PASSWORD)
        client = TestClient(app, follow_redirects=False, base_url=base)
        form = client.get("/app/signin")
        assert "Secure" in form.headers["set-cookie"]
        token = _hidden(form.text, "csrf_token")
        client.cookies.clear()  # a browser on HTTPS sends the Secure cookie back; the test sends it by hand
        answer = client.post("/app/signin", data={"email": "ann@example.com", "password": PASSWORD,
                                                  "csrf_token": token}, headers={"cookie": f"custseg_signin={token}"})
        assert answer.status_code == 303, answer.text
        session = next(c for c in answer.headers.get_list("set-cookie") if c.startswith("custseg_session="))
        assert "Secure" in session and "HttpOnly" in session and "SameSite=lax" in session, session
        app.state.store.dispose()


def test_throttled_sign_in_shows_the_429_message(web):
    _users(web, "ann@example.com")
    ann = Visitor(web.app)
    for _ in range(web.settings.login_attempts):
        assert ann.sign_in("ann@example.com", "wrong password!").status_code == 401
    message = _page_error(ann.sign_in("ann@example.com"), 429, "too many failed sign-ins")
    assert f"{web.settings.throttle_minutes} minutes" in message


# --- CSRF and no change on GET -----------------------------------------------------------------

def test_every_form_is_refused_without_its_csrf_token(web):
    _users(web, "ann@example.com", "bob@example.com")
    ann = Visitor(web.app, "ann@example.com")
    pid = _project(ann)
    dataset = _sample_dataset(ann, pid)
    posts = {
        "/app/projects": {"name": "Other"},
        f"/app/projects/{pid}/settings": {"name": "Renamed", "description": "x"},
        f"/app/projects/{pid}/delete": {"confirm": "Spring"},
        f"/app/projects/{pid}/members": {"email": "bob@example.com", "role": "owner"},
        f"/app/projects/{pid}/members/1/remove": {},
        f"/app/projects/{pid}/datasets/sql": {"name": "t", "url": "sqlite://", "query": "SELECT 1 AS a"},
        f"/app/projects/{pid}/datasets/{dataset}/roles": {"role": ["customer_id"], "kind": "customers"},
        f"/app/projects/{pid}/datasets/{dataset}/rename": {"name": "renamed"},
        f"/app/projects/{pid}/datasets/{dataset}/delete": {},
        f"/app/projects/{pid}/datasets/{dataset}/refresh": {},
        f"/app/projects/{pid}/recipes": {"name": "r", "sql": "SELECT 1 AS a"},
        f"/app/projects/{pid}/recipes/preview": {"sql": "SELECT 1 AS a"},
        f"/app/projects/{pid}/runs": {"dataset_id": str(dataset)},
        "/app/signout": {},
    }
    for url, data in posts.items():
        for token in (False, "wrong-token"):
            answer = ann.post(url, data, csrf=token)
            _page_error(answer, 403, "CSRF token is missing or wrong")
    _page_error(_upload(ann, pid, "more.csv", b"customer,spend\n1,10\n2,20\n", csrf=False), 403, "CSRF token")
    # Nothing changed.
    project = ann.get(f"/app/projects/{pid}")
    assert project.status_code == 200 and "<h1>Spring</h1>" in project.text
    assert "bob@example.com" not in project.text and "Run 1" not in project.text
    assert project.text.count(f"/app/projects/{pid}/datasets/{dataset}\"") == 1
    assert "more" not in re.findall(r'datasets/\d+">([^<]+)<', project.text)
    assert ann.get("/app").text.count("/app/projects/") == 1


def test_a_sql_source_is_read_again_from_its_page(sqlite_web, tmp_path):
    import sqlite3

    _users(sqlite_web, "ann@example.com")
    ann = Visitor(sqlite_web.app, "ann@example.com")
    pid = _project(ann)
    database = tmp_path / "shop.db"
    with sqlite3.connect(database) as con:
        con.execute("CREATE TABLE shoppers (customer_id TEXT, spend REAL)")
        con.executemany("INSERT INTO shoppers VALUES (?, ?)", [(f"c{i}", 10.0 * i) for i in range(40)])
    added = ann.post(f"/app/projects/{pid}/datasets/sql", {"name": "shoppers", "url": f"sqlite:///{database}",
                                                          "table": "shoppers", "query": ""})
    assert added.status_code == 303, added.text
    page_url = added.headers["location"].split("#")[0]
    page = ann.get(page_url)
    assert f'action="{page_url}/refresh"' in page.text and "40" in page.text
    with sqlite3.connect(database) as con:
        con.executemany("INSERT INTO shoppers VALUES (?, ?)", [(f"n{i}", 1.0) for i in range(5)])
    again = ann.post(f"{page_url}/refresh", {"password": ""})
    assert again.status_code == 303 and again.headers["location"] == page_url
    assert re.search(r"<dt>rows</dt>\s*<dd>45</dd>", ann.get(page_url).text)
    database.unlink()
    _page_error(ann.post(f"{page_url}/refresh", {"password": ""}), 422, "no SQLite database file")
    assert re.search(r"<dt>rows</dt>\s*<dd>45</dd>", ann.get(page_url).text)


def test_no_state_change_on_get(sqlite_web):
    _users(sqlite_web, "ann@example.com")
    ann = Visitor(sqlite_web.app, "ann@example.com")
    pid = _project(ann)
    for url in (f"/app/projects/{pid}/delete", f"/app/projects/{pid}/settings", "/app/signout",
                f"/app/projects/{pid}/members", f"/app/projects/{pid}/runs"):
        answer = ann.get(url)
        assert answer.status_code == 405, (url, answer.status_code)
        assert answer.headers["content-type"].startswith("text/html")
    assert ann.get(f"/app/projects/{pid}").status_code == 200


# --- who may see what ----------------------------------------------------------------------------

def test_another_users_project_is_the_404_of_a_missing_one(web):
    _users(web, "ann@example.com", "bob@example.com")
    ann, bob = Visitor(web.app, "ann@example.com"), Visitor(web.app, "bob@example.com")
    pid = _project(ann, "Secret plans")
    dataset = _sample_dataset(ann, pid)
    missing = bob.get("/app/projects/999999")
    assert missing.status_code == 404
    for url in (f"/app/projects/{pid}", f"/app/projects/{pid}/datasets/new", f"/app/projects/{pid}/datasets/{dataset}",
                f"/app/projects/{pid}/recipes/new", f"/app/projects/{pid}/runs/new", f"/app/projects/{pid}/runs/1"):
        answer = bob.get(url)
        assert answer.status_code == 404, (url, answer.status_code)
        assert "Secret plans" not in answer.text and "online_retail" not in answer.text
        assert _errors(answer) == [f"no project {pid}"]
        assert _errors(missing) == ["no project 999999"]
    # A change by an outsider is the same 404, and changes nothing.
    for url, data in ((f"/app/projects/{pid}/settings", {"name": "Mine"}),
                      (f"/app/projects/{pid}/delete", {"confirm": "Secret plans"}),
                      (f"/app/projects/{pid}/members", {"email": "bob@example.com", "role": "owner"}),
                      (f"/app/projects/{pid}/datasets/{dataset}/delete", {}),
                      (f"/app/projects/{pid}/runs", {"dataset_id": str(dataset)})):
        answer = bob.post(url, data)
        assert answer.status_code == 404, (url, answer.status_code, answer.text[:500])
    assert "Secret plans" in ann.get(f"/app/projects/{pid}").text
    assert "Secret plans" not in bob.get("/app").text


def test_roles_decide_what_a_member_may_change(sqlite_web):
    _users(sqlite_web, "ann@example.com", "vic@example.com", "eve@example.com")
    ann = Visitor(sqlite_web.app, "ann@example.com")
    pid = _project(ann)
    for email, role in (("vic@example.com", "viewer"), ("eve@example.com", "editor")):
        assert ann.post(f"/app/projects/{pid}/members", {"email": email, "role": role}).status_code == 303
    vic, eve = Visitor(sqlite_web.app, "vic@example.com"), Visitor(sqlite_web.app, "eve@example.com")
    page = vic.get(f"/app/projects/{pid}")
    assert page.status_code == 200 and "Upload a dataset" not in page.text and "Delete the project" not in page.text
    _page_error(vic.post(f"/app/projects/{pid}/settings", {"description": "mine", "preview_mode": "first",
                                                          "preview_rows": "50"}), 403, "needs the editor role")
    _page_error(vic.post(f"/app/projects/{pid}/datasets/sql", {"name": "t", "url": "sqlite://", "query": "SELECT 1"}),
                403, "needs the editor role")
    # An editor changes the description but not the name, and manages no members.
    page = eve.get(f"/app/projects/{pid}")
    assert "Upload a dataset" in page.text and 'name="name" value="Spring"' not in page.text
    assert eve.post(f"/app/projects/{pid}/settings", {"description": "from eve", "preview_mode": "last",
                                                      "preview_rows": "10"}).status_code == 303
    assert "from eve" in eve.get(f"/app/projects/{pid}").text
    _page_error(eve.post(f"/app/projects/{pid}/settings", {"name": "Eve's"}), 403, "needs the owner role")
    _page_error(eve.post(f"/app/projects/{pid}/members", {"email": "vic@example.com", "role": "owner"}), 403,
                "needs the owner role")


# --- errors on the page --------------------------------------------------------------------------

def test_errors_are_shown_on_the_page_as_one_line(web):
    _users(web, "ann@example.com", "bob@example.com")
    ann = Visitor(web.app, "ann@example.com")
    _page_error(ann.post("/app/projects", {"name": "  "}), 400, "a project needs a name")
    _page_error(ann.post("/app/projects", {"name": "P", "preview_rows": "lots"}), 400,
                "preview_rows must be a whole number")
    _page_error(ann.post("/app/projects", {"name": "P", "preview_mode": "middle"}), 400, "preview_mode must be one of")
    pid = _project(ann, "Spring")
    base = f"/app/projects/{pid}"
    _page_error(ann.post(f"{base}/delete", {"confirm": "spring"}), 400, "type its name to confirm")
    _page_error(ann.post(f"{base}/members", {"email": "nobody@example.com", "role": "editor"}), 404,
                "no user nobody@example.com")
    me = re.search(r"/members/(\d+)/remove", ann.get(base).text).group(1)
    _page_error(ann.post(f"{base}/members/{me}/remove"), 409, "keeps at least one owner")
    # Bad files get the CLI's one line, naming the file as it was sent; nothing is kept.
    bad = _upload(ann, pid, "orders.csv", PNG)
    assert _page_error(bad, 422, "orders.csv: is a PNG image, not a data file")
    assert 'id="upload-form"' in bad.text
    _page_error(_upload(ann, pid, "empty.csv", b""), 422, "empty.csv")
    _page_error(ann.post(f"{base}/datasets/sql", {"name": "t", "url": "not a url", "table": "x"}), 400,
                "url is not a database URL")
    assert "No datasets yet" in ann.get(base).text
    dataset = _sample_dataset(ann, pid)
    _page_error(ann.get(f"{base}/datasets/{dataset}?rows=5000"), 200, "rows must be between 1 and 1000")
    # The run form keeps what was typed and names the field at fault as the form does.
    answer = ann.post(f"{base}/runs", {"dataset_id": str(dataset), "algorithm": "auto", "k": "many", "seed": "0",
                                       "returns": "drop"})
    _page_error(answer, 400, "k must be auto or a whole number")
    assert re.search(r'<input name="k" value="many"[^>]* aria-invalid="true">', answer.text)
    _page_error(ann.post(f"{base}/runs", {"dataset_id": str(dataset), "algorithm": "magic"}), 400,
                "algorithm must be auto or one of")
    _page_error(ann.post(f"{base}/runs", {"dataset_id": str(dataset), "seed": "x"}), 400, "seed must be a whole number")
    _page_error(ann.post(f"{base}/runs", {"dataset_id": str(dataset), "as_of": "yesterday"}), 400, "as_of")
    # Recipes: only a SELECT over the project's datasets.
    _page_error(ann.post(f"{base}/recipes/preview", {"sql": "ATTACH 'x.db'"}), 400, "single SELECT")
    _page_error(ann.post(f"{base}/recipes/preview", {"sql": "SELECT * FROM read_csv('/etc/passwd')"}), 400,
                "outside the project")
    # A page of the app that does not exist, or a malformed address: the error page, not JSON.
    _page_error(ann.get("/app/nowhere"), 404, "Not Found")
    _page_error(ann.get("/app/projects/abc"), 422, "project_id")


# --- the pages of a whole run --------------------------------------------------------------------

def test_datasets_recipes_and_a_run_through_the_pages(web):
    from custseg.web import jobs

    _users(web, "ann@example.com")
    ann = Visitor(web.app, "ann@example.com")
    pid = _project(ann, "Spring", preview_mode="first", preview_rows="12")
    base = f"/app/projects/{pid}"
    assert 'id="dropzone"' in ann.get(f"{base}/datasets/new").text
    dataset = _sample_dataset(ann, pid)
    page = ann.get(f"{base}/datasets/{dataset}")
    assert page.status_code == 200
    assert '<dd id="dataset-kind">transactions</dd>' in page.text
    assert page.text.count('<tr><td class="num muted">') == 12  # the project's preview setting
    assert "missing_customer_id" in page.text and "duplicate rows" in page.text
    last = ann.get(f"{base}/datasets/{dataset}?rows=3&mode=last")
    assert "3 of 79,780 rows (last)" in last.text and ">79780<" in last.text.replace(",", "")
    # Change roles: the descriptions are the products (the CLI's --map), then back to detected.
    columns = re.findall(r'data-column="([^"]+)"', page.text)
    selected = dict(re.findall(r'data-column="([^"]+)">.*?<option value="([^"]*)" selected>', page.text, flags=re.S))
    chosen = [("product_id" if c == "Description" else selected.get(c, "")) for c in columns]
    answer = ann.post(f"{base}/datasets/{dataset}/roles", {"role": chosen, "kind": ""})
    assert answer.status_code == 303, answer.text
    page = ann.get(f"{base}/datasets/{dataset}")
    assert "<code>product_id=Description</code>" in page.text
    roles = dict(re.findall(r'data-column="([^"]+)">.*?<option value="([^"]*)" selected>', page.text, flags=re.S))
    assert roles["Description"] == "product_id" and roles["StockCode"] == ""
    _page_error(ann.post(f"{base}/datasets/{dataset}/roles", {"role": ["customer_id"], "kind": ""}), 400,
                "does not match the dataset's columns")
    assert ann.post(f"{base}/datasets/{dataset}/roles", {"reset": "1"}).status_code == 303
    assert "Set by hand" not in ann.get(f"{base}/datasets/{dataset}").text
    # A recipe: preview, then save as a dataset.
    name = re.search(r'datasets/\d+">([^<]+)</a>', ann.get(base).text).group(1)
    sql = f"SELECT Country, count(*) AS orders FROM {name} GROUP BY Country ORDER BY orders DESC"
    preview = ann.post(f"{base}/recipes/preview", {"sql": sql, "name": "by_country"})
    assert preview.status_code == 200 and "United Kingdom" in preview.text and "Python recipes are not offered" in preview.text
    saved = ann.post(f"{base}/recipes", {"sql": sql, "name": "by_country"})
    assert saved.status_code == 303, saved.text
    assert "by_country" in ann.get(saved.headers["location"]).text
    # A run: queued (no worker here), cancelled, retried, then done by the job itself.
    form = ann.get(f"{base}/runs/new?dataset_id={dataset}")
    assert f'<option value="{dataset}" selected>' in form.text and "recency_days" in form.text
    answer = ann.post(f"{base}/runs", {"dataset_id": str(dataset), "algorithm": "kmeans", "k": "3", "features": "",
                                       "as_of": "", "returns": "drop", "seed": "3"})
    assert answer.status_code == 303, answer.text
    run_url = answer.headers["location"]
    run_id = int(run_url.rsplit("/", 1)[1])
    page = ann.get(run_url)
    assert 'id="run-status">queued' in page.text and f'data-events="/api/v1/projects/{pid}/runs/{run_id}/events"' in page.text
    assert ann.post(f"{run_url}/cancel").status_code == 303
    page = ann.get(run_url)
    assert "The run was cancelled" in page.text and "Retry the run" in page.text
    _page_error(ann.post(f"{run_url}/cancel"), 409, "only a queued or running run can be cancelled")
    assert ann.post(f"{run_url}/retry").status_code == 303
    assert 'id="run-status">queued' in ann.get(run_url).text
    assert jobs.run_job(web.settings, run_id, 2, store=web.app.state.store) == "done"
    page = ann.get(run_url)
    assert page.status_code == 200 and 'id="run-status">done' in page.text
    assert "K-Means with 3 segments" in page.text
    assert page.text.count('<td class="num">') > 10 and 'class="chosen"' in page.text
    assert (f'<iframe class="report" src="/api/v1/projects/{pid}/runs/{run_id}/files/report.html" '
            'sandbox="allow-scripts"') in page.text
    for name in ("assignments.csv", "profiles.csv", "exports/crm_import.csv", "exports/summary.csv",
                 "exports/segments.xlsx"):
        assert f'href="/api/v1/projects/{pid}/runs/{run_id}/files/{name}"' in page.text, name
    crm = ann.get(f"/api/v1/projects/{pid}/runs/{run_id}/files/exports/crm_import.csv")
    assert crm.status_code == 200 and "Segment Name" in crm.text.splitlines()[0]
    # Assign by hand: the form holds the model's features (the run's first customer).
    fields = dict(re.findall(r'name="(feature:[^"]+)" inputmode="decimal" value="([^"]*)"', page.text))
    assert set(fields) >= {"feature:recency_days", "feature:frequency", "feature:monetary"}, fields
    segment_names = re.findall(r"<td><strong>([^<]+)</strong></td>", page.text)
    assert len(segment_names) == 3
    answer = ann.post(f"{run_url}/assign", {"customer_id": "web-1", **fields})
    assert answer.status_code == 200
    shown = re.search(r'class="segment-name">([^<]+)<', answer.text)
    assert shown and unescape(shown.group(1)) in [unescape(n) for n in segment_names], answer.text[-3000:]
    assert "<strong>web-1</strong>" in answer.text
    missing = ann.post(f"{run_url}/assign", {"customer_id": "web-2", **{**fields, "feature:monetary": ""}})
    assert missing.status_code == 200 and "segment <strong>-1</strong>" in missing.text
    assert "monetary" in re.search(r'id="assigned".*?</div>', missing.text, flags=re.S).group(0)
    _page_error(ann.post(f"{run_url}/assign", {"customer_id": "x"}, csrf="wrong"), 403, "CSRF token")
    # The project's page lists it all, and the audit log says who did what.
    page = ann.get(base)
    for text in (f"Run {run_id}", "by_country", "uploaded a dataset", "changed roles", "started a run",
                 "cancelled a run", "retried a run", "exported"):
        assert text in page.text, text
    # Rename, then delete with the typed name.
    assert ann.post(f"{base}/settings", {"name": "Autumn", "description": "d", "preview_mode": "random",
                                         "preview_rows": "5"}).status_code == 303
    assert "<h1>Autumn</h1>" in ann.get(base).text
    answer = ann.post(f"{base}/delete", {"confirm": "Autumn"})
    assert answer.status_code == 303 and answer.headers["location"] == "/app"
    assert ann.get(base).status_code == 404


def test_pages_hold_no_inline_script_or_style(sqlite_web):
    """The Content-Security-Policy allows scripts and styles from the app's files only."""
    _users(sqlite_web, "ann@example.com")
    ann = Visitor(sqlite_web.app, "ann@example.com")
    pid = _project(ann)
    dataset = _sample_dataset(ann, pid)
    pages = ["/app", f"/app/projects/{pid}", f"/app/projects/{pid}/datasets/new", f"/app/projects/{pid}/datasets/{dataset}",
             f"/app/projects/{pid}/recipes/new", f"/app/projects/{pid}/runs/new", "/app/projects/999", "/app/signin"]
    for url in pages:
        answer = ann.get(url) if url != "/app/signin" else TestClient(sqlite_web.app).get(url)
        html = answer.text
        assert "script-src 'self'" in answer.headers["content-security-policy"]
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), url
        assert not re.search(r"<style\b", html), url
        assert not re.search(r"\sstyle=", html), url
        assert not re.search(r"\son[a-z]+=", html), url
        for form in re.findall(r'<form method="post".*?</form>', html, flags=re.S):
            assert 'name="csrf_token"' in form, (url, form[:200])
    for asset in ("/static/app.css", "/static/app.js", "/static/upload.js", "/static/run.js"):
        assert ann.get(asset).status_code == 200, asset


@pytest.mark.parametrize("path", ["/app/projects/1/datasets/1", "/app/projects/1/runs/1"])
def test_a_missing_thing_in_ones_own_project_is_404(sqlite_web, path):
    _users(sqlite_web, "ann@example.com")
    ann = Visitor(sqlite_web.app, "ann@example.com")
    assert _project(ann) == 1
    answer = ann.get(path)
    assert answer.status_code == 404 and _errors(answer)
