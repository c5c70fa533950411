"""Benchmark: `custseg features` against a hand-written DuckDB query and notebook pandas code.

Generates synthetic transaction logs shaped like UCI Online Retail (10M and 50M rows, Parquet
and CSV) in ``bench/data/`` once, then times on the same files:

``custseg``   the installed CLI, ``custseg features FILE --out OUT.parquet``
``duckdb``    a hand-written DuckDB query with the same cleaning rules and features (the
              baseline), run by a small ``python -c`` script that writes Parquet
``pandas``    the typical notebook code (boolean masks, ``drop_duplicates``,
              ``groupby().agg(lambda ...)``), 10M rows only by default

Every method runs in its own child process.  Wall time is measured around the child (it
includes interpreter start-up and imports).  Peak memory is the child's ``ru_maxrss`` as the
kernel reports it when the child is reaped with ``os.wait4`` by a small launcher process (the
high-water mark of its resident set, so no spike is missed); a psutil poll of the child's
process tree every 50 ms is recorded alongside as a cross-check.  Files are read once before
timing so that every run starts with the file in the page cache.

Results go to ``bench/results/features-YYYY-MM-DD[-TAG].md`` and ``.json``.  Nothing here asserts a
time; the targets are marked MET or NOT MET in the report.

    python bench/features.py [--sizes 10M,50M] [--formats parquet,csv] [--repeat 2] [--skip-pandas]
                             [--repeat-large 1] [--pandas-max-rows 10M] [--generate-only]
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from custseg.sources import DEFAULT_MEMORY_LIMIT

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA = HERE / "data"
RESULTS = HERE / "results"
BIN = Path(sys.executable).parent
CUSTSEG = BIN / "custseg"

# Targets of the foundation issue.
# Targets of issue 13.
TARGET_VS_DUCKDB = 1.15  # custseg time / hand-written DuckDB time in the same memory budget, at most
TARGET_VS_PANDAS = 10.0  # notebook pandas time / custseg time on TARGET_PANDAS_ROWS Parquet rows, at least
TARGET_PANDAS_ROWS = 10_000_000
TARGET_PEAK_MB = 1.5 * 1024  # custseg peak RSS at 50M rows, at most (1.5 GiB)
TARGET_PEAK_ROWS = 50_000_000
# The baseline again, under custseg's default memory budget: the same work in the same memory.
BUDGET_METHOD = "duckdb-budget"
CUSTSEG_BUDGET = DEFAULT_MEMORY_LIMIT

POLL_SECONDS = 0.05
RUN_TIMEOUT = 3 * 3600
QUIET_CORES = 0.25  # the rest of the machine counts as quiet below this many busy cores
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# --- synthetic data ------------------------------------------------------------------------

SCHEMA = pa.schema([
    ("InvoiceNo", pa.string()),
    ("StockCode", pa.string()),
    ("Quantity", pa.int64()),
    ("InvoiceDate", pa.timestamp("us")),
    ("UnitPrice", pa.float64()),
    ("CustomerID", pa.int64()),
    ("Country", pa.string()),
])

ROWS_PER_ORDER = 20  # mean order lines per invoice (Online Retail: 541,909 / 25,900 ≈ 21)
ROWS_PER_CUSTOMER = 80  # 10M rows: 125k customers of whom ~85k order (50M: 625k, ~427k order)
N_PRODUCTS = 4_000
CHUNK_ROWS = 1 << 20  # one Parquet row group per chunk
SHARE_GUEST_ORDERS = 0.20  # orders without CustomerID (Online Retail: 25% of rows)
SHARE_CANCELLED_ORDERS = 0.02  # 'C' invoices with negative quantities (Online Retail: 1.7%)
SHARE_ADJUSTMENTS = 0.0005  # negative quantity on a normal invoice
SHARE_ZERO_PRICE = 0.001
SHARE_DUPLICATES = 0.003  # planted copies of the line before; equal lines of one order add ~1%
FIRST_INVOICE = 536_365
START = np.datetime64("2010-12-01T00:00:00", "us")
N_DAYS = 374  # 2010-12-01 .. 2011-12-09
OPEN_HOURS = (7, 20)

COUNTRIES = [
    ("United Kingdom", 880.0), ("Germany", 22.0), ("France", 20.0), ("EIRE", 18.0),
    ("Spain", 6.0), ("Netherlands", 5.0), ("Belgium", 5.0), ("Switzerland", 5.0),
    ("Portugal", 4.0), ("Australia", 3.0), ("Norway", 3.0), ("Italy", 2.5), ("Finland", 2.0),
    ("Channel Islands", 2.0), ("Cyprus", 1.5), ("Sweden", 1.5), ("Austria", 1.2),
    ("Denmark", 1.2), ("Japan", 1.0), ("Poland", 1.0), ("Israel", 0.8), ("USA", 0.8),
    ("Hong Kong", 0.7), ("Singapore", 0.6), ("Iceland", 0.5), ("Canada", 0.4),
    ("Greece", 0.4), ("Unspecified", 0.4), ("Malta", 0.3), ("United Arab Emirates", 0.3),
    ("European Community", 0.2), ("RSA", 0.2), ("Lebanon", 0.1), ("Lithuania", 0.1),
    ("Brazil", 0.1), ("Czech Republic", 0.1), ("Bahrain", 0.1), ("Saudi Arabia", 0.05),
]
QUANTITIES = np.array([1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 25, 36, 48, 72, 96, 100, 144])
QUANTITY_WEIGHTS = np.array([30, 14, 6, 6, 3, 12, 4, 5, 14, 2, 2, 4, 1, 1, 2, 0.5, 0.5, 0.5, 0.5])


def parse_size(text: str) -> int:
    """'10M' → 10_000_000, '500K' → 500_000, '1234' → 1234."""
    text = text.strip().upper()
    scale = {"K": 1_000, "M": 1_000_000, "G": 1_000_000_000}.get(text[-1:], 1)
    number = text[:-1] if scale > 1 else text
    return int(float(number) * scale)


def size_label(rows: int) -> str:
    if rows % 1_000_000 == 0:
        return f"{rows // 1_000_000}M"
    if rows % 1_000 == 0:
        return f"{rows // 1_000}K"
    return str(rows)


def _products(rng: np.random.Generator) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """Stock codes like '85123A', Zipf-like popularity, a base price per product."""
    special = ["POST", "M", "DOT", "C2", "BANK CHARGES", "PADS", "AMAZONFEE"]
    n = N_PRODUCTS - len(special)
    numbers = rng.choice(np.arange(10_002, 90_000), size=n, replace=False)
    letters = np.where(rng.random(n) < 0.15, rng.choice(list("ABCDEFGHJKLMNPRS"), n), "")
    codes = [f"{a}{b}" for a, b in zip(numbers, letters)] + special
    popularity = 1.0 / np.arange(1, N_PRODUCTS + 1) ** 0.8
    popularity = popularity[rng.permutation(N_PRODUCTS)]
    price = np.round(np.exp(rng.normal(np.log(2.5), 0.8, N_PRODUCTS)), 2).clip(0.01, 600.0)
    return pa.array(codes, pa.string()), np.cumsum(popularity) / popularity.sum(), price


def _customers(rng: np.random.Generator, n: int):
    """Customers sorted by the time they join (30% are there from the start), with ids,
    weights (how often they order, heavy-tailed) and a home country."""
    business_span = N_DAYS * (OPEN_HOURS[1] - OPEN_HOURS[0]) * 3600.0
    joined = np.where(rng.random(n) < 0.3, 0.0, rng.random(n) * business_span)
    joined.sort()
    weight = np.exp(rng.normal(0.0, 1.0, n))
    ids = 12_346 + rng.permutation(n)
    names = pa.array([c for c, _ in COUNTRIES], pa.string())
    country_p = np.array([w for _, w in COUNTRIES])
    country = rng.choice(len(COUNTRIES), size=n, p=country_p / country_p.sum())
    return joined, np.cumsum(weight), ids, country, names, country_p / country_p.sum()


def generate_parquet(rows: int, path: Path, *, seed: int = 20_240_601) -> None:
    """Write ``rows`` Online-Retail-shaped transactions to ``path`` one row group at a time.

    Orders (invoices) come in time order, ~20 lines each, all lines of an order share the
    customer, date and country; a customer orders only after joining, some far more often
    than others.  Memory stays at one chunk (~1M rows) whatever ``rows`` is.
    """
    rng = np.random.default_rng(seed)
    codes, product_cdf, base_price = _products(rng)
    n_customers = max(1_000, rows // ROWS_PER_CUSTOMER)
    joined, customer_cdf, customer_ids, home, country_names, country_p = _customers(rng, n_customers)
    quantity_p = QUANTITY_WEIGHTS / QUANTITY_WEIGHTS.sum()
    day_seconds = (OPEN_HOURS[1] - OPEN_HOURS[0]) * 3600.0
    business_span = N_DAYS * day_seconds

    tmp = path.with_name(path.name + ".part")
    writer = pq.ParquetWriter(tmp, SCHEMA, compression="snappy")
    done = 0
    invoice = FIRST_INVOICE
    try:
        while done < rows:
            chunk = min(CHUNK_ROWS, rows - done)
            n_dup = int(round(chunk * SHARE_DUPLICATES))
            base = chunk - n_dup
            # Orders and their line counts; the last order is cut to fit the chunk.
            n_orders = int(base / ROWS_PER_ORDER * 1.3) + 10
            lines = rng.geometric(1.0 / ROWS_PER_ORDER, n_orders)
            ends = np.cumsum(lines)
            n_orders = int(np.searchsorted(ends, base)) + 1
            lines = lines[:n_orders]
            lines[-1] -= int(ends[n_orders - 1] - base)
            # Order time: a point on the "open hours" axis within this chunk's share of the year.
            lo, hi = business_span * done / rows, business_span * (done + chunk) / rows
            when = np.sort(rng.uniform(lo, hi, n_orders))
            day = np.floor(when / day_seconds)
            seconds = day * 86_400 + OPEN_HOURS[0] * 3600 + (when - day * day_seconds)
            seconds = np.floor(seconds / 60) * 60  # minute resolution, as in Online Retail
            order_time = START + (seconds * 1e6).astype("int64").astype("timedelta64[us]")
            # Customer: weighted among those who have joined by then.
            eligible = np.maximum(np.searchsorted(joined, when, side="right"), 1)
            pick = rng.random(n_orders) * customer_cdf[eligible - 1]
            who = np.minimum(np.searchsorted(customer_cdf, pick, side="right"), n_customers - 1)
            guest = rng.random(n_orders) < SHARE_GUEST_ORDERS
            cancelled = rng.random(n_orders) < SHARE_CANCELLED_ORDERS
            order_country = np.where(
                guest | (rng.random(n_orders) < 0.005),
                rng.choice(len(COUNTRIES), size=n_orders, p=country_p),
                home[who],
            )
            numbers = np.arange(invoice, invoice + n_orders)
            invoice += n_orders

            # Lines, then exact duplicates of a few lines right after the original.
            order_of = np.repeat(np.arange(n_orders), lines)
            product = np.searchsorted(product_cdf, rng.random(base), side="right").clip(0, N_PRODUCTS - 1)
            quantity = QUANTITIES[rng.choice(len(QUANTITIES), size=base, p=quantity_p)]
            quantity = np.where(cancelled[order_of] | (rng.random(base) < SHARE_ADJUSTMENTS), -quantity, quantity)
            price = base_price[product] * np.where(rng.random(base) < 0.1, 0.85, 1.0)
            price = np.where(rng.random(base) < SHARE_ZERO_PRICE, 0.0, np.round(price, 2))
            copies = np.ones(base, dtype=np.int64)
            copies[rng.choice(base, size=n_dup, replace=False)] = 2
            take = np.repeat(np.arange(base), copies)
            order_of, product, quantity, price = order_of[take], product[take], quantity[take], price[take]

            invoice_text = pc.cast(pa.array(numbers[order_of]), pa.string())
            invoice_text = pc.if_else(
                pa.array(cancelled[order_of]),
                pc.binary_join_element_wise("C", invoice_text, ""),
                invoice_text,
            )
            customer = pa.array(customer_ids[who][order_of], pa.int64(), mask=guest[order_of])
            table = pa.table({
                "InvoiceNo": invoice_text,
                "StockCode": codes.take(pa.array(product)),
                "Quantity": pa.array(quantity, pa.int64()),
                "InvoiceDate": pa.array(order_time[order_of], pa.timestamp("us")),
                "UnitPrice": pa.array(price, pa.float64()),
                "CustomerID": customer,
                "Country": country_names.take(pa.array(order_country[order_of])),
            }, schema=SCHEMA)
            writer.write_table(table, row_group_size=len(table))
            done += len(table)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    writer.close()
    tmp.replace(path)


def generate_csv(parquet: Path, path: Path) -> None:
    """The same rows as CSV (header, comma, ISO timestamps, empty field for a null)."""
    import duckdb

    tmp = path.with_name(path.name + ".part")
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    con.execute(
        f"COPY (SELECT * FROM read_parquet({_lit(parquet)})) TO {_lit(tmp)} (FORMAT csv, HEADER true)"
    )
    con.close()
    tmp.replace(path)


def dataset(rows: int, fmt: str) -> Path:
    """The data file for ``rows`` and ``fmt``, generated on first use."""
    DATA.mkdir(parents=True, exist_ok=True)
    parquet = DATA / f"transactions-{size_label(rows)}.parquet"
    if not parquet.exists():
        print(f"generating {parquet} ...", flush=True)
        started = time.perf_counter()
        generate_parquet(rows, parquet)
        print(f"  {time.perf_counter() - started:.1f} s, {parquet.stat().st_size / 1e6:,.0f} MB", flush=True)
    if fmt == "parquet":
        return parquet
    csv = DATA / f"transactions-{size_label(rows)}.csv"
    if not csv.exists():
        print(f"generating {csv} ...", flush=True)
        started = time.perf_counter()
        generate_csv(parquet, csv)
        print(f"  {time.perf_counter() - started:.1f} s, {csv.stat().st_size / 1e6:,.0f} MB", flush=True)
    return csv


def describe_data(path: Path) -> dict:
    """Row count, customers, orders, products and rule counts of a generated file."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    source = f"read_parquet({_lit(path)})"
    row = con.execute(f"""
        SELECT count(*), count(DISTINCT CustomerID), count(DISTINCT InvoiceNo),
               count(DISTINCT StockCode), count(DISTINCT Country),
               count(*) FILTER (WHERE CustomerID IS NULL),
               count(*) FILTER (WHERE InvoiceNo LIKE 'C%' OR Quantity < 0),
               count(*) FILTER (WHERE UnitPrice <= 0),
               min(InvoiceDate), max(InvoiceDate)
        FROM {source}""").fetchall()[0]
    distinct = con.execute(f"SELECT count(*) FROM (SELECT DISTINCT * FROM {source})").fetchall()[0][0]
    con.close()
    keys = ["rows", "customers", "invoices", "products", "countries", "rows_without_customer",
            "cancellation_rows", "non_positive_price_rows", "first_date", "last_date"]
    info = dict(zip(keys, row))
    info["duplicate_rows"] = info["rows"] - distinct
    info["first_date"], info["last_date"] = str(info["first_date"]), str(info["last_date"])
    return info


