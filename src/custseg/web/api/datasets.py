"""Datasets (uploads and SQL sources), their preview and roles, and SQL recipes."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from custseg.errors import ConfigError
from custseg.web import auth
from custseg.web.api.common import Timestamp
from custseg.web.config import WebSettings
from custseg.web.deps import get_db, get_settings, identity
from custseg.web.errors import TooLarge
from custseg.web.services import datasets as service
from custseg.web.services import recipes

router = APIRouter(tags=["datasets"])


class RefreshIn(BaseModel):
    """Read a SQL source again; ``password`` when its database needs one (it is not kept)."""

    password: str | None = Field(None, max_length=1000)


class SqlSourceIn(BaseModel):
    """A table or a query's result from a PostgreSQL or SQLite database (exactly one of
    ``table`` and ``query``); kept as a snapshot, the URL without its password."""

    name: str = Field(min_length=1, max_length=200)
    url: str = Field(min_length=1, max_length=2000)
    table: str | None = Field(None, max_length=500)
    query: str | None = Field(None, max_length=100_000)


class ColumnOut(BaseModel):
    name: str
    type: str
    role: str
    nulls: int
    distinct: int


class DroppedOut(BaseModel):
    rule: str
    rows: int
    description: str


class CleaningOut(BaseModel):
    rows_in: int
    rows_out: int
    dropped: list[DroppedOut]
    notes: list[str]


class ProblemOut(BaseModel):
    message: str
    field: str | None


class DatasetOut(BaseModel):
    id: int
    project_id: int
    name: str
    origin: str
    filename: str
    size_bytes: int
    source: dict[str, Any]
    mapping: dict[str, str]
    created_at: Timestamp
    format: str | None
    rows: int
    kind: str | None
    columns: list[ColumnOut]
    roles: dict[str, str]
    outcomes: list[str]
    row_ids: bool
    quality: dict[str, Any]
    cleaning: CleaningOut | None
    notes: list[str]
    problem: ProblemOut | None
    encoding: str | None = None
    delimiter: str | None = None


class DatasetBrief(BaseModel):
    id: int
    name: str
    origin: str
    filename: str
    size_bytes: int
    rows: int
    kind: str | None
    created_at: Timestamp


class DatasetPatch(BaseModel):
    mapping: dict[str, str] | None = Field(None, description="role → column, the CLI's --map; {} for the "
                                                              "detected roles")
    name: str | None = Field(None, max_length=200)
    kind: Literal["transactions", "customers", ""] | None = Field(
        None, description="force the kind; \"\" for the detected one")


class PreviewColumn(BaseModel):
    name: str
    type: str


class PreviewOut(BaseModel):
    dataset_id: int
    mode: str
    total_rows: int
    columns: list[PreviewColumn]
    rows: list[dict[str, Any]]
    row_numbers: list[int]


class RecipePreviewIn(BaseModel):
    sql: str = Field(max_length=recipes.SQL_LIMIT)
    rows: int | None = Field(None, ge=1, le=1000)


class RecipePreviewOut(BaseModel):
    columns: list[PreviewColumn]
    rows: list[dict[str, Any]]
    datasets: list[str]


class RecipeIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    sql: str = Field(max_length=recipes.SQL_LIMIT)


_UPLOAD_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {"schema": {
            "type": "object", "required": ["file"],
            "properties": {
                "file": {"type": "string", "format": "binary",
                         "description": "CSV/TSV/text table, XLSX, Parquet, JSON lines (also .gz/.zst)"},
                "name": {"type": "string", "maxLength": 200},
                "sheet": {"type": "string"}, "encoding": {"type": "string"}, "delimiter": {"type": "string"},
                "kind": {"type": "string", "enum": ["transactions", "customers"]},
            },
        }},
        "application/json": {"schema": SqlSourceIn.model_json_schema()},
    },
}


@router.post("/projects/{project_id}/datasets", response_model=DatasetOut, status_code=201,
             openapi_extra={"requestBody": _UPLOAD_BODY})
async def create_dataset(project_id: int, request: Request, who: auth.Identity = Depends(identity),
                         db: Session = Depends(get_db), settings: WebSettings = Depends(get_settings)):
    """Upload a file (multipart, field ``file``; streamed to disk) or add a SQL source (JSON
    ``{"name", "url", "table"}`` or ``{"name", "url", "query"}``); the answer is its summary."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        try:
            dataset = await run_in_threadpool(service.upload_multipart, db, settings, who.user, project_id,
                                              content_type, service.sync_chunks(request.stream()))
        except ClientDisconnect:
            raise ConfigError("the upload was interrupted; send it again", param="file") from None
        return service.summary_of(dataset)
    if content_type.split(";")[0].strip() == "application/json":
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > settings.json_limit:
                raise TooLarge(f"the request body is over the limit of {settings.json_limit:,} bytes")
        try:
            source = SqlSourceIn.model_validate_json(bytes(body))
        except ValidationError as exc:
            raise RequestValidationError(exc.errors(include_url=False)) from None
        dataset = await run_in_threadpool(service.add_sql_source, db, settings, who.user, project_id, source.name,
                                          source.url, table=source.table, query=source.query)
        return service.summary_of(dataset)
    raise ConfigError("send a file as multipart/form-data (field 'file'), or a SQL source as JSON",
                      param="file")


