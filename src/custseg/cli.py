"""Command line: ``custseg inspect | features | rfm | cohorts | segment | assign | report | export | demo``.

Thin: parse options, call :mod:`custseg.pipeline`, print and write what it returns.  Errors a
user can cause print one line ``custseg: error: …`` and exit with code 2; ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from datetime import datetime
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table as RichTable

from custseg import outputs, pipeline
from custseg.errors import ConfigError, CustsegError, literal
from custseg.request import Policy, RunRequest, SegmentConfig, SourceSpec, parse_as_of, parse_k, parse_mapping
from custseg.settings import Settings

app = typer.Typer(
    name="custseg",
    help="Customer segmentation: read, clean, build customer features, RFM, cohorts and segments.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
# Piped output (files, CI logs) is not squeezed into 80 columns.
class _Console:
    """A rich Console made on first use, for the stream of that moment (nothing is built at import)."""

    def __init__(self, *, stderr: bool, piped_width: int) -> None:
        self._stderr, self._piped_width, self._console = stderr, piped_width, None

    def __getattr__(self, name: str):
        if self._console is None:
            stream = sys.stderr if self._stderr else sys.stdout
            self._console = Console(stderr=self._stderr, width=None if stream.isatty() else self._piped_width)
        return getattr(self._console, name)


out = _Console(stderr=False, piped_width=120)
err = _Console(stderr=True, piped_width=400)

# --- shared options ------------------------------------------------------------------------

Source = Annotated[str, typer.Argument(help="A file (.csv .tsv .xlsx .parquet .jsonl) or a SQLAlchemy URL (postgresql://…, sqlite:///…); with --engine spark: a Parquet/CSV/JSON path or folder on any file system Spark reads (file://, hdfs://, s3a://…), spark:DB.TABLE of Spark's catalog, or a jdbc: URL.", show_default=False)]
Sheet = Annotated[Optional[str], typer.Option(help="XLSX sheet to read (default: the first).")]
TableOpt = Annotated[Optional[str], typer.Option("--table", help="With a SQL URL: the table to read.")]
Query = Annotated[Optional[str], typer.Option(help="With a SQL URL: a SELECT to read instead of a table.")]
Encoding = Annotated[Optional[str], typer.Option(help="Text encoding of a CSV (default: detected; utf-8, latin-1, utf-16).")]
Delimiter = Annotated[Optional[str], typer.Option(help="CSV delimiter (default: detected).")]
Map = Annotated[Optional[list[str]], typer.Option("--map", help="ROLE=COLUMN, e.g. customer_id=Client (repeatable). Roles: customer_id, order_id, ordered_at, product_id, quantity, unit_price, amount, country, channel, joined_at, birth_year, email.")]
Kind = Annotated[Optional[str], typer.Option(help="transactions or customers (default: detected).")]
Returns = Annotated[str, typer.Option(help="Cancellations and returns: drop them, or net them against spend.")]
BadValues = Annotated[str, typer.Option(help="Unparseable dates / non-numeric amounts: error (stop and say where) or drop (count them in the report).")]
DateFormat = Annotated[Optional[str], typer.Option(help="strptime format of text dates, e.g. %d/%m/%Y %H:%M (default: detected).")]
AsOf = Annotated[Optional[str], typer.Option(help="Reference date YYYY-MM-DD (default: the day after the last transaction); later transactions are ignored.")]
Out = Annotated[Path, typer.Option("--out", help="Output file: .csv, .parquet or .xlsx.", show_default=False)]
Rejects = Annotated[Optional[Path], typer.Option(help="Also write the dropped rows, with the rule that dropped them, to this file.")]
Engine = Annotated[Optional[str], typer.Option("--engine", help="Where cleaning and features run: duckdb (this machine) or spark (default: CUSTSEG_ENGINE, else duckdb).")]
SparkMaster = Annotated[Optional[str], typer.Option("--spark-master", help="With --engine spark: the master URL, e.g. local[*], spark://host:7077, yarn or a Spark Connect sc://host:15002 (default: CUSTSEG_SPARK_MASTER, else spark-submit's, else local[*]).")]


def _choice(value: str | None, choices: tuple[str, ...], option: str) -> str | None:
    if value is not None and value not in choices:
        raise ConfigError(f"{option} must be one of {', '.join(choices)}, got '{value}'")
    return value


def _spec(source, sheet, table, query, encoding, delimiter, map_, kind) -> SourceSpec:
    return SourceSpec(
        source=source, sheet=sheet, table=table, query=query, encoding=encoding,
        delimiter=delimiter, mapping=parse_mapping(map_),
        kind=_choice(kind, ("transactions", "customers"), "--kind"),
    )


def _policy(returns: str, bad_values: str, date_format: str | None) -> Policy:
    return Policy(
        returns=_choice(returns, ("drop", "net"), "--returns"),
        bad_values=_choice(bad_values, ("error", "drop"), "--bad-values"),
        date_format=date_format,
    )


def _settings(engine: str | None, spark_master: str | None, spark_local_max_customers: int | None = None) -> Settings:
    """The environment's settings with the engine options of the command line."""
    from dataclasses import replace

    settings = Settings.from_env()
    if engine is not None:
        settings = replace(settings, engine=engine.strip().lower())
    if spark_master is not None:
        settings = replace(settings, spark_master=spark_master)
    if spark_local_max_customers is not None:
        settings = replace(settings, spark_local_max_customers=spark_local_max_customers)
    return settings