def warm(path: Path) -> None:
    """Read the file once so that every timed run starts from the page cache."""
    with path.open("rb") as fh:
        while fh.read(16 << 20):
            pass


# --- the methods ---------------------------------------------------------------------------

# The baseline: what someone fluent in DuckDB writes by hand for the same features.
DUCKDB_SCRIPT = r'''
import sys, duckdb
src, fmt, out = sys.argv[1], sys.argv[2], sys.argv[3]
# An optional fourth argument caps DuckDB's memory (the duckdb-budget method).
con = duckdb.connect(config={"memory_limit": sys.argv[4]} if len(sys.argv) > 4 else {})
reader = "read_parquet" if fmt == "parquet" else "read_csv"
con.execute(f"""
COPY (
  WITH clean AS (
    SELECT DISTINCT * FROM {reader}('{src}')
    WHERE CustomerID IS NOT NULL AND InvoiceNo NOT LIKE 'C%' AND Quantity >= 0 AND UnitPrice > 0
  ),
  per_customer AS (
    SELECT CustomerID,
           count(DISTINCT InvoiceNo) AS frequency,
           sum(Quantity * UnitPrice) AS monetary,
           min(InvoiceDate) AS first_order_at,
           max(InvoiceDate) AS last_order_at,
           count(DISTINCT StockCode) AS n_products,
           mode(Country) AS country
    FROM clean GROUP BY CustomerID
  ),
  ref AS (SELECT date_trunc('day', max(last_order_at)) + INTERVAL 1 DAY AS as_of FROM per_customer)
  SELECT CAST(CustomerID AS VARCHAR) AS customer_id,
         CAST(floor((epoch(as_of) - epoch(last_order_at)) / 86400) AS BIGINT) AS recency_days,
         frequency,
         monetary,
         CAST(floor((epoch(as_of) - epoch(first_order_at)) / 86400) AS BIGINT) AS tenure_days,
         monetary / frequency AS avg_order_value,
         CASE WHEN frequency > 1
              THEN (epoch(last_order_at) - epoch(first_order_at)) / 86400 / (frequency - 1) END
           AS avg_days_between_orders,
         n_products, first_order_at, last_order_at, country
  FROM per_customer, ref
) TO '{out}' (FORMAT parquet)
""")
'''