@router.get("/projects/{project_id}/datasets", response_model=list[DatasetBrief])
def list_datasets(project_id: int, who: auth.Identity = Depends(identity), db: Session = Depends(get_db)):
    return [service.summary_of(d) for d in service.list_datasets(db, who.user, project_id)]


@router.get("/projects/{project_id}/datasets/{dataset_id}", response_model=DatasetOut)
def get_dataset(project_id: int, dataset_id: int, who: auth.Identity = Depends(identity),
                db: Session = Depends(get_db)):
    """Rows, columns with types and roles, kind, data quality, cleaning, notes and mapping."""
    return service.summary_of(service.get_dataset(db, who.user, project_id, dataset_id)[1])


@router.get("/projects/{project_id}/datasets/{dataset_id}/preview", response_model=PreviewOut)
def preview(project_id: int, dataset_id: int, rows: int | None = Query(None, ge=1, le=1000),
            mode: Literal["first", "last", "random"] | None = None, seed: int | None = Query(None, ge=0, lt=2**31),
            who: auth.Identity = Depends(identity), db: Session = Depends(get_db),
            settings: WebSettings = Depends(get_settings)):
    """``rows`` rows (default: the project's preview settings), the first, last or random ones."""
    return service.preview(db, settings, who.user, project_id, dataset_id, rows, mode, seed=seed)


@router.patch("/projects/{project_id}/datasets/{dataset_id}", response_model=DatasetOut)
def update_dataset(project_id: int, dataset_id: int, body: DatasetPatch, who: auth.Identity = Depends(identity),
                   db: Session = Depends(get_db), settings: WebSettings = Depends(get_settings)):
    """Change the column roles (the CLI's ``--map``) and/or the kind, and re-inspect; or rename."""
    dataset = service.set_mapping(db, settings, who.user, project_id, dataset_id, body.mapping, name=body.name,
                                  kind=body.kind)
    return service.summary_of(dataset)


@router.post("/projects/{project_id}/datasets/{dataset_id}/refresh", response_model=DatasetOut)
def refresh_dataset(project_id: int, dataset_id: int, body: RefreshIn | None = None,
                    who: auth.Identity = Depends(identity), db: Session = Depends(get_db),
                    settings: WebSettings = Depends(get_settings)):
    """Read a SQL source's table or query again and make it the dataset's table (editor role)."""
    dataset = service.refresh_sql_source(db, settings, who.user, project_id, dataset_id,
                                         password=body.password if body else None)
    return service.summary_of(dataset)


@router.delete("/projects/{project_id}/datasets/{dataset_id}", status_code=204)
def delete_dataset(project_id: int, dataset_id: int, who: auth.Identity = Depends(identity),
                   db: Session = Depends(get_db), settings: WebSettings = Depends(get_settings)):
    service.delete(db, settings, who.user, project_id, dataset_id)


@router.post("/projects/{project_id}/recipes/preview", response_model=RecipePreviewOut)
def preview_recipe(project_id: int, body: RecipePreviewIn, who: auth.Identity = Depends(identity),
                   db: Session = Depends(get_db), settings: WebSettings = Depends(get_settings)):
    """The first rows of a recipe's result (a DuckDB SELECT over the project's datasets by name)."""
    return recipes.preview_recipe(db, settings, who.user, project_id, body.sql, rows=body.rows)


@router.post("/projects/{project_id}/recipes", response_model=DatasetOut, status_code=201)
def create_recipe(project_id: int, body: RecipeIn, who: auth.Identity = Depends(identity),
                  db: Session = Depends(get_db), settings: WebSettings = Depends(get_settings)):
    """Save a recipe's result as a new dataset (its SQL kept in ``source``)."""
    return service.summary_of(recipes.create_recipe(db, settings, who.user, project_id, body.name, body.sql))
