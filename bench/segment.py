"""Benchmark: `custseg segment --algorithm auto --k auto` at 1M customers, and assignment.

Generates a customer table (seeded): the five RFM-like columns of
:func:`custseg.datasets.make_customers` (six planted archetypes) plus eleven correlated and
noisy behavioural columns, 16 numeric features in all, then times in one run:

``preprocess``  ``build_preprocessor(features)`` and ``fit_transform`` (the matrix ``X``)
``auto``        what ``custseg segment --algorithm auto --k auto`` does after features:
                ``selection.compare(X, algorithms=("kmeans", "gmm"), k_values=range(2, 16))``
                (its defaults sweep a seeded 10k-row sample), ``selection.recommend`` as
                ``pipeline.run_segmentation`` calls it, and the final fit of the chosen
                algorithm and k on all rows (``cluster.make_estimator(...).fit(X)``)
``baseline``    the usual notebook loop: scikit-learn ``KMeans(n_clusters=k, random_state=0)``
                fitted on all rows plus ``silhouette_score(X, labels, sample_size=10000,
                random_state=0)`` for the same k = 2..15.  When the loop would run past
                ``--baseline-budget`` seconds, the remaining k are extrapolated linearly in k
                from the measured ones (marked as such in the results)
``model``       a :class:`custseg.model.SegmentationModel` built as ``run_segmentation``
                builds it (profiles → names → ``SegmentationModel.from_fit``), saved and loaded
``latency``     ``model.assign(one_row_frame)`` for ``--calls`` distinct customers: median, p99
``batch``       ``model.assign(all_customers)`` and the compiled model's
                ``compile_model(model).assign_frame(all_customers)`` (the library's batch path,
                the one the target is for) and ``assign_matrix(numbers)``: customers per
                second, best of ``--repeat`` each; each timed run right after an untimed one
                (its time kept as ``cold_seconds``: after the wait for a quiet machine this
                VM faults freed memory back in — see ``_cold_run``)

Everything runs in this one process, in this order, on the same data.  The CPU time of this
process, the cores other processes kept busy meanwhile ("others' load") and the load average
before and after are recorded with every step: the machine may be shared.

Results go to ``bench/results/segment-YYYY-MM-DD.md`` and ``.json``, rewritten after every
step (an interrupted run still leaves what it measured).  Nothing here asserts a time; the
targets are marked MET or NOT MET.

    python bench/segment.py [--customers 1000000] [--repeat 3] [--calls 2000]
                            [--baseline-budget 900] [--quiet-wait 20]
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import math
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

# Targets of the segmentation issue.
TARGET_AUTO_SECONDS = 25.0  # sweep + final fit, at most (issue 13)
TARGET_BATCH_RATE = 1_500_000.0  # customers assigned per second by the library, at least (issue 13)

K_VALUES = tuple(range(2, 16))
ALGORITHMS = ("kmeans", "gmm")
SILHOUETTE_SAMPLE = 10_000
SEED = 0
QUIET_CORES = 0.25  # the rest of the machine counts as quiet below this many busy cores


# --- data ----------------------------------------------------------------------------------

EXTRA_COLUMNS = {
    "items_per_order": "mean items per order; log-normal, rises with the order value",
    "distinct_products": "distinct products bought; 1 + Poisson, rises with the order count",
    "categories_bought": "distinct product categories (≤ 25); rises with distinct products",
    "web_sessions_90d": "site visits in the last 90 days; negative binomial, higher for recent "
                        "and frequent customers",
    "email_open_rate": "share of e-mails opened; beta, slightly higher for frequent customers",
    "email_click_rate": "share of e-mails clicked; open rate × beta",
    "discount_share": "share of spend bought on discount; beta, higher for small baskets",
    "return_rate": "share of items returned; beta, independent noise",
    "support_tickets": "support tickets opened; Poisson, rises with the order count",
    "mobile_share": "share of orders placed on mobile; beta, independent noise",
    "age": "age in years (18-90), 3% missing; weakly related to order value",
}


def make_features(n_customers: int, *, random_state: int = SEED) -> pd.DataFrame:
    """Customer table: ``customer_id`` plus 16 numeric features (see ``EXTRA_COLUMNS``).

    The five columns of ``make_customers`` (recency_days, frequency, monetary, tenure_days,
    avg_order_value; six planted archetypes) and eleven more drawn from them with noise.  No
    two columns correlate above |r| = 0.83, so the preprocessor keeps all 16.
    """
    from custseg.datasets import make_customers

    customers, _ = make_customers(n_customers, n_segments=6, random_state=random_state)
    rng = np.random.default_rng([random_state, 1])
    n = len(customers)
    recency = customers["recency_days"].to_numpy(float)
    frequency = customers["frequency"].to_numpy(float)
    order_value = customers["avg_order_value"].to_numpy(float)
    log_frequency, log_recency, log_value = np.log1p(frequency), np.log1p(recency), np.log(order_value)
    value_z = (log_value - log_value.mean()) / log_value.std()

    extra: dict[str, np.ndarray] = {}
    extra["items_per_order"] = np.round(
        np.exp(0.8 + 0.35 * (log_value - log_value.mean()) + rng.normal(0, 0.45, n)), 2
    )
    extra["distinct_products"] = 1 + rng.poisson(np.exp(0.6 + 0.8 * log_frequency + rng.normal(0, 0.4, n)))
    extra["categories_bought"] = np.minimum(
        1 + rng.poisson(0.7 * np.log1p(extra["distinct_products"]) + rng.gamma(1.0, 0.6, n)), 25
    )
    visit_odds = np.exp(2.2 - 0.35 * log_recency + 0.5 * log_frequency + rng.normal(0, 0.5, n)) / 2
    extra["web_sessions_90d"] = rng.negative_binomial(2, 1 / (1 + visit_odds))
    extra["email_open_rate"] = np.clip(rng.beta(2, 5, n) + 0.04 * (log_frequency - log_frequency.mean()), 0, 1)
    extra["email_click_rate"] = np.clip(extra["email_open_rate"] * rng.beta(2, 6, n), 0, 1)
    extra["discount_share"] = np.clip(rng.beta(1.5, 6, n) - 0.05 * value_z, 0, 1)
    extra["return_rate"] = rng.beta(0.6, 12, n)
    extra["support_tickets"] = rng.poisson(0.2 + 0.15 * np.sqrt(frequency))
    extra["mobile_share"] = rng.beta(2.5, 2.0, n)
    age = np.clip(rng.normal(42, 13, n) + 2 * (log_value - log_value.mean()), 18, 90).round()
    age[rng.random(n) < 0.03] = np.nan
    extra["age"] = age
    return customers.assign(**extra)


# --- measuring -----------------------------------------------------------------------------


def _cpu_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = values
    return user + nice + system + irq + softirq + steal, sum(values)


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def busy_cores(seconds: float = 2.0) -> float:
    """How many cores were busy, on average, over the next ``seconds``."""
    busy0, total0 = _cpu_ticks()
    time.sleep(seconds)
    busy1, total1 = _cpu_ticks()
    return (busy1 - busy0) / max(1, total1 - total0) * (os.cpu_count() or 1)


def wait_for_quiet(max_wait: float) -> float | None:
    """Wait (up to ``max_wait`` s) until other processes leave the CPUs nearly idle; return
    the busy cores seen last (None when not waiting)."""
    if max_wait <= 0:
        return None
    deadline = time.monotonic() + max_wait
    busy = busy_cores()
    while busy > QUIET_CORES and time.monotonic() < deadline:
        busy = busy_cores()
    return round(busy, 2)


class Meter:
    """Wall time, this process's CPU time and the cores others kept busy, around a block."""

    def __enter__(self) -> Meter:
        self.load_before = load_average()
        self._ticks = _cpu_ticks()
        self._cpu = _own_cpu()
        self._t = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self._t
        self.cpu_seconds = _own_cpu() - self._cpu
        busy1, total1 = _cpu_ticks()
        busy0, total0 = self._ticks
        cores = os.cpu_count() or 1
        elapsed_ticks = max(1, total1 - total0)
        machine = (busy1 - busy0) / elapsed_ticks * cores
        own = self.cpu_seconds / self.seconds if self.seconds > 0 else 0.0
        self.others_load = max(0.0, machine - own)
        self.load_after = load_average()

    def record(self, **extra) -> dict:
        return {
            "seconds": round(self.seconds, 4),
            "cpu_seconds": round(self.cpu_seconds, 2),
            "others_load": round(self.others_load, 2),
            "load_before": self.load_before,
            "load_after": self.load_after,
            **extra,
        }


