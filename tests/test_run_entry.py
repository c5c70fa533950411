"""The seams every edge uses: one request, one entry point, one run folder, explicit settings."""

from __future__ import annotations

import ast
import json
import threading
from pathlib import Path

import pandas as pd
import pytest

import custseg
from custseg import datasets, pipeline, runs
from custseg.errors import Cancelled, ConfigError, CustsegError, DataError, OutputError
from custseg.request import Policy, RunRequest, SegmentConfig, SourceSpec
from custseg.settings import Settings

QUICK = SegmentConfig(k_values=(2, 3, 4, 5), candidates=("kmeans",))


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tables")
    paths = []
    for seed, n_segments in ((0, 3), (1, 4)):
        customers, _ = datasets.make_customers(600, n_segments=n_segments, random_state=seed, separation=2.0)
        path = folder / f"customers-{seed}.parquet"
        customers.to_parquet(path)
        paths.append(path)
    return paths


def request_for(path: Path, **segment) -> RunRequest:
    config = SegmentConfig(**{**QUICK.__dict__, **segment})
    return RunRequest(SourceSpec(str(path)), segment=config, report=False)


def test_validate_reports_every_problem_at_once():
    request = RunRequest(
        SourceSpec("orders.csv", kind="both", mapping={"customer": "Client"}),
        policy=Policy(returns="keep"),
        segment=SegmentConfig(algorithm="magic", n_clusters=0, features=("a", "a"), random_state=-1),
    )
    with pytest.raises(ConfigError) as caught:
        request.validate()
    params = [p.param for p in caught.value.problems]
    assert params == ["kind", "mapping", "returns", "algorithm", "n_clusters", "features", "random_state"]
    assert str(caught.value).startswith("7 problems: ")
    assert isinstance(caught.value, ValueError)
    # One problem is raised as itself, in the library's words and, rendered, in the CLI's.
    one = RunRequest(SourceSpec("orders.csv"), segment=SegmentConfig(n_clusters=1))
    with pytest.raises(ConfigError) as caught:
        one.validate()
    assert str(caught.value) == "n_clusters must be auto or a whole number ≥ 2, got '1'"
    assert caught.value.render({"n_clusters": "--k"}) == "--k must be auto or a whole number ≥ 2, got '1'"


def test_json_round_trip_and_unknown_fields():
    request = RunRequest(
        SourceSpec("orders.csv", sheet="Orders", mapping={"customer_id": "Client"}, kind="transactions"),
        policy=Policy(returns="net", bad_values="drop", date_format="%d/%m/%Y"),
        as_of=pd.Timestamp("2011-12-10").to_pydatetime(),
        segment=SegmentConfig(algorithm="gmm", n_clusters=4, features=("recency_days", "monetary"),
                              random_state=7, value_column="monetary"),
        segment_map=(("5..", "Recent"), ("...", "Everyone else")),
        previous="old/model.skops", report=False,
    )
    text = json.dumps(request.to_json())
    assert RunRequest.from_json(text) == request
    with pytest.raises(ConfigError, match=r"unknown field segment\.clusters; known: segment\.algorithm"):
        RunRequest.from_json({"source": "orders.csv", "segment": {"clusters": 3}})
    assert RunRequest.from_json({"source": "orders.csv"}) == RunRequest(SourceSpec("orders.csv"))


def test_a_run_is_rebuilt_exactly_from_its_run_json(tables, tmp_path):
    request = request_for(tables[0], value_column="monetary")
    first = pipeline.run(request, tmp_path / "first", settings=Settings())
    assert isinstance(first, runs.RunFolder) and first.result is not None
    summary = json.loads((tmp_path / "first" / "run.json").read_text())
    assert summary["schema_version"] == runs.SCHEMA_VERSION
    rebuilt = RunRequest.from_json(summary["request"])
    assert rebuilt == request and first.request == request
    again = pipeline.run(rebuilt, tmp_path / "again", settings=Settings())
    for name in ("assignments.csv", "profiles.csv", "leaderboard.csv", "segment_means.csv"):
        if name == "leaderboard.csv":  # fit times differ from run to run
            a = pd.read_csv(tmp_path / "first" / name).drop(columns="fit_seconds", errors="ignore")
            b = pd.read_csv(tmp_path / "again" / name).drop(columns="fit_seconds", errors="ignore")
            pd.testing.assert_frame_equal(a, b)
        else:
            assert (tmp_path / "first" / name).read_bytes() == (tmp_path / "again" / name).read_bytes()
    assert again.summary["recommendation"] == first.summary["recommendation"]


def test_cancel_is_checked_between_steps_and_leaves_nothing(tables, tmp_path):
    asked = []

    def cancel() -> bool:
        asked.append(True)
        return len(asked) >= 2  # after the source is read

    with pytest.raises(Cancelled, match="cancelled before segmenting"):
        pipeline.run(request_for(tables[0]), tmp_path / "run", settings=Settings(), cancel=cancel)
    assert not (tmp_path / "run").exists()


def test_progress_hears_every_step(tables, tmp_path):
    heard = []
    pipeline.run(request_for(tables[0]), tmp_path / "run", settings=Settings(),
                 progress=lambda step, done, total: heard.append(step))
    assert [s for s in heard if s in pipeline.RUN_STEPS] == ["reading the source", "segmenting", "writing the run"]
    assert "final fit" in heard


