"""No formula ever reaches a spreadsheet: every .csv and .xlsx custseg writes with text from the
source has an apostrophe in front of text cells and column names that begin with = + - @, a
tab or a carriage return; numeric columns stay numbers, and Parquet keeps the text as it is."""

from __future__ import annotations

import csv
import random
import re
import subprocess
import sys

import duckdb
import pandas as pd
import pytest

from custseg import outputs
from custseg.cli import main

RISKY = ("=", "+", "-", "@", "\t", "\r")
COUNTRIES = ['@SUM(1+1)', '=HYPERLINK("http://x","y")', "+1", "-1+2", "\tx", "\rcr", "France", "Spain"]
NUMBER = re.compile(r"-?\d+(\.\d+)?(e-?\d+)?")
IDS = {0: "=1+1", 1: "-7", 2: "@me"}  # the other customers are C003, C004, ...


@pytest.fixture(scope="module")
def orders(tmp_path_factory):
    """A transaction log whose countries, customer ids and an extra column ('=bad') are
    formulas, with one cancellation (quantity -5) among 40 customers."""
    rng = random.Random(3)
    rows, invoice = [], 0
    for c in range(40):
        customer = IDS.get(c, f"C{c:03d}")
        for _ in range(rng.randint(1, 6)):
            invoice += 1
            day = rng.randint(1, 330)
            for _ in range(rng.randint(1, 3)):
                rows.append([f"{invoice:05d}", f"P{rng.randint(1, 9)}", rng.randint(1, 10),
                             f"2011-{1 + day // 31:02d}-{1 + day % 28:02d} 10:00:00", round(rng.uniform(0.5, 20), 2),
                             customer, COUNTRIES[c % len(COUNTRIES)], "=cmd|' /C calc'!A0"])
    rows.append(["C99999", "P1", -5, "2011-03-03 10:00:00", 2.5, "C005", "-1+2", "@bad"])
    path = tmp_path_factory.mktemp("formulas") / "orders.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["InvoiceNo", "StockCode", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID", "Country", "=bad"])
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def customers(tmp_path_factory):
    """A customer table: a formula id, a numeric column named '=bad', negative balances, and a
    text column of codes, one of them the plain number '-12'."""
    rng = random.Random(1)
    path = tmp_path_factory.mktemp("formulas") / "customers.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["customer_id", "balance", "=bad", "code"])
        for i in range(60):
            balance = -5 if i == 1 else round(rng.gauss(0, 50), 2)
            writer.writerow(["=1+1" if i == 0 else f"K{i}", balance, rng.randint(-20, 20), ["-12", "=x", "ok"][i % 3]])
    return path


@pytest.fixture(scope="module")
def run_dir(orders, tmp_path_factory):
    """A run folder of the transaction log (without the HTML report, see the module notes)."""
    folder = tmp_path_factory.mktemp("formulas") / "run"
    assert main(["segment", str(orders), "--out", str(folder), "--algorithm", "kmeans", "--k", "2",
                 "--seed", "1", "--no-report"]) == 0
    return folder


def csv_cells(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))


def assert_no_formula_in_csv(path):
    """No cell starts with a risky character, except a number (a numeric column's -5)."""
    rows = csv_cells(path)
    assert rows, path
    bad = [(n, cell) for n, row in enumerate(rows) for cell in row
           if cell.startswith(RISKY) and not NUMBER.fullmatch(cell)]
    assert not bad, (path.name, bad[:5])
    return rows


def assert_no_formula_in_xlsx(path):
    from openpyxl import load_workbook

    book = load_workbook(path)
    cells = [cell for sheet in book.worksheets for row in sheet.iter_rows() for cell in row]
    assert not [c.value for c in cells if c.data_type == "f"], path.name
    bad = [c.value for c in cells if isinstance(c.value, str) and c.value.startswith(RISKY)]
    assert not bad, (path.name, bad[:5])
    return book


def column(rows, name):
    at = rows[0].index(name)
    return [row[at] for row in rows[1:]]


# --- the rule --------------------------------------------------------------------------------

def test_neutralise_prefixes_risky_text_and_names_only():
    frame = pd.DataFrame({
        "=name": ["=1+1", "+1", "-12", "@me", "\tx", "\rx", "ok", None],
        "n": [-5, 1, 2, 3, 4, 5, 6, 7],
        "x": [-1.5, 0.0, 1, 2, 3, 4, 5, float("nan")],
        "cat": pd.Categorical(["-a", "b"] * 4),
        "mixed": pd.Series([-3, "-3", "'=x", None, 1, 2, 3, 4], dtype=object),
        "when": pd.date_range("2011-01-01", periods=8),
    })
    got = outputs.neutralise(frame)
    assert list(got.columns) == ["'=name", "n", "x", "cat", "mixed", "when"]
    assert got["'=name"].tolist()[:7] == ["'=1+1", "'+1", "'-12", "'@me", "'\tx", "'\rx", "ok"]
    assert pd.isna(got["'=name"].iloc[7])
    assert got["n"].tolist()[0] == -5 and got["n"].dtype == frame["n"].dtype
    assert got["x"].iloc[0] == -1.5 and got["x"].dtype == frame["x"].dtype
    assert got["cat"].tolist()[:2] == ["'-a", "b"]
    assert got["mixed"].tolist()[:3] == [-3, "'-3", "'=x"]  # numbers stay numbers, "'=x" stays as it is
    assert (got["when"] == frame["when"]).all()
    assert frame.columns[0] == "=name" and frame["=name"].iloc[0] == "=1+1"  # the frame passed is untouched
    pd.testing.assert_frame_equal(outputs.neutralise(got), got)  # twice changes nothing
    plain = pd.DataFrame({"a": ["x", "y"], "b": [-1, 2]})
    assert outputs.neutralise(plain) is plain