# --- machine -------------------------------------------------------------------------------


def machine_info() -> dict:
    import sklearn
    import threadpoolctl

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gib = round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    os_name = platform.platform()
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = f"{line.split('=', 1)[1].strip(chr(34))} (kernel {platform.release()})"
    except OSError:
        pass
    pools = [
        {k: info.get(k) for k in ("user_api", "internal_api", "prefix", "version", "num_threads",
                                  "threading_layer", "architecture")}
        for info in threadpoolctl.threadpool_info()
    ]
    versions = {"python": platform.python_version(), "numpy": np.__version__,
                "scikit-learn": sklearn.__version__, "pandas": pd.__version__,
                "threadpoolctl": threadpoolctl.__version__}
    for name, module in (("scipy", "scipy"), ("skops", "skops")):
        try:
            versions[name] = __import__(module).__version__
        except ImportError:
            pass
    try:
        from importlib.metadata import version

        versions["custseg"] = version("custseg")
    except Exception:
        versions["custseg"] = "unknown"
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gib": ram_gib, "os": os_name,
            "versions": versions, "threadpools": pools,
            "env_threads": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                       "MKL_NUM_THREADS") if k in os.environ}}


def source_digest() -> str:
    """sha256 of the custseg modules this benchmark exercises (to tell runs of different code apart)."""
    import custseg

    root = Path(custseg.__file__).parent
    digest = hashlib.sha256()
    for name in ("model.py", "selection.py", "preprocessing.py", "cluster/_mixture.py", "cluster/_registry.py"):
        path = root / name
        if path.exists():
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


# --- steps ---------------------------------------------------------------------------------


def step_preprocess(features: pd.DataFrame, repeat: int, results: dict, quiet_wait: float):
    from custseg.preprocessing import build_preprocessor

    runs = []
    for _ in range(repeat):
        quiet = wait_for_quiet(quiet_wait)
        with Meter() as build:
            prep = build_preprocessor(features)
        with Meter() as fit:
            matrix = prep.fit_transform(features[prep.columns])
        runs.append({"build": build.record(), "fit_transform": fit.record(),
                     "seconds": round(build.seconds + fit.seconds, 4), **_combined(build, fit),
                     "quiet_wait_busy": quiet})
    results["preprocess"] = {
        "runs": runs,
        "best_seconds": min(r["seconds"] for r in runs),
        "columns_in": prep.columns,
        "columns_out": [str(c) for c in matrix.columns],
        "decisions": prep.report,
    }
    return prep, matrix


