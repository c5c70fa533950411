"""The REST API fuzzed against its own OpenAPI spec: every operation, authenticated, with
examples that follow the spec and examples that break it; no answer may be a server error
(5xx), and each must have a status code, media type and body the spec documents.  The store
(SQLite, and PostgreSQL in a database of its own) holds a project with the bundled sample and
one finished run, so path parameters and body fields name real records part of the time.
Each server error found is pinned by a plain test of its request below the fuzzing."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

EMAIL = "fuzz@example.com"
PASSWORD = "correct horse battery"
#: Per operation; with the coverage phase's cases this keeps the whole fuzzing to a few minutes.
EXAMPLES = 40


@dataclass
class Fixture:
    """The app and the records that path parameters may name."""

    app: object
    client: object
    settings: object
    token: str = ""
    token_id: int = 0
    ids: dict[str, list] = field(default_factory=dict)
    fields: dict[str, object] = field(default_factory=dict)
    dataset_id: int = 0
    customers: list = field(default_factory=list)
    answers: Counter = field(default_factory=Counter)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def new_token(self) -> None:
        from custseg.web import auth
        from custseg.web.store.models import User

        with self.app.state.store.session() as db:
            user = db.query(User).filter_by(email=EMAIL).one()
            self.token, record = auth.create_token(db, user, "fuzz")
            self.token_id = record.id

    def dataset_name(self) -> str:
        from custseg.web.store.models import Dataset

        with self.app.state.store.session() as db:
            found = db.get(Dataset, self.dataset_id)
            return found.name if found is not None else "online_retail_sample"

    def token_revoked(self) -> bool:
        from custseg.web.store.models import ApiToken

        with self.app.state.store.session() as db:
            return db.get(ApiToken, self.token_id).revoked_at is not None


#: A body field left out (of the bodies given real values).
DROP = object()
#: A JSON value of any kind, with the numbers at the edges (beyond a float, ±1e308, negative).
ANY_VALUE = (st.integers() | st.integers(min_value=10**300, max_value=10**400) | st.integers(max_value=-10**308)
             | st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from([-1, -1.0, 0, 1e308, -1e308])
             | st.text(max_size=20) | st.booleans() | st.none() | st.lists(st.integers(), max_size=2)
             | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


def _check(answer, status: int):
    assert answer.status_code == status, answer.text
    return answer.json() if answer.content else None


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def store_url(request):
    """The fuzzing's store: SQLite in the data folder, or a PostgreSQL database of its own (the
    other tests empty theirs between tests)."""
    if request.param == "sqlite":
        yield None
        return
    import os
    import uuid

    import sqlalchemy as sa

    server = os.environ.get("CUSTSEG_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    name = f"custseg_fuzz_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as con:
            con.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        pytest.fail(f"PostgreSQL at {server} is not reachable ({exc.orig}); the web tests need it")
    yield sa.engine.make_url(server).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as con:
        con.execute(sa.text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"))
        con.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory, store_url):
    import json
    import sqlite3

    import pandas as pd
    from fastapi.testclient import TestClient

    from custseg.datasets import sample_path
    from custseg.schema import ROLES
    from custseg.web import WebSettings, auth, create_app, jobs

    folder = tmp_path_factory.mktemp("fuzz")
    shop = folder / "shop.db"  # a SQL source outside the data folder
    sample = pd.read_parquet(sample_path())
    with sqlite3.connect(shop) as con:
        sample.head(500).to_sql("orders", con, index=False)
    settings_ = WebSettings(data_dir=folder / "data", db_url=store_url, workers=0,
                            login_attempts=10_000)  # sign-ins not throttled
    app = create_app(settings_)
    with TestClient(app) as client:
        with app.state.store.session() as db:
            auth.create_user(db, EMAIL, PASSWORD)
            auth.create_user(db, "other@example.com", PASSWORD)
        made = Fixture(app, client, settings_)
        made.new_token()
        spare = _check(client.post("/api/v1/tokens", json={"email": EMAIL, "password": PASSWORD, "name": "spare"}),
                       201)
        headers = made.headers()
        project = _check(client.post("/api/v1/projects", json={"name": "Fuzz"}, headers=headers), 201)["id"]
        other = _check(client.post(f"/api/v1/projects/{project}/members",
                                   json={"email": "other@example.com", "role": "viewer"}, headers=headers), 201)
        dataset = _check(client.post(f"/api/v1/projects/{project}/datasets", headers=headers,
                                     files={"file": ("online_retail_sample.parquet", sample_path().read_bytes())}),
                         201)
        run = _check(client.post(f"/api/v1/projects/{project}/runs", headers=headers,
                                 json={"dataset_id": dataset["id"], "algorithm": "kmeans", "k": 3}), 202)["id"]
        assert jobs.run_job(settings_, run, 1, store=app.state.store) == "done"
        files = _check(client.get(f"/api/v1/projects/{project}/runs/{run}/files", headers=headers), 200)
        features = pd.read_parquet(settings_.data_dir / f"projects/{project}/runs/{run}/features.parquet")
        customers = json.loads(features.head(20).to_json(orient="records", date_format="iso"))
        made.ids = {"project_id": [project], "dataset_id": [dataset["id"]], "run_id": [run],
                    "user_id": [other["user_id"]], "token_id": [spare["id"]],
                    "name": sorted(f["name"] for f in files)}
        made.dataset_id = dataset["id"]
        made.customers = customers
        names = st.text("abcdefghijklmnopqrstuvwxyz_ 0123456789", min_size=1, max_size=30)
        made.fields = {
            "dataset_id": st.just(dataset["id"]),
            "email": st.just("other@example.com"),
            "password": st.just(PASSWORD),
            "name": names,
            # over the dataset's name as it is when the case is made (the fuzzing renames it)
            "sql": st.sampled_from([
                'SELECT * FROM "{}" LIMIT 100', 'SELECT Country, count(*) AS n FROM "{}" GROUP BY 1',
                'SELECT CustomerID, sum(Quantity * UnitPrice) AS spend FROM "{}" GROUP BY ALL',
            ]).map(lambda sql: sql.format(made.dataset_name())),
            "url": st.just(f"sqlite:///{shop}"),
            "table": st.just("orders"),
            "query": st.sampled_from([DROP, "SELECT * FROM orders WHERE Quantity > 0"]),  # or table alone
            "sheet": st.just(DROP), "encoding": st.sampled_from([DROP, "utf-8"]), "delimiter": st.just(DROP),
            "kind": st.sampled_from([DROP, "transactions"]),
            # a run's options as a person gives them (the others as generated)
            "algorithm": st.sampled_from([DROP, "kmeans", "gmm", "auto"]), "k": st.sampled_from([DROP, 2, 3, "auto"]),
            "k_values": st.sampled_from([DROP, [2, 3]]),
            "features": st.sampled_from([DROP, ["recency_days", "monetary"]]),
            "as_of": st.sampled_from([DROP, "2011-12-09"]), "returns": st.sampled_from([DROP, "net"]),
            "seed": st.sampled_from([DROP, 7]),
            # real customers, a few of their values replaced by any JSON value
            "customers": st.tuples(st.sampled_from([customers[:n] for n in (1, 5, 20)]),
                                   st.dictionaries(st.sampled_from(sorted(customers[0])), ANY_VALUE, max_size=3))
                           .map(lambda both: [{**both[0][0], **both[1]}, *both[0][1:]]),
            # any roles onto the dataset's columns (or none of them)
            "mapping": st.dictionaries(st.sampled_from(ROLES), st.sampled_from(sorted(sample.columns)) | names,
                                       max_size=3),
            "file": st.sampled_from([
                sample.head(300).to_csv(index=False).encode(),
                sample.head(300).to_json(orient="records", lines=True, date_format="iso").encode()]),
        }
        yield made
    app.state.store.dispose()


@pytest.fixture(scope="module")
def api_schema(fuzzed):
    schema = schemathesis.openapi.from_asgi(
        "/api/v1/openapi.json", fuzzed.app,
        config=schemathesis.Config.from_dict({"max-stream-events": 3}))

    @schema.hook
    def flatmap_path_parameters(context, path_parameters):
        """Some cases as generated, some naming the real project, dataset, run, file…"""
        real = {key: st.sampled_from(fuzzed.ids[key]) if key in fuzzed.ids else st.just(value)
                for key, value in (path_parameters or {}).items()}
        return st.one_of(st.just(path_parameters), st.fixed_dictionaries(real), st.fixed_dictionaries(real))

    @schema.hook
    def flatmap_body(context, body):
        """Some bodies as generated, some with real values in the fields that name records or
        hold SQL (so runs are queued, recipes saved, SQL sources read, customers assigned)."""
        if not isinstance(body, dict) or not set(body) & set(fuzzed.fields):
            return st.just(body)
        fields = dict(fuzzed.fields)
        if context.operation.path == "/api/v1/tokens":  # sign in as the fuzzing user (not on /members: the
            fields["email"] = st.just(EMAIL)              # fuzzing would take its own role away)
        real = st.fixed_dictionaries({key: fields.get(key, st.just(value)) for key, value in body.items()}).map(
            lambda made: {key: value for key, value in made.items() if value is not DROP})
        return st.one_of(st.just(body), real, real)

    return schema


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.fixture(autouse=True)
def _node_id(request):
    """schemathesis' pytest plugin reads (and renames) the test item's ``_nodeid``, which pytest
    9.2's items no longer have: give it one."""
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