# The notebook: the RFM-tutorial way, with lambdas in groupby().agg().
PANDAS_SCRIPT = r'''
import sys
import pandas as pd
src, fmt, out = sys.argv[1], sys.argv[2], sys.argv[3]
if fmt == "parquet":
    df = pd.read_parquet(src)
else:
    df = pd.read_csv(src, dtype={"InvoiceNo": str, "StockCode": str}, parse_dates=["InvoiceDate"])
df = df[df["CustomerID"].notna()]
df = df.drop_duplicates()
df = df[~df["InvoiceNo"].astype(str).str.startswith("C")]
df = df[df["Quantity"] >= 0]
df = df[df["UnitPrice"] > 0]
df["TotalPrice"] = df["Quantity"] * df["UnitPrice"]
ref = df["InvoiceDate"].max().normalize() + pd.Timedelta(days=1)
rfm = df.groupby("CustomerID").agg(
    recency_days=("InvoiceDate", lambda x: (ref - x.max()).days),
    frequency=("InvoiceNo", lambda x: x.nunique()),
    monetary=("TotalPrice", lambda x: x.sum()),
    tenure_days=("InvoiceDate", lambda x: (ref - x.min()).days),
    n_products=("StockCode", lambda x: x.nunique()),
    first_order_at=("InvoiceDate", "min"),
    last_order_at=("InvoiceDate", "max"),
    country=("Country", lambda x: x.mode().iloc[0]),
)
rfm["avg_order_value"] = rfm["monetary"] / rfm["frequency"]
span = (rfm["last_order_at"] - rfm["first_order_at"]).dt.total_seconds() / 86400
rfm["avg_days_between_orders"] = (span / (rfm["frequency"] - 1)).where(rfm["frequency"] > 1)
rfm = rfm.reset_index().rename(columns={"CustomerID": "customer_id"})
rfm["customer_id"] = rfm["customer_id"].astype("int64").astype(str)
rfm.to_parquet(out, index=False)
'''