def step_auto(matrix: pd.DataFrame, repeat: int, results: dict, quiet_wait: float):
    from custseg import cluster, selection

    numeric = matrix.select_dtypes("number")
    runs = []
    for _ in range(repeat):
        quiet = wait_for_quiet(quiet_wait)
        with Meter() as sweep:
            result = selection.compare(numeric, algorithms=ALGORITHMS, k_values=K_VALUES, random_state=SEED)
            choice = selection.recommend(result.leaderboard, knee=result.knee)
        algorithm, k = choice.algorithm, choice.n_clusters
        spec = cluster.ALGORITHMS[algorithm]
        with Meter() as final:
            estimator = cluster.make_estimator(algorithm, n_clusters=k if spec.takes_k else None,
                                               random_state=SEED)
            estimator.fit(matrix)
        board = result.leaderboard
        runs.append({
            "sweep": sweep.record(),
            "final_fit": final.record(),
            "seconds": round(sweep.seconds + final.seconds, 4),
            **_combined(sweep, final),
            "algorithm": algorithm,
            "n_clusters": int(k),
            "knee": result.knee,
            "fit_seconds_by_algorithm": {
                name: round(float(board.loc[board["algorithm"] == name, "fit_seconds"].sum()), 3)
                for name in ALGORITHMS
            },
            "quiet_wait_busy": quiet,
        })
    labels = np.asarray(estimator.labels_).astype("int64")
    best = min(runs, key=lambda r: r["seconds"])
    results["auto"] = {
        "runs": runs,
        "best_seconds": best["seconds"],
        "best_sweep_seconds": min(r["sweep"]["seconds"] for r in runs),
        "best_final_fit_seconds": min(r["final_fit"]["seconds"] for r in runs),
        "recommendation": choice.text,
        "reasons": list(choice.reasons),
        "same_choice_every_run": len({(r["algorithm"], r["n_clusters"]) for r in runs}) == 1,
        "leaderboard": json.loads(result.leaderboard.to_json(orient="records")),
        "segment_sizes": np.bincount(labels[labels >= 0]).tolist(),
    }
    return algorithm, int(k), estimator, labels


def _combined(*meters: Meter) -> dict:
    """CPU seconds and time-weighted others' load of consecutive steps."""
    seconds = sum(m.seconds for m in meters)
    return {
        "cpu_seconds": round(sum(m.cpu_seconds for m in meters), 2),
        "others_load": round(sum(m.others_load * m.seconds for m in meters) / seconds, 2) if seconds else 0.0,
    }


def step_baseline(X: np.ndarray, budget: float, results: dict, quiet_wait: float, on_progress) -> None:
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    quiet = wait_for_quiet(quiet_wait)
    per_k = []
    started = time.perf_counter()
    entry = results["baseline"] = {"per_k": per_k, "budget_seconds": budget, "quiet_wait_busy": quiet}
    for k in K_VALUES:
        if per_k and time.perf_counter() - started > budget:
            break
        with Meter() as fit:
            labels = KMeans(n_clusters=k, random_state=0).fit(X).labels_
        with Meter() as sil:
            score = silhouette_score(X, labels, sample_size=SILHOUETTE_SAMPLE, random_state=0)
        per_k.append({"k": k, "fit": fit.record(), "silhouette": sil.record(score=round(float(score), 4)),
                      "seconds": round(fit.seconds + sil.seconds, 4)})
        entry.update(_baseline_total(per_k))
        on_progress()


def _baseline_total(per_k: list[dict]) -> dict:
    measured = {r["k"]: r["seconds"] for r in per_k}
    missing = [k for k in K_VALUES if k not in measured]
    extrapolated: dict[int, float] = {}
    if missing:
        ks = np.array(sorted(measured), dtype=float)
        secs = np.array([measured[int(k)] for k in ks])
        if len(ks) >= 2:
            slope, intercept = np.polyfit(ks, secs, 1)
            extrapolated = {k: max(float(slope * k + intercept), float(secs.min())) for k in missing}
        else:  # one point: time proportional to k
            extrapolated = {k: float(secs[0] / ks[0] * k) for k in missing}
    total = sum(measured.values()) + sum(extrapolated.values())
    return {
        "measured_k": sorted(measured),
        "measured_seconds": round(sum(measured.values()), 3),
        "extrapolated_k": missing,
        "extrapolated_seconds": {str(k): round(v, 3) for k, v in extrapolated.items()},
        "seconds": round(total, 3),
        "is_extrapolated": bool(missing),
    }


def step_model(features, prep, matrix, algorithm, k, estimator, labels, results, workdir: Path):
    """Build, save and load the model the way ``pipeline.run_segmentation`` does."""
    from custseg import model as model_module
    from custseg import profiling, rfm

    timings = {}
    with Meter() as m:
        scored = rfm.score(features)
        profiles = profiling.profile(features, labels, random_state=SEED, rfm_segments=scored["rfm_segment"])
    timings["profile"] = m.record()
    names = {p.segment: p.name for p in profiles.segments}
    numeric = matrix.select_dtypes("number")
    with Meter() as m:
        built = model_module.SegmentationModel.from_fit(
            features=features, matrix=numeric, labels=labels, preprocessor=prep.transformer,
            estimator=estimator, algorithm=algorithm, feature_columns=prep.columns,
            segment_names=names, run={"source": "bench/segment.py", "customers": len(features),
                                      "config": {"algorithm": algorithm, "n_clusters": k}},
        )
    timings["from_fit"] = m.record()
    path = workdir / "model.skops"
    with Meter() as m:
        built.save(path)
    timings["save"] = m.record(bytes=path.stat().st_size)
    with Meter() as m:
        loaded = model_module.load(path)
    timings["load"] = m.record()
    results["model"] = {"algorithm": algorithm, "n_clusters": k, "segment_names": {str(s): n for s, n in names.items()},
                        "outlier_distance": built.outlier_distance, "steps": timings}
    return loaded


