"""Benchmark: the features step on the Spark engine against the DuckDB engine, in one run.

On the synthetic Online-Retail-shaped logs of ``bench/features.py`` (its generator, imported;
Parquet, 10M and 50M rows), in one process: a Spark session on ``local[2]`` (started once; its
start-up is measured on its own), then rounds that alternate the engines —
``pipeline.customer_table(pipeline.load(SourceSpec(path), settings=Settings(engine=...)))``,
i.e. reading, cleaning, the customer features and, for Spark, bringing the customer table to
this process (Arrow).  Each round records wall time, CPU time (this process and the JVM, from
/proc through psutil) and the load average before it; the two engines' cleaning reports must be
equal and their features equal within 1e-9 (checked every round).

Results go to ``bench/results/spark-YYYY-MM-DD.md`` and ``.json``.  Nothing here asserts a time.

    python bench/spark.py [--sizes 10M,50M] [--repeat 2] [--driver-memory 4g]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import features as feature_bench  # noqa: E402  (bench/features.py: the generator and machine facts)

RESULTS = HERE / "results"


def _cpu_seconds() -> float:
    """CPU time of this process and its children that are alive (the JVM), user + system."""
    import psutil

    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.Error:
            pass
    return total


def _timed(action):
    load = os.getloadavg()[0]
    wall, cpu = time.perf_counter(), _cpu_seconds()
    value = action()
    return value, {"wall_s": round(time.perf_counter() - wall, 2), "cpu_s": round(_cpu_seconds() - cpu, 2),
                   "load_before": round(load, 2)}


def _features(path: Path, engine: str):
    from custseg import pipeline
    from custseg.pipeline import SourceSpec
    from custseg.settings import Settings

    made = pipeline.customer_table(pipeline.load(SourceSpec(str(path)), settings=Settings(engine=engine)))
    made.features  # the DataFrame the later steps use (for Spark: already here)
    return made


def _same(a, b) -> bool:
    import numpy as np

    if a.report != b.report or a.shape != b.shape:
        return False
    fa, fb = a.features, b.features
    for column in fa.columns:
        if fa[column].dtype.kind == "f":
            if not np.allclose(fa[column], fb[column], rtol=1e-9, atol=0, equal_nan=True):
                return False
        elif not fa[column].equals(fb[column]):
            return False
    return True


def run(sizes: list[int], repeat: int, driver_memory: str) -> dict:
    os.environ.setdefault("PYSPARK_SUBMIT_ARGS", f"--driver-memory {driver_memory} pyspark-shell")
    from custseg.engines import spark as engine

    result: dict = {
        "date": dt.date.today().isoformat(), "machine": feature_bench.machine(),
        "spark": {"master": "local[2]", "driver_memory": driver_memory}, "sizes": {}, "notes": [],
    }
    import pyspark

    result["machine"]["pyspark"] = pyspark.__version__
    session, startup = _timed(lambda: engine.session("local[2]"))
    result["spark"]["startup"] = startup
    print(f"Spark start-up: {startup}", flush=True)
    for rows in sizes:
        path = feature_bench.dataset(rows, "parquet")
        label = feature_bench.size_label(rows)
        rounds = []
        for i in range(repeat):
            order = ("duckdb", "spark") if i % 2 == 0 else ("spark", "duckdb")
            made = {}
            for name in order:
                made[name], timing = _timed(lambda name=name: _features(path, name))
                rounds.append({"round": i + 1, "engine": name, **timing})
                print(f"{label} round {i + 1} {name}: {timing}", flush=True)
            rounds[-1]["same_result"] = rounds[-2]["same_result"] = _same(made["spark"], made["duckdb"])
            customers = made["duckdb"].shape[0]
            del made
        best = {name: min(r["wall_s"] for r in rounds if r["engine"] == name) for name in ("duckdb", "spark")}
        cpu = {name: min(r["cpu_s"] for r in rounds if r["engine"] == name) for name in ("duckdb", "spark")}
        result["sizes"][label] = {"rows": rows, "customers": customers, "rounds": rounds, "best_wall_s": best,
                                  "best_cpu_s": cpu, "spark_over_duckdb": round(best["spark"] / best["duckdb"], 2)}
        _save(result)
    session.stop()
    return result


def render(result: dict) -> str:
    m = result["machine"]
    start = result["spark"]["startup"]
    lines = [
        f"# Spark engine vs DuckDB engine: the features step ({result['date']})", "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, {m['os']}; Python {m['python']}, "
        f"DuckDB {m['duckdb']}, pyspark {m.get('pyspark')}, pandas {m['pandas']}; custseg source "
        f"{m['custseg_source_sha256']}.  Shared with other work: the load average before each round is listed.",
        "",
        f"Spark on {result['spark']['master']}, driver memory {result['spark']['driver_memory']}, one session "
        "for the whole run.  Each round: read the Parquet log, clean it, compute the customer features "
        "and bring the customer table into this process (pandas).  Rounds alternate the engines.",
        "",
        f"Spark session start-up: {start['wall_s']} s wall, {start['cpu_s']} s CPU "
        f"(load average {start['load_before']} before).",
        "",
        "| rows | customers | DuckDB engine (best wall / CPU s) | Spark engine (best wall / CPU s) | "
        "Spark / DuckDB (wall) | same result |",
        "|---:|---:|---:|---:|---:|:---:|",
    ]
    for label, size in result["sizes"].items():
        if "not_run" in size:
            lines.append(f"| {label} | | not run | not run | | |")
            continue
        same = all(r.get("same_result") for r in size["rounds"])
        lines.append(f"| {label} | {size['customers']:,} | {size['best_wall_s']['duckdb']} / {size['best_cpu_s']['duckdb']} "
                     f"| {size['best_wall_s']['spark']} / {size['best_cpu_s']['spark']} | {size['spark_over_duckdb']}× "
                     f"| {'yes' if same else 'NO'} |")
    lines += ["", "Every round:", "", "| rows | round | engine | wall s | CPU s | load before |", "|---|---:|---|---:|---:|---:|"]
    for label, size in result["sizes"].items():
        for r in size.get("rounds", ()):
            lines.append(f"| {label} | {r['round']} | {r['engine']} | {r['wall_s']} | {r['cpu_s']} | {r['load_before']} |")
    if result["notes"]:
        lines += ["", *[f"- {note}" for note in result["notes"]]]
    return "\n".join(lines) + "\n"


def _save(result: dict) -> None:
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"spark-{result['date']}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    stem.with_suffix(".md").write_text(render(result))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10M,50M")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--driver-memory", default="4g")
    parser.add_argument("--note", action="append", default=[], help="a line for the results (e.g. why a size was not run)")
    args = parser.parse_args(argv)
    sizes = [feature_bench.parse_size(s) for s in args.sizes.split(",") if s.strip()]
    result = run(sizes, args.repeat, args.driver_memory)
    result["notes"] += args.note
    _save(result)
    print(render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
