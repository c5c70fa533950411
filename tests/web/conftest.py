"""The web app on a real store: SQLite in a temporary folder, and PostgreSQL (the server on this
machine) in a database of its own, created for the test session and dropped after it."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass

import pytest
import sqlalchemy as sa

PG_SERVER = os.environ.get("CUSTSEG_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
PASSWORD = "correct horse battery"


@pytest.fixture(scope="session")
def pg_url():
    """A fresh PostgreSQL database for this test session (dropped at the end)."""
    name = f"custseg_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_SERVER, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as con:
            con.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        pytest.fail(f"PostgreSQL at {PG_SERVER} is not reachable ({exc.orig}); the web tests need it")
    url = sa.engine.make_url(PG_SERVER).set(database=name).render_as_string(hide_password=False)
    yield url
    with admin.connect() as con:
        con.execute(sa.text(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"))
        con.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


@dataclass
class Web:
    """An app, its settings, and helpers to make users and sign in."""

    app: object
    settings: object
    client: object
    password: str = PASSWORD

    def user(self, email: str, *, admin: bool = False) -> dict[str, str]:
        """Create a user; the headers that authenticate as them (a fresh API token)."""
        from custseg.web import auth

        with self.app.state.store.session() as db:
            auth.create_user(db, email, PASSWORD, admin=admin)
        answer = self.client.post("/api/v1/tokens", json={"email": email, "password": PASSWORD})
        assert answer.status_code == 201, answer.text
        return {"Authorization": f"Bearer {answer.json()['token']}"}


def _empty_pg(url: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as con:
        con.execute(sa.text("DROP SCHEMA public CASCADE"))
        con.execute(sa.text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def web(request, tmp_path):
    """The app over SQLite and over PostgreSQL, each test with an empty store and data folder."""
    from fastapi.testclient import TestClient

    from custseg.web import WebSettings, create_app

    db_url = None
    if request.param == "postgresql":
        db_url = request.getfixturevalue("pg_url")
        _empty_pg(db_url)
    settings = WebSettings(data_dir=tmp_path / "data", db_url=db_url, workers=0)
    app = create_app(settings)
    with TestClient(app) as client:
        yield Web(app, settings, client)
    app.state.store.dispose()


@pytest.fixture
def sqlite_web(tmp_path):
    """The app over SQLite only (for tests whose store does not matter)."""
    from fastapi.testclient import TestClient

    from custseg.web import WebSettings, create_app

    settings = WebSettings(data_dir=tmp_path / "data", workers=0)
    app = create_app(settings)
    with TestClient(app) as client:
        yield Web(app, settings, client)
    app.state.store.dispose()
