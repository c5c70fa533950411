"""SQL recipes on SQLite and PostgreSQL stores: a DuckDB SELECT over the project's datasets by
name makes a new dataset; everything that would reach outside the project is refused, naming
the field ``sql``; a slow query is stopped by the time limit."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from custseg.datasets import sample_path


def _error(answer, status, code=None, field=None):
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "field"}
    if code:
        assert body["error"]["code"] == code
    if field:
        assert body["error"]["field"] == field
    return body["error"]


def _project(web, headers, name="P") -> int:
    return web.client.post("/api/v1/projects", json={"name": name}, headers=headers).json()["id"]


def _upload(web, headers, pid, filename, content: bytes, **fields) -> dict:
    answer = web.client.post(f"/api/v1/projects/{pid}/datasets", files={"file": (filename, content)},
                             data=fields or None, headers=headers)
    assert answer.status_code == 201, answer.text
    return answer.json()


def _user(web, email):
    from custseg.web.store.models import User

    with web.app.state.store.session() as db:
        return db.scalar(sa.select(User).where(User.email == email))


def test_preview_and_save_a_recipe(web, mall_customers):
    ann = web.user("ann@example.com")
    pid = _project(web, ann)
    _upload(web, ann, pid, "online_retail_sample.parquet", sample_path().read_bytes())
    _upload(web, ann, pid, "mall.csv", mall_customers.read_bytes(), name="Mall Customers")
    sql = ("SELECT *, Quantity * UnitPrice AS total_price FROM online_retail_sample "
           "WHERE Country = 'France' ORDER BY InvoiceDate, InvoiceNo, StockCode")
    shown = web.client.post(f"/api/v1/projects/{pid}/recipes/preview", json={"sql": sql, "rows": 5}, headers=ann)
    assert shown.status_code == 200, shown.text
    shown = shown.json()
    assert len(shown["rows"]) == 5 and shown["datasets"] == ["online_retail_sample"]
    assert shown["columns"][-1] == {"name": "total_price", "type": "DOUBLE"}
    first = shown["rows"][0]
    assert first["Country"] == "France" and first["total_price"] == pytest.approx(first["Quantity"] * first["UnitPrice"])
    assert first["InvoiceDate"] == "2010-12-07T10:08:00"  # a timestamp as ISO text
    # Names match ignoring case; a name that is not an identifier is quoted; default preview size.
    quoted = web.client.post(f"/api/v1/projects/{pid}/recipes/preview",
                             json={"sql": 'SELECT Genre, count(*) AS n FROM "mall customers" GROUP BY ALL ORDER BY 1'},
                             headers=ann).json()
    assert quoted["rows"] == [{"Genre": "Female", "n": 112}, {"Genre": "Male", "n": 88}]
    saved = web.client.post(f"/api/v1/projects/{pid}/recipes", json={"name": "france", "sql": sql + ";"},
                            headers=ann)
    assert saved.status_code == 201, saved.text
    saved = saved.json()
    assert saved["origin"] == "recipe" and saved["kind"] == "transactions"
    assert saved["source"] == {"sql": sql + ";", "datasets": ["online_retail_sample"]}
    assert saved["rows"] == 2_839 and {c["name"] for c in saved["columns"]} >= {"total_price", "Country"}
    assert saved["roles"]["customer_id"] == "CustomerID" and saved["quality"]["customers"] > 0
    # The result is a dataset like the others: previewed, used by the next recipe.
    preview = web.client.get(f"/api/v1/projects/{pid}/datasets/{saved['id']}/preview", params={"rows": 2},
                             headers=ann).json()
    assert preview["total_rows"] == 2_839 and preview["rows"][0]["Country"] == "France"
    nested = web.client.post(f"/api/v1/projects/{pid}/recipes", headers=ann, json={
        "name": "france_totals", "sql": "WITH t AS (SELECT CustomerID, sum(total_price) AS spend FROM france "
                                        "WHERE CustomerID IS NOT NULL GROUP BY 1) SELECT * FROM t"}).json()
    assert nested["kind"] == "customers" and nested["rows"] == saved["quality"]["customers"]
    _error(web.client.post(f"/api/v1/projects/{pid}/recipes", json={"name": "FRANCE", "sql": sql}, headers=ann),
           409, "conflict", "name")
    actions = [e["action"] for e in web.client.get(f"/api/v1/projects/{pid}/audit", headers=ann).json()]
    assert actions.count("created a recipe") == 2
    folders = list((web.settings.data_dir / "projects" / str(pid) / "datasets").iterdir())
    assert len(folders) == 4


#: statements that must not run, each with a word its refusal says
REFUSED = [
    ("SELECT * FROM read_csv('/etc/passwd')", "outside the project"),
    ("SELECT * FROM read_text('/etc/hostname')", "outside the project"),
    ("SELECT * FROM '/etc/passwd'", ""),
    ("SELECT * FROM glob('/*')", "outside the project"),
    ("SELECT * FROM read_parquet('{other_file}')", "outside the project"),
    ("SELECT * FROM 'https://example.com/data.csv'", "outside the project"),
    ("SELECT * FROM other_secret", "other_secret"),
    ("ATTACH '/tmp/custseg-recipe.db' AS x", "not ATTACH"),
    ("COPY (SELECT 1) TO '/tmp/custseg-recipe.csv'", "not COPY"),
    ("INSTALL httpfs", "not LOAD"),
    ("LOAD httpfs", "not LOAD"),
    ("PRAGMA version", "not PRAGMA"),
    ("SET enable_external_access = true", "not SET"),
    ("RESET lock_configuration", "not SET"),
    ("CREATE TABLE t AS SELECT 1", "not CREATE"),
    ("EXPORT DATABASE '/tmp/custseg-export'", "not EXPORT"),
    ("CALL duckdb_settings()", "not CALL"),
    ("SELECT 1; SELECT 2", "holds 2"),
    ("SELECT 1; ATTACH 'x.db'", "holds 2"),
    ("SELECT * FROM query('ATTACH ''/tmp/x.db''')", ""),
    ("SELECT * FROM duckdb_extensions()", "outside the project"),
    ("SELECT FROM WHERE", "does not parse"),
    ("   ", "give a SELECT"),
]


def test_recipes_cannot_reach_outside_the_project(web, mall_customers, tmp_path):
    ann, bob = web.user("ann@example.com"), web.user("bob@example.com")
    pid = _project(web, ann)
    _upload(web, ann, pid, "mall.csv", mall_customers.read_bytes())
    theirs = _project(web, bob, "Bob's")
    secret = _upload(web, bob, theirs, "other_secret.csv", mall_customers.read_bytes())
    other_file = (web.settings.data_dir / "projects" / str(theirs) / "datasets")
    (other_file,) = list(other_file.glob("*/custseg-table.parquet"))
    assert secret["name"] == "other_secret"
    for sql, says in REFUSED:
        sql = sql.replace("{other_file}", str(other_file))
        for url in (f"/api/v1/projects/{pid}/recipes/preview", f"/api/v1/projects/{pid}/recipes"):
            body = {"sql": sql} if url.endswith("preview") else {"sql": sql, "name": "leak"}
            error = _error(web.client.post(url, json=body, headers=ann), 400, "bad_request", "sql")
            assert says in error["message"], (sql, error["message"])
            assert "Female" not in error["message"]
    for path in ("/tmp/custseg-recipe.db", "/tmp/custseg-recipe.csv", "/tmp/custseg-export"):
        assert not (tmp_path.parent / path).exists()
    assert [d["name"] for d in web.client.get(f"/api/v1/projects/{pid}/datasets", headers=ann).json()] == ["mall"]
    assert len(list((web.settings.data_dir / "projects" / str(pid) / "datasets").iterdir())) == 1
    # The other project's dataset by its name is as unknown as a name that exists nowhere.
    error = _error(web.client.post(f"/api/v1/projects/{pid}/recipes/preview",
                                   json={"sql": "SELECT count(*) FROM other_secret"}, headers=ann), 400, field="sql")
    assert "does not exist" in error["message"]


def test_recipe_roles_and_outsiders(web, mall_customers):
    ann, bob, cat = web.user("ann@example.com"), web.user("bob@example.com"), web.user("cat@example.com")
    pid = _project(web, ann)
    _upload(web, ann, pid, "mall.csv", mall_customers.read_bytes())
    web.client.post(f"/api/v1/projects/{pid}/members", json={"email": "bob@example.com", "role": "viewer"},
                    headers=ann)
    body = {"sql": "SELECT * FROM mall WHERE Age > 60"}
    assert web.client.post(f"/api/v1/projects/{pid}/recipes/preview", json=body, headers=bob).status_code == 200
    _error(web.client.post(f"/api/v1/projects/{pid}/recipes", json={**body, "name": "old"}, headers=bob),
           403, "forbidden")
    _error(web.client.post(f"/api/v1/projects/{pid}/recipes/preview", json=body, headers=cat), 404, "not_found")
    _error(web.client.post(f"/api/v1/projects/{pid}/recipes", json={**body, "name": "old"}, headers=cat), 404)
    # An empty result is no dataset; bad fields name themselves.
    _error(web.client.post(f"/api/v1/projects/{pid}/recipes", json={"sql": "SELECT * FROM mall WHERE Age > 900",
                                                                   "name": "none"}, headers=ann), 400, field="sql")
    _error(web.client.post(f"/api/v1/projects/{pid}/recipes", json={"sql": "SELECT 1"}, headers=ann),
           422, "invalid", "name")
    _error(web.client.post(f"/api/v1/projects/{pid}/recipes/preview", json={"sql": "SELECT 1", "rows": 0},
                           headers=ann), 422, field="rows")
    _error(web.client.post(f"/api/v1/projects/{pid}/recipes/preview", json={"sql": "SELECT nope FROM mall"},
                           headers=ann), 400, field="sql")
    assert len(web.client.get(f"/api/v1/projects/{pid}/datasets", headers=ann).json()) == 1


def test_a_slow_recipe_is_stopped_by_the_time_limit(web, mall_customers):
    from custseg.errors import ConfigError
    from custseg.web.services import recipes

    ann = web.user("ann@example.com")
    pid = _project(web, ann)
    _upload(web, ann, pid, "mall.csv", mall_customers.read_bytes())
    user = _user(web, "ann@example.com")
    huge = "SELECT count(*) FROM range(1000000000) a, range(1000000000) b, mall WHERE a.range + b.range < 0"
    for call in (lambda db: recipes.preview_recipe(db, web.settings, user, pid, huge, time_limit=1),
                 lambda db: recipes.create_recipe(db, web.settings, user, pid, "huge", huge, time_limit=1)):
        started = time.perf_counter()
        with web.app.state.store.session() as db, pytest.raises(ConfigError) as caught:
            call(db)
        assert time.perf_counter() - started < 10
        assert caught.value.param == "sql" and "longer than the limit of 1 s" in str(caught.value)
    folder = web.settings.data_dir / "projects" / str(pid) / "datasets"
    assert len(list(folder.iterdir())) == 1


def test_a_greedy_recipe_is_stopped_by_the_memory_limit(sqlite_web, mall_customers):
    from custseg.errors import ConfigError
    from custseg.web.services import recipes

    ann = sqlite_web.user("ann@example.com")
    pid = _project(sqlite_web, ann)
    _upload(sqlite_web, ann, pid, "mall.csv", mall_customers.read_bytes())
    user = _user(sqlite_web, "ann@example.com")
    greedy = "SELECT list(range) AS everything, count(*) FROM range(200000000) GROUP BY range % 1"
    with sqlite_web.app.state.store.session() as db, pytest.raises(ConfigError) as caught:
        recipes.preview_recipe(db, sqlite_web.settings, user, pid, greedy, memory_limit="64MB", time_limit=60)
    assert caught.value.param == "sql" and "memory" in str(caught.value)


def test_check_sql_keeps_only_one_select():
    from custseg.errors import ConfigError
    from custseg.web.services.recipes import check_sql

    assert check_sql("SELECT 1;") == "SELECT 1"
    assert check_sql("WITH t AS (SELECT 1 AS a) SELECT a FROM t") == "WITH t AS (SELECT 1 AS a) SELECT a FROM t"
    assert check_sql("FROM mall -- the whole table") == "FROM mall -- the whole table"
    for bad in ("UPDATE extensions", "DETACH x", "USE x", "INSERT INTO t VALUES (1)", "DROP TABLE mall",
                "EXPLAIN SELECT 1", "SELECT 1; SELECT 2"):
        with pytest.raises(ConfigError) as caught:
            check_sql(bad)
        assert caught.value.param == "sql"