def command(method: str, source: Path, fmt: str, out: Path) -> list[str]:
    if method == "custseg":
        return [str(CUSTSEG), "features", str(source), "--out", str(out)]
    if method == BUDGET_METHOD:
        return [sys.executable, "-c", DUCKDB_SCRIPT, str(source), fmt, str(out), CUSTSEG_BUDGET]
    script = {"duckdb": DUCKDB_SCRIPT, "pandas": PANDAS_SCRIPT}[method]
    return [sys.executable, "-c", script, str(source), fmt, str(out)]


def _tree_rss(proc) -> int:
    import psutil

    total = 0
    try:
        members = [proc] + proc.children(recursive=True)
    except psutil.Error:
        return 0
    for member in members:
        try:
            total += member.memory_info().rss
        except psutil.Error:
            pass
    return total


def _cpu_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = values
    return user + nice + system + irq + softirq + steal, sum(values)


def busy_cores(seconds: float = 2.0) -> float:
    """How many cores were busy, on average, over the next ``seconds``."""
    busy0, total0 = _cpu_ticks()
    time.sleep(seconds)
    busy1, total1 = _cpu_ticks()
    return (busy1 - busy0) / max(1, total1 - total0) * (os.cpu_count() or 1)


def wait_for_quiet(max_wait: float) -> float:
    """Wait (up to ``max_wait`` s) until other processes leave the CPUs nearly idle.

    Other people's jobs on a shared machine slow every method down unevenly; the load seen
    during each run is recorded as well.  Returns the busy cores seen last.
    """
    deadline = time.monotonic() + max_wait
    busy = busy_cores()
    while busy > QUIET_CORES and time.monotonic() < deadline:
        busy = busy_cores()
    return round(busy, 2)


# Starts the measured command and reports on it.  Linux carries a process's peak RSS across
# fork and exec (exec folds the old address space's high-water mark into ru_maxrss), so a
# command started straight from this process would report at least this process's own peak.
# This launcher is small and starts the command itself: the command's ru_maxrss is then its
# own peak (plus at most the launcher's ~10 MB).
LAUNCHER = r'''
import json, os, subprocess, sys, time
report, cmd = sys.argv[1], sys.argv[2:]
started = time.perf_counter()
child = subprocess.Popen(cmd)
_, status, usage = os.wait4(child.pid, 0)
seconds = time.perf_counter() - started
with open(report, "w") as fh:
    json.dump({"seconds": seconds, "maxrss_kib": usage.ru_maxrss,
               "cpu": usage.ru_utime + usage.ru_stime,
               "returncode": os.waitstatus_to_exitcode(status)}, fh)
'''


