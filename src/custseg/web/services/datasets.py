"""A project's datasets: uploads, SQL sources and recipes' results, their summary and preview.

Every dataset lives in a folder of its own in the project's folder
(``<projects_dir>/<project id>/datasets/<uuid>/``) and holds:

- the file as it came (uploads, under its sanitised name: no folders, no hidden files);
- ``custseg-table.parquet``, the table as the library read it (for a SQL source or a recipe,
  it is the dataset itself, a snapshot, so runs are reproducible and no credentials are kept).
  Previews, recipes, role changes and runs read it (:func:`source_spec`), so a large text file
  is parsed once.

Uploads are streamed to a temporary file in that folder and moved in place only when the
whole file has arrived; nothing is ever held whole in memory.  Past
``settings.upload_limit`` the upload stops with :class:`~custseg.web.errors.TooLarge` and the
folder is removed.  A file the library refuses (not a data file, empty, a bad encoding, …)
is refused with the library's one-line message (naming the file by the name it was sent
under, ``field`` ``"file"``) and nothing is kept, on disk or in the store.  A file whose roles
cannot be decided (a transaction log without a recognisable customer id) is kept with its
columns and the problem (``summary["problem"]``): the user names the columns with
:func:`set_mapping`, the API's ``PATCH`` (the CLI's ``--map``).

The summary (:func:`summary_of`) is what ``custseg inspect`` shows: rows, columns with their
types, roles, nulls and distinct values, the kind (transaction log or customer table), the
data-quality counts, what cleaning would drop, and the notes of what reading decided.

Dataset names are unique in a project (ignoring case): recipes use them as table names
(:mod:`custseg.web.services.recipes`).  A name made from a file name is a plain SQL
identifier (``Online Retail.xlsx`` → ``Online_Retail``).

Every function checks the caller's role in the project first (viewer to read, editor to
change) and answers a dataset of another project as not found.
"""

from __future__ import annotations

import logging
import math
import os
import re
import secrets
import shutil
import socket
import unicodedata
import uuid
from collections.abc import AsyncIterable, Callable, Iterable, Iterator, Mapping
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from custseg.errors import ConfigError, CustsegError, InputError, SchemaError, literal
from custseg.request import SourceSpec
from custseg.web.config import WebSettings
from custseg.web.errors import Conflict, NotFound, TooLarge
from custseg.web.services.projects import PREVIEW_MODES, audit, get_project, is_id, project_folder
from custseg.web.store.models import Dataset, Project, User

log = logging.getLogger("custseg.web")

__all__ = [
    "TABLE_FILE", "READ_OPTIONS", "KINDS", "upload", "upload_multipart", "add_sql_source", "list_datasets",
    "get_dataset", "summary_of", "preview", "set_mapping", "rename", "delete", "source_spec", "table_file",
    "safe_filename", "json_safe", "sync_chunks", "add_table", "refresh_sql_source",
]

#: the table as read, in each dataset's folder
TABLE_FILE = "custseg-table.parquet"
#: reading options an upload may give (the CLI's --sheet, --encoding, --delimiter, --kind)
READ_OPTIONS = ("sheet", "encoding", "delimiter", "kind")
KINDS = ("transactions", "customers")
#: the largest text field of a multipart upload (a name, an option)
FIELD_LIMIT = 10_000
#: parameters a SQL source URL may carry (others could make the driver read server files)
URL_OPTIONS = frozenset({"sslmode", "connect_timeout", "application_name", "target_session_attrs"})


# --- reading and looking up ----------------------------------------------------------------

def get_dataset(db: Session, user: User, project_id: int, dataset_id: int,
                role: str = "viewer") -> tuple[Project, Dataset]:
    """The project and its dataset; a dataset of another project (or none) is not found."""
    project, _ = get_project(db, user, project_id, role)
    dataset = db.scalar(sa.select(Dataset).where(Dataset.id == dataset_id, Dataset.project_id == project.id)
                        ) if is_id(dataset_id) else None
    if dataset is None:
        raise NotFound(f"no dataset {dataset_id}", param="dataset_id")
    return project, dataset


def list_datasets(db: Session, user: User, project_id: int) -> list[Dataset]:
    """The project's datasets, oldest first."""
    project, _ = get_project(db, user, project_id)
    return list(db.scalars(sa.select(Dataset).where(Dataset.project_id == project.id).order_by(Dataset.id)))


def table_file(settings: WebSettings, dataset: Dataset) -> Path:
    """The dataset's table as the library read it (Parquet), an absolute path."""
    return (settings.data_dir / dataset.table_path).resolve()


def _existing_table(settings: WebSettings, dataset: Dataset) -> Path:
    path = table_file(settings, dataset)
    if not dataset.table_path or not path.is_file():
        raise InputError(f"the table of dataset {dataset.id} is missing from the data folder; upload it again",
                         param="dataset_id")
    return path


def source_spec(settings: WebSettings, dataset: Dataset) -> SourceSpec:
    """What the library reads for this dataset (a run, an inspection): its table with the roles
    the user set and the kind, when one was given."""
    return SourceSpec(source=str(table_file(settings, dataset)), mapping=dict(dataset.mapping or {}),
                      kind=(dataset.source or {}).get("kind"), label=dataset.name)


