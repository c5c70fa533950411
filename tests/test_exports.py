from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from custseg import cli, exports, pipeline
from custseg.cli import main
from custseg.datasets import make_customers
from custseg.errors import ConfigError, InputError


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A customer table with e-mail addresses, one of them a formula, segmented into 3."""
    folder = tmp_path_factory.mktemp("export")
    customers, _ = make_customers(300, n_segments=3, random_state=7)
    customers["email"] = [f"c{i}@example.com" for i in range(300)]
    customers.loc[0, "email"] = "=HYPERLINK(\"http://x\",\"click\")"
    customers["plan"] = np.where(np.arange(300) % 3 == 0, "-basic", "+plus")
    customers.to_csv(folder / "customers.csv", index=False)
    config = pipeline.SegmentConfig(algorithm="kmeans", n_clusters=3)
    with threadpool_limits(1):
        result = pipeline.run_segmentation(pipeline.load(pipeline.SourceSpec(str(folder / "customers.csv"))), config=config)
    pipeline.write_run(result, folder / "run")
    return folder / "run"


def test_csv_lists_one_per_segment(run_dir, tmp_path):
    written = exports.export_run(run_dir, format="csv", out=tmp_path)
    names = sorted(p.name for p in written)
    assert "summary.csv" in names and "crm_import.csv" in names
    lists = [p for p in written if p.name.startswith("segment-")]
    assert len(lists) == 3
    total = sum(len(pd.read_csv(p)) for p in lists)
    assert total == 300
    first = pd.read_csv(lists[0])
    assert list(first.columns) == ["customer_id", "email", "segment", "segment_name", "recency_days", "frequency", "monetary"]
    assert first["segment"].nunique() == 1


def test_crm_file_has_importable_headers_and_defused_formulas(run_dir, tmp_path):
    exports.export_run(run_dir, format="csv", out=tmp_path)
    crm = pd.read_csv(tmp_path / "crm_import.csv", dtype=str)
    assert list(crm.columns) == ["Email", "Customer ID", "Segment", "Segment Name"]
    assert crm["Email"].iloc[0] == "'=HYPERLINK(\"http://x\",\"click\")"
    assert crm["Email"].iloc[1] == "c1@example.com"
    assert not crm["Email"].str.match(r"^[=+\-@]").any()


def test_xlsx_workbook_has_a_summary_and_a_sheet_per_segment(run_dir, tmp_path):
    from openpyxl import load_workbook

    exports.export_run(run_dir, format="xlsx", columns=["monetary"], out=tmp_path)
    book = load_workbook(tmp_path / "segments.xlsx")
    assert book.sheetnames[0] == "Summary" and len(book.sheetnames) == 4
    cells = [c.value for sheet in book.worksheets[1:] for row in sheet.iter_rows() for c in row]
    text = [v for v in cells if isinstance(v, str)]
    assert "'=HYPERLINK(\"http://x\",\"click\")" in text
    assert not any(v.startswith(("=", "+", "-", "@")) for v in text)
    assert all(cell.data_type != "f" for sheet in book.worksheets for row in sheet.iter_rows() for cell in row)


def test_parquet_keeps_text_as_is(run_dir, tmp_path):
    written = exports.export_run(run_dir, format="parquet", out=tmp_path)
    lists = pd.concat(pd.read_parquet(p) for p in written if p.name.startswith("segment-"))
    assert (lists["email"] == "=HYPERLINK(\"http://x\",\"click\")").sum() == 1


def test_neutralise_leaves_numbers_alone():
    frame = pd.DataFrame({"n": [-5, 3], "t": ["-5", "@me"], "ok": ["a", None]})
    got = exports.neutralise(frame)
    assert list(got["n"]) == [-5, 3]
    assert list(got["t"]) == ["'-5", "'@me"]
    assert got["ok"].iloc[0] == "a" and got["ok"].isna().iloc[1]


def test_export_errors(run_dir, tmp_path):
    with pytest.raises(InputError, match="no such run folder"):
        exports.export_run(tmp_path / "nope")
    with pytest.raises(ConfigError, match="^columns shoe_size: not in the run's features") as caught:
        exports.export_run(run_dir, columns=["shoe_size"], out=tmp_path)
    assert caught.value.render(cli.FLAGS).startswith("--columns shoe_size: not in the run's features; available: ")
    with pytest.raises(ConfigError, match="^format must be one of csv, xlsx, parquet") as caught:
        exports.export_run(run_dir, format="pdf")
    assert caught.value.render(cli.FLAGS) == "--format must be one of csv, xlsx, parquet, got 'pdf'"
    a_file = tmp_path / "list.csv"
    a_file.write_text("keep me", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"^out .*list\.csv: is a file; give a folder for the exports") as caught:
        exports.export_run(run_dir, out=a_file)
    assert caught.value.render(cli.FLAGS) == f"--out {a_file}: is a file; give a folder for the exports"
    assert a_file.read_text(encoding="utf-8") == "keep me"


def test_export_command(run_dir, tmp_path, capsys):
    assert main(["export", str(run_dir), "--format", "xlsx", "--out", str(tmp_path / "x")]) == 0
    assert (tmp_path / "x" / "segments.xlsx").is_file()
    assert main(["export", str(tmp_path / "missing")]) == 2
    assert "custseg: error:" in capsys.readouterr().err