def measure(cmd: list[str], *, timeout: float = RUN_TIMEOUT) -> dict:
    """Run ``cmd`` through the launcher; wall seconds, CPU seconds and peak RSS.

    ``peak_rss_mb``: ``ru_maxrss`` of the command from ``os.wait4`` (the kernel's high-water
    mark).  ``peak_rss_polled_mb``: the largest sum of RSS over the command's process tree
    seen by psutil every 50 ms.  ``others_cores``: CPU used during the run by processes other
    than the command, the launcher and this one, in cores (0 on a quiet machine).
    """
    import psutil
    import resource

    log = tempfile.TemporaryFile()
    fd, report = tempfile.mkstemp(prefix="custseg-bench-", suffix=".json")
    os.close(fd)
    busy0, total0 = _cpu_ticks()
    self0 = resource.getrusage(resource.RUSAGE_SELF)
    kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    launcher = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, report, *cmd], stdout=log, stderr=subprocess.STDOUT,
        cwd=tempfile.gettempdir(), start_new_session=True,
    )
    watched = psutil.Process(launcher.pid)
    polled = [0]
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            try:
                children = watched.children()
            except psutil.Error:
                children = []
            if children:
                polled[0] = max(polled[0], _tree_rss(children[0]))
            stop.wait(POLL_SECONDS)

    def kill() -> None:
        try:
            os.killpg(launcher.pid, 9)
        except ProcessLookupError:
            pass

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    timer = threading.Timer(timeout, kill)
    timer.start()
    try:
        launcher.wait()
    finally:
        timer.cancel()
        stop.set()
        poller.join()
    busy1, total1 = _cpu_ticks()
    self1 = resource.getrusage(resource.RUSAGE_SELF)
    kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        with open(report) as fh:
            got = json.load(fh)
    except (OSError, ValueError):
        got = {"seconds": float("nan"), "maxrss_kib": 0, "cpu": 0.0, "returncode": -9}
    finally:
        os.unlink(report)
    own_cpu = (self1.ru_utime + self1.ru_stime) - (self0.ru_utime + self0.ru_stime)
    tree_cpu = (kids1.ru_utime + kids1.ru_stime) - (kids0.ru_utime + kids0.ru_stime)  # launcher + command
    others = max(0.0, (busy1 - busy0) / CLOCK_TICKS - tree_cpu - own_cpu)
    log.seek(0)
    output = log.read().decode("utf-8", "replace")
    log.close()
    seconds = got["seconds"]
    return {
        "seconds": round(seconds, 3),
        "peak_rss_mb": round(got["maxrss_kib"] / 1024, 1),  # Linux: KiB
        "peak_rss_polled_mb": round(polled[0] / 2**20, 1),
        "cpu_seconds": round(got["cpu"], 2),
        "others_cores": round(others / seconds, 2) if seconds == seconds and seconds > 0 else None,
        "returncode": got["returncode"],
        "output_tail": output[-2000:] if got["returncode"] else output[-600:],
    }


def summarise_output(path: Path) -> dict:
    """Customers and total monetary of a feature file (what the methods must agree on)."""
    table = pq.read_table(path, columns=["customer_id", "monetary", "frequency", "recency_days",
                                         "tenure_days", "n_products"])
    return {
        "customers": table.num_rows,
        "distinct_customers": len(pc.unique(table["customer_id"])),
        "monetary": float(pc.sum(table["monetary"]).as_py()),
        "orders": int(pc.sum(table["frequency"]).as_py()),
        "sum_recency_days": int(pc.sum(table["recency_days"]).as_py()),
        "sum_tenure_days": int(pc.sum(table["tenure_days"]).as_py()),
        "sum_n_products": int(pc.sum(table["n_products"]).as_py()),
    }


def agree(a: dict, b: dict) -> bool:
    """Same customers and orders, same total monetary (to 1e-9), same day counts and products."""
    exact = ("customers", "distinct_customers", "orders", "sum_recency_days", "sum_tenure_days", "sum_n_products")
    return all(a[k] == b[k] for k in exact) and math.isclose(a["monetary"], b["monetary"], rel_tol=1e-9)


# --- the run -------------------------------------------------------------------------------

def machine() -> dict:
    import duckdb
    import pandas
    import psutil

    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    os_name = platform.platform()
    release = Path("/etc/os-release")
    if release.exists():
        for line in release.read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = f"{line.split('=', 1)[1].strip(chr(34))} ({platform.release()})"
    try:
        custseg_version = importlib.metadata.version("custseg")
    except importlib.metadata.PackageNotFoundError:
        custseg_version = "not installed"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": os_name,
        "python": platform.python_version(),
        "duckdb": duckdb.__version__,
        "pandas": pandas.__version__,
        "pyarrow": pa.__version__,
        "numpy": np.__version__,
        "custseg": custseg_version,
        "custseg_source_sha256": _source_fingerprint(),
    }