def _as_of(value: str | None) -> datetime | None:
    return None if value is None else parse_as_of(value)


def _check_out(path: Path, source: str, option: str = "--out") -> None:
    """Fail before the work, not after it; never write over the source."""
    outputs.check_target(path, option=option)
    if _same_file(path, source):
        raise ConfigError(f"{option} {path}: is the source itself, which custseg never modifies; "
                          "write the result to another file")


def _check_rejects(path: Path | None, kind: str, source: str, out_: Path) -> None:
    if path is None:
        return
    if kind != "transactions":
        raise ConfigError("--rejects applies to transaction logs; customer tables report their drops only")
    _check_out(path, source, "--rejects")
    if path.resolve() == out_.resolve():
        raise ConfigError(f"--rejects {path}: is also --out; give the rejected rows a file of their own")


_same_file = pipeline.same_file


def _print_report(report: pipeline.cleaning.CleaningReport) -> None:
    if not report.rows_dropped:
        out.print(f"Cleaning: {report.rows_in:,} rows in, all kept")
        for note in report.notes:
            out.print(f"  {note}")
        return
    table = RichTable(title=f"Cleaning: {report.rows_in:,} rows in, {report.rows_out:,} kept", title_justify="left")
    table.add_column("rule")
    table.add_column("rows", justify="right")
    table.add_column("meaning")
    for item in report.dropped:
        if item.rows:
            table.add_row(item.rule, f"{item.rows:,}", item.description)
    out.print(table)
    for note in report.notes:
        out.print(f"  {note}")


def _said_rejects(made: pipeline.CustomerTable, rejects: Path | None) -> None:
    """Say where the rejected rows went, when they were written."""
    if rejects is not None and made.clean is not None:
        out.print(f"rejected rows → {rejects}")


# --- commands ------------------------------------------------------------------------------

@app.callback()
def _main(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False) -> None:
    """Customer segmentation: read, clean, build customer features, RFM, cohorts and segments."""