def step_latency(model, features: pd.DataFrame, calls: int, results: dict, quiet_wait: float) -> None:
    rng = np.random.default_rng([SEED, 2])
    rows = rng.choice(len(features), size=calls, replace=calls > len(features))
    frames = [features.iloc[[int(i)]] for i in rows]
    for frame in frames[: min(50, calls)]:  # warm-up
        model.assign(frame)
    quiet = wait_for_quiet(quiet_wait)
    samples = np.empty(calls)
    with Meter() as m:
        for i, frame in enumerate(frames):
            t = time.perf_counter_ns()
            model.assign(frame)
            samples[i] = (time.perf_counter_ns() - t) / 1000.0
    # The floor DESIGN.md quotes: numpy argmin over the centres for one transformed row.
    centers = np.asarray(model.centers)
    transformed = np.asarray(model.preprocessor.transform(frames[0]).select_dtypes("number"), dtype=float)[0]
    floor = []
    for _ in range(2000):
        t = time.perf_counter_ns()
        int(((centers - transformed) ** 2).sum(axis=1).argmin())
        floor.append((time.perf_counter_ns() - t) / 1000.0)
    results["latency"] = {
        "calls": calls,
        "distinct_customers": int(len(set(rows.tolist()))),
        "median_us": round(float(np.median(samples)), 1),
        "p90_us": round(float(np.percentile(samples, 90)), 1),
        "p99_us": round(float(np.percentile(samples, 99)), 1),
        "mean_us": round(float(samples.mean()), 1),
        "min_us": round(float(samples.min()), 1),
        "max_us": round(float(samples.max()), 1),
        "numpy_argmin_floor_median_us": round(float(np.median(floor)), 2),
        "meter": m.record(),
        "quiet_wait_busy": quiet,
    }


def assignment_digest(out: pd.DataFrame) -> str:
    """sha256 of an assignment table (all columns, values and order) to compare code versions."""
    hashed = pd.util.hash_pandas_object(out, index=False).to_numpy()
    return hashlib.sha256(hashed.tobytes() + ",".join(out.columns).encode()).hexdigest()[:16]


def step_batch(model, features: pd.DataFrame, labels: np.ndarray, repeat: int, results: dict,
               quiet_wait: float, profile_to: Path | None) -> None:
    runs = []
    out = None
    for _ in range(repeat):
        quiet = wait_for_quiet(quiet_wait)
        out = None  # free the previous output before the next run
        cold = _cold_run(lambda: model.assign(features))
        with Meter() as m:
            out = model.assign(features)
        runs.append(m.record(customers_per_second=round(len(features) / m.seconds), quiet_wait_busy=quiet,
                             cold_seconds=cold))
    segment = out["segment"].to_numpy()
    unassigned = segment == -1
    # The numpy floor: nearest centre for every row of the already-transformed matrix.
    X = np.asarray(model.preprocessor.transform(features[model.feature_columns]).select_dtypes("number"),
                   dtype=float)
    with Meter() as floor:
        _nearest_floor(X, np.asarray(model.centers))
    from custseg.scoring import compile_model

    compiled = compile_model(model)
    numbers = features[compiled.numeric_columns].to_numpy(dtype="float64")
    same = bool(np.array_equal(compiled.assign_frame(features)["segment"].to_numpy(), segment)
                and np.array_equal(compiled.assign_matrix(numbers)["segment"], segment))
    compiled_runs = {}
    for name, call in (("assign_frame", lambda: compiled.assign_frame(features)),
                       ("assign_matrix", lambda: compiled.assign_matrix(numbers))):
        compiled_runs[name] = []
        for _ in range(repeat):
            quiet = wait_for_quiet(quiet_wait)
            cold = _cold_run(call)
            with Meter() as m:
                call()
            compiled_runs[name].append(m.record(customers_per_second=round(len(features) / m.seconds),
                                                quiet_wait_busy=quiet, cold_seconds=cold))
    best = min(runs, key=lambda r: r["seconds"])
    best_frame = min(compiled_runs["assign_frame"], key=lambda r: r["seconds"])
    best_matrix = min(compiled_runs["assign_matrix"], key=lambda r: r["seconds"])
    results["batch_compiled"] = {
        "customers": len(features), "fallback": compiled.fallback, "same_segments_as_assign": same,
        "frame_runs": compiled_runs["assign_frame"], "matrix_runs": compiled_runs["assign_matrix"],
        "frame_customers_per_second": best_frame["customers_per_second"],
        "matrix_customers_per_second": best_matrix["customers_per_second"],
    }
    results["batch"] = {
        "customers": len(features),
        "runs": runs,
        "best_seconds": best["seconds"],
        "customers_per_second": best["customers_per_second"],
        "output_columns": list(out.columns),
        "output_sha256": assignment_digest(out),
        "unassigned": int(unassigned.sum()),
        "unassigned_reasons": out.loc[unassigned, "reason"].str.split(" ", n=2).str[:2].str.join(" ")
        .value_counts().to_dict(),
        "agrees_with_training_labels": round(float((segment[~unassigned] == labels[~unassigned]).mean()), 6),
        "numpy_nearest_centre_floor_seconds": round(floor.seconds, 4),
    }
    if profile_to is not None:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        profiler.enable()
        model.assign(features)
        profiler.disable()
        with open(profile_to, "w") as handle:
            pstats.Stats(profiler, stream=handle).sort_stats("cumulative").print_stats(30)
        results["batch"]["profile"] = str(profile_to)