def _fuzz(case, fuzzed):
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (content_type_conformance, response_schema_conformance,
                                                   status_code_conformance)

    # The events of a queued run stream until it ends (no worker here): the stream is read for
    # 5 seconds or 3 events (the schema's max-stream-events), whichever comes first.
    response = case.call(headers=fuzzed.headers(), timeout=5 if case.path.endswith("/events") else 60)
    fuzzed.answers[case.method, case.operation.path, response.status_code] += 1
    case.validate_response(response, checks=[not_a_server_error, status_code_conformance, content_type_conformance,
                                             response_schema_conformance])
    if case.method == "DELETE" and case.path.startswith("/api/v1/tokens/") and fuzzed.token_revoked():
        fuzzed.new_token()  # the fuzzing revoked its own token: go on with a new one


@schema.exclude(method="DELETE").parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_api_fuzz(case, fuzzed):
    """Every operation but the deletions: no server error, answers as the spec documents."""
    _fuzz(case, fuzzed)


#: Changes to a customer: any fields, and the features of the fuzzing's run, to any JSON value.
FEATURES = ["recency_days", "frequency", "monetary", "tenure_days", "avg_order_value", "avg_days_between_orders",
            "n_products", "country", "first_order_at", "last_order_at", "customer_id"]
CHANGES = st.tuples(st.dictionaries(st.text(max_size=25), ANY_VALUE, max_size=2),
                    st.dictionaries(st.sampled_from(FEATURES), ANY_VALUE, min_size=1, max_size=3))