def _source_fingerprint() -> str:
    """Hash of custseg's source files, to tell which code a result was measured on."""
    digest = hashlib.sha256()
    for path in sorted((ROOT / "src" / "custseg").rglob("*.py")):
        digest.update(path.relative_to(ROOT).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def run(sizes: list[int], formats: list[str], repeat: int, repeat_large: int, skip_pandas: bool,
        pandas_max_rows: int, quiet_wait: float, *, tag: str = "") -> dict:
    RESULTS.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="custseg-bench-"))
    started = dt.datetime.now()
    result = {
        "date": started.date().isoformat(),
        "tag": tag,
        "started": started.isoformat(timespec="seconds"),
        "machine": machine(),
        "settings": {
            "sizes": [size_label(s) for s in sizes], "formats": formats, "repeat": repeat,
            "repeat_above_10M": repeat_large,
            "quiet_wait_seconds": quiet_wait,
            "pandas_max_rows": size_label(pandas_max_rows) if not skip_pandas else None,
            "peak_rss": "ru_maxrss of the command from os.wait4 in a small launcher process "
                        "(kernel high-water mark); peak_rss_polled: psutil, the command's process "
                        "tree, every 50 ms",
        },
        "data": {},
        "runs": [],
        "checks": [],
    }
    print(json.dumps(result["machine"], indent=1), flush=True)
    try:
        for rows in sizes:
            for fmt in formats:
                source = dataset(rows, fmt)
                key = f"{size_label(rows)}"
                if key not in result["data"]:
                    result["data"][key] = describe_data(DATA / f"transactions-{key}.parquet")
                    print(f"data {key}: {result['data'][key]}", flush=True)
                result["data"][key][f"{fmt}_bytes"] = source.stat().st_size
                methods = ["custseg", "duckdb", BUDGET_METHOD]
                if not skip_pandas and rows <= pandas_max_rows:
                    methods.append("pandas")
                times = repeat if rows <= 10_000_000 else repeat_large
                warm(source)
                summaries: dict[str, dict] = {}
                for attempt in range(times):
                    for method in methods:
                        out = scratch / f"{method}-{key}-{fmt}-{attempt}.parquet"
                        print(f"[{dt.datetime.now():%H:%M:%S}] {key} {fmt} {method} run {attempt + 1}/{times} ...",
                              end=" ", flush=True)
                        before = wait_for_quiet(quiet_wait)
                        measured = measure(command(method, source, fmt, out))
                        record = {"rows": rows, "size": key, "format": fmt, "method": method,
                                  "attempt": attempt + 1, "busy_cores_before": before, **measured}
                        if measured["returncode"] == 0 and out.exists():
                            summary = summarise_output(out)
                            record["output"] = summary
                            summaries.setdefault(method, summary)
                            out.unlink()
                        print(f"{measured['seconds']:.2f} s (cpu {measured['cpu_seconds']:.1f} s), "
                              f"peak {measured['peak_rss_mb']:,.0f} MB (polled {measured['peak_rss_polled_mb']:,.0f}), "
                              f"others {measured['others_cores'] or 0:.2f} cores, rc {measured['returncode']}",
                              flush=True)
                        if measured["returncode"]:
                            print(measured["output_tail"], flush=True)
                        result["runs"].append(record)
                        _save(result)
                for method, summary in summaries.items():
                    if method == "duckdb" or "duckdb" not in summaries:
                        continue
                    ok = agree(summary, summaries["duckdb"])
                    check = {"size": key, "format": fmt, "method": method, "baseline": "duckdb",
                             "agree": ok, method: summary, "duckdb": summaries["duckdb"]}
                    result["checks"].append(check)
                    print(f"check {key} {fmt}: {method} {summary} vs duckdb {summaries['duckdb']} → "
                          f"{'agree' if ok else 'DIFFER'}", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        result["finished"] = dt.datetime.now().isoformat(timespec="seconds")
        _save(result)
    return result


def _stem(result: dict) -> str:
    """``features-DATE`` or, with ``--tag``, ``features-DATE-TAG``."""
    return f"features-{result['date']}" + (f"-{result['tag']}" if result.get("tag") else "")


def _save(result: dict) -> None:
    stem = RESULTS / _stem(result)
    Path(f"{stem}.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    Path(f"{stem}.md").write_text(render(result))


# --- the report ----------------------------------------------------------------------------

def _best(runs: list[dict], size: str, fmt: str, method: str) -> dict | None:
    ok = [r for r in runs if r["size"] == size and r["format"] == fmt and r["method"] == method
          and r["returncode"] == 0]
    return min(ok, key=lambda r: r["seconds"]) if ok else None


def _min_cpu(runs: list[dict], size: str, fmt: str, method: str) -> float:
    return min(r["cpu_seconds"] for r in runs if r["size"] == size and r["format"] == fmt
               and r["method"] == method and r["returncode"] == 0)


def _loaded(*records: dict) -> bool:
    """Did other processes keep a core's quarter or more busy during any of these runs?"""
    return any((r.get("others_cores") or 0) > QUIET_CORES for r in records)


def _all(runs: list[dict], size: str, fmt: str, method: str) -> list[dict]:
    return [r for r in runs if r["size"] == size and r["format"] == fmt and r["method"] == method]


def render(result: dict) -> str:
    m = result["machine"]
    runs = result["runs"]
    lines = [
        f"# `custseg features` benchmark — {result['date']}",
        "",
        "Produced by `bench/features.py` (see bench/README.md).  Synthetic Online-Retail-shaped "
        "transaction logs; every method runs in its own child process on the same file.",
        "",
        "## Machine",
        "",
        f"- CPU: {m['cpu']}, {m['cores']} cores; RAM {m['ram_gib']} GiB",
        f"- OS: {m['os']}",
        f"- Python {m['python']}, DuckDB {m['duckdb']}, pandas {m['pandas']}, pyarrow {m['pyarrow']}, "
        f"NumPy {m['numpy']}; custseg {m['custseg']} (source sha256 {m['custseg_source_sha256']})",
        f"- run {result['started']} → {result.get('finished', '(running)')}; "
        f"runs per method: {result['settings']['repeat']} up to 10M rows, "
        f"{result['settings'].get('repeat_above_10M', 1)} above",
        "",
        "## Method",
        "",
        "- **custseg**: `custseg features FILE --out OUT.parquet` (installed CLI).",
        "- **duckdb** (baseline): a hand-written DuckDB query with the same cleaning rules "
        "(drop rows without CustomerID, exact duplicate rows, cancellations — InvoiceNo "
        "starting with 'C' or Quantity < 0 — and UnitPrice ≤ 0) and the same features, "
        "written to Parquet by `python -c`.",
        f"- **{BUDGET_METHOD}**: the same query with DuckDB's memory limit at custseg's default "
        f"budget ({CUSTSEG_BUDGET}), for the same work in the same memory (the baseline of the "
        "speed target).",
        "- **pandas**: notebook code — `read_parquet`/`read_csv`, boolean masks, "
        "`drop_duplicates`, `groupby('CustomerID').agg(x=(col, lambda x: ...))`.",
        "- Seconds: wall time of the child process, start-up and imports included.  Peak RSS: "
        "`ru_maxrss` of the child read with `os.wait4` when it exits (the kernel's high-water "
        "mark), by a small launcher process so that the benchmark's own memory does not leak "
        "into it through fork/exec; the psutil poll of the process tree every 50 ms is in the "
        "JSON as a cross-check.  "
        "Files are read once before timing (page cache warm); before each run the script "
        "waits (a bounded time) for other processes to leave the CPUs idle.",
        "- Best of the runs is shown; every run's time is listed.  × baseline = seconds / "
        "duckdb seconds; pandas speedup = pandas seconds / this method's seconds.",
        "",
    ]
    if result["data"]:
        lines += ["## Data", "", "| rows | customers | invoices | products | without CustomerID | "
                  "cancellation rows | price ≤ 0 rows | duplicate rows | Parquet MB | CSV MB |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for key, d in result["data"].items():
            lines.append(
                f"| {d['rows']:,} | {d['customers']:,} | {d['invoices']:,} | {d['products']:,} | "
                f"{d['rows_without_customer']:,} | {d['cancellation_rows']:,} | "
                f"{d['non_positive_price_rows']:,} | {d['duplicate_rows']:,} | "
                f"{d.get('parquet_bytes', 0) / 1e6:,.0f} | {d.get('csv_bytes', 0) / 1e6:,.0f} |"
            )
        lines += ["", f"Dates {next(iter(result['data'].values()))['first_date']} to "
                  f"{next(iter(result['data'].values()))['last_date']}.", ""]
    lines += ["## Results", "",
              "| rows | format | method | best s | all runs (s) | CPU s | peak RSS MB | × baseline | "
              "× baseline (CPU) | pandas speedup | others' load |",
              "|---:|---|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    groups = []
    for r in runs:
        if (r["size"], r["format"]) not in groups:
            groups.append((r["size"], r["format"]))
    for size, fmt in groups:
        base = _best(runs, size, fmt, "duckdb")
        notebook = _best(runs, size, fmt, "pandas")
        for method in ("custseg", "duckdb", BUDGET_METHOD, "pandas"):
            every = _all(runs, size, fmt, method)
            if not every:
                continue
            best = _best(runs, size, fmt, method)
            listed = ", ".join(f"{r['seconds']:.2f}" if r["returncode"] == 0 else f"failed (rc {r['returncode']})"
                               for r in every)
            if best is None:
                lines.append(f"| {size} | {fmt} | {method} | — | {listed} | — | — | — | — | — | — |")
                continue
            peak = max(r["peak_rss_mb"] for r in every if r["returncode"] == 0)
            cpu = _min_cpu(runs, size, fmt, method)
            ratio = f"{best['seconds'] / base['seconds']:.2f}" if base else "—"
            cpu_ratio = f"{cpu / _min_cpu(runs, size, fmt, 'duckdb'):.2f}" if base else "—"
            speedup = f"{notebook['seconds'] / best['seconds']:.1f}×" if notebook and method != "pandas" else "—"
            lines.append(f"| {size} | {fmt} | {method} | {best['seconds']:.2f} | {listed} | "
                         f"{cpu:.1f} | {peak:,.0f} | {ratio} | {cpu_ratio} | {speedup} | "
                         f"{best.get('others_cores') or 0:.2f} |")
    lines += ["", "CPU s: user + system CPU of the child, the least of the runs.  × baseline (CPU): the "
              "same ratio on CPU seconds, which other processes' work disturbs much less than wall "
              "time.  Peak RSS: the largest of the runs.  Others' load: cores kept busy by other "
              "processes during the best run (0 on a quiet machine; a run next to others' work is "
              f"slower than the method is — above {QUIET_CORES} treat its wall time with care).", ""]
    lines += ["## Targets", "", "| target | measured | status |", "|---|---|---|"]
    lines += _targets(result)
    lines += ["", "## Agreement", ""]
    if result["checks"]:
        for c in result["checks"]:
            a, b = c[c["method"]], c["duckdb"]
            lines.append(
                f"- {c['size']} {c['format']}: {c['method']} {a['customers']:,} customers, "
                f"{a['orders']:,} orders, monetary {a['monetary']:,.2f}; duckdb {b['customers']:,} "
                f"customers, {b['orders']:,} orders, monetary {b['monetary']:,.2f} → "
                f"**{'agree' if c['agree'] else 'DIFFER'}**"
            )
    else:
        lines.append("- (no completed pair yet)")
    lines.append("")
    return "\n".join(lines)


def _targets(result: dict) -> list[str]:
    """The targets of issue 13: custseg within 1.15x of the hand-written query run in the same
    memory budget, at least 10x faster than notebook pandas on 10M Parquet rows, at most 1.5 GB
    at 50M rows; the unbudgeted query's ratio is context."""
    runs = result["runs"]
    out = []
    groups = sorted({(r["rows"], r["size"], r["format"]) for r in runs})
    for rows, size, fmt in groups:
        mine, base = _best(runs, size, fmt, "custseg"), _best(runs, size, fmt, BUDGET_METHOD)
        if mine and base:
            ratio = mine["seconds"] / base["seconds"]
            cpu_ratio = _min_cpu(runs, size, fmt, "custseg") / _min_cpu(runs, size, fmt, BUDGET_METHOD)
            note = (f"; others' load during these runs, CPU-time ratio {cpu_ratio:.2f}×"
                    if _loaded(mine, base) else f"; CPU-time ratio {cpu_ratio:.2f}×")
            status = "MET" if ratio <= TARGET_VS_DUCKDB else "NOT MET"
            if _loaded(mine, base) and (cpu_ratio <= TARGET_VS_DUCKDB) != (ratio <= TARGET_VS_DUCKDB):
                status += f" (by CPU time {'MET' if cpu_ratio <= TARGET_VS_DUCKDB else 'NOT MET'}; rerun on a quiet machine)"
            out.append(f"| custseg ≤ {TARGET_VS_DUCKDB}× hand-written DuckDB in the same {CUSTSEG_BUDGET} "
                       f"({size} {fmt}) | {ratio:.2f}× ({mine['seconds']:.2f} s vs {base['seconds']:.2f} s{note}) | "
                       f"{status} |")
    for rows, size, fmt in groups:
        mine, free = _best(runs, size, fmt, "custseg"), _best(runs, size, fmt, "duckdb")
        if mine and free:
            ratio = mine["seconds"] / free["seconds"]
            out.append(f"| (context, no target) custseg vs the baseline without a memory limit "
                       f"({size} {fmt}) | {ratio:.2f}× ({mine['seconds']:.2f} s vs {free['seconds']:.2f} s) | — |")
    for rows, size, fmt in groups:
        mine, notebook = _best(runs, size, fmt, "custseg"), _best(runs, size, fmt, "pandas")
        if mine and notebook:
            speedup = notebook["seconds"] / mine["seconds"]
            note = "; others' load during these runs" if _loaded(mine, notebook) else ""
            targeted = fmt == "parquet" and rows == TARGET_PANDAS_ROWS
            label = (f"custseg ≥ {TARGET_VS_PANDAS:.0f}× faster than notebook pandas ({size} {fmt})" if targeted
                     else f"(context, no target) custseg vs notebook pandas ({size} {fmt})")
            status = ("MET" if speedup >= TARGET_VS_PANDAS else "NOT MET") if targeted else "—"
            out.append(f"| {label} | {speedup:.1f}× ({notebook['seconds']:.2f} s vs {mine['seconds']:.2f} s{note}) | "
                       f"{status} |")
    for rows, size, fmt in groups:
        if rows < TARGET_PEAK_ROWS:
            continue
        done = [r for r in _all(runs, size, fmt, "custseg") if r["returncode"] == 0]
        if done:
            peak = max(r["peak_rss_mb"] for r in done)
            out.append(f"| custseg peak memory ≤ 1.5 GB at {size} rows ({fmt}) | {peak:,.0f} MB | "
                       f"{'MET' if peak <= TARGET_PEAK_MB else 'NOT MET'} |")
    if not any(rows >= TARGET_PEAK_ROWS for rows, _, _ in groups):
        out.append("| custseg peak memory ≤ 1.5 GB at 50M rows | not measured in this run | — |")
    return out or ["| (no completed runs yet) | | |"]


def _lit(path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10M,50M", help="row counts, e.g. 10M,50M (default: %(default)s)")
    parser.add_argument("--formats", default="parquet,csv", help="parquet, csv or both (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per method and file up to 10M rows (default: %(default)s)")
    parser.add_argument("--repeat-large", type=int, default=1,
                        help="runs per method and file above 10M rows (default: %(default)s)")
    parser.add_argument("--skip-pandas", action="store_true", help="do not run the notebook pandas code")
    parser.add_argument("--pandas-max-rows", default="10M",
                        help="run the pandas code only up to this size (default: %(default)s)")
    parser.add_argument("--quiet-wait", type=float, default=60.0,
                        help="before each run, wait up to this many seconds for other processes to "
                             "leave the CPUs idle (default: %(default)s)")
    parser.add_argument("--generate-only", action="store_true", help="only make the data files")
    parser.add_argument("--tag", default="", help="suffix of the result file names (features-DATE-TAG)")
    args = parser.parse_args(argv)
    try:
        sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
        pandas_max_rows = parse_size(args.pandas_max_rows)
    except ValueError:
        parser.error(f"sizes look like 10M, 500K or 1000000, got --sizes {args.sizes} "
                     f"--pandas-max-rows {args.pandas_max_rows}")
    if not sizes or min(sizes) < 1_000:
        parser.error(f"--sizes must name at least one size of 1K rows or more, got {args.sizes}")
    formats = [f.strip().lower() for f in args.formats.split(",") if f.strip()]
    bad = [f for f in formats if f not in ("parquet", "csv")]
    if bad:
        parser.error(f"--formats must be parquet and/or csv, got {', '.join(bad)}")
    if args.repeat < 1 or args.repeat_large < 1:
        parser.error(f"--repeat and --repeat-large must be at least 1, got {args.repeat} and {args.repeat_large}")
    if not CUSTSEG.exists():
        parser.error(f"{CUSTSEG} not found; install custseg in this environment (make install)")
    os.environ.pop("CUSTSEG_MEMORY_LIMIT", None)  # custseg runs with its default budget
    if args.generate_only:
        for rows in sizes:
            for fmt in formats:
                print(dataset(rows, fmt))
        return 0
    result = run(sizes, formats, args.repeat, args.repeat_large, args.skip_pandas,
                 pandas_max_rows, args.quiet_wait, tag=args.tag)
    print(f"\nresults → {RESULTS / _stem(result)}.md / .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
