"""SQL recipes: a DuckDB ``SELECT`` over the project's datasets that makes a new dataset.

A recipe names the project's datasets as tables, by their names (``SELECT *, Quantity *
UnitPrice AS total FROM online_retail WHERE Country = 'France'``).  Names match ignoring case;
a name that is not a plain identifier (letters, digits and ``_``, not starting with a digit,
not an SQL keyword) is written in double quotes, a double quote inside it doubled:
``SELECT * FROM "Mall Customers 2024"``; a dataset named ``a"b`` is ``"a""b"``.  Text values are in single
quotes.  :func:`preview_recipe` shows the first rows; :func:`create_recipe` saves the whole
result as a dataset (Parquet in the project's folder, origin ``recipe``, the SQL kept in
``Dataset.source``), summarised like an upload.

A recipe must not reach anything outside its project, so:

- it is one statement, a ``SELECT`` (or ``WITH … SELECT``, ``VALUES``, ``FROM …``) — checked
  with DuckDB's own parser: no ``ATTACH``, ``COPY``, ``INSTALL``/``LOAD``, ``PRAGMA``, ``SET``,
  ``CREATE``, ``EXPORT``, ``CALL``, no second statement;
- it runs in a fresh in-memory DuckDB connection that holds only the project's datasets the
  query names (views over their tables, made before the connection is locked); then external
  access is switched off (no file paths such as ``read_csv('/etc/passwd')``, no URLs, no
  extensions to install or load; only those datasets' own files stay readable), Python
  objects are not scanned, and the configuration is locked (no ``SET`` can undo any of it);
- within a memory limit (512MB by default, work beyond it spills to a temporary folder of its
  own, at most 2GB), one thread, and a time limit (30 s by default: a timer interrupts the
  connection); the saved result is at most the upload limit.

Every refusal is a :class:`~custseg.errors.ConfigError` naming ``sql``.

Python recipes are not offered, on purpose: a recipe runs on the shared server, and Python
code can do whatever the server's process can — read every project's files and the store's
credentials, open connections, start programs.  No sandbox inside the process makes that
safe, whereas a SQL statement can be checked and confined as above.
"""

from __future__ import annotations

import os
import shutil
import threading
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from custseg.errors import ConfigError, CustsegError, literal
from custseg.web.config import WebSettings
from custseg.web.errors import TooLarge
from custseg.web.services import datasets as datasets_service
from custseg.web.services.projects import audit, get_project
from custseg.web.store.models import Dataset, Project, User

__all__ = ["SQL_LIMIT", "TIME_LIMIT", "MEMORY_LIMIT", "check_sql", "preview_recipe", "create_recipe"]

#: the longest recipe, in characters
SQL_LIMIT = 100_000
#: seconds a recipe may run
TIME_LIMIT = 30.0
MEMORY_LIMIT = "512MB"
#: how much a recipe may spill to disk beyond its memory
SPILL_LIMIT = "2GB"


def check_sql(sql: str) -> str:
    """The one ``SELECT`` statement ``sql`` holds, checked by DuckDB's parser (its text without
    a trailing semicolon); anything else is a :class:`ConfigError` naming ``sql``."""
    import duckdb

    if not isinstance(sql, str) or not sql.strip():
        raise ConfigError("give a SELECT statement over the project's datasets", param="sql")
    if len(sql) > SQL_LIMIT:
        raise ConfigError(f"a recipe has at most {SQL_LIMIT:,} characters", param="sql")
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise ConfigError(f"the SQL does not parse: {literal(_first_line(exc))}", param="sql") from None
    except ValueError:  # a statement type this DuckDB's Python API cannot name: not a SELECT
        raise ConfigError("a recipe is a single SELECT statement (or WITH … SELECT)", param="sql") from None
    if len(statements) != 1:
        raise ConfigError(f"a recipe is a single SELECT statement; this holds {len(statements)}", param="sql")
    statement = statements[0]
    try:
        kind = statement.type
    except ValueError:  # a statement type this DuckDB's Python API cannot name (UPDATE EXTENSIONS)
        kind = None
    if kind != duckdb.StatementType.SELECT:
        raise ConfigError(f"a recipe is a single SELECT statement (or WITH … SELECT), not "
                          f"{kind.name if kind is not None else 'this statement'}; it only reads the project's "
                          "datasets", param="sql")
    return statement.query.strip().rstrip(";").strip()