@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(changes=st.lists(CHANGES, min_size=1, max_size=4), more=st.sampled_from([0, 1, 15]))
def test_api_fuzz_assign_values(fuzzed, changes, more):
    """Real customers of the done run with any JSON values in their fields (the features most
    of the time): each is assigned, or unassigned with a reason, never a server error."""
    customers = [{**fuzzed.customers[i], **anything, **features} for i, (anything, features) in enumerate(changes)]
    customers += fuzzed.customers[len(changes):len(changes) + more]
    project, run = fuzzed.ids["project_id"][0], fuzzed.ids["run_id"][0]
    answer = fuzzed.client.post(f"/api/v1/projects/{project}/runs/{run}/assign", headers=fuzzed.headers(),
                                json={"customers": customers})
    assert answer.status_code == 200, (answer.status_code, answer.text[:500], customers)
    assigned = answer.json()["assignments"]
    assert len(assigned) == len(customers)
    assert all(a["segment"] >= 0 or a["reason"] for a in assigned), assigned


# --- the server errors the fuzzing found, each as its request ------------------------------------

@pytest.mark.parametrize("big", [2**31, 2**63, 10**30])
def test_ids_too_large_for_the_store_are_not_found(web, big):
    """A path id or a run's dataset_id past the store's integers (PostgreSQL's 2**31, SQLite's
    2**63) is a 404, not the database's overflow (500)."""
    from custseg.datasets import sample_path

    headers = web.user("big@example.com")
    project = _check(web.client.post("/api/v1/projects", json={"name": "Big"}, headers=headers), 201)["id"]
    dataset = _check(web.client.post(f"/api/v1/projects/{project}/datasets", headers=headers,
                                     files={"file": ("sample.parquet", sample_path().read_bytes())}), 201)["id"]
    base = f"/api/v1/projects/{project}"
    for method, url, body in [
        ("GET", f"/api/v1/projects/{big}", None), ("PATCH", f"/api/v1/projects/{big}", {"name": "x"}),
        ("GET", f"/api/v1/projects/{big}/datasets", None), ("GET", f"{base}/datasets/{big}", None),
        ("GET", f"{base}/datasets/{big}/preview", None), ("DELETE", f"{base}/datasets/{big}", None),
        ("GET", f"{base}/runs/{big}", None), ("GET", f"{base}/runs/{big}/events", None),
        ("GET", f"{base}/runs/{big}/files/report.html", None), ("POST", f"{base}/runs/{big}/cancel", None),
        ("POST", f"{base}/runs/{big}/assign", {"customers": [{}]}), ("DELETE", f"{base}/members/{big}", None),
        ("DELETE", f"/api/v1/tokens/{big}", None), ("POST", f"{base}/runs", {"dataset_id": big}),
        ("POST", f"/api/v1/projects/{big}/runs", {"dataset_id": dataset}),
    ]:
        answer = web.client.request(method, url, json=body, headers=headers)
        assert answer.status_code == 404, (method, url, answer.status_code, answer.text)
        assert answer.json()["error"]["code"] == "not_found"