def _cold_run(call) -> float:
    """Run ``call`` once untimed right after the wait for a quiet machine, and return its
    seconds (kept in the results as ``cold_seconds``).  On this machine memory freed while it
    idles is handed back to the host, and the next large allocations fault it in again:
    measured, a compiled assign_frame of 1M rows took 0.33 s, 0.56 s after 3 s idle and 0.95 s
    after 10 s — the quiet wait, not the code.  The timed run follows at once."""
    started = time.perf_counter()
    call()
    return round(time.perf_counter() - started, 4)


def _nearest_floor(X: np.ndarray, centers: np.ndarray) -> np.ndarray:
    d2 = (X ** 2).sum(axis=1)[:, None] - 2 * X @ centers.T + (centers ** 2).sum(axis=1)[None, :]
    return d2.argmin(axis=1)


# --- report --------------------------------------------------------------------------------


def _status(ok: bool | None) -> str:
    return "—" if ok is None else ("MET" if ok else "NOT MET")


def _num(x: float | None, digits: int = 2) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:,.{digits}f}"


def summarize(results: dict) -> dict:
    """Headline numbers, ratios and targets from whatever has been measured so far."""
    summary: dict = {}
    auto, base, batch, lat = (results.get(k) for k in ("auto", "baseline", "batch", "latency"))
    if auto:
        summary["auto_seconds"] = auto["best_seconds"]
        summary["target_auto"] = {"target": f"≤ {TARGET_AUTO_SECONDS:g} s", "measured": auto["best_seconds"],
                                  "status": _status(auto["best_seconds"] <= TARGET_AUTO_SECONDS)}
    if base and base.get("per_k"):
        summary["baseline_seconds"] = base["seconds"]
        summary["baseline_extrapolated"] = base["is_extrapolated"]
        if auto:
            summary["speedup_vs_baseline"] = round(base["seconds"] / auto["best_seconds"], 2)
    if batch:
        summary["batch_customers_per_second"] = batch["customers_per_second"]
    compiled = results.get("batch_compiled")
    if compiled:
        rate = compiled["frame_customers_per_second"]
        summary["compiled_frame_customers_per_second"] = rate
        summary["compiled_matrix_customers_per_second"] = compiled["matrix_customers_per_second"]
        summary["target_batch"] = {"target": f"≥ {TARGET_BATCH_RATE:,.0f} customers/s (compiled assign_frame)",
                                   "measured": rate, "status": _status(rate >= TARGET_BATCH_RATE)}
    if lat:
        summary["latency_median_us"] = lat["median_us"]
        summary["latency_p99_us"] = lat["p99_us"]
    steps = list(_timed_records({k: results[k] for k in ("preprocess", "auto", "baseline", "latency", "batch")
                                 if k in results}))
    total = sum(rec["seconds"] for rec in steps)
    if total:
        summary["others_load"] = {
            "mean": round(sum(rec["others_load"] * rec["seconds"] for rec in steps) / total, 2),
            "max": round(max(rec["others_load"] for rec in steps), 2),
        }
    return summary


def _timed_records(node):
    """Every step record (a dict with seconds, cpu_seconds and others_load) under ``node``."""
    if isinstance(node, dict):
        if {"seconds", "cpu_seconds", "others_load", "load_before"} <= node.keys():
            yield node
            return
        for value in node.values():
            yield from _timed_records(value)
    elif isinstance(node, list):
        for value in node:
            yield from _timed_records(value)


def write_results(results: dict, stem: str) -> tuple[Path, Path]:
    RESULTS.mkdir(parents=True, exist_ok=True)
    results["summary"] = summarize(results)
    json_path = RESULTS / f"{stem}.json"
    md_path = RESULTS / f"{stem}.md"
    json_path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    md_path.write_text(render_markdown(results))
    return md_path, json_path


def _load_line(rec: dict) -> str:
    return f"{rec['others_load']:.2f}"