def _named(db: Session, settings: WebSettings, project: Project, statement: str) -> list[Dataset]:
    """The project's datasets the statement may name (each identifier or keyword of it
    compared with the datasets' names, ignoring case; one too many is harmless, one too few
    would only make the query fail)."""
    import duckdb

    tokens = duckdb.tokenize(statement)
    words = set()
    for i, (start, kind) in enumerate(tokens):
        if kind not in (duckdb.token_type.identifier, duckdb.token_type.keyword):
            continue
        end = tokens[i + 1][0] if i + 1 < len(tokens) else len(statement)
        text = statement[start:end].strip()
        if len(text) >= 2 and text[0] == text[-1] == '"':
            text = text[1:-1].replace('""', '"')
        words.add(text.casefold())
    found = db.scalars(sa.select(Dataset).where(Dataset.project_id == project.id).order_by(Dataset.id))
    return [d for d in found if d.name.casefold() in words and d.table_path
            and datasets_service.table_file(settings, d).is_file()]


class _Sandbox:
    """A locked DuckDB connection holding only ``datasets``, with a time limit."""

    def __init__(self, settings: WebSettings, datasets: list[Dataset], *, memory_limit: str, time_limit: float):
        import duckdb

        from custseg import sources

        self.time_limit = time_limit
        self.spill = Path(settings.library.temp_dir) / f"custseg-recipe-{uuid.uuid4().hex[:12]}"
        self.con = duckdb.connect(":memory:", config={
            "threads": 1, "memory_limit": memory_limit, "temp_directory": str(self.spill),
            "max_temp_directory_size": SPILL_LIMIT, "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
        })
        try:
            files = []
            for dataset in datasets:
                path = datasets_service.table_file(settings, dataset)
                files.append(str(path))
                self.con.execute(f"CREATE VIEW {sources.quote_name(dataset.name)} AS "
                                 f"SELECT * FROM read_parquet({sources.quote_text(path)})")
            self.con.execute("SET allowed_paths = [" + ", ".join(sources.quote_text(f) for f in files) + "]")
            self.con.execute("SET python_enable_replacements = false")
            self.con.execute("SET enable_external_access = false")
            self.con.execute("SET lock_configuration = true")
        except BaseException:
            self.close()
            raise
        self.timer: threading.Timer | None = None
        self.timed_out = False

    def __enter__(self) -> _Sandbox:
        def stop() -> None:
            self.timed_out = True
            self.con.interrupt()

        self.timer = threading.Timer(self.time_limit, stop)
        self.timer.daemon = True
        self.timer.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        timer = getattr(self, "timer", None)
        if timer is not None:
            timer.cancel()
        self.con.close()
        shutil.rmtree(self.spill, ignore_errors=True)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def _refusal(exc: Exception, sandbox: _Sandbox, names: list[str]) -> ConfigError:
    """A DuckDB error as the one line the user needs."""
    import duckdb

    known = ", ".join(names) or "none named in the query"
    if isinstance(exc, duckdb.InterruptException) or sandbox.timed_out:
        return ConfigError(f"the query ran longer than the limit of {sandbox.time_limit:g} s and was stopped; "
                           "make it cheaper (filter early, avoid cross joins)", param="sql")
    if isinstance(exc, duckdb.OutOfMemoryException) or "max_temp_directory_size" in str(exc):
        return ConfigError("the query needs more memory than a recipe may use; make it cheaper "
                           "(fewer columns, filter early, avoid large joins)", param="sql")
    if isinstance(exc, duckdb.PermissionException):
        return ConfigError("the query reaches outside the project (files, URLs, extensions or settings); a "
                           "recipe reads only the project's datasets, by name", param="sql")
    if isinstance(exc, duckdb.CatalogException):
        return ConfigError(f"{literal(_first_line(exc))} — a recipe reads the project's datasets by name "
                           f"(datasets the query names: {literal(known)})", param="sql")
    return ConfigError(f"the query failed: {literal(_first_line(exc))}", param="sql")