def test_assign_a_whole_number_beyond_a_float(fuzzed):
    """JSON allows any whole number: one too large for a float leaves the customer unassigned
    (not a finite number), not an OverflowError (500); the others in the batch are assigned."""
    project, run = fuzzed.ids["project_id"][0], fuzzed.ids["run_id"][0]
    url = f"/api/v1/projects/{project}/runs/{run}/assign"
    huge = {**fuzzed.customers[0], "monetary": 10**400}
    for customers in ([huge], [huge, fuzzed.customers[1]]):
        answer = fuzzed.client.post(url, headers=fuzzed.headers(), json={"customers": customers})
        assert answer.status_code == 200, answer.text
        first, *others = answer.json()["assignments"]
        assert first["segment"] == -1 and first["reason"] == "monetary inf is not a finite number", first
        assert first["customer_id"] == huge["customer_id"]
        assert all(other["segment"] >= 0 for other in others), others
    big_id = {**fuzzed.customers[0], "customer_id": 10**400, "recency_days": 10**400}
    answer = fuzzed.client.post(url, headers=fuzzed.headers(), json={"customers": [big_id]})
    assert answer.status_code == 200, answer.text
    assert answer.json()["assignments"][0]["customer_id"] == 10**400


@pytest.mark.parametrize("value", [-5, -1.0, -1e308])
def test_assign_a_value_outside_the_models_range_under_warnings_as_errors(fuzzed, value):
    """A negative amount goes through the model's log: numpy warns, and with warnings as
    errors (as in these tests) that was a 500; it is the customer's reason."""
    import warnings

    project, run = fuzzed.ids["project_id"][0], fuzzed.ids["run_id"][0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        answer = fuzzed.client.post(f"/api/v1/projects/{project}/runs/{run}/assign", headers=fuzzed.headers(),
                                    json={"customers": [{**fuzzed.customers[0], "monetary": value}]})
    assert answer.status_code == 200, answer.text
    assigned = answer.json()["assignments"][0]
    assert assigned["segment"] == -1 and "monetary" in assigned["reason"], assigned


# --- what the spec says and the answers do (the fuzzing's conformance checks) ---------------------

def test_timestamps_carry_their_offset(fuzzed):
    """The spec's ``date-time`` is RFC 3339, with an offset: the store's UTC moments say so."""
    from datetime import datetime, timedelta

    project, run = fuzzed.ids["project_id"][0], fuzzed.ids["run_id"][0]
    shown = _check(fuzzed.client.get(f"/api/v1/projects/{project}/runs/{run}", headers=fuzzed.headers()), 200)
    for key in ("created_at", "started_at", "finished_at"):
        moment = datetime.fromisoformat(shown[key])
        assert moment.utcoffset() == timedelta(0), (key, shown[key])


def test_the_spec_describes_the_error_shape(fuzzed):
    """Every operation documents its refusals (4XX, and 422) as the one error shape it sends."""
    spec = _check(fuzzed.client.get("/api/v1/openapi.json"), 200)
    assert set(spec["components"]["schemas"]["Error"]["properties"]["error"]["required"]) == {"code", "message",
                                                                                             "field"}
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            for status in ("4XX", "422"):
                if status in operation["responses"]:
                    schema = operation["responses"][status]["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}, (method, path, status)
            assert "4XX" in operation["responses"], (method, path)
    types = spec["paths"]["/api/v1/projects/{project_id}/runs/{run_id}/files/{name}"]["get"]["responses"]["200"]
    assert {"text/csv", "text/html", "application/json"} <= set(types["content"])


def test_text_with_a_nul_is_refused_not_a_database_error(web):
    """PostgreSQL's text cannot hold U+0000 (SQLite's can): a NUL in a sign-in, a token's or
    project's name, a description, a member's address or a SQL source's URL is a 4xx on both
    stores, not the database's DataError (or the file system's ValueError) as a 500."""
    headers = web.user("nul@example.com")
    project = _check(web.client.post("/api/v1/projects", json={"name": "Nul"}, headers=headers), 201)["id"]
    base = f"/api/v1/projects/{project}"
    for method, url, body, status, field_ in [
        ("POST", "/api/v1/tokens", {"email": "a\x00b@example.com", "password": "x\x00"}, 401, "password"),
        ("POST", "/api/v1/tokens", {"email": "nul@example.com", "password": PASSWORD, "name": "a\x00b"}, 400, "name"),
        ("POST", "/api/v1/projects", {"name": "a\x00b"}, 400, "name"),
        ("POST", "/api/v1/projects", {"name": "ok", "description": "a\x00b"}, 400, "description"),
        ("PATCH", base, {"name": "a\x00b"}, 400, "name"),
        ("PATCH", base, {"description": "a\x00b"}, 400, "description"),
        ("POST", f"{base}/members", {"email": "a\x00b@example.com", "role": "viewer"}, 404, "email"),
        ("POST", f"{base}/datasets", {"name": "src", "url": "sqlite:///a\x00b.db", "table": "t"}, 400, "url"),
    ]:
        answer = web.client.request(method, url, json=body, headers=headers)
        assert answer.status_code == status, (method, url, body, answer.status_code, answer.text)
        assert answer.json()["error"]["field"] == field_, answer.text
    assert _check(web.client.get(base, headers=headers), 200)["name"] == "Nul"


# --- the deletions, last: they may remove the records the tests above name -----------------------

ACCESS = r"/api/v1/projects/\{project_id\}(/members/\{user_id\})?"


@schema.include(method="DELETE").exclude(path_regex=f"^{ACCESS}$").parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_api_fuzz_deletions(case, fuzzed):
    """Deleting tokens and datasets: no server error, answers as the spec documents."""
    _fuzz(case, fuzzed)


@schema.include(method="DELETE", path_regex=f"^{ACCESS}$").parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_api_fuzz_deletions_of_access(case, fuzzed):
    """Deleting members and the project (which may take the fuzzing's own access away)."""
    _fuzz(case, fuzzed)


#: Operations the fuzzing must have carried out at least once (so it went past the 404s).
REACHED = [
    ("POST", "/api/v1/tokens", 201), ("GET", "/api/v1/projects/{project_id}", 200),
    ("PATCH", "/api/v1/projects/{project_id}", 200), ("POST", "/api/v1/projects/{project_id}/members", 201),
    ("POST", "/api/v1/projects/{project_id}/datasets", 201),
    ("GET", "/api/v1/projects/{project_id}/datasets/{dataset_id}", 200),
    ("PATCH", "/api/v1/projects/{project_id}/datasets/{dataset_id}", 200),
    ("GET", "/api/v1/projects/{project_id}/datasets/{dataset_id}/preview", 200),
    ("POST", "/api/v1/projects/{project_id}/recipes/preview", 200),
    ("POST", "/api/v1/projects/{project_id}/recipes", 201),
    ("POST", "/api/v1/projects/{project_id}/runs", 202),
    ("GET", "/api/v1/projects/{project_id}/runs/{run_id}", 200),
    ("GET", "/api/v1/projects/{project_id}/runs/{run_id}/events", 200),
    ("GET", "/api/v1/projects/{project_id}/runs/{run_id}/files/{name}", 200),
    ("POST", "/api/v1/projects/{project_id}/runs/{run_id}/assign", 200),
    ("DELETE", "/api/v1/projects/{project_id}/datasets/{dataset_id}", 204),
]


def test_api_fuzz_reached_the_records(fuzzed):
    """The fuzzing above named real records often enough to succeed at every kind of operation."""
    if not fuzzed.answers:
        pytest.skip("the fuzzing did not run in this session")
    for (method, path, status), count in sorted(fuzzed.answers.items()):
        print(f"{count:5} {method} {path} {status}")
    print(f"{sum(fuzzed.answers.values())} requests")
    assert not [key for key in fuzzed.answers if key[2] >= 500]
    missing = [key for key in REACHED if not fuzzed.answers[key]]
    assert not missing, missing