@app.command()
def inspect(
    source: Source, sheet: Sheet = None, table: TableOpt = None, query: Query = None,
    encoding: Encoding = None, delimiter: Delimiter = None, map_: Map = None, kind: Kind = None,
    returns: Returns = "drop", bad_values: BadValues = "error", date_format: DateFormat = None,
) -> None:
    """Show what custseg finds in SOURCE: format, columns and roles, data quality, cleaning."""
    loaded = pipeline.load(_spec(source, sheet, table, query, encoding, delimiter, map_, kind))
    found = pipeline.inspect(loaded, policy=_policy(returns, bad_values, date_format))
    out.print(f"[bold]{found.label}[/bold]: {found.format}, {found.rows:,} rows, "
              f"{len(found.columns)} columns — a {'transaction log' if found.kind == 'transactions' else 'customer table'}")
    for note in loaded.notes:
        out.print(f"  {note}", highlight=False)
    columns = RichTable(title="Columns", title_justify="left")
    for name in found.columns.columns:
        columns.add_column(name, justify="right" if name in ("nulls", "distinct") else "left")
    for row in found.columns.itertuples(index=False):
        columns.add_row(*[f"{v:,}" if isinstance(v, int) else str(v) for v in row])
    out.print(columns)
    for key, value in found.quality.items():
        if isinstance(value, CustsegError):  # why cleaning cannot run, in this edge's words
            value = value.render(FLAGS)
        out.print(f"  {key}: {value:,}" if isinstance(value, int) else f"  {key}: {value}")
    if found.report is not None:
        _print_report(found.report)


@app.command("features")
def features_cmd(
    source: Source, out_: Out, sheet: Sheet = None, table: TableOpt = None, query: Query = None,
    encoding: Encoding = None, delimiter: Delimiter = None, map_: Map = None, kind: Kind = None,
    returns: Returns = "drop", bad_values: BadValues = "error", date_format: DateFormat = None,
    as_of: AsOf = None, rejects: Rejects = None, engine: Engine = None, spark_master: SparkMaster = None,
) -> None:
    """Write one row of features per customer (RFM, tenure, order value, ...) to --out."""
    settings = _settings(engine, spark_master)
    _check_out(out_, source)
    loaded = pipeline.load(_spec(source, sheet, table, query, encoding, delimiter, map_, kind), settings=settings,
                           one_pass=True)
    _check_rejects(rejects, loaded.kind, source, out_)
    made = pipeline.customer_table(loaded, policy=_policy(returns, bad_values, date_format), as_of=_as_of(as_of),
                                   local_max=pipeline.local_limit(loaded, settings))
    _print_report(made.report)
    pipeline.write_with_rejects(made, out_, rejects=rejects)
    _said_rejects(made, rejects)
    customers, columns = made.shape
    out.print(f"{customers:,} customers × {columns - 1} features "
              f"(as of {made.as_of.date()}) → {out_}")


@app.command("rfm")
def rfm_cmd(
    source: Source, out_: Out, sheet: Sheet = None, table: TableOpt = None, query: Query = None,
    encoding: Encoding = None, delimiter: Delimiter = None, map_: Map = None, kind: Kind = None,
    returns: Returns = "drop", bad_values: BadValues = "error", date_format: DateFormat = None,
    as_of: AsOf = None, rejects: Rejects = None,
    segment_map: Annotated[Optional[Path], typer.Option(help="CSV (pattern,segment) or JSON segment map replacing the default.")] = None,
    engine: Engine = None, spark_master: SparkMaster = None,
) -> None:
    """Score customers on recency, frequency and monetary value (1..5) and name their segment."""
    settings = _settings(engine, spark_master)
    _check_out(out_, source)
    mapping = pipeline.load_segment_map(segment_map) if segment_map else None
    loaded = pipeline.load(_spec(source, sheet, table, query, encoding, delimiter, map_, kind), settings=settings,
                           one_pass=True)
    _check_rejects(rejects, loaded.kind, source, out_)
    summary, made = pipeline.write_rfm(loaded, out_, policy=_policy(returns, bad_values, date_format),
                                       as_of=_as_of(as_of), segment_map=mapping, rejects=rejects, settings=settings)
    _said_rejects(made, rejects)
    _print_rfm_summary(summary, made)
    out.print(f"{int(summary['customers'].sum()):,} customers scored → {out_}")


