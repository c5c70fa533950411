"""The one orchestrator, cut by step.

:func:`run` is the entry point of the CLI, jobs and tests: a :class:`~custseg.request.RunRequest`
in, a :class:`~custseg.runs.RunFolder` out.  :func:`run_segmentation` composes the steps:

- :mod:`~custseg.pipeline.prepare` — source → roles → cleaning → customer table → matrix
  (also the RFM, cohort, inspect and assign views of the customer table);
- :mod:`~custseg.pipeline.choose` — sweep algorithms × k and recommend, with reasons;
- :mod:`~custseg.pipeline.fit` — the final fit; ids kept from a previous model;
- :mod:`~custseg.pipeline.describe` — RFM, profiles and names, the run record, the model.

With the Spark engine, a customer table of more than ``Settings.spark_local_max_customers``
customers stays on Spark and :mod:`~custseg.pipeline.on_spark` segments it there (the same
steps: its sweep and fit on Spark, the describe step on a seeded sample, sizes and assignments
of every customer counted and written from Spark).

A new analysis is a step of its own here (or a module the describe step calls); a new engine
sits behind :mod:`custseg.engines`; a new edge calls :func:`run`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import date, datetime
from typing import TYPE_CHECKING

from custseg import cleaning, outputs, sources
from custseg.errors import CustsegError
from custseg.pipeline.prepare import (
    CustomerTable, Inspection, Loaded, Prepared, assign_segments, clean, cohort_table, customer_table,
    inspect, load, naming, prepare, rfm_table,
)
from custseg.request import RunRequest, SegmentConfig, SourceSpec
from custseg.settings import Settings

if TYPE_CHECKING:
    import pandas as pd

    from custseg.model import SegmentationModel
    from custseg.pipeline.describe import SegmentationResult
    from custseg.report import MapAhead
    from custseg.rfm import SegmentMap

__all__ = [
    "run", "run_segmentation", "SegmentationResult", "SourceSpec", "SegmentConfig", "Loaded", "CustomerTable",
    "Prepared", "Inspection", "load", "clean", "customer_table", "prepare", "rfm_table", "cohort_table",
    "assign_segments", "write_assignments", "write_with_rejects", "write_rfm", "local_limit", "inspect", "RUN_STEPS",
]


def run_segmentation(
    loaded: Loaded,
    *,
    config: SegmentConfig = SegmentConfig(),
    policy: cleaning.Policy = cleaning.Policy(),
    as_of: date | datetime | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    previous: SegmentationModel | None = None,
    segment_map: SegmentMap | None = None,
    settings: Settings | None = None,
    beside_sweep: Callable[[pd.DataFrame], bool] | None = None,
) -> SegmentationResult:
    """Source → customer features → matrix → sweep → final fit → profiles → model.

    ``beside_sweep(matrix)``, when given, is called with the clustering matrix before the sweep
    and says whether it started work of its own on a core (a run's report map): the sweep then
    leaves that core to it.

    With ``previous`` (a :class:`custseg.model.SegmentationModel`), segments keep the ids of
    the previous model's segments they match (see :func:`custseg.model.align`).  A transaction
    log or customer table read by Spark whose customers outnumber
    ``settings.spark_local_max_customers`` is segmented on Spark (:func:`custseg.pipeline.on_spark.segment_on_engine`).
    """
    import time

    from custseg.pipeline.choose import choose
    from custseg.pipeline.describe import describe
    from custseg.pipeline.fit import fit

    started = time.time()
    RunRequest(SourceSpec(loaded.table.label), policy=policy, segment=config).validate()
    limit = local_limit(loaded, settings)  # features computed on Spark, or a customer table cleaned there
    made = customer_table(loaded, policy=policy, as_of=as_of, local_max=limit)
    if made.on_engine:
        from custseg.pipeline.on_spark import segment_on_engine

        try:
            return segment_on_engine(loaded, made, config=config, limit=limit, previous=previous,
                                     segment_map=segment_map, progress=progress, started=started)
        except BaseException:  # its rows are kept on Spark for the run's files: not needed now
            made.table.frame.unpersist()
            raise
    prepared = prepare(loaded, config=config, policy=policy, as_of=as_of, customers=made)
    busy = 1 if beside_sweep is not None and beside_sweep(prepared.matrix) else 0
    choice = choose(prepared, config=config, progress=progress, busy_cores=busy)
    fitted = fit(prepared, choice, config=config, previous=previous, progress=progress)
    return describe(prepared, choice, fitted, config=config, segment_map=segment_map, started=started)


# --- the entry point -----------------------------------------------------------------------

#: The steps :func:`run` reports to ``progress`` itself (the sweep and the final fit report theirs).
RUN_STEPS = ("reading the source", "segmenting", "writing the run", "writing the report")


def resource_error(exc: BaseException, settings: Settings | None = None):
    """A one-line ResourceError for the engine running out of memory or disk space (naming the
    limit and the folder of ``settings``), else None."""
    return sources.resource_error(exc, settings)


def load_segment_map(path):
    """An RFM segment map from a CSV (``pattern,segment``) or JSON file."""
    from custseg import rfm

    return rfm.load_segment_map(path)


def write_assignments(
    loaded: Loaded,
    saved: SegmentationModel,
    out,
    *,
    policy: cleaning.Policy = cleaning.Policy(),
    as_of: date | datetime | None = None,
    settings: Settings | None = None,
) -> pd.Series:
    """Assign the customers of ``loaded`` to the segments of ``saved`` and write them to ``out``
    (:func:`assign_segments`'s columns; .csv, .parquet or .xlsx); returns the customers per
    segment name, most first.

    With the Spark engine a customer table of more than ``settings.spark_local_max_customers``
    customers stays there: it is assigned and written from Spark
    (:func:`custseg.pipeline.on_spark.assign_on_engine`); a smaller one is assigned here.
    """
    made = customer_table(loaded, policy=policy, as_of=as_of, local_max=local_limit(loaded, settings))
    if made.on_engine:
        from custseg.pipeline.on_spark import assign_on_engine

        try:
            return assign_on_engine(loaded, made, saved, out)
        finally:
            made.table.frame.unpersist()
    assigned = assign_segments(loaded, saved, policy=policy, as_of=as_of, customers=made)
    outputs.write_table(assigned, out)
    return assigned["segment_name"].value_counts()


def local_limit(loaded: Loaded, settings: Settings | None = None) -> int | None:
    """How many customers a step brings here from the engine that read ``loaded``: the settings'
    ``spark_local_max_customers`` for Spark (a larger table stays there), None (all) otherwise."""
    if loaded.table.dialect.name != "spark":
        return None
    return (settings or Settings()).spark_local_max_customers


def write_with_rejects(made: CustomerTable, out, *, table=None, rejects=None) -> list:
    """Write ``table`` (default: the customer table ``made``, its ``customer_id`` named as outputs
    name it) to ``out`` and, when given, the rows cleaning dropped to ``rejects``
    (:meth:`custseg.cleaning.CleanTransactions.rejects`): both files or neither.  For a customer
    table left on Spark (``made.on_engine``; ``table`` then a Spark DataFrame) both are written
    from there, part by part."""
    if made.on_engine:
        from custseg.pipeline.on_spark import write_on_engine

        files = [(made.output_table().frame if table is None else table, out, "out")]
        if rejects is not None and made.clean is not None:
            files.append((made.clean.rejects().frame, rejects, "rejects"))
        return write_on_engine(files)
    files = [({"data": made.output_table() if table is None else table}, out, "out")]
    if rejects is not None and made.clean is not None:
        # Checked before anything is computed for it: an Excel sheet holds ~1M rows.
        outputs.check_fits(rejects, made.report.rows_dropped, option="rejects")
        dropped = made.clean.rejects()
        if made.clean.dialect.name == "spark":  # written here, from the rows Spark sends
            from custseg.engines import spark

            dropped = spark.to_local(dropped)
        files.append(({"data": dropped}, rejects, "rejects"))
    return outputs.write_together(files)


def write_rfm(
    loaded: Loaded,
    out,
    *,
    policy: cleaning.Policy = cleaning.Policy(),
    as_of: date | datetime | None = None,
    segment_map: SegmentMap | None = None,
    rejects=None,
    settings: Settings | None = None,
) -> tuple[pd.DataFrame, CustomerTable]:
    """RFM scores of the customers of ``loaded`` (:func:`rfm_table`) written to ``out`` (and the
    dropped rows to ``rejects``, both or neither); returns :func:`rfm_summary` and the customer
    table.  With the Spark engine a table of more than ``settings.spark_local_max_customers``
    customers is scored, summarised and written from Spark
    (:func:`custseg.pipeline.on_spark.rfm_on_engine`)."""
    made = customer_table(loaded, policy=policy, as_of=as_of, local_max=local_limit(loaded, settings))
    if not made.on_engine:
        scored, made = rfm_table(loaded, policy=policy, as_of=as_of, segment_map=segment_map, customers=made)
        write_with_rejects(made, out, table=made.for_output(scored), rejects=rejects)
        return rfm_summary(scored), made
    from custseg.pipeline.on_spark import rfm_on_engine

    try:
        with naming(loaded):
            scored, summary = rfm_on_engine(made, segment_map)
        try:
            write_with_rejects(made, out, table=scored, rejects=rejects)
        finally:
            scored.unpersist()
    finally:
        made.table.frame.unpersist()
    return summary, made


def rfm_summary(scored: pd.DataFrame) -> pd.DataFrame:
    """Customers, shares and medians per RFM segment of :func:`rfm_table`'s scores."""
    from custseg import rfm

    return rfm.summary(scored)


def run(
    request: RunRequest,
    out,
    *,
    settings: Settings | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
):
    """Do a whole segmentation run and return its :class:`custseg.runs.RunFolder`.

    Validates ``request`` (every problem at once), reads the source (and the previous model),
    segments, writes the run folder ``out`` (all files or none) and, unless
    ``request.report`` is false, its report — a report that cannot be written says the run is
    there and how to rebuild it.  ``progress(step, done, total)`` hears about the work;
    ``cancel()`` is asked between steps and a true answer stops the run with
    :class:`custseg.errors.Cancelled` (nothing is written once the folder's write has begun
    only whole).  The CLI, jobs and tests all come through here.
    """
    from pathlib import Path

    from custseg import model as model_io
    from custseg import runs
    from custseg.errors import Cancelled, ConfigError, literal

    request.validate()
    settings = settings or Settings.from_env()
    out = Path(out)

    def step(name: str) -> None:
        if cancel is not None and cancel():
            raise Cancelled(f"the run was cancelled before {name}")
        if progress is not None:
            progress(name, 0, 1)

    if out.exists() and not out.is_dir():
        raise ConfigError(f"{{param}} {literal(out)}: is a file; give a folder for the results", param="out")
    outputs.check_folder(out, option="out")
    clash = [name for name in runs.RUN_FILES if same_file(out / name, request.source.source)]
    if clash:
        raise ConfigError(f"{{param}} {literal(out)}: the run would write {clash[0]} over the source, which custseg "
                          "never modifies; give another folder", param="out")
    earlier = None
    if request.previous is not None:
        earlier = model_io.load(request.previous)
    step("reading the source")
    loaded = load(request.source, settings=settings)
    step("segmenting")
    with contextlib.ExitStack() as beside:
        started: list[MapAhead] = []

        def start_map(matrix: pd.DataFrame) -> bool:  # the report's t-SNE, beside the sweep and the writing
            ahead = _map_ahead(matrix, request)
            if ahead is not None:
                started.append(beside.enter_context(ahead))
                # Then that process imports the model's writer, which writes the model beside the
                # other files (this process never imports it: 0.3-1 s).
                ahead.later(model_io.import_writer)
            return ahead is not None and ahead.running

        result = run_segmentation(
            loaded, config=request.segment, policy=request.policy, as_of=request.as_of,
            progress=progress, previous=earlier, segment_map=request.segment_map, settings=settings,
            beside_sweep=start_map if request.report else None,
        )
        map_ahead = started[0] if started else None
        try:
            step("writing the run")
            written = runs.write_run(result, out, request=request, save_model=None if map_ahead is None else (
                lambda model, path: map_ahead.later(model_io.SegmentationModel.save, model, path)))
        finally:
            if result.customers.on_engine:  # a table left on Spark: its rows are written, free them there
                result.customers.table.frame.unpersist()
        folder = runs.RunFolder.of(out, result=result, files=tuple(written))  # read back once, and checked
        if request.report:
            from dataclasses import replace

            from custseg.report import build_report

            step("writing the report")
            try:
                report = build_report(folder, random_state=request.segment.random_state, map_ahead=map_ahead)
            except CustsegError as exc:
                raise type(exc)(f"{exc.named_template}; the run itself is written: build the report again with "
                                f"`custseg report {literal(out)}`", param=exc.param) from None
            folder = replace(folder, files=(*folder.files, report))
    return folder


def _map_ahead(matrix: pd.DataFrame, request: RunRequest) -> MapAhead | None:
    """The report's t-SNE map of the run's clustering matrix (:class:`custseg.report.MapAhead`),
    not yet started, or None: no report, or a matrix it cannot start from (the report then
    computes the map itself).  A table segmented on Spark has no matrix here."""
    if not request.report:
        return None
    from custseg.report import MapAhead

    try:
        return MapAhead(matrix, random_state=request.segment.random_state)
    except Exception:  # only work done ahead: the report meets any problem again itself
        return None


def same_file(path, source: str) -> bool:
    """Whether ``path`` is the file ``source`` names (through links too); False for a path that
    does not exist yet and for a SQL URL."""
    import os

    try:
        return os.path.samefile(path, source)
    except OSError:
        return False


def __getattr__(name: str):
    # The run folder's writer lives in custseg.runs and the result in the describe step (both
    # need pandas: loaded when asked for).
    if name in ("write_run", "RUN_FILES"):
        from custseg import runs

        return getattr(runs, name)
    if name == "SegmentationResult":
        from custseg.pipeline.describe import SegmentationResult

        return SegmentationResult
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