def summary_of(dataset: Dataset) -> dict[str, Any]:
    """The dataset as the API and the pages show it: what it is, where it came from, and what
    reading found (rows, columns, roles, kind, quality, cleaning, notes, any problem)."""
    summary = dict(dataset.summary or {})
    return {
        "id": dataset.id,
        "project_id": dataset.project_id,
        "name": dataset.name,
        "origin": dataset.origin,
        "filename": dataset.filename,
        "size_bytes": dataset.size_bytes,
        "source": dict(dataset.source or {}),
        "mapping": dict(dataset.mapping or {}),
        "created_at": dataset.created_at,
        "format": summary.get("format"),
        "rows": summary.get("rows", 0),
        "kind": summary.get("kind"),
        "columns": summary.get("columns", []),
        "roles": summary.get("roles", {}),
        "outcomes": summary.get("outcomes", []),
        "row_ids": summary.get("row_ids", False),
        "quality": summary.get("quality", {}),
        "cleaning": summary.get("cleaning"),
        "notes": summary.get("notes", []),
        "problem": summary.get("problem"),
        "encoding": summary.get("encoding"),
        "delimiter": summary.get("delimiter"),
    }


# --- names ---------------------------------------------------------------------------------

def safe_filename(name: str | None) -> str:
    """A file name safe to keep: its last path part only, printable characters, no leading dot
    (no hidden files), at most 200 bytes (keeping the extension); ``upload`` when nothing is left.

    >>> safe_filename("../../etc/passwd"), safe_filename("C:\\\\Users\\\\ann\\\\sales.csv"), safe_filename(".env")
    ('passwd', 'sales.csv', 'env')
    """
    text = unicodedata.normalize("NFC", str(name or "")).replace("\\", "/").split("/")[-1]
    text = "".join(ch if ch.isprintable() else "_" for ch in text)
    text = re.sub(r'[<>:"|?*]', "_", text).strip().lstrip(".").strip().rstrip(".")
    if len(text.encode()) > 200:
        suffix = "".join(Path(text).suffixes[-2:])
        suffix = suffix if len(suffix.encode()) <= 20 else ""
        stem = text[: len(text) - len(suffix)] if suffix else text
        while len((stem + suffix).encode()) > 200:
            stem = stem[:-1]
        text = stem + suffix
    return text or "upload"


def _name_from(filename: str) -> str:
    """A dataset name from a file name: a plain SQL identifier (``Online Retail.xlsx`` →
    ``Online_Retail``)."""
    stem = filename
    for suffix in (".gz", ".zst"):
        stem = stem.removesuffix(suffix)
    stem = Path(stem).stem if "." in stem.lstrip(".") else stem
    ident = re.sub(r"[^0-9A-Za-z_]+", "_", stem).strip("_")[:150]
    if not ident:
        return "data"
    return "data_" + ident if ident[0].isdigit() else ident


def _check_name(db: Session, project_id: int, name: str | None, *, exclude: int | None = None) -> str:
    text = (name or "").strip()
    if not text:
        raise ConfigError("a dataset needs a name", param="name")
    if len(text) > 200:
        raise ConfigError("a dataset name has at most 200 characters", param="name")
    if not all(ch.isprintable() for ch in text):
        raise ConfigError("a dataset name cannot hold control characters", param="name")
    if text.casefold() in _taken_names(db, project_id, exclude):
        raise Conflict(f"the project has a dataset named '{literal(text)}' already (names are compared "
                       "ignoring case: recipes use them as table names); choose another name", param="name")
    return text


def _taken_names(db: Session, project_id: int, exclude: int | None = None) -> set[str]:
    query = sa.select(Dataset.name).where(Dataset.project_id == project_id)
    if exclude is not None:
        query = query.where(Dataset.id != exclude)
    return {n.casefold() for n in db.scalars(query)}


def _flush_named(db: Session, dataset: Dataset, pick_again=None, *, name: str | None = None) -> None:
    """Add and flush ``dataset`` (renamed to ``name`` if given).  A name another request took
    since it was checked (the database's unique index on the project's names settles it) is
    picked again with ``pick_again()`` for a name the app chose, else it is a Conflict naming
    ``name``."""
    wanted = dataset.name if name is None else name
    for _ in range(5):
        try:
            with db.begin_nested():  # the name is set inside: a refused one leaves the transaction usable
                db.add(dataset)
                dataset.name = wanted
                db.flush()
            return
        except sa.exc.IntegrityError as exc:
            if "ux_datasets_project_name" not in str(exc.orig):
                raise
            if pick_again is None:
                break
            wanted = pick_again()
    raise Conflict(f"the project has a dataset named '{literal(wanted)}' already (names are compared "
                   "ignoring case: recipes use them as table names); choose another name", param="name")


def _unique_name(db: Session, project_id: int, base: str) -> str:
    taken = _taken_names(db, project_id)
    name, n = base, 2
    while name.casefold() in taken:
        name, n = f"{base}_{n}", n + 1
    return name


# --- receiving files -----------------------------------------------------------------------