def _print_rfm_summary(summary, made: pipeline.CustomerTable) -> None:
    table = RichTable(title=f"RFM segments (as of {made.as_of.date()})", title_justify="left")
    for name in ("segment", "customers", "share", "revenue share", "median recency (days)", "median orders", "median spend"):
        table.add_column(name, justify="left" if name == "segment" else "right")
    for row in summary.itertuples(index=False):
        table.add_row(
            row.rfm_segment, f"{row.customers:,}", f"{row.share:.1%}", f"{row.revenue_share:.1%}",
            f"{row.median_recency_days:,.0f}", f"{row.median_frequency:,.0f}", f"{row.median_monetary:,.2f}",
        )
    out.print(table)


@app.command("cohorts")
def cohorts_cmd(
    source: Source, out_: Out, sheet: Sheet = None, table: TableOpt = None, query: Query = None,
    encoding: Encoding = None, delimiter: Delimiter = None, map_: Map = None, kind: Kind = None,
    returns: Returns = "drop", bad_values: BadValues = "error", date_format: DateFormat = None,
    by: Annotated[Optional[str], typer.Option(help="Split cohorts by: country.")] = None,
) -> None:
    """Write the monthly cohort retention matrix (share of each cohort active per month)."""
    _check_out(out_, source)
    loaded = pipeline.load(_spec(source, sheet, table, query, encoding, delimiter, map_, kind))
    result = pipeline.cohort_table(
        loaded, policy=_policy(returns, bad_values, date_format), by=_choice(by, ("country",), "--by"),
    )
    outputs.write_table(result.matrix, out_)
    _print_cohorts(result.matrix)
    out.print(f"{len(result.matrix):,} cohorts → {out_}")


def _print_cohorts(matrix) -> None:
    shown = [c for c in matrix.columns if c.startswith("month_")][:7]
    keys = [c for c in matrix.columns if not c.startswith("month_")]
    table = RichTable(title="Retention by acquisition month (share active)", title_justify="left")
    for name in keys:
        table.add_column(name, justify="right", no_wrap=True)
    for name in shown:
        table.add_column(name.replace("month_", "m"), justify="right", no_wrap=True)
    for row in matrix.head(24).itertuples(index=False):
        values = row._asdict()
        table.add_row(*[str(values[k]) for k in keys], *["" if values[c] != values[c] else f"{values[c]:.0%}" for c in shown])
    out.print(table)


