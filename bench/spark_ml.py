"""Benchmark: the K-Means sweep on Spark (local[2]) against the local sweep, at 1M customers.

Generates a customer table with :func:`custseg.datasets.make_customers` (four planted
segments, seeded), then times, in alternating rounds:

``spark``  :func:`custseg.engines.spark_ml.segment_on_spark` on a Spark DataFrame of the table
           (cached and counted before the clock starts): preprocessing statistics on Spark,
           MLlib K-Means for every k with ``--seeds`` seeds, the metrics, the recommendation and
           the exported model; then ``assign_on_spark`` written out (``count``)
``local``  what the local flow does after features: ``build_preprocessor`` + ``fit_transform``,
           ``selection.compare(X, algorithms=("kmeans",), k_values=...)`` (its defaults: a seeded
           10k-row sample, 5 resamples for stability) and the final fit on all rows

and checks the two: the adjusted Rand index between Spark's segments and the local final fit's,
and how many customers ``assign_on_spark`` and the exported model's local ``assign`` put in
different segments (the target is none).  Wall time, this process's CPU time and the Spark
JVM's CPU time (read from /proc) are recorded with the load average before and after each
step: the machine may be shared.  Results go to ``bench/results/spark-ml-YYYY-MM-DD.md`` and
``.json``.  Nothing here asserts a time.

    python bench/spark_ml.py [--customers 1000000] [--k 2-6] [--seeds 3] [--rounds 1]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
COLUMNS = ["recency_days", "frequency", "monetary", "tenure_days", "avg_order_value"]


def _jvm_cpu(spark) -> float:
    """CPU seconds (user + system) of the Spark JVM so far."""
    pid = spark.sparkContext._gateway.proc.pid
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _timed(name, spark, work):
    load_before = os.getloadavg()[0]
    wall, cpu = time.perf_counter(), time.process_time()
    jvm = _jvm_cpu(spark)
    result = work()
    record = {"step": name, "seconds": time.perf_counter() - wall, "cpu_seconds": time.process_time() - cpu,
              "jvm_cpu_seconds": _jvm_cpu(spark) - jvm, "load_before": load_before,
              "load_after": os.getloadavg()[0]}
    print(f"{name}: {record['seconds']:.1f} s (cpu {record['cpu_seconds']:.1f} s, "
          f"jvm {record['jvm_cpu_seconds']:.1f} s, load {load_before:.1f} -> {record['load_after']:.1f})", flush=True)
    return result, record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--k", default="2-6", help="k values, e.g. 2-6")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--tag", default="")
    args = parser.parse_args()
    low, high = (int(x) for x in args.k.split("-"))
    k_values = list(range(low, high + 1))

    import pandas as pd
    import sklearn
    from pyspark.sql import SparkSession
    from sklearn.metrics import adjusted_rand_score

    from custseg import selection
    from custseg.cluster import make_estimator
    from custseg.datasets import make_customers
    from custseg.engines.spark_ml import segment_on_spark
    from custseg.preprocessing import build_preprocessor

    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas")
    started = time.perf_counter()
    table, planted = make_customers(args.customers, n_segments=4, random_state=0)
    print(f"data: {len(table)} customers in {time.perf_counter() - started:.1f} s", flush=True)
    spark = (SparkSession.builder.master("local[2]").appName("custseg-bench")
             .config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "4")
             .config("spark.driver.memory", "6g").config("spark.sql.execution.arrow.pyspark.enabled", "true")
             .getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    frame = spark.createDataFrame(table).persist()
    frame.count()

    def spark_side():
        model, board, labels = segment_on_spark(frame, COLUMNS, algorithms=("kmeans",), k_values=k_values,
                                                seeds=args.seeds, random_state=0)
        labels = labels.persist()
        labels.count()
        return model, board, labels

    def local_side():
        prep = build_preprocessor(table, columns=COLUMNS)
        matrix = prep.fit_transform(table[prep.columns])
        result = selection.compare(matrix, algorithms=("kmeans",), k_values=k_values, random_state=0)
        choice = result.recommendation
        final = make_estimator(choice.algorithm, n_clusters=choice.n_clusters, random_state=0).fit(matrix)
        return result, final

    runs = []
    spark_out = local_out = None
    for round_ in range(args.rounds):
        order = [("spark", spark_side), ("local", local_side)]
        if round_ % 2:
            order.reverse()
        for name, work in order:
            out, record = _timed(name, spark, work)
            record["round"] = round_
            runs.append(record)
            if name == "spark":
                if spark_out is not None:
                    spark_out[2].unpersist()
                spark_out = out
            else:
                local_out = out

    model, board, labels = spark_out
    result, final = local_out
    got = labels.select("customer_id", "segment").toPandas()
    got = table[["customer_id"]].merge(got, on="customer_id", how="left", validate="one_to_one")
    assigned = model.assign(table)
    differ = int((got["segment"].to_numpy() != assigned["segment"].to_numpy()).sum())
    same_k = int(model.run["config"]["n_clusters"]) == int(result.recommendation.n_clusters)
    checks = {
        "spark_choice": f"{model.algorithm} k={model.run['config']['n_clusters']}",
        "local_choice": f"{result.recommendation.algorithm} k={result.recommendation.n_clusters}",
        "ari_spark_vs_local_final_fit": float(adjusted_rand_score(final.labels_, got["segment"])) if same_k else None,
        "ari_spark_vs_planted": float(adjusted_rand_score(planted, got["segment"])),
        "ari_local_vs_planted": float(adjusted_rand_score(planted, final.labels_)),
        "customers_spark_assign_differs_from_local_assign": differ,
        "spark_seed_costs_of_chosen_k": model.run["spark"]["costs"],
    }
    print(json.dumps(checks, indent=1))
    spark_board = board.round(4).to_dict(orient="records")
    local_board = result.leaderboard.round(4).to_dict(orient="records")
    spark.stop()

    today = dt.date.today().isoformat()
    stem = f"spark-ml-{today}{'-' + args.tag if args.tag else ''}"
    machine = {"platform": platform.platform(), "python": sys.version.split()[0], "cpus": os.cpu_count(),
               "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
               "pyspark": __import__("pyspark").__version__, "scikit-learn": sklearn.__version__,
               "numpy": np.__version__, "pandas": pd.__version__}
    payload = {"date": today, "machine": machine, "customers": args.customers, "k_values": k_values,
               "seeds": args.seeds, "rounds": args.rounds, "runs": runs, "checks": checks,
               "spark_leaderboard": spark_board, "local_leaderboard": local_board}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(payload, indent=1, default=str))
    lines = [f"# Spark K-Means sweep vs local sweep — {today}", "",
             f"Machine: {machine['platform']}, {machine['cpus']} CPUs, {machine['memory_gb']} GB; Python "
             f"{machine['python']}, pyspark {machine['pyspark']} (local[2]), scikit-learn {machine['scikit-learn']}. "
             "Shared with other work: see the load columns.", "",
             f"{args.customers:,} customers (make_customers, 4 planted segments), features {', '.join(COLUMNS)}; "
             f"K-Means, k = {k_values[0]}..{k_values[-1]}; Spark: {args.seeds} seeds per k, every fit on all rows; "
             "local: selection.compare defaults (10k-row sample, 5 resamples) + the final fit on all rows.", "",
             "| round | side | wall s | CPU s (Python) | CPU s (Spark JVM) | load before | load after |",
             "|---|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(f"| {r['round']} | {r['step']} | {r['seconds']:.1f} | {r['cpu_seconds']:.1f} | "
                     f"{r['jvm_cpu_seconds']:.1f} | {r['load_before']:.1f} | {r['load_after']:.1f} |")
    spark_s = [r["seconds"] for r in runs if r["step"] == "spark"]
    local_s = [r["seconds"] for r in runs if r["step"] == "local"]
    lines += ["", f"Spark / local wall time: {min(spark_s):.1f} s / {min(local_s):.1f} s = "
              f"{min(spark_s) / min(local_s):.1f}x (best of each).", "", "Checks:", ""]
    lines += [f"- {k}: {v}" for k, v in checks.items()]
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULTS / stem}.md/.json")


if __name__ == "__main__":
    main()