def test_neutralise_in_sql_matches_the_dataframe_rule():
    con = duckdb.connect()
    frame = pd.DataFrame({"=id": ["=1+1", "-12", "ok", None], "n": [-5, 1, 2, 3], 'q"uote': ["@a", "b", "+c", "\rd"]})
    relation = con.from_df(frame)
    got = outputs.neutralise(relation)
    assert isinstance(got, duckdb.DuckDBPyRelation)
    assert got.columns == ["'=id", "n", 'q"uote']
    assert got.types[1] == relation.types[1]
    expected = outputs.neutralise(frame)
    assert got.fetchall() == [tuple(None if pd.isna(v) else v for v in row) for row in expected.itertuples(index=False)]
    assert got.fetchall()[0] == ("'=1+1", -5, "'@a")


def test_restore_ids_finds_the_source_ids_back():
    ids = pd.Series(["=1+1", "a", "-7", "'x"], dtype="string")
    written = pd.Series(["'=1+1", "a", "'-7", "'x"], dtype="string")
    assert outputs.restore_ids(written, ids).tolist() == ["=1+1", "a", "-7", "'x"]
    assert outputs.restore_ids(written[::-1].reset_index(drop=True), ids).tolist() == ["'x", "-7", "a", "=1+1"]
    assert outputs.restore_ids(pd.Series(["=1+1", "zz"], dtype="string"), ids).tolist() == ["=1+1", "zz"]


# --- commands ---------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".csv", ".xlsx"])
def test_features_have_no_formulas_and_keep_numbers(orders, tmp_path, suffix):
    out, rejects = tmp_path / f"features{suffix}", tmp_path / f"rejects{suffix}"
    assert main(["features", str(orders), "--out", str(out), "--rejects", str(rejects)]) == 0
    if suffix == ".csv":
        rows = assert_no_formula_in_csv(out)
        assert "'@SUM(1+1)" in column(rows, "country") and "'\tx" in column(rows, "country")
        assert {"'=1+1", "'-7", "'@me", "C003"} <= set(column(rows, "customer_id"))
        rejected = assert_no_formula_in_csv(rejects)
        assert "'=bad" in rejected[0]
        assert column(rejected, "Quantity") == ["-5"] and column(rejected, "Country") == ["'-1+2"]
        table = pd.read_csv(out)
    else:
        assert_no_formula_in_xlsx(out)
        book = assert_no_formula_in_xlsx(rejects)
        sheet = book.worksheets[0]
        header = [c.value for c in sheet[1]]
        assert "'=bad" in header and sheet.cell(2, header.index("Quantity") + 1).value == -5
        table = pd.read_excel(out, engine="openpyxl")
    assert "'=HYPERLINK(\"http://x\",\"y\")" in set(table["country"])
    for name in ("recency_days", "frequency", "monetary", "n_products"):
        assert pd.api.types.is_numeric_dtype(table[name]), name


def test_features_parquet_keeps_the_source_text(orders, tmp_path):
    out = tmp_path / "features.parquet"
    assert main(["features", str(orders), "--out", str(out)]) == 0
    table = pd.read_parquet(out)
    assert {"=1+1", "-7", "@me"} <= set(table["customer_id"])
    assert set(COUNTRIES) <= set(table["country"])


def test_features_of_a_customer_table_keep_negative_numbers(customers, tmp_path):
    out = tmp_path / "features.csv"
    assert main(["features", str(customers), "--out", str(out)]) == 0
    rows = assert_no_formula_in_csv(out)
    assert rows[0][:3] == ["customer_id", "balance", "'=bad"]
    table = pd.read_csv(out)
    assert pd.api.types.is_numeric_dtype(table["balance"]) and pd.api.types.is_numeric_dtype(table["'=bad"])
    assert table.loc[table["customer_id"] == "K1", "balance"].item() == -5
    assert (table["'=bad"] < 0).any()
    # A plain number in a text column is text like any other: it gets the apostrophe too.
    assert set(table["code"]) == {"'-12", "'=x", "ok"}


