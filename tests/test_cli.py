from __future__ import annotations

import pandas as pd
import pytest

from custseg.cli import main


def read(path):
    return {".csv": pd.read_csv, ".parquet": pd.read_parquet, ".xlsx": lambda p: pd.read_excel(p, engine="calamine")}[path.suffix](path)


@pytest.fixture(scope="module")
def retail_slice(online_retail, tmp_path_factory):
    """The first 30,000 rows of Online Retail as CSV (a real file, small enough to be quick)."""
    path = tmp_path_factory.mktemp("cli") / "retail.csv"
    pd.read_parquet(online_retail).head(30_000).to_csv(path, index=False)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".xlsx"])
def test_features_writes_every_format(retail_slice, tmp_path, suffix, capsys):
    out = tmp_path / f"features{suffix}"
    assert main(["features", str(retail_slice), "--out", str(out)]) == 0
    table = read(out)
    assert list(table.columns[:6]) == ["customer_id", "recency_days", "frequency", "monetary", "tenure_days", "avg_order_value"]
    assert table["customer_id"].is_unique
    printed = capsys.readouterr().out
    assert f"{len(table):,} customers" in printed and "missing_customer_id" in printed


def test_features_on_the_full_log_matches_the_oracle(online_retail, tmp_path):
    out = tmp_path / "features.parquet"
    assert main(["features", str(online_retail), "--out", str(out)]) == 0
    table = pd.read_parquet(out)
    assert (len(table), round(table["monetary"].sum(), 2), table["frequency"].sum()) == (4338, 8_887_208.89, 18_532)


def test_rejects_file_lists_dropped_rows_with_their_rule(retail_slice, tmp_path):
    out, rejects = tmp_path / "f.csv", tmp_path / "rejects.csv"
    assert main(["features", str(retail_slice), "--out", str(out), "--rejects", str(rejects)]) == 0
    dropped = pd.read_csv(rejects)
    assert list(dropped.columns[:3]) == ["row", "rejected_by", "InvoiceNo"]
    source = pd.read_csv(retail_slice)
    assert (dropped["rejected_by"] == "missing_customer_id").sum() == source["CustomerID"].isna().sum()
    row = dropped.iloc[0]  # row numbers point back into the source
    assert source.iloc[row["row"] - 1]["InvoiceNo"] == row["InvoiceNo"]


def test_rfm_command(retail_slice, tmp_path, capsys):
    out = tmp_path / "rfm.csv"
    assert main(["rfm", str(retail_slice), "--out", str(out), "--as-of", "2011-01-01"]) == 0
    table = pd.read_csv(out, dtype={"rfm_code": str})
    assert list(table.columns) == ["customer_id", "recency_days", "frequency", "monetary", "r_score",
                                   "f_score", "m_score", "rfm_code", "rfm_segment"]
    assert table["rfm_code"].str.fullmatch(r"[1-5]{3}").all()
    printed = capsys.readouterr().out
    assert "RFM segments (as of 2011-01-01)" in printed and "Champions" in printed


def test_rfm_with_a_segment_map(retail_slice, tmp_path):
    mapping = tmp_path / "map.csv"
    mapping.write_text("pattern,segment\n5..,Fresh\n...,Rest\n", encoding="utf-8")
    out = tmp_path / "rfm.parquet"
    assert main(["rfm", str(retail_slice), "--out", str(out), "--segment-map", str(mapping)]) == 0
    assert set(pd.read_parquet(out)["rfm_segment"]) == {"Fresh", "Rest"}


def test_cohorts_command(retail_slice, tmp_path, capsys):
    out = tmp_path / "cohorts.xlsx"
    assert main(["cohorts", str(retail_slice), "--out", str(out), "--by", "country"]) == 0
    table = pd.read_excel(out, engine="calamine")
    assert list(table.columns[:4]) == ["cohort", "country", "customers", "month_0"]
    assert "Retention by acquisition month" in capsys.readouterr().out