class _Incoming:
    """A file arriving in chunks: written to a temporary file in ``folder``, counted against
    ``limit``, moved to ``folder/name`` by :meth:`finish` only when complete."""

    def __init__(self, folder: Path, name: str, limit: int) -> None:
        self.folder, self.name, self.limit, self.size = folder, name, limit, 0
        self.temporary = folder / f"incoming-{secrets.token_hex(8)}.part"
        self._file = open(self.temporary, "xb")

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            self.close()
            raise TooLarge(f"the file is over the upload limit of {self.limit:,} bytes", param="file")
        self._file.write(chunk)

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def finish(self) -> Path:
        self._file.flush()
        os.fsync(self._file.fileno())
        self.close()
        target = self.folder / self.name
        os.replace(self.temporary, target)
        return target


def _new_folder(settings: WebSettings, project_id: int) -> Path:
    folder = project_folder(settings, project_id) / "datasets" / uuid.uuid4().hex
    folder.mkdir(parents=True)
    return folder


def _kept_name(filename: str) -> str:
    name = safe_filename(filename)
    return f"upload-{name}" if name == TABLE_FILE else name


def upload(db: Session, settings: WebSettings, user: User, project_id: int, filename: str,
           chunks: Iterable[bytes], *, name: str | None = None,
           options: Mapping[str, str | None] | None = None) -> Dataset:
    """Add an uploaded file to the project (editor role): ``chunks`` are its bytes, streamed to
    disk, never held whole.  ``name`` defaults to one made from ``filename``; ``options`` are
    the reading options (:data:`READ_OPTIONS`).  Returns the new dataset, summarised; raises
    :class:`TooLarge` past the upload limit, and the library's error (``field`` ``file``) for a
    file it cannot read — leaving nothing behind either way."""
    project, _ = get_project(db, user, project_id, "editor")
    options = _read_options(options)
    if name is not None:
        _check_name(db, project.id, name)
    folder = _new_folder(settings, project.id)
    try:
        incoming = _Incoming(folder, _kept_name(filename), settings.upload_limit)
        try:
            for chunk in chunks:
                if chunk:
                    incoming.write(chunk)
            path = incoming.finish()
        finally:
            incoming.close()
        return _add_file(db, settings, user, project, folder, path, safe_filename(filename), name, options)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def upload_multipart(db: Session, settings: WebSettings, user: User, project_id: int, content_type: str,
                     body: Iterable[bytes], *,
                     check_fields: Callable[[dict[str, str]], None] | None = None) -> Dataset:
    """Add the file of a ``multipart/form-data`` body (field ``file``; optional text fields
    ``name`` and the reading options :data:`READ_OPTIONS`) to the project (editor role).

    The body is parsed as it streams (python-multipart's push parser): the file part goes to
    disk chunk by chunk.  The body is counted against ``settings.upload_limit`` too.
    ``check_fields`` (e.g. a page's CSRF check) is called with the text fields once the body has
    arrived, before the file is read.  Otherwise as :func:`upload`."""
    from python_multipart.multipart import MultipartParseError, MultipartParser, parse_options_header

    project, _ = get_project(db, user, project_id, "editor")
    kind, params = parse_options_header(content_type or "")
    boundary = params.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise ConfigError("send the file as multipart/form-data, in the field 'file'", param="file")
    folder = _new_folder(settings, project.id)
    state: dict[str, Any] = {"headers": {}, "field": None, "value": None, "header": b"", "header_value": b"",
                             "incoming": None, "filename": None, "path": None, "ended": False}
    fields: dict[str, str] = {}

    def on_part_begin() -> None:
        state.update(headers={}, field=None, value=None, header=b"", header_value=b"")

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["header"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["header_value"] += data[start:end]

    def on_header_end() -> None:
        state["headers"][state["header"].decode("latin-1").lower()] = state["header_value"]
        state["header"], state["header_value"] = b"", b""

    def on_headers_finished() -> None:
        disposition = state["headers"].get("content-disposition", b"")
        _, options = parse_options_header(disposition.decode("latin-1"))
        field = options.get(b"name", b"").decode("utf-8", "replace")
        state["field"] = field
        if field == "file" and b"filename" in options:
            if state["incoming"] is not None or state["path"] is not None:
                raise ConfigError("send one file per upload", param="file")
            state["filename"] = options[b"filename"].decode("utf-8", "replace")
            state["incoming"] = _Incoming(folder, _kept_name(state["filename"]), settings.upload_limit)
        else:
            state["value"] = bytearray()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if state["incoming"] is not None:
            state["incoming"].write(data[start:end])
        elif state["value"] is not None:
            state["value"] += data[start:end]
            if len(state["value"]) > FIELD_LIMIT:
                raise ConfigError(f"the form field '{literal(state['field'])}' is over {FIELD_LIMIT:,} bytes",
                                  param=state["field"] or None)

    def on_part_end() -> None:
        if state["incoming"] is not None:
            state["path"] = state["incoming"].finish()
            state["incoming"] = None
        elif state["value"] is not None and state["field"]:
            fields[state["field"]] = state["value"].decode("utf-8", "replace")
        state["value"] = None

    def on_end() -> None:
        state["ended"] = True

    parser = MultipartParser(boundary, {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_headers_finished": on_headers_finished, "on_part_data": on_part_data,
        "on_part_end": on_part_end, "on_end": on_end,
    })
    received = 0
    try:
        try:
            for chunk in body:
                received += len(chunk)
                if received > settings.upload_limit + FIELD_LIMIT * 10:
                    raise TooLarge(f"the upload is over the limit of {settings.upload_limit:,} bytes", param="file")
                parser.write(chunk)
            parser.finalize()
        except MultipartParseError as exc:
            raise ConfigError(f"the upload is not a valid multipart/form-data body ({exc})", param="file") from None
        finally:
            if state["incoming"] is not None:
                state["incoming"].close()
        if state["path"] is None:
            raise ConfigError("send the file in the multipart field 'file'", param="file")
        if not state["ended"]:
            raise ConfigError("the upload ended before the whole body arrived; send it again", param="file")
        if check_fields is not None:
            check_fields(dict(fields))
        options = {key: fields.get(key) or None for key in READ_OPTIONS}
        name = fields.get("name") or None
        if name is not None:
            _check_name(db, project.id, name)
        return _add_file(db, settings, user, project, folder, state["path"], safe_filename(state["filename"]),
                         name, _read_options(options))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def sync_chunks(stream: AsyncIterable[bytes]) -> Iterator[bytes]:
    """The chunks of an async stream (a request's ``request.stream()``), for a service function
    running in a worker thread of the event loop (``starlette.concurrency.run_in_threadpool``):
    each chunk is awaited on the loop, so the body still arrives one chunk at a time."""
    import anyio.from_thread

    iterator = stream.__aiter__()
    while True:
        try:
            chunk = anyio.from_thread.run(iterator.__anext__)
        except StopAsyncIteration:
            return
        if chunk:
            yield chunk


def _read_options(options: Mapping[str, str | None] | None) -> dict[str, str]:
    chosen = {key: str(value) for key, value in (options or {}).items() if value not in (None, "")}
    unknown = sorted(set(chosen) - set(READ_OPTIONS))
    if unknown:
        raise ConfigError(f"unknown reading option {', '.join(unknown)}; the options are "
                          f"{', '.join(READ_OPTIONS)}", param=unknown[0])
    if "kind" in chosen and chosen["kind"] not in KINDS:
        raise ConfigError(f"kind must be transactions or customers, got '{literal(chosen['kind'])}'", param="kind")
    return chosen


# --- summarising ---------------------------------------------------------------------------

def _relabel(exc: CustsegError, names: Mapping[str, str], param: str | None) -> CustsegError:
    """The error with server paths replaced by the names the user knows, and ``param``."""
    message = exc.render()
    for old, new in names.items():
        message = message.replace(old, new)
    error = type(exc)(literal(message), param=param, problems=exc.problems)
    return error


def _file_param(exc: CustsegError) -> str:
    return exc.param if exc.param in READ_OPTIONS else "file"


def _read(settings: WebSettings, spec: SourceSpec, names: Mapping[str, str],
          param: Callable[[CustsegError], str | None]):
    """Load and inspect ``spec`` with the library: (loaded, inspection), or (table, None) when
    the roles cannot be decided (``summary["problem"]``); errors relabelled."""
    import duckdb

    from custseg import pipeline, sources

    try:
        loaded = pipeline.load(spec, settings=settings.library)
    except SchemaError as exc:
        if exc.param != "mapping" or spec.mapping:
            raise _relabel(exc, names, param(exc)) from None
        # The columns are readable; which plays the customer id is for the user to say.
        try:
            table = sources.read(spec.source, sheet=spec.sheet, table=spec.table, query=spec.query,
                                 encoding=spec.encoding, delimiter=spec.delimiter,
                                 con=sources.connect(settings=settings.library))
        except CustsegError as again:
            raise _relabel(again, names, param(again)) from None
        return table, _relabel(exc, names, "mapping")
    except CustsegError as exc:
        raise _relabel(exc, names, param(exc)) from None
    except Exception as exc:  # a reader's failure the library does not name: still the file's fault
        if isinstance(exc, duckdb.OutOfMemoryException):
            raise
        log.warning("reading %s failed", spec.source, exc_info=True)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise InputError(literal(f"{names.get(spec.source, 'the source')}: cannot be read ({first})"),
                         param=param(InputError(""))) from None
    try:
        found = pipeline.inspect(loaded)
    except CustsegError as exc:
        loaded.table.con.close()
        raise _relabel(exc, names, param(exc)) from None
    return loaded, found


def _summary(read, names: Mapping[str, str], read_notes: list[str] | None = None) -> dict[str, Any]:
    """What reading found, JSON-ready (``read`` is what :func:`_read` returned)."""
    from custseg import sources

    loaded, found = read

    def named(text: str) -> str:
        for old, new in names.items():
            text = text.replace(old, new)
        return text

    if isinstance(found, CustsegError):  # the roles need the user: columns only
        table = loaded
        q = sources.quote_name
        stats = table.con.execute(
            "SELECT " + ", ".join(f"count(*) - count({q(c)}), count(DISTINCT {q(c)})" for c in table.columns)
            + ", count(*) FROM source").fetchall()[0]
        notes = list(read_notes if read_notes is not None else table.notes)
        return json_safe({
            "format": table.format, "rows": int(stats[-1]), "kind": None,
            "columns": [{"name": c, "type": table.types[c], "role": "", "nulls": int(stats[2 * i]),
                         "distinct": int(stats[2 * i + 1])} for i, c in enumerate(table.columns)],
            "roles": {}, "outcomes": [], "row_ids": False, "quality": {}, "cleaning": None,
            "notes": [named(n) for n in notes], "read_notes": [named(n) for n in notes],
            "problem": {"message": str(found), "field": "mapping"},
            "encoding": table.encoding, "delimiter": table.delimiter,
        })
    cmap = loaded.column_map
    quality = {}
    for key, value in found.quality.items():
        if isinstance(value, CustsegError):
            value = named(value.render())
        quality[key] = value
    report = found.report
    cleaning = None if report is None else {
        "rows_in": report.rows_in, "rows_out": report.rows_out,
        "dropped": [{"rule": r.rule, "rows": r.rows, "description": r.description} for r in report.dropped],
        "notes": [named(n) for n in report.notes],
    }
    table_notes = list(read_notes if read_notes is not None else loaded.table.notes)
    notes = table_notes + [n for n in loaded.notes if n not in table_notes]
    return json_safe({
        "format": found.format, "rows": found.rows, "kind": found.kind,
        "columns": [{"name": row.column, "type": row.type, "role": row.role, "nulls": row.nulls,
                     "distinct": row.distinct} for row in found.columns.itertuples(index=False)],
        "roles": dict(cmap.roles), "outcomes": list(cmap.outcomes), "row_ids": bool(cmap.row_ids),
        "quality": quality, "cleaning": cleaning, "notes": [named(n) for n in notes],
        "read_notes": [named(n) for n in table_notes], "problem": None,
        "encoding": loaded.table.encoding, "delimiter": loaded.table.delimiter,
    })


def _connection_of(read):
    loaded, found = read
    return loaded.con if isinstance(found, CustsegError) else loaded.table.con


def _snapshot(con, target: Path) -> None:
    """Write the connection's ``source`` view to ``target`` (Parquet), whole or not at all."""
    from custseg import sources

    temporary = target.with_name(f"incoming-{secrets.token_hex(8)}.parquet")
    try:
        con.execute(f"COPY (SELECT * FROM source) TO {sources.quote_text(temporary)} "
                    "(FORMAT parquet, COMPRESSION zstd)")
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _remove_on_rollback(db: Session, folder: Path) -> None:
    """Remove ``folder`` if the session's transaction is rolled back instead of committed (the
    dataset's row never made it to the store: its files must not stay)."""
    state = {"open": True}

    def committed(_session) -> None:
        state["open"] = False

    def rolled_back(_session) -> None:
        if state["open"]:
            state["open"] = False
            shutil.rmtree(folder, ignore_errors=True)

    sa.event.listen(db, "after_commit", committed)
    sa.event.listen(db, "after_rollback", rolled_back)


def _remove_on_commit(db: Session, folder: Path) -> None:
    """Remove ``folder`` once the session's transaction is committed (a deleted dataset's files
    stay while its row might still come back)."""
    state = {"open": True}

    def committed(_session) -> None:
        if state["open"]:
            state["open"] = False
            shutil.rmtree(folder, ignore_errors=True)

    def rolled_back(_session) -> None:
        state["open"] = False

    sa.event.listen(db, "after_commit", committed)
    sa.event.listen(db, "after_rollback", rolled_back)


def _relative(settings: WebSettings, path: Path) -> str:
    return path.resolve().relative_to(settings.data_dir.resolve()).as_posix()


def _add_file(db: Session, settings: WebSettings, user: User, project: Project, folder: Path, path: Path,
              filename: str, name: str | None, options: dict[str, str]) -> Dataset:
    """Read an uploaded file, keep its table and summary, and record the dataset."""
    names = {str(path): filename, str(folder) + os.sep: ""}
    spec = SourceSpec(source=str(path), sheet=options.get("sheet"), encoding=options.get("encoding"),
                      delimiter=options.get("delimiter"), kind=options.get("kind"))
    read = _read(settings, spec, names, _file_param)
    try:
        summary = _summary(read, names)
        _snapshot(_connection_of(read), folder / TABLE_FILE)
    finally:
        _connection_of(read).close()
    dataset = Dataset(project_id=project.id, origin="upload", filename=filename,
                      name=name.strip() if name else _unique_name(db, project.id, _name_from(filename)),
                      path=_relative(settings, path), table_path=_relative(settings, folder / TABLE_FILE),
                      size_bytes=path.stat().st_size, source=dict(options), mapping={}, summary=summary,
                      created_by=user.id)
    _flush_named(db, dataset, None if name else lambda: _unique_name(db, project.id, _name_from(filename)))
    _remove_on_rollback(db, folder)
    audit(db, project, user, "uploaded a dataset", dataset_id=dataset.id, name=dataset.name, file=filename,
          bytes=dataset.size_bytes, rows=summary.get("rows"))
    return dataset


def add_table(db: Session, settings: WebSettings, user: User, project: Project, folder: Path, table: Path, *,
              name: str, origin: str, filename: str, source: dict[str, Any], label: str,
              read_notes: list[str] | None = None) -> Dataset:
    """Record a dataset whose table is already a Parquet file ``folder/TABLE_FILE`` (a SQL
    source's snapshot, a recipe's result): read it with the library, summarise it, add it.
    For the other services of the app; the caller has checked the project and the name, and
    removes ``folder`` when this raises."""
    names = {str(table): label, str(folder) + os.sep: ""}

    def param(exc: CustsegError) -> str:
        return "sql" if origin == "recipe" else "url"

    read = _read(settings, SourceSpec(source=str(table)), names, param)
    try:
        summary = _summary(read, names, read_notes=read_notes)
    finally:
        _connection_of(read).close()
    relative = _relative(settings, table)
    dataset = Dataset(project_id=project.id, origin=origin, filename=filename, name=name, path=relative,
                      table_path=relative, size_bytes=table.stat().st_size, source=source, mapping={},
                      summary=summary, created_by=user.id)
    _flush_named(db, dataset, None)
    _remove_on_rollback(db, folder)
    return dataset


# --- SQL sources ---------------------------------------------------------------------------

def add_sql_source(db: Session, settings: WebSettings, user: User, project_id: int, name: str, url: str, *,
                   table: str | None = None, query: str | None = None) -> Dataset:
    """Add a table (or a query's result) of a database to the project (editor role), read
    through the library's SQL reader and kept as a Parquet snapshot: runs are reproducible and
    no credentials are kept (the URL is stored without its password).

    The server makes the connection, so a URL reaches what the server can reach: the app's
    own store and SQLite files inside the data folder are refused, and so are URL parameters
    other than :data:`URL_OPTIONS` (libpq's ``passfile``, ``sslkey``, ``service`` … read server
    files).  An operator who must not let editors reach databases near the server keeps the
    server's network (and a PostgreSQL server's trust authentication) closed to it."""
    project, _ = get_project(db, user, project_id, "editor")
    name = _check_name(db, project.id, name)
    if bool(table) == bool(query):
        raise ConfigError("give exactly one of table or query", param="table" if not query else "query")
    kept_url = _check_url(settings, url)
    folder = _new_folder(settings, project.id)
    try:
        label = sa.engine.make_url(url).render_as_string(hide_password=True)
        read = _read(settings, SourceSpec(source=url, table=table, query=query), {}, _sql_param)
        try:
            _snapshot(_connection_of(read), folder / TABLE_FILE)
            read_notes = list(read[0].notes if isinstance(read[1], CustsegError) else read[0].table.notes)
        finally:
            _connection_of(read).close()
        source = {"url": kept_url, **({"table": table} if table else {"query": query})}
        dataset = add_table(db, settings, user, project, folder, folder / TABLE_FILE, name=name, origin="sql",
                            filename=f"{_name_from(table) if table else 'query'}.parquet", source=source,
                            label=label, read_notes=read_notes)
        audit(db, project, user, "added a SQL source", dataset_id=dataset.id, name=name, url=kept_url,
              table=table, rows=dataset.summary.get("rows"))
        return dataset
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def refresh_sql_source(db: Session, settings: WebSettings, user: User, project_id: int, dataset_id: int, *,
                       password: str | None = None) -> Dataset:
    """Read a SQL source's table or query again (editor role) from the URL kept without its
    password (``password`` gives it again when the database needs one) and make it the
    dataset's table, with the roles the user set (the detected ones, said in the audit, when
    the new table lacks a column they name).  The new snapshot replaces the old one when the
    store commits (runs already made keep their own results; runs started later read the new
    table); on any error nothing changes."""
    project, dataset = get_dataset(db, user, project_id, dataset_id, "editor")
    source = dict(dataset.source or {})
    if dataset.origin != "sql" or not source.get("url"):
        raise Conflict(f"dataset {dataset.id} is {'an upload' if dataset.origin == 'upload' else 'a recipe'}; only a "
                       "SQL source is read again (upload the file again, or save the recipe again)",
                       param="dataset_id")
    url = sa.engine.make_url(source["url"])
    if password:
        url = url.set(password=password)
    url = url.render_as_string(hide_password=False)
    _check_url(settings, url)
    table = _existing_table(settings, dataset)
    incoming = table.with_name(f"refresh-{secrets.token_hex(8)}.parquet")
    try:
        read = _read(settings, SourceSpec(source=url, table=source.get("table"), query=source.get("query")), {},
                     _sql_param)
        try:
            _snapshot(_connection_of(read), incoming)
            read_notes = list(read[0].notes if isinstance(read[1], CustsegError) else read[0].table.notes)
        finally:
            _connection_of(read).close()
        label = sa.engine.make_url(url).render_as_string(hide_password=True)
        names = {str(incoming): label, str(table.parent) + os.sep: ""}
        mapping, reset = dict(dataset.mapping or {}), False
        try:
            read = _read(settings, SourceSpec(source=str(incoming), mapping=mapping, kind=source.get("kind")), names,
                         lambda exc: "mapping")
        except CustsegError:
            if not mapping:
                raise
            mapping, reset = {}, True  # the roles named columns the table no longer has
            read = _read(settings, SourceSpec(source=str(incoming), kind=source.get("kind")), names, _sql_param)
        try:
            summary = _summary(read, names, read_notes=read_notes)
        finally:
            _connection_of(read).close()
    except BaseException:
        incoming.unlink(missing_ok=True)
        raise
    before = (dataset.summary or {}).get("rows")
    dataset.mapping, dataset.summary, dataset.size_bytes = mapping, summary, incoming.stat().st_size
    audit(db, project, user, "refreshed a SQL source", dataset_id=dataset.id, name=dataset.name, url=source["url"],
          rows_before=before, rows=summary.get("rows"), **({"roles_reset": True} if reset else {}))
    db.flush()
    _replace_on_commit(db, incoming, table)
    return dataset


def _replace_on_commit(db: Session, incoming: Path, target: Path) -> None:
    """Move ``incoming`` over ``target`` when the session's transaction is committed; remove it
    if it is rolled back."""
    state = {"open": True}

    def committed(_session) -> None:
        if state["open"]:
            state["open"] = False
            os.replace(incoming, target)

    def rolled_back(_session) -> None:
        if state["open"]:
            state["open"] = False
            incoming.unlink(missing_ok=True)

    sa.event.listen(db, "after_commit", committed)
    sa.event.listen(db, "after_rollback", rolled_back)


def _sql_param(exc: CustsegError) -> str:
    return exc.param if exc.param in ("table", "query") else "url"


def _check_url(settings: WebSettings, url: str) -> str:
    """Refuse a URL that would reach the app's own data; the URL to keep (no password)."""
    if "\x00" in url:
        raise ConfigError("url cannot hold the NUL character", param="url")
    try:
        parsed = sa.engine.make_url(url)
    except Exception:
        raise ConfigError("url is not a database URL; give e.g. postgresql+psycopg://user@host/db "
                          "or sqlite:///path/to/file.db", param="url") from None
    backend = parsed.get_backend_name()
    if backend not in ("postgresql", "sqlite"):
        raise ConfigError(f"SQL sources are PostgreSQL or SQLite databases, got {literal(backend)}", param="url")
    extra = sorted(set(parsed.query) - URL_OPTIONS)
    if extra:
        raise ConfigError(f"the URL parameter{'s' if len(extra) > 1 else ''} {literal(', '.join(extra))} "
                          f"{'are' if len(extra) > 1 else 'is'} not accepted; the URL may carry "
                          f"{', '.join(sorted(URL_OPTIONS))}", param="url")
    store = sa.engine.make_url(settings.store_url)
    if backend == "sqlite":
        database = parsed.database or ""
        if database.startswith("file:"):
            raise ConfigError("give a SQLite database as sqlite:///path/to/file.db (file: URIs are not "
                              "accepted)", param="url")
        if database and database != ":memory:":
            where = Path(database).resolve()
            data = settings.data_dir.resolve()
            if where == data or data in where.parents or (
                    store.get_backend_name() == "sqlite" and store.database
                    and where == Path(store.database).resolve()):
                raise ConfigError("the URL points into the app's own data folder; give another database",
                                  param="url")
    elif store.get_backend_name() == "postgresql" and (parsed.database or "") == (store.database or "") \
            and (parsed.port or 5432) == (store.port or 5432) and _same_host(parsed.host, store.host):
        raise ConfigError("the URL points at the app's own store; give another database", param="url")
    bare = sa.engine.URL.create(parsed.drivername, username=parsed.username, host=parsed.host, port=parsed.port,
                                database=parsed.database, query=parsed.query)
    return bare.render_as_string(hide_password=False)


def _same_host(a: str | None, b: str | None) -> bool:
    def addresses(host: str | None) -> set[str]:
        host = host or "localhost"
        try:
            return {info[4][0] for info in socket.getaddrinfo(host, None)} | {host}
        except OSError:
            return {host}

    first, second = addresses(a), addresses(b)
    loopback = {"127.0.0.1", "::1", "localhost"}
    return bool(first & second) or bool(first & loopback and second & loopback)


# --- preview, roles, names, deletion -------------------------------------------------------

def preview(db: Session, settings: WebSettings, user: User, project_id: int, dataset_id: int,
            rows: int | None = None, mode: str | None = None, *, seed: int | None = None) -> dict[str, Any]:
    """``rows`` rows of the dataset (default: the project's preview settings), the ``first``,
    ``last`` or a ``random`` sample (in file order; ``seed`` repeats one): ``{"dataset_id",
    "mode", "total_rows", "columns": [{"name", "type"}], "rows": [{column: value}],
    "row_numbers": [1-based]}``; values JSON-safe (dates as ISO text, NaN as null)."""
    project, dataset = get_dataset(db, user, project_id, dataset_id)
    rows = project.preview_rows if rows is None else rows
    mode = project.preview_mode if mode is None else mode
    if isinstance(rows, bool) or not isinstance(rows, int) or not 1 <= rows <= 1000:
        raise ConfigError(f"rows must be between 1 and 1000, got {rows!r}", param="rows")
    if mode not in PREVIEW_MODES:
        raise ConfigError(f"mode must be one of {', '.join(PREVIEW_MODES)}, got {literal(mode)!r}", param="mode")
    if seed is not None and not 0 <= int(seed) < 2**31:
        raise ConfigError(f"seed must be between 0 and {2**31 - 1}, got {seed}", param="seed")
    from custseg import sources

    table = _existing_table(settings, dataset)
    con = sources.connect(settings=settings.library)
    try:
        con.execute(f"CREATE VIEW data AS SELECT * FROM read_parquet({sources.quote_text(table)})")
        relation = con.sql("SELECT * FROM data")
        columns = [{"name": c, "type": str(t)} for c, t in zip(relation.columns, relation.types)]
        total = int(con.execute("SELECT count(*) FROM data").fetchall()[0][0])
        taken = {c.casefold() for c in relation.columns}
        position = next(f"custseg_row_{i}" for i in range(len(taken) + 1) if f"custseg_row_{i}" not in taken)
        numbered = f"SELECT row_number() OVER () AS {position}, * FROM data"
        if mode == "first":
            query = f"{numbered} LIMIT {rows}"
        elif mode == "last":
            query = f"SELECT * FROM ({numbered}) OFFSET {max(total - rows, 0)}"
        else:
            seed = secrets.randbelow(2**31) if seed is None else int(seed)
            query = (f"SELECT * FROM ({numbered}) USING SAMPLE reservoir({rows} ROWS) REPEATABLE ({seed}) "
                     f"ORDER BY {position}")
        records = con.sql(query).fetchall()
    finally:
        con.close()
    names = [c["name"] for c in columns]
    return {
        "dataset_id": dataset.id, "mode": mode, "total_rows": total, "columns": columns,
        "rows": [{n: json_safe(v) for n, v in zip(names, record[1:])} for record in records],
        "row_numbers": [int(record[0]) for record in records],
    }


def set_mapping(db: Session, settings: WebSettings, user: User, project_id: int, dataset_id: int,
                mapping: Mapping[str, str] | None = None, *, name: str | None = None,
                kind: str | None = None) -> Dataset:
    """Change the dataset's column roles (editor role) — the CLI's ``--map``: ``mapping`` is
    role → column (``{}`` goes back to the detected roles), ``kind`` forces transactions or
    customers (``""`` back to detected) — and re-inspect it; and/or rename it.  A mapping the
    library refuses is an error naming ``mapping`` (nothing changes)."""
    project, dataset = get_dataset(db, user, project_id, dataset_id, "editor")
    if name is not None and name.strip() != dataset.name:
        old = dataset.name
        _flush_named(db, dataset, None, name=_check_name(db, project.id, name, exclude=dataset.id))
        audit(db, project, user, "renamed a dataset", dataset_id=dataset.id, old=old, name=dataset.name)
    if mapping is None and kind is None:
        return dataset
    from custseg.request import parse_mapping

    if mapping is not None:
        if not isinstance(mapping, Mapping) or not all(isinstance(k, str) and isinstance(v, str)
                                                        for k, v in mapping.items()):
            raise ConfigError("mapping is an object of role: column", param="mapping")
        mapping = parse_mapping([f"{role}={column}" for role, column in mapping.items()])
    new_mapping = dict(dataset.mapping or {}) if mapping is None else mapping
    source = dict(dataset.source or {})
    if kind is not None:
        if kind and kind not in KINDS:
            raise ConfigError(f"kind must be transactions or customers, got '{literal(kind)}'", param="kind")
        source.pop("kind", None)
        if kind:
            source["kind"] = kind
    table = _existing_table(settings, dataset)
    names = {str(table): dataset.filename or dataset.name, str(table.parent) + os.sep: ""}
    spec = SourceSpec(source=str(table), mapping=new_mapping, kind=source.get("kind"))
    read = _read(settings, spec, names, lambda exc: exc.param if exc.param in ("mapping", "kind") else "mapping")
    try:
        summary = _summary(read, names, read_notes=list((dataset.summary or {}).get("read_notes", [])))
    finally:
        _connection_of(read).close()
    dataset.mapping, dataset.source, dataset.summary = new_mapping, source, summary
    audit(db, project, user, "changed roles", dataset_id=dataset.id, name=dataset.name, mapping=new_mapping,
          kind=source.get("kind"))
    return dataset


def rename(db: Session, user: User, project_id: int, dataset_id: int, name: str) -> Dataset:
    """Rename the dataset (editor role); names are unique in the project, ignoring case."""
    project, dataset = get_dataset(db, user, project_id, dataset_id, "editor")
    if name.strip() != dataset.name:
        old = dataset.name
        _flush_named(db, dataset, None, name=_check_name(db, project.id, name, exclude=dataset.id))
        audit(db, project, user, "renamed a dataset", dataset_id=dataset.id, old=old, name=dataset.name)
    return dataset


def delete(db: Session, settings: WebSettings, user: User, project_id: int, dataset_id: int) -> None:
    """Delete the dataset and its files (editor role); runs made from it keep their results."""
    project, dataset = get_dataset(db, user, project_id, dataset_id, "editor")
    folder = (settings.data_dir / dataset.table_path).parent if dataset.table_path else None
    audit(db, project, user, "deleted a dataset", dataset_id=dataset.id, name=dataset.name)
    db.delete(dataset)
    db.flush()
    if folder is not None and folder.resolve().parent == (project_folder(settings, project.id) / "datasets").resolve():
        _remove_on_commit(db, folder)


# --- values --------------------------------------------------------------------------------

def json_safe(value: Any) -> Any:
    """``value`` as JSON can carry it: dates and times as ISO text, NaN and infinities as null,
    decimals as numbers, bytes as hex, durations in seconds; containers element by element."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        return float(value) if value.is_finite() else None
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_safe(v) for v in value]
    item = getattr(value, "item", None)  # NumPy scalars
    if callable(item):
        try:
            return json_safe(item())
        except (TypeError, ValueError):
            pass
    return str(value)