def test_two_runs_in_two_threads_match_the_runs_one_after_the_other(tables, tmp_path):
    requests = [request_for(path) for path in tables]
    for i, request in enumerate(requests):
        pipeline.run(request, tmp_path / f"alone-{i}", settings=Settings(threads=1))
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            pipeline.run(requests[i], tmp_path / f"together-{i}", settings=Settings(threads=1))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for i in range(2):
        for name in ("assignments.csv", "profiles.csv", "segment_means.csv"):
            assert (tmp_path / f"alone-{i}" / name).read_bytes() == (tmp_path / f"together-{i}" / name).read_bytes()


def test_settings_come_from_the_environment_once():
    settings = Settings.from_env({"CUSTSEG_MEMORY_LIMIT": "2GB", "CUSTSEG_THREADS": "3",
                                  "CUSTSEG_TEMP_DIR": "/tmp/x", "CUSTSEG_DATA_DIR": "/srv/custseg"})
    assert settings == Settings(memory_limit="2GB", threads=3, temp_dir=Path("/tmp/x"), data_dir=Path("/srv/custseg"))
    with pytest.raises(ConfigError, match="CUSTSEG_THREADS must be a whole number"):
        Settings.from_env({"CUSTSEG_THREADS": "many"})
    con = custseg.sources.connect(settings=Settings(memory_limit="300MB", threads=1))
    assert con.execute("SELECT current_setting('threads')").fetchall()[0][0] == 1


def test_errors_have_one_class_per_cause():
    assert issubclass(DataError, ValueError) and issubclass(ConfigError, ValueError)
    assert {DataError.http_status, ConfigError.http_status, OutputError.http_status} == {422, 400, 507}
    error = DataError("orders.csv: bad", param="source").with_prefix("x: ")
    assert str(error) == "x: orders.csv: bad" and error.param == "source"
    assert issubclass(Cancelled, CustsegError)


def test_the_cli_uses_only_the_public_entry_points():
    tree = ast.parse((Path(custseg.__file__).parent / "cli.py").read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
            imported.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    steps = {"cleaning", "sources", "schema", "rfm"}
    assert not {name for name in imported if name.startswith("custseg") and name.rsplit(".", 1)[-1] in steps}
    source = (Path(custseg.__file__).parent / "cli.py").read_text(encoding="utf-8")
    assert "build_report(out_" not in source and "run_segmentation(" not in source


def test_the_public_surface_resolves_and_imports_light():
    import subprocess
    import sys

    assert all(hasattr(custseg, name) for name in custseg.__all__)
    from importlib.metadata import version

    assert version("custseg") == custseg.__version__
    code = "import custseg, sys; print(sorted(m for m in ('pandas', 'numpy', 'sklearn') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"


def test_a_missing_optional_package_names_its_extra():
    from custseg._optional import require

    with pytest.raises(ConfigError, match=r"reading Spark needs the Python package 'pyspark\.nothing', which is "
                                          r"not installed; install it with pip install 'custseg\[spark\]'"):
        require("pyspark.nothing", feature="reading Spark")


def test_resource_errors_name_the_settings_of_the_run(tmp_path):
    import duckdb

    from custseg import pipeline
    from custseg.settings import Settings

    settings = Settings(memory_limit="3GB", temp_dir=tmp_path / "spill")
    full = pipeline.resource_error(duckdb.IOException("No space left on device"), settings)
    assert str(full).startswith(f"ran out of temporary disk space in {tmp_path / 'spill'}, where work beyond "
                                "the memory limit (3GB) goes")
    memory = pipeline.resource_error(duckdb.OutOfMemoryException("Out of Memory Error: failed"), settings)
    assert str(memory) == "ran out of memory within the limit of 3GB; raise it with CUSTSEG_MEMORY_LIMIT (e.g. 4GB)"
    assert pipeline.resource_error(ValueError("no"), settings) is None


def test_a_source_label_names_the_source_in_the_report_and_in_errors(tmp_path):
    import re

    from custseg import datasets, pipeline
    from custseg.errors import DataError
    from custseg.request import RunRequest, SegmentConfig, SourceSpec

    spec = SourceSpec(str(datasets.sample_path()), label="Spring orders")
    pipeline.run(RunRequest(spec, segment=SegmentConfig(algorithm="kmeans", n_clusters=3)), tmp_path / "run")
    html = (tmp_path / "run" / "report.html").read_text(encoding="utf-8")
    assert re.findall(r"<h1[^>]*>(.*?)</h1>", html)[0] == "Customer segments — Spring orders"
    assert RunRequest.from_json(RunRequest(spec).to_json()).source.label == "Spring orders"
    bad = tmp_path / "bad.csv"
    bad.write_text("InvoiceNo,CustomerID,InvoiceDate,Quantity,UnitPrice\n1,7,yesterday,1,2\n", encoding="utf-8")
    with pytest.raises(DataError) as caught:
        pipeline.customer_table(pipeline.load(SourceSpec(str(bad), label="Upload 3")))
    assert str(caught.value).startswith("Upload 3: ") and str(bad) not in str(caught.value)