@app.command()
def segment(
    source: Source,
    out_: Annotated[Path, typer.Option("--out", help="Folder for assignments.csv, profiles.csv, leaderboard.csv, model.skops, ….", show_default=False)],
    algorithm: Annotated[str, typer.Option(help="auto (compare K-Means and Gaussian mixtures) or one of: kmeans, minibatch, bisecting_kmeans, gmm, agglomerative, dbscan, hdbscan, meanshift, birch, kprototypes, rfm.")] = "auto",
    k: Annotated[str, typer.Option("--k", help="Number of segments: auto (chosen with evidence) or a number.")] = "auto",
    features: Annotated[Optional[str], typer.Option(help="Comma-separated feature columns (default: RFM + tenure + order value for transaction logs, every usable column for customer tables).")] = None,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same segments.")] = 0,
    previous: Annotated[Optional[Path], typer.Option(help="The model of an earlier run: matching segments keep its ids; new and gone segments are reported.")] = None,
    no_report: Annotated[bool, typer.Option("--no-report", help="Skip the HTML report (RUN_DIR/report.html).")] = False,
    value: Annotated[Optional[str], typer.Option("--value", help="The column that says what a customer is worth, for value share and best/worst segments (default: monetary, or a spend/revenue/charges column).")] = None,
    sheet: Sheet = None, table: TableOpt = None, query: Query = None,
    encoding: Encoding = None, delimiter: Delimiter = None, map_: Map = None, kind: Kind = None,
    returns: Returns = "drop", bad_values: BadValues = "error", date_format: DateFormat = None,
    as_of: AsOf = None, engine: Engine = None,
    spark_local_max_customers: Annotated[Optional[int], typer.Option("--spark-local-max-customers", help="With --engine spark: a table of at most this many customers is clustered on this machine (the local answers); a larger one is clustered on Spark (auto, kmeans or gmm), its profiles drawn from a seeded sample (default: CUSTSEG_SPARK_LOCAL_MAX_CUSTOMERS, else 1000000).", show_default=False)] = None,
    spark_master: SparkMaster = None,
) -> None:
    """Find customer segments: compare algorithms and k, explain and name each segment, save the model."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from custseg.model import NOISE

    settings = _settings(engine, spark_master, spark_local_max_customers)
    request = RunRequest(
        source=_spec(source, sheet, table, query, encoding, delimiter, map_, kind),
        policy=_policy(returns, bad_values, date_format),
        as_of=_as_of(as_of),
        segment=SegmentConfig(
            algorithm=algorithm, n_clusters=parse_k(k),
            features=tuple(f.strip() for f in features.split(",") if f.strip()) if features else None,
            random_state=seed, value_column=value,
        ),
        previous=None if previous is None else str(previous),
        report=not no_report,
    )
    config = request.segment
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=err, transient=True, disable=not err.is_terminal) as bar:
        tasks: dict[str, int] = {}

        def progress(step: str, done: int, total: int) -> None:
            if step in pipeline.RUN_STEPS:
                return
            name = "final fit" if step == "final fit" else "comparing algorithms × k"
            if name not in tasks:
                tasks[name] = bar.add_task(name, total=total)
            bar.update(tasks[name], completed=done, total=total)

        folder = pipeline.run(request, out_, settings=settings, progress=progress)
    result, written = folder.result, list(folder.files)
    _print_report(result.customers.report)
    out.print(f"\n[bold]Recommendation[/bold]: {result.selection.recommendation.text}", highlight=False)
    if config.algorithm != "auto" or config.n_clusters is not None:
        out.print(f"Used: {result.algorithm} with {result.n_clusters} segments (as asked).", highlight=False)
    profile = RichTable(title="Segments", title_justify="left")
    for name in ("id", "name", "customers", "share", "value share", "what sets it apart", "rule (precision/recall)"):
        profile.add_column(name, justify="right" if name in ("id", "customers", "share", "value share") else "left")
    for row in result.profiles.table.itertuples(index=False):
        profile.add_row(
            str(row.segment), row.name, f"{row.customers:,}", f"{row.share:.1%}",
            "" if row.value_share is None or row.value_share != row.value_share else f"{row.value_share:.1%}",
            row.description, f"{row.rule} ({row.rule_precision:.0%}/{row.rule_recall:.0%})",
        )
    out.print(profile)
    outcomes = list(result.customers.outcomes)
    if outcomes:
        rates = RichTable(title="Outcomes per segment: rate (95 % Wilson interval) and lift against all customers",
                          title_justify="left")
        rates.add_column("id", justify="right")
        for outcome in outcomes:
            rates.add_column(outcome, justify="right")
        for row in result.profiles.table.to_dict("records"):
            rates.add_row(str(row["segment"]), *[_rate(row, outcome) for outcome in outcomes])
        out.print(rates)
    best, worst = result.profiles.best, result.profiles.worst
    if best is not None and best != worst:
        out.print(f"Best segment by value per customer: {result.profiles.name_of(best)}; "
                  f"worst: {result.profiles.name_of(worst)}.", highlight=False)
    if result.alignment is not None:
        kept = ", ".join(str(old) for _, old, _ in result.alignment.matched) or "none"
        out.print(f"Compared with {previous}: ids kept for segments {kept}; "
                  f"new: {', '.join(map(str, result.alignment.new)) or 'none'}; "
                  f"gone: {', '.join(map(str, result.alignment.gone)) or 'none'}.", highlight=False)
    noise = int((result.labels == NOISE).sum())
    if noise:
        out.print(f"{noise:,} customers fit no segment (label -1).")
    out.print(f"Results in {out_}/: " + ", ".join(p.name for p in written), highlight=False)


def _rate(row: dict, outcome: str) -> str:
    """An outcome's rate in a segment with its 95 % interval and lift: ``26.5% (24.1–29.0) ×1.40``."""
    rate = row[f"{outcome}_rate"]
    if rate != rate:
        return "n/a"
    return (f"{rate:.1%} ({100 * row[f'{outcome}_rate_low']:.1f}–{100 * row[f'{outcome}_rate_high']:.1f}) "
            f"×{row[f'{outcome}_lift']:.2f}")