def test_inspect_shows_roles_and_quality(retail_slice, capsys):
    assert main(["inspect", str(retail_slice)]) == 0
    printed = capsys.readouterr().out
    for expected in ("csv, 30,000 rows", "transaction log", "customer_id", "ordered_at",
                     "duplicate rows", "negative quantities", "date range", "Cleaning"):
        assert expected in printed


@pytest.mark.parametrize(
    "change, reason",
    [
        (lambda t: t.rename(columns={"InvoiceDate": "When;x"}),
         "no column plays the role 'ordered_at'; name one with --map ordered_at=COLUMN"),
        (lambda t: t.assign(InvoiceDate=t["InvoiceDate"].astype(str).where(t.index != 7, "31/02/2011")),
         "column 'InvoiceDate' has 1 unparseable date, e.g. '31/02/2011' on data row 8"),
    ],
    ids=["no-order-date", "bad-date"],
)
def test_inspect_shows_what_it_found_when_cleaning_cannot_run(change, reason, retail_slice, tmp_path, capsys):
    """What inspect is for: the columns and roles are shown, and why cleaning cannot run yet."""
    path = tmp_path / "orders.csv"
    change(pd.read_csv(retail_slice, nrows=200)).to_csv(path, index=False)
    assert main(["inspect", str(path)]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "csv, 200 rows" in printed and "customer_id" in printed and "duplicate rows" in printed
    assert f"cleaning: not possible as it stands: {reason}" in printed


def test_customer_table_features(marketing_campaign, tmp_path, capsys):
    out = tmp_path / "customers.csv"
    assert main(["features", str(marketing_campaign), "--out", str(out)]) == 0
    assert "tenure_days" in pd.read_csv(out).columns
    assert "Income': 24 missing filled with the median" in capsys.readouterr().out


def test_lazy_names_import_in_a_fresh_interpreter():
    """``custseg.datasets`` and ``custseg.rfm_score`` load on first use (they bring pandas);
    in a new process, where nothing has imported them yet, both spellings must work, as
    ``custseg demo`` needs (in this process other tests have imported them already)."""
    import subprocess
    import sys

    script = ("from custseg import datasets; import custseg; "
              "print(datasets.sample_path().name, custseg.rfm_score.__name__, custseg.datasets is datasets)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-500:]
    assert done.stdout.split() == ["online_retail_sample.parquet", "score", "True"]
    done = subprocess.run([sys.executable, "-c", "import custseg; custseg.nothing"], capture_output=True, text=True)
    assert "module 'custseg' has no attribute 'nothing'" in done.stderr


def test_demo_runs_on_the_bundled_sample(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    for name in ("features.csv", "rfm.csv", "cohorts.csv", "rejects.csv"):
        assert (tmp_path / "demo" / name).stat().st_size > 0
    printed = capsys.readouterr().out
    assert "837 customers scored" in printed and "13 cohorts" in printed
    assert len(pd.read_csv(tmp_path / "demo" / "features.csv")) == 837


def test_segment_with_bisecting_kmeans_on_the_bundled_sample(tmp_path, capsys):
    import json

    from custseg import datasets
    from custseg.model import load

    out = tmp_path / "run"
    assert main(["segment", str(datasets.sample_path()), "--out", str(out), "--algorithm", "bisecting_kmeans",
                 "--k", "5"]) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "Used: bisecting_kmeans with 5 segments (as asked)." in printed
    summary = json.loads((out / "run.json").read_text())
    assert (summary["algorithm"], summary["n_clusters"]) == ("bisecting_kmeans", 5)
    board = pd.read_csv(out / "leaderboard.csv")
    assert list(board[["algorithm", "n_clusters"]].itertuples(index=False, name=None)) == [("bisecting_kmeans", 5)]
    assert board["inertia"].notna().all()
    assert "Bisecting K-Means" in (out / "report.html").read_text(encoding="utf-8")
    assigned = pd.read_csv(out / "assignments.csv", dtype={"customer_id": str})
    assert len(assigned) == 837 and sorted(assigned["segment"].unique()) == [0, 1, 2, 3, 4]
    model = load(out / "model.skops")
    assert model.algorithm == "bisecting_kmeans" and type(model.estimator).__name__ == "BisectingKMeans"
    features = pd.read_parquet(out / "features.parquet")
    again = model.assign(features)
    matrix = model.preprocessor.transform(features[model.feature_columns])
    kept = (again["reason"] == "").to_numpy()
    assert kept.mean() > 0.98
    assert (again["segment"].to_numpy()[kept] == model.estimator.predict(matrix)[kept]).all()
    ids = dict(zip(assigned["customer_id"], assigned["segment"]))
    assert (again.loc[kept, "segment"] == again.loc[kept, "customer_id"].astype(str).map(ids)).all()
    assert main(["assign", str(out / "features.parquet"), "--model", str(out / "model.skops"),
                 "--out", str(tmp_path / "assigned.csv")]) == 0
    assert len(pd.read_csv(tmp_path / "assigned.csv")) == 837


def test_segment_help_names_every_algorithm():
    from typer.main import get_command

    from custseg.cli import app
    from custseg.cluster import ALGORITHMS

    option = next(p for p in get_command(app).commands["segment"].params if p.name == "algorithm")
    listed = option.help.split("one of: ", 1)[1].rstrip(".").split(", ")
    assert listed == list(ALGORITHMS)


def _entry(tmp_path, args, before=""):
    """``custseg ARGS`` through the console script's function in a child process, with ``before``
    run first; its exit code, stdout, stderr and what the exit handlers wrote."""
    import subprocess
    import sys

    marker = tmp_path / "atexit.txt"
    script = (
        "import atexit, sys, threading, time\n"
        f"atexit.register(lambda: open({str(marker)!r}, 'a').write('exit handlers ran\\n'))\n"
        f"{before}\n"
        f"sys.argv = ['custseg', *{list(args)!r}]\n"
        "from custseg.cli import entry\n"
        "entry()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    return done.returncode, done.stdout, done.stderr, marker.read_text() if marker.exists() else ""


def test_the_command_exits_with_its_code_after_the_exit_handlers_and_with_its_output_flushed(
        retail_slice, tmp_path):
    """The console script skips the interpreter's teardown, not what the command wrote: piped
    output arrives whole, exit handlers (temporary files, a Spark session) run, and the exit
    code is the command's."""
    out = tmp_path / "features.parquet"
    code, stdout, stderr, handlers = _entry(tmp_path, ["features", str(retail_slice), "--out", str(out)])
    assert (code, handlers) == (0, "exit handlers ran\n"), stderr
    assert "missing_customer_id" in stdout and f"{len(pd.read_parquet(out)):,} customers" in stdout

    code, stdout, stderr, handlers = _entry(tmp_path, ["features", str(tmp_path / "nowhere.csv"), "--out", str(out)])
    assert code == 2 and stderr.startswith("custseg: error:") and "nowhere.csv" in stderr
    assert handlers == "exit handlers ran\nexit handlers ran\n"


def test_the_command_waits_for_a_thread_still_working(tmp_path):
    """A thread that is not a daemon gets to finish: then the exit is the interpreter's own."""
    done = tmp_path / "thread.txt"
    before = (f"threading.Thread(target=lambda: (time.sleep(1.0), open({str(done)!r}, 'w').write('finished'))"
              ").start()")
    code, _, stderr, handlers = _entry(tmp_path, ["--help"], before=before)
    assert code == 0, stderr
    assert done.read_text() == "finished" and handlers == "exit handlers ran\n"


def test_the_installed_command_is_the_entry_function():
    from importlib.metadata import entry_points

    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "custseg"]
    assert script.value == "custseg.cli:entry"