def render_markdown(r: dict) -> str:
    m = r["machine"]
    v = m["versions"]
    s = r.get("summary", {})
    lines = [
        f"# `custseg segment` benchmark — {r['date']}",
        "",
        "Produced by `bench/segment.py` (method in its docstring).  One process, one run, "
        "the same synthetic customer table for every step.",
        "",
        "## Machine",
        "",
        f"- CPU: {m['cpu']}, {m['cores']} cores; RAM {m['ram_gib']} GiB",
        f"- OS: {m['os']}",
        f"- Python {v['python']}, NumPy {v['numpy']}, scikit-learn {v['scikit-learn']}, pandas {v['pandas']}, "
        f"SciPy {v.get('scipy', '?')}, threadpoolctl {v['threadpoolctl']}; custseg {v['custseg']} "
        f"(source sha256 {r['source_sha256']})",
        "- Thread pools (threadpoolctl): " + "; ".join(
            f"{p['internal_api']} {p.get('version') or ''} ({p['prefix']}, {p['num_threads']} threads"
            + (f", {p['threading_layer']}" if p.get("threading_layer") else "") + ")"
            for p in m["threadpools"]
        ) + (f"; environment {m['env_threads']}" if m["env_threads"] else ""),
        f"- run {r['started']} → {r.get('finished', '(unfinished)')}; command `{r['command']}`",
        f"- load average (1, 5, 15 min) before: {r['load_before']}, after: {r.get('load_after', '—')}; "
        f"busy cores before the run (2 s sample): {r['busy_before']}",
        "",
    ]
    others = s.get("others_load")
    if others:
        if others["mean"] > QUIET_CORES:
            text = (f"**The machine was shared:** other processes kept {others['mean']:.2f} cores busy on average "
                    f"(at most {others['max']:.2f}) while the timed steps ran; this machine has {m['cores']}.  "
                    f"Times under load are longer than on an idle machine, and thread pools that spin-wait "
                    f"(OpenMP, OpenBLAS) suffer most.")
        elif others["max"] > 2 * QUIET_CORES:
            text = (f"Other processes were mostly idle while the timed steps ran ({others['mean']:.2f} cores busy "
                    f"on average of {m['cores']}), but some steps ran next to other work (up to "
                    f"{others['max']:.2f} cores busy).")
        else:
            text = (f"Other processes were nearly idle while the timed steps ran ({others['mean']:.2f} cores busy "
                    f"on average, at most {others['max']:.2f}, of {m['cores']}).")
        lines += [
            text,
            "See the \"others' load\" column for each step.",
            "",
        ]
    pre = r.get("preprocess")
    lines += ["## Data", ""]
    d = r["data"]
    lines += [
        f"{d['customers']:,} customers × {d['features']} numeric features (seed {d['seed']}); generated in "
        f"{d['seconds']:.1f} s.  The five columns of `custseg.datasets.make_customers` (recency_days, frequency, "
        f"monetary, tenure_days, avg_order_value; six planted archetypes) plus:",
        "",
    ]
    lines += [f"- `{name}`: {text}" for name, text in EXTRA_COLUMNS.items()]
    lines += ["", f"Largest |Pearson r| between two columns: {d['max_abs_corr']:.2f}.", ""]
    if pre:
        lines += [f"Preprocessing kept {len(pre['columns_out'])} columns: " + "; ".join(pre["decisions"][1:]), ""]

    lines += ["## Results", "",
              "| step | best | all runs | CPU s (best) | others' load (best) |",
              "|---|---:|---|---:|---:|"]

    def row(name, runs, key, fmt=lambda x: f"{x:.2f} s"):
        best = min(runs, key=lambda x: key(x))
        rec = best if "cpu_seconds" in best else best.get("meter", best)
        cpu = rec.get("cpu_seconds")
        lines.append(f"| {name} | {fmt(key(best))} | {', '.join(fmt(key(x)) for x in runs)} | "
                     f"{_num(cpu, 1)} | {_num(rec.get('others_load'))} |")

    if pre:
        row("preprocess: build_preprocessor + fit_transform", pre["runs"], lambda x: x["seconds"])
        row("  of which fit_transform", [x["fit_transform"] for x in pre["runs"]], lambda x: x["seconds"])
    auto = r.get("auto")
    if auto:
        row("**(a) auto: sweep + final fit**", auto["runs"], lambda x: x["seconds"])
        row("  sweep (compare + recommend, 10k-row sample)", [x["sweep"] for x in auto["runs"]], lambda x: x["seconds"])
        row(f"  final fit on all rows ({auto['runs'][0]['algorithm']}, k={auto['runs'][0]['n_clusters']})",
            [x["final_fit"] for x in auto["runs"]], lambda x: x["seconds"])
    base = r.get("baseline")
    if base and base.get("per_k"):
        how = (f"measured k = {base['measured_k'][0]}..{base['measured_k'][-1]}, "
               f"extrapolated k = {', '.join(map(str, base['extrapolated_k']))}" if base["is_extrapolated"]
               else "all k measured")
        cpu = sum(x["fit"]["cpu_seconds"] + x["silhouette"]["cpu_seconds"] for x in base["per_k"])
        others = np.average([x["fit"]["others_load"] for x in base["per_k"]],
                            weights=[x["fit"]["seconds"] for x in base["per_k"]])
        lines.append(f"| **(b) baseline: KMeans on all rows + silhouette(10k), k = 2..15** | "
                     f"{base['seconds']:.2f} s{' (extrapolated)' if base['is_extrapolated'] else ''} | {how} | "
                     f"{cpu:.1f} (measured k) | {others:.2f} |")
    model = r.get("model")
    if model:
        for step in ("profile", "from_fit", "save", "load"):
            rec = model["steps"][step]
            lines.append(f"| model: {step} | {rec['seconds']:.2f} s | — | {rec['cpu_seconds']:.1f} | "
                         f"{rec['others_load']:.2f} |")
    lat = r.get("latency")
    if lat:
        lines.append(f"| **(c) assign one customer** ({lat['calls']:,} calls) | median {lat['median_us']:,.0f} µs, "
                     f"p99 {lat['p99_us']:,.0f} µs | p90 {lat['p90_us']:,.0f} µs, mean {lat['mean_us']:,.0f} µs, "
                     f"min {lat['min_us']:,.0f} µs | {lat['meter']['cpu_seconds']:.1f} (all calls) | "
                     f"{lat['meter']['others_load']:.2f} |")
    batch = r.get("batch")
    if batch:
        row(f"**(c) assign a batch of {batch['customers']:,}**", batch["runs"], lambda x: x["seconds"],
            fmt=lambda x: f"{x:.2f} s")
        lines.append(f"| — as customers/s | {batch['customers_per_second']:,.0f} /s | "
                     + ", ".join(f"{x['customers_per_second']:,.0f}" for x in batch["runs"]) + " | | |")
    compiled = r.get("batch_compiled")
    if compiled:
        for key, label in (("frame_runs", "compiled assign_frame"), ("matrix_runs", "compiled assign_matrix")):
            row(f"**(c) {label}, {compiled['customers']:,}**", compiled[key], lambda x: x["seconds"])
            lines.append(f"| — as customers/s | {max(x['customers_per_second'] for x in compiled[key]):,.0f} /s | "
                         + ", ".join(f"{x['customers_per_second']:,.0f}" for x in compiled[key]) + " | | |")
    lines += ["",
              "CPU s: user + system CPU of this process during the step (both cores busy → up to 2 × wall).  "
              "Others' load: cores other processes kept busy meanwhile (0 on a quiet machine).", ""]

    if auto:
        first = auto["runs"][0]
        lines += ["### (a) auto", "",
                  f"Recommendation: {auto['recommendation']}.  Same choice in every run: "
                  f"{'yes' if auto['same_choice_every_run'] else 'NO'}; knee of the elbow: {first['knee']}.  "
                  f"Segment sizes of the final fit: {', '.join(f'{n:,}' for n in auto['segment_sizes'])}.",
                  "",
                  "Sum of the sweep's main-fit seconds by algorithm (leaderboard `fit_seconds`, best run; "
                  "stability refits, metrics and the elbow come on top): "
                  + ", ".join(f"{a} {s:.2f} s" for a, s in min(auto["runs"], key=lambda x: x["seconds"])
                              ["fit_seconds_by_algorithm"].items()) + ".", ""]
    if base and base.get("per_k"):
        lines += ["### (b) baseline, per k", "", "| k | KMeans fit s | silhouette s | silhouette | others' load |",
                  "|---:|---:|---:|---:|---:|"]
        for x in base["per_k"]:
            lines.append(f"| {x['k']} | {x['fit']['seconds']:.2f} | {x['silhouette']['seconds']:.2f} | "
                         f"{x['silhouette']['score']:.3f} | {x['fit']['others_load']:.2f} |")
        for k, sec in base["extrapolated_seconds"].items():
            lines.append(f"| {k} | {sec:.2f} (extrapolated, fit + silhouette) | | | |")
        if base["is_extrapolated"]:
            lines += ["", f"**Extrapolated:** the loop stopped after {base['measured_seconds']:.0f} s (budget "
                          f"{base['budget_seconds']:.0f} s); the remaining k are a straight line in k fitted "
                          f"to the measured k."]
        lines.append("")
    if lat or batch:
        lines += ["### (c) assignment", ""]
        if model:
            lines.append(f"Model: {model['algorithm']}, k = {model['n_clusters']}, built as "
                         f"`pipeline.run_segmentation` builds it, saved with skops and loaded back before timing.")
        if lat:
            lines.append(f"One customer: {lat['calls']:,} calls of `model.assign(frame_with_one_row)` over "
                         f"{lat['distinct_customers']:,} distinct customers after 50 warm-up calls.  For scale, "
                         f"numpy argmin over the centres for one already-transformed row takes "
                         f"{lat['numpy_argmin_floor_median_us']:.1f} µs (median).")
        if batch:
            colds = [r.get("cold_seconds") for r in batch["runs"] if r.get("cold_seconds") is not None]
            lines.append(f"Batch: `model.assign(all {batch['customers']:,} customers)`, best of "
                         f"{len(batch['runs'])}, each timed right after an untimed run (that run after the wait "
                         f"for a quiet machine: {', '.join(f'{c:.2f}' for c in colds) or '–'} s; this VM faults "
                         f"memory freed while it idles back in).  For scale, numpy nearest-centre labels of the already-transformed "
                         f"matrix take {batch['numpy_nearest_centre_floor_seconds'] * 1000:.0f} ms.  Output: "
                         f"{', '.join(batch['output_columns'])}; sha256 {batch['output_sha256']}; "
                         f"{batch['unassigned']:,} customers unassigned ({batch['unassigned_reasons'] or 'none'}); "
                         f"the others get their training label in {batch['agrees_with_training_labels']:.4%} of rows.")
        lines.append("")

    lines += ["## Targets", "", "| target | measured | status |", "|---|---|---|"]
    if "target_auto" in s:
        ratio = (f"; baseline / auto = {s['speedup_vs_baseline']:.1f}×"
                 f"{' (baseline extrapolated)' if s.get('baseline_extrapolated') else ''}"
                 if "speedup_vs_baseline" in s else "")
        lines.append(f"| auto sweep + final fit ≤ {TARGET_AUTO_SECONDS:g} s | {s['auto_seconds']:.2f} s{ratio} | "
                     f"{s['target_auto']['status']} |")
    if "target_batch" in s:
        lines.append(f"| batch assignment in the library ≥ {TARGET_BATCH_RATE:,.0f} customers/s | "
                     f"compiled assign_frame {s['compiled_frame_customers_per_second']:,.0f} customers/s "
                     f"(assign_matrix {s['compiled_matrix_customers_per_second']:,.0f}/s, model.assign "
                     f"{s['batch_customers_per_second']:,.0f}/s) | {s['target_batch']['status']} |")
    if "speedup_vs_baseline" in s:
        lines += ["", f"Ratio to the baseline measured in this run: (b) / (a) = {s['baseline_seconds']:.2f} s / "
                      f"{s['auto_seconds']:.2f} s = **{s['speedup_vs_baseline']:.2f}×**"
                      f"{' (baseline partly extrapolated)' if s.get('baseline_extrapolated') else ''}."]
    lines.append("")
    if r.get("notes"):
        lines += ["## Notes", ""] + [f"- {n}" for n in r["notes"]] + [""]
    return "\n".join(lines)