@app.command()
def assign(
    source: Source,
    model: Annotated[Path, typer.Option("--model", help="A model file written by custseg segment (RUN_DIR/model.skops), or its run folder.", show_default=False)],
    out_: Out,
    sheet: Sheet = None, table: TableOpt = None, query: Query = None,
    encoding: Encoding = None, delimiter: Delimiter = None, map_: Map = None, kind: Kind = None,
    returns: Returns = "drop", bad_values: BadValues = "error", date_format: DateFormat = None,
    as_of: AsOf = None, engine: Engine = None, spark_master: SparkMaster = None,
) -> None:
    """Assign the customers of SOURCE to the segments of a saved model."""
    from custseg import model as model_io

    settings = _settings(engine, spark_master)
    _check_out(out_, source)
    saved = model_io.load(model)
    loaded = pipeline.load(_spec(source, sheet, table, query, encoding, delimiter, map_, kind), settings=settings)
    counts = pipeline.write_assignments(loaded, saved, out_, policy=_policy(returns, bad_values, date_format),
                                        as_of=_as_of(as_of), settings=settings)
    out.print(f"{int(counts.sum()):,} customers assigned → {out_}")
    for name, n in counts.items():
        out.print(f"  {name}: {n:,}")


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="A run folder written by custseg segment --out RUN_DIR.", show_default=False)],
    out_: Annotated[Optional[Path], typer.Option("--out", help="HTML file to write (default: RUN_DIR/report.html).")] = None,
    max_points: Annotated[int, typer.Option(help="Most customers drawn in each scatter plot (a seeded random sample).")] = 5000,
    seed: Annotated[int, typer.Option(help="Random seed of that sample and of t-SNE.")] = 0,
) -> None:
    """Write a self-contained HTML report (charts, segment cards) of a run folder; it works offline."""
    from custseg.report import build_report

    if max_points < 10:
        raise ConfigError(f"--max-points must be a whole number ≥ 10, got {max_points}")
    path = build_report(run_dir, out=out_, max_points=max_points, random_state=seed)
    out.print(f"report → {path}", highlight=False)


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="A run folder written by custseg segment.", show_default=False)],
    format: Annotated[str, typer.Option("--format", help="csv, xlsx (one workbook, a sheet per segment) or parquet.")] = "csv",
    columns: Annotated[Optional[str], typer.Option(help="Comma-separated feature columns to add to each list (default: recency_days, frequency, monetary when present).")] = None,
    out_: Annotated[Optional[Path], typer.Option("--out", help="Folder for the files (default: RUN_DIR/exports).")] = None,
) -> None:
    """Write one customer list per segment, a summary, and a CRM import file (crm_import.csv)."""
    from custseg import exports

    chosen = [c.strip() for c in columns.split(",") if c.strip()] if columns else None
    written = exports.export_run(run_dir, format=_choice(format, exports.EXPORT_FORMATS, "--format"),
                                 columns=chosen, out=out_)
    out.print(f"{len(written)} files → {written[0].parent}/", highlight=False)
    for path in written:
        out.print(f"  {path.name}", highlight=False)