def preview_recipe(db: Session, settings: WebSettings, user: User, project_id: int, sql: str, *,
                   rows: int | None = None, time_limit: float = TIME_LIMIT,
                   memory_limit: str = MEMORY_LIMIT) -> dict[str, Any]:
    """The first ``rows`` rows (default: the project's preview size) of the recipe's result:
    ``{"columns": [{"name", "type"}], "rows": [{column: value}], "datasets": [names read]}``,
    values JSON-safe.  Viewer role: it changes nothing."""
    import duckdb

    project, _ = get_project(db, user, project_id)
    rows = project.preview_rows if rows is None else rows
    if isinstance(rows, bool) or not isinstance(rows, int) or not 1 <= rows <= 1000:
        raise ConfigError(f"rows must be between 1 and 1000, got {rows!r}", param="rows")
    statement = check_sql(sql)
    named = _named(db, settings, project, statement)
    names = [d.name for d in named]
    with _Sandbox(settings, named, memory_limit=memory_limit, time_limit=time_limit) as box:
        try:
            relation = box.con.sql(statement)
            if relation is None:
                raise ConfigError("a recipe is a single SELECT statement", param="sql")
            columns = [{"name": c, "type": str(t)} for c, t in zip(relation.columns, relation.types)]
            records = relation.limit(rows).fetchall()
        except duckdb.Error as exc:
            raise _refusal(exc, box, names) from None
    keys = [c["name"] for c in columns]
    return {"columns": columns, "rows": [{k: datasets_service.json_safe(v) for k, v in zip(keys, r)}
                                         for r in records], "datasets": names}


def create_recipe(db: Session, settings: WebSettings, user: User, project_id: int, name: str, sql: str, *,
                  time_limit: float = TIME_LIMIT, memory_limit: str = MEMORY_LIMIT) -> Dataset:
    """Run the recipe and save its whole result as a new dataset named ``name`` (editor role):
    Parquet in the project's folder, origin ``recipe``, ``source`` ``{"sql", "datasets"}``,
    summarised like an upload."""
    import duckdb
    import pyarrow as pa
    import pyarrow.parquet as pq

    project, _ = get_project(db, user, project_id, "editor")
    name = datasets_service._check_name(db, project.id, name)
    statement = check_sql(sql)
    named = _named(db, settings, project, statement)
    names = [d.name for d in named]
    folder = datasets_service._new_folder(settings, project.id)
    try:
        table = folder / datasets_service.TABLE_FILE
        temporary = folder / f"incoming-{uuid.uuid4().hex[:16]}.parquet"
        with _Sandbox(settings, named, memory_limit=memory_limit, time_limit=time_limit) as box:
            try:
                relation = box.con.sql(statement)
                if relation is None:
                    raise ConfigError("a recipe is a single SELECT statement", param="sql")
                reader = relation.to_arrow_reader(64_000) if hasattr(relation, "to_arrow_reader") \
                    else relation.fetch_record_batch(64_000)
                count = 0
                with pq.ParquetWriter(temporary, reader.schema, compression="zstd") as writer:
                    for batch in reader:
                        writer.write_batch(batch)
                        count += batch.num_rows
                        if os.path.getsize(temporary) > settings.upload_limit:
                            raise TooLarge(f"the recipe's result is over the limit of {settings.upload_limit:,} "
                                           "bytes; filter it or keep fewer columns", param="sql")
            except duckdb.Error as exc:
                raise _refusal(exc, box, names) from None
            except pa.ArrowException as exc:
                raise ConfigError(f"the result cannot be saved as a table ({literal(_first_line(exc))}); cast "
                                  "such columns to text or numbers", param="sql") from None
        if count == 0:
            raise ConfigError("the query returned no rows; a dataset needs at least one (check its conditions)",
                              param="sql")
        os.replace(temporary, table)
        try:
            dataset = datasets_service.add_table(
                db, settings, user, project, folder, table, name=name, origin="recipe",
                filename=f"{datasets_service._name_from(name)}.parquet",
                source={"sql": sql, "datasets": names}, label=f"recipe {name}")
        except CustsegError as exc:
            raise ConfigError(literal(str(exc)), param="sql") from None
        audit(db, project, user, "created a recipe", dataset_id=dataset.id, name=name, datasets=names,
              rows=dataset.summary.get("rows"))
        return dataset
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