def test_features_to_csv_runs_without_pandas_and_neutralises(orders, tmp_path):
    out, rejects = tmp_path / "f.csv", tmp_path / "r.csv"
    script = (
        "import sys; from custseg import cli; "
        f"code = cli.main(['features', {str(orders)!r}, '--out', {str(out)!r}, '--rejects', {str(rejects)!r}]); "
        "print(code, sorted({m.split('.')[0] for m in sys.modules} & {'pandas', 'numpy', 'pyarrow'}))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines()[-1] == "0 []", (done.stdout, done.stderr)
    assert "'=1+1" in column(assert_no_formula_in_csv(out), "customer_id")
    assert_no_formula_in_csv(rejects)


@pytest.mark.parametrize("suffix", [".csv", ".xlsx"])
def test_rfm_and_cohorts_by_country_have_no_formulas(orders, tmp_path, suffix):
    rfm, cohorts = tmp_path / f"rfm{suffix}", tmp_path / f"cohorts{suffix}"
    assert main(["rfm", str(orders), "--out", str(rfm)]) == 0
    assert main(["cohorts", str(orders), "--out", str(cohorts), "--by", "country"]) == 0
    if suffix == ".csv":
        rows = assert_no_formula_in_csv(rfm)
        assert "'=1+1" in column(rows, "customer_id")
        rows = assert_no_formula_in_csv(cohorts)
        assert {"'@SUM(1+1)", "'-1+2", "'+1"} <= set(column(rows, "country"))
        table = pd.read_csv(cohorts)
    else:
        assert_no_formula_in_xlsx(rfm)
        assert_no_formula_in_xlsx(cohorts)
        table = pd.read_excel(cohorts, engine="openpyxl")
    assert pd.api.types.is_numeric_dtype(table["customers"]) and pd.api.types.is_numeric_dtype(table["month_0"])


def test_segment_run_folder_csvs_have_no_formulas(run_dir):
    written = sorted(run_dir.glob("*.csv"))
    assert {"assignments.csv", "profiles.csv", "rfm.csv", "cohorts.csv"} <= {p.name for p in written}
    for path in written:
        assert_no_formula_in_csv(path)
    assignments = pd.read_csv(run_dir / "assignments.csv", dtype={"customer_id": "string"})
    assert {"'=1+1", "'-7", "'@me"} <= set(assignments["customer_id"])
    assert pd.api.types.is_integer_dtype(assignments["segment"])
    features = pd.read_parquet(run_dir / "features.parquet")  # Parquet: as in the source
    assert {"=1+1", "-7", "@me"} <= set(features["customer_id"]) and "@SUM(1+1)" in set(features["country"])


def test_segment_run_of_a_customer_table_neutralises_feature_names(customers, tmp_path):
    folder = tmp_path / "run"
    assert main(["segment", str(customers), "--out", str(folder), "--algorithm", "kmeans", "--k", "2",
                 "--seed", "1", "--no-report"]) == 0
    for path in folder.glob("*.csv"):
        assert_no_formula_in_csv(path)
    means = pd.read_csv(folder / "segment_means.csv")
    assert "'=bad" in means.columns and pd.api.types.is_numeric_dtype(means["balance"])
    assert (means["balance"] < 0).any()  # a negative mean stays a negative number


@pytest.mark.parametrize("format", ["csv", "xlsx", "parquet"])
def test_exports_have_no_formulas_and_the_right_customers(run_dir, tmp_path, format):
    out = tmp_path / "exports"
    assert main(["export", str(run_dir), "--format", format, "--out", str(out)]) == 0
    crm = assert_no_formula_in_csv(out / "crm_import.csv")
    assert {"'=1+1", "'-7", "'@me"} <= set(column(crm, "Customer ID"))
    if format == "csv":
        lists = [p for p in out.glob("segment-*.csv")]
        for path in [*lists, out / "summary.csv"]:
            assert_no_formula_in_csv(path)
        table = pd.concat(pd.read_csv(p, dtype={"customer_id": "string"}) for p in lists)
        risky_ids = {"'=1+1", "'-7", "'@me"}
    elif format == "xlsx":
        assert_no_formula_in_xlsx(out / "segments.xlsx")
        sheets = pd.read_excel(out / "segments.xlsx", sheet_name=None, dtype={"customer_id": "string"}, engine="openpyxl")
        table = pd.concat(frame for name, frame in sheets.items() if name != "Summary")
        risky_ids = {"'=1+1", "'-7", "'@me"}
    else:
        table = pd.concat(pd.read_parquet(p) for p in out.glob("segment-*.parquet"))
        risky_ids = {"=1+1", "-7", "@me"}  # Parquet: the ids as in the source
    assert len(table) == 40 and risky_ids <= set(table["customer_id"])
    # every customer found its features, the ones with formula ids included
    assert table["monetary"].notna().all() and pd.api.types.is_numeric_dtype(table["recency_days"])


def test_assign_writes_no_formulas(orders, run_dir, tmp_path):
    out = tmp_path / "assigned.csv"
    assert main(["assign", str(orders), "--model", str(run_dir), "--out", str(out)]) == 0
    rows = assert_no_formula_in_csv(out)
    assert "'=1+1" in column(rows, "customer_id")