@app.command()
def demo(
    out_: Annotated[Path, typer.Option("--out", help="Folder for the demo outputs.")] = Path("demo-output"),
) -> None:
    """Run the whole job on the bundled Online Retail sample and write the results to --out."""
    from custseg import datasets

    sample = str(datasets.sample_path())
    outputs.make_folder(out_)
    out.rule("custseg demo — bundled sample of UCI Online Retail (CC BY 4.0)")
    inspect(sample)
    features_cmd(sample, out_ / "features.csv", rejects=out_ / "rejects.csv")
    rfm_cmd(sample, out_ / "rfm.csv")
    cohorts_cmd(sample, out_ / "cohorts.csv")
    segment(sample, out_ / "segments")
    export(out_ / "segments", format="xlsx")
    out.print(f"\nDone: see {out_}/")


# The service's commands (serve, worker, users): custseg.web.cli, which imports the web stack
# only when one of them runs.
from custseg.web.cli import register as _register_service  # noqa: E402

_register_service(app)


# --- entry point ---------------------------------------------------------------------------

#: The library's parameter names as this edge spells them (errors name parameters; see
#: custseg.errors.CustsegError.render).
FLAGS: dict[str, str] = {
    "source": "SOURCE", "sheet": "--sheet", "table": "--table", "query": "--query",
    "encoding": "--encoding", "delimiter": "--delimiter", "mapping": "--map", "kind": "--kind",
    "returns": "--returns", "bad_values": "--bad-values", "date_format": "--date-format",
    "as_of": "--as-of", "algorithm": "--algorithm", "n_clusters": "--k", "features": "--features",
    "random_state": "--seed", "value_column": "--value", "previous": "--previous", "out": "--out",
    "rejects": "--rejects", "segment_map": "--segment-map", "report": "--no-report", "by": "--by",
    "model": "--model", "max_points": "--max-points", "format": "--format", "columns": "--columns",
    "engine": "--engine", "spark_master": "--spark-master", "spark_local_max_customers": "--spark-local-max-customers",
}

def main(argv: list[str] | None = None) -> int:
    """Run the CLI; user errors become one line on stderr and exit code 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    if debug:  # accepted anywhere on the line
        args = ["--debug"] + [a for a in args if a != "--debug"]
    try:
        app(args=args, prog_name="custseg", standalone_mode=False)
    except CustsegError as exc:
        if debug:  # the traceback, with the message in this edge's words as well
            exc.template = literal(exc.render(FLAGS))
            exc.args = (exc.render(FLAGS),)
            raise
        err.print(f"custseg: error: {exc.render(FLAGS)}", markup=False, highlight=False, soft_wrap=True)
        return 2
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        err.print("custseg: aborted", markup=False)
        return 130
    except KeyboardInterrupt:
        err.print("custseg: interrupted", markup=False)
        return 130
    except typer.TyperException as exc:  # usage errors: missing or unknown options
        if debug:
            raise
        err.print(f"custseg: error: {exc.format_message()} (see custseg --help)", markup=False, soft_wrap=True)
        return 2
    except Exception as exc:  # anything unexpected: one line, the traceback with --debug
        if debug:
            raise
        try:
            settings = Settings.from_env()
        except CustsegError:
            settings = None
        resource = pipeline.resource_error(exc, settings)  # out of memory or disk space: the user can fix it
        if resource is not None:
            err.print(f"custseg: error: {resource.render(FLAGS)}", markup=False, highlight=False, soft_wrap=True)
            return 2
        first = (str(exc).strip().splitlines() or [""])[0]
        err.print(
            f"custseg: internal error: {type(exc).__name__}: {first} — rerun with --debug and report it",
            markup=False, soft_wrap=True,
        )
        return 1
    return 0


def entry() -> None:
    """The ``custseg`` command: :func:`main`, then exit without the interpreter's teardown.

    Once a command has returned, its files are written and closed; what is left is freeing
    every module and object one by one, which after a segmentation (scikit-learn, SciPy,
    pandas, DuckDB and the run's frames loaded) takes 0.3–0.6 s of a 5 s run.  The exit
    handlers still run (temporary files, a Spark session) and the standard streams are
    flushed; with a thread of the command still working, the exit is the usual one.
    """
    code = main()
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can reach it
            pass
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    entry()