# --- main ----------------------------------------------------------------------------------


def _command(argv: list[str]) -> str:
    """The command line, with the text of each --note left out (it is under Notes)."""
    words, skip = ["python", "bench/segment.py"], False
    for word in argv:
        if skip:
            skip = False
            continue
        if word == "--note":
            words.append("--note …")
            skip = True
        elif word.startswith("--note="):
            words.append("--note …")
        else:
            words.append(word)
    return " ".join(words)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=1_000_000, help="rows of the customer table (default 1,000,000)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs of preprocessing, of the auto sweep + final fit and of batch assignment; "
                             "the best is reported (default 3)")
    parser.add_argument("--calls", type=int, default=2000, help="single-customer assign calls (default 2000)")
    parser.add_argument("--baseline-budget", type=float, default=900.0,
                        help="seconds after which the baseline loop stops and the remaining k are "
                             "extrapolated linearly (default 900)")
    parser.add_argument("--skip-baseline", action="store_true", help="do not run the baseline loop")
    parser.add_argument("--quiet-wait", type=float, default=20.0,
                        help="before each timed step, wait up to this many seconds for other processes to "
                             "leave the CPUs idle (default 20; 0 = do not wait)")
    parser.add_argument("--profile-batch", metavar="FILE", type=Path, default=None,
                        help="also profile one batch assignment with cProfile and write the 30 costliest "
                             "calls to FILE")
    parser.add_argument("--tag", default="", help="suffix of the result file names (segment-DATE[-TAG])")
    parser.add_argument("--note", action="append", default=[],
                        help="a sentence to record under Notes in the results (repeatable)")
    args = parser.parse_args(argv)
    if args.customers < 10_000 or args.repeat < 1 or args.calls < 1:
        parser.error("--customers must be >= 10000, --repeat and --calls >= 1")

    today = dt.date.today().isoformat()
    stem = f"segment-{today}" + (f"-{args.tag}" if args.tag else "")
    results: dict = {
        "benchmark": "segment",
        "date": today,
        "started": dt.datetime.now().isoformat(timespec="seconds"),
        "command": _command(argv if argv is not None else sys.argv[1:]),
        "machine": machine_info(),
        "source_sha256": source_digest(),
        "load_before": load_average(),
        "busy_before": round(busy_cores(), 2),
        "targets": {"auto_seconds_max": TARGET_AUTO_SECONDS, "batch_customers_per_second_min": TARGET_BATCH_RATE},
        "notes": list(args.note),
    }

    def log(text: str) -> None:
        print(f"[{dt.datetime.now():%H:%M:%S}] {text}", flush=True)

    def save() -> None:
        write_results(results, stem)

    log(f"generating {args.customers:,} customers")
    with Meter() as m:
        features = make_features(args.customers)
    numeric_columns = [c for c in features.columns if c != "customer_id"]
    corr = features[numeric_columns].astype(float).corr().to_numpy().copy()
    np.fill_diagonal(corr, 0.0)
    results["data"] = {"customers": len(features), "features": len(numeric_columns), "seed": SEED,
                       "columns": numeric_columns, "seconds": round(m.seconds, 2),
                       "max_abs_corr": round(float(np.nanmax(np.abs(corr))), 3),
                       "missing": {c: int(n) for c, n in features[numeric_columns].isna().sum().items() if n}}
    save()

    log("preprocessing")
    prep, matrix = step_preprocess(features, args.repeat, results, args.quiet_wait)
    save()
    log(f"  best {results['preprocess']['best_seconds']:.2f} s, {matrix.shape[1]} columns")

    log("(a) auto sweep + final fit")
    algorithm, k, estimator, labels = step_auto(matrix, args.repeat, results, args.quiet_wait)
    save()
    log(f"  {algorithm} k={k}; runs " + ", ".join(f"{x['seconds']:.1f} s" for x in results["auto"]["runs"]))

    if not args.skip_baseline:
        log("(b) baseline: KMeans on all rows + silhouette, k = 2..15")
        X = np.ascontiguousarray(matrix.select_dtypes("number").to_numpy(dtype=np.float64))

        def progress() -> None:
            last = results["baseline"]["per_k"][-1]
            log(f"  k={last['k']}: {last['seconds']:.1f} s")
            save()

        step_baseline(X, args.baseline_budget, results, args.quiet_wait, progress)
        del X
        if results["baseline"]["is_extrapolated"]:
            results["notes"].append(
                f"The baseline loop exceeded its {args.baseline_budget:.0f} s budget: k = "
                f"{', '.join(map(str, results['baseline']['extrapolated_k']))} are extrapolated linearly, not measured."
            )
        save()
        log(f"  total {results['baseline']['seconds']:.1f} s"
            + (" (extrapolated)" if results["baseline"]["is_extrapolated"] else ""))

    with tempfile.TemporaryDirectory(prefix="custseg-bench-") as tmp:
        log("model: profile, from_fit, save, load")
        model = step_model(features, prep, matrix, algorithm, k, estimator, labels, results, Path(tmp))
        save()
        log(f"(c) single-customer latency, {args.calls:,} calls")
        step_latency(model, features, args.calls, results, args.quiet_wait)
        save()
        log(f"  median {results['latency']['median_us']:.0f} µs, p99 {results['latency']['p99_us']:.0f} µs")
        log("(c) batch assignment")
        step_batch(model, features, labels, args.repeat, results, args.quiet_wait, args.profile_batch)
        log(f"  best {results['batch']['customers_per_second']:,.0f} customers/s")

    results["finished"] = dt.datetime.now().isoformat(timespec="seconds")
    results["load_after"] = load_average()
    results["busy_after"] = round(busy_cores(), 2)
    md, js = write_results(results, stem)
    log(f"wrote {md} and {js}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
