"""The service's commands: ``custseg serve``, ``custseg worker`` and ``custseg users add``.

Registered on the main CLI; they import the web stack only when run, so ``custseg --help``
works without the ``web`` extra.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from custseg._optional import require

__all__ = ["register", "web_settings"]

users_app = typer.Typer(help="Manage the web app's user accounts.", no_args_is_help=True, add_completion=False)

_DB = typer.Option("--db", help="Store URL: sqlite:///FILE or postgresql+psycopg://USER@HOST/DB "
                                "(default: CUSTSEG_DB, else SQLite in the data folder).")
_DATA = typer.Option("--data-dir", help="Folder for uploads and runs (default: CUSTSEG_DATA_DIR, else ./custseg-data).")


def web_settings(db: str | None, data_dir: Path | None, **flags):
    """The web settings: ``CUSTSEG_*`` variables, then the flags given."""
    require("fastapi", feature="the web app")
    from custseg.web.config import WebSettings

    return WebSettings.from_env(db_url=db, data_dir=data_dir, **flags)


def serve(
    db: Annotated[Optional[str], _DB] = None,
    data_dir: Annotated[Optional[Path], _DATA] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[Optional[int], typer.Option(help="Job worker processes to start with the server (0: none; run `custseg worker` apart).")] = None,
    demo: Annotated[bool, typer.Option("--demo", help="Create a demo user and a project holding the bundled sample (if missing).")] = False,
    access_log: Annotated[Optional[bool], typer.Option("--access-log/--no-access-log", help="Print a line per request (default: CUSTSEG_ACCESS_LOG, else off).", show_default=False)] = None,
) -> None:
    """Start the web app and REST API (and its job workers)."""
    settings = web_settings(db, data_dir, workers=workers, access_log=access_log)
    uvicorn = require("uvicorn", feature="the web app")
    from custseg.web import runtime

    runtime.serve(settings, host=host, port=port, demo=demo, uvicorn=uvicorn)


def worker(
    db: Annotated[Optional[str], _DB] = None,
    data_dir: Annotated[Optional[Path], _DATA] = None,
    processes: Annotated[int, typer.Option(help="Runs at once in this worker.")] = 1,
) -> None:
    """Run background jobs (segmentation runs) until stopped."""
    settings = web_settings(db, data_dir)
    from custseg.web import runtime

    runtime.work(settings, processes=processes)


@users_app.command("add")
def users_add(
    email: Annotated[str, typer.Argument(help="The user's e-mail address (their sign-in name).", show_default=False)],
    admin: Annotated[bool, typer.Option("--admin", help="Make the user an administrator.")] = False,
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from standard input (else: asked).")] = False,
    db: Annotated[Optional[str], _DB] = None,
    data_dir: Annotated[Optional[Path], _DATA] = None,
) -> None:
    """Create a user account; the password is asked for (or read from stdin), never a flag."""
    settings = web_settings(db, data_dir)
    if password_stdin or not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    from custseg.web import auth
    from custseg.web.store import Store

    store = Store(settings.store_url)
    store.migrate()
    with store.session() as session:
        user = auth.create_user(session, email, password, admin=admin)
        print(f"user {user.email} created{' (administrator)' if admin else ''}")
    store.dispose()


def register(app: typer.Typer) -> None:
    """Add the service's commands to the main CLI."""
    app.command("serve")(serve)
    app.command("worker")(worker)
    app.add_typer(users_app, name="users")
