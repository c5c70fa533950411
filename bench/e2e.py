"""Benchmark: `custseg segment` end to end on UCI Online Retail, against PyCaret's flow.

Times, as a user runs them, each in a fresh child process (interpreter start-up and imports
included), on ``../shared/data/online_retail/online_retail.parquet`` (4,338 customers):

``custseg``           ``custseg segment FILE --out DIR`` (the sweep of K-Means and Gaussian
                      mixtures for k = 2..15, the final fit, profiles, the run folder and the
                      HTML report)
``custseg-no-report`` the same with ``--no-report``
``pycaret``           PyCaret's clustering flow on the same file: pandas reads and cleans it
                      (the same rules: no customer id, exact duplicates, cancellations and
                      unit price ≤ 0 dropped) and computes the same five features (recency,
                      frequency, monetary, tenure, order value), then ``setup(normalize=True)``,
                      ``create_model("kmeans", num_clusters=4)``, ``assign_model`` and the five
                      plots ``cluster``, ``tsne``, ``elbow``, ``silhouette``, ``distribution``
                      saved to files

The methods alternate within each round (round 1: custseg, no report, pycaret; round 2 the
same order), so a change of the machine's load hits all of them; the results give the best and
the median of each and the ratio PyCaret / custseg of the best and of the medians.

PyCaret needs pandas < 2.2 and scikit-learn 1.4, which custseg does not run on, so it lives
in a virtual environment of its own that this script creates on first use in
``bench/data/pycaret-venv`` (git-ignored; about 2 minutes, ~1 GB).  When it cannot be made
(no network, no wheel for this Python), PyCaret is skipped with the reason in the results.

Results go to ``bench/results/e2e-YYYY-MM-DD[-TAG].md`` and ``.json`` (machine, date, load
average before and after each run, every run's numbers).  Nothing here asserts a time; the
targets of issue 13 are marked MET or NOT MET.

    python bench/e2e.py [--rounds 3] [--tag before] [--skip-pycaret] [--src DIR]

``--src DIR`` times the custseg source tree ``DIR/custseg`` instead of the installed one
(e.g. ``git archive COMMIT src | tar -x -C /tmp/old`` for a "before" run).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
SOURCE = ROOT.parent / "shared" / "data" / "online_retail" / "online_retail.parquet"
CUSTSEG = Path(sys.executable).parent / "custseg"
PYCARET_VENV = HERE / "data" / "pycaret-venv"
PYCARET_REQUIREMENTS = ("pycaret==3.3.2", "pandas<2.2", "scikit-learn>=1.4,<1.5", "pyarrow<18", "six")

TARGET_SECONDS = 12.0  # custseg segment with the report, at most
TARGET_RATIO = 8.0  # PyCaret's flow / custseg, at least

# PyCaret's flow, run by the PyCaret environment's Python: source, output folder.
PYCARET_FLOW = r"""
import json, os, sys, time
started = time.perf_counter()
import pandas as pd
from pycaret.clustering import assign_model, create_model, plot_model, setup
imported = time.perf_counter()
source, out = sys.argv[1], sys.argv[2]
os.chdir(out)
raw = pd.read_parquet(source)
raw = raw.dropna(subset=["CustomerID"]).drop_duplicates()
raw = raw[~raw["InvoiceNo"].astype(str).str.startswith("C") & (raw["Quantity"] > 0) & (raw["UnitPrice"] > 0)]
raw["amount"] = raw["Quantity"] * raw["UnitPrice"]
as_of = raw["InvoiceDate"].max().normalize() + pd.Timedelta(days=1)
by = raw.groupby("CustomerID")
customers = pd.DataFrame({
    "recency_days": (as_of - by["InvoiceDate"].max()).dt.days,
    "frequency": by["InvoiceNo"].nunique(),
    "monetary": by["amount"].sum(),
    "tenure_days": (as_of - by["InvoiceDate"].min()).dt.days,
})
customers["avg_order_value"] = customers["monetary"] / customers["frequency"]
featured = time.perf_counter()
setup(customers, session_id=0, normalize=True, verbose=False, html=False)
model = create_model("kmeans", num_clusters=4, verbose=False)
created = time.perf_counter()
assigned = assign_model(model)
plots = {}
for plot in ("cluster", "tsne", "elbow", "silhouette", "distribution"):
    t = time.perf_counter()
    plot_model(model, plot=plot, save=True)
    plots[plot] = round(time.perf_counter() - t, 3)
print(json.dumps({"customers": len(customers), "import_s": imported - started, "features_s": featured - imported,
                  "create_s": created - featured, "plots_s": plots,
                  "segments": {str(k): int(v) for k, v in assigned["Cluster"].value_counts().items()}}))
"""


# --- the machine -----------------------------------------------------------------------------

def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine_info() -> dict:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory = 0.0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            memory = int(line.split()[1]) / 1024 / 1024
    os_name = platform.platform()
    release = Path("/etc/os-release")
    if release.exists():
        for line in release.read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = f"{line.split('=', 1)[1].strip(chr(34))} ({platform.release()})"

    def version(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    names = ("custseg", "scikit-learn", "numpy", "pandas", "duckdb", "plotly", "openTSNE")
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gib": round(memory, 1), "os": os_name,
            "python": platform.python_version(), "versions": {n: version(n) for n in names}}


def git_commit() -> str:
    try:
        done = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True)
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "src", "bench/e2e.py"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return done.stdout.strip() + (" (src/ with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# --- PyCaret's environment -------------------------------------------------------------------

def pycaret_python() -> tuple[Path | None, str]:
    """The PyCaret environment's Python (made on first use), or None and why it could not be made."""
    python = PYCARET_VENV / "bin" / "python"
    # Importing PyCaret writes logs.log where it runs: here, beside its environment.
    check = [str(python), "-c", "import pycaret, pyarrow; print(pycaret.__version__)"]
    if python.exists() and subprocess.run(check, capture_output=True, cwd=PYCARET_VENV.parent).returncode == 0:
        return python, "ready"
    print(f"making PyCaret's environment in {PYCARET_VENV.relative_to(ROOT)} (once; a few minutes) ...", flush=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(PYCARET_VENV)], check=True, capture_output=True)
        done = subprocess.run([str(python), "-m", "pip", "install", "-q", *PYCARET_REQUIREMENTS],
                              capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        return None, f"could not create the virtual environment: {exc}"
    if done.returncode != 0:
        last = [line for line in done.stderr.splitlines() if line.strip() and "WARNING" not in line][-3:]
        return None, "pip could not install " + " ".join(PYCARET_REQUIREMENTS) + ": " + " / ".join(last)
    if subprocess.run(check, capture_output=True, cwd=PYCARET_VENV.parent).returncode != 0:
        return None, "PyCaret installed but does not import"
    return python, "made"


def pycaret_versions(python: Path) -> dict:
    code = ("import importlib.metadata as m, json; print(json.dumps({n: m.version(n) for n in "
            "('pycaret', 'scikit-learn', 'pandas', 'numpy', 'plotly', 'yellowbrick')}))")
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
    return json.loads(done.stdout) if done.returncode == 0 else {}


# --- one run ---------------------------------------------------------------------------------

def timed(command: list[str], cwd: Path | None = None, env: dict | None = None) -> tuple[dict, str]:
    """Run ``command`` as a child; its wall time, CPU time (user + system) and the load before/after."""
    before = load_average()
    usage0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env)
    wall = time.perf_counter() - started
    usage1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
    record = {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "load_before": before, "load_after": load_average(),
              "ok": done.returncode == 0}
    if done.returncode != 0:
        record["error"] = (done.stderr.strip().splitlines() or ["(no output)"])[-1][:300]
    return record, done.stdout


def run_custseg(report: bool, work: Path, src: Path | None = None) -> dict:
    out = work / ("run" if report else "run-no-report")
    shutil.rmtree(out, ignore_errors=True)
    command = [str(CUSTSEG), "segment", str(SOURCE), "--out", str(out)] + ([] if report else ["--no-report"])
    env = None if src is None else {**os.environ, "PYTHONPATH": str(src)}
    record, _ = timed(command, env=env)
    if record["ok"]:
        summary = json.loads((out / "run.json").read_text())
        record.update(algorithm=summary.get("algorithm"), n_clusters=summary.get("n_clusters"),
                      customers=summary.get("run", {}).get("customers"),
                      report_bytes=(out / "report.html").stat().st_size if report else None)
    return record


def run_pycaret(python: Path, work: Path) -> dict:
    out = work / "pycaret"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    record, stdout = timed([str(python), "-c", PYCARET_FLOW, str(SOURCE), str(out)], cwd=out)
    if record["ok"]:
        record.update(json.loads(stdout.strip().splitlines()[-1]))
        record["files"] = sorted(p.name for p in out.iterdir() if p.suffix in (".png", ".html"))
    return record


# --- the results -----------------------------------------------------------------------------

def summarise(runs: list[dict]) -> dict | None:
    walls = [r["wall_s"] for r in runs if r["ok"]]
    if not walls:
        return None
    return {"best_s": min(walls), "median_s": round(statistics.median(walls), 3), "all_s": walls}


def write_results(results: dict, tag: str | None) -> Path:
    RESULTS.mkdir(exist_ok=True)
    stem = f"e2e-{results['date']}" + (f"-{tag}" if tag else "")
    (RESULTS / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    info, methods = results["machine"], results["summary"]
    lines = [
        f"# `custseg segment` end to end on Online Retail — {results['date']}" + (f" ({tag})" if tag else ""),
        "",
        "Produced by `bench/e2e.py` (method in its docstring): each run a fresh child process, as a user runs it; "
        "the methods alternate within each round.",
        "",
        "## Machine",
        "",
        f"- CPU: {info['cpu']}, {info['cores']} cores; RAM {info['ram_gib']} GiB",
        f"- OS: {info['os']}",
        f"- Python {info['python']}; " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()),
        f"- PyCaret environment: {results['pycaret_status']}"
        + (f" ({', '.join(f'{k} {v}' for k, v in results['pycaret_versions'].items())})"
           if results.get("pycaret_versions") else ""),
        f"- code: {results['commit']}",
        f"- run {results['started']} → {results['finished']}; load average (1, 5, 15 min) before "
        f"{results['load_before']}, after {results['load_after']}",
        "",
        "## Results",
        "",
        "| method | best s | median s | all runs (s) | CPU s (best) | load (1 min) before each run |",
        "|---|---:|---:|---|---:|---|",
    ]
    for name, label in (("custseg", "custseg segment (with the report)"),
                        ("custseg-no-report", "custseg segment --no-report"),
                        ("pycaret", "PyCaret: features + create + assign + five plots")):
        runs = [r for r in results["runs"] if r["method"] == name]
        stats = methods.get(name)
        if stats is None:
            reason = next((r.get("error") for r in runs if not r["ok"]), None) or results["pycaret_status"]
            lines.append(f"| {label} | — | — | not measured: {reason} | — | — |")
            continue
        best = min((r for r in runs if r["ok"]), key=lambda r: r["wall_s"])
        lines.append(f"| {label} | {stats['best_s']:.2f} | {stats['median_s']:.2f} | "
                     f"{', '.join(f'{w:.2f}' for w in stats['all_s'])} | {best['cpu_s']:.1f} | "
                     f"{', '.join(str(r['load_before'][0]) for r in runs)} |")
    lines.append("")
    ratio = results.get("ratio")
    ok = [r for r in results["runs"] if r["method"] == "custseg" and r["ok"]]
    if ok:
        lines.append(f"custseg chose {ok[0]['algorithm']} with {ok[0]['n_clusters']} segments for "
                     f"{ok[0]['customers']:,} customers in every run: "
                     f"{'yes' if len({(r['algorithm'], r['n_clusters']) for r in ok}) == 1 else 'no'}.")
    pycaret_ok = [r for r in results["runs"] if r["method"] == "pycaret" and r["ok"]]
    if pycaret_ok:
        best = min(pycaret_ok, key=lambda r: r["wall_s"])
        lines += ["", f"PyCaret's best run, by part: imports {best['import_s']:.2f} s, features (pandas) "
                      f"{best['features_s']:.2f} s, setup + create {best['create_s']:.2f} s, plots "
                      + ", ".join(f"{k} {v:.2f} s" for k, v in best["plots_s"].items())
                      + f"; segments {best['segments']}; files {', '.join(best['files'])}."]
    lines += ["", "## Targets (issue 13)", "", "| target | measured | status |", "|---|---|---|"]
    custseg = methods.get("custseg")
    if custseg:
        lines.append(f"| custseg segment with the report ≤ {TARGET_SECONDS:g} s | best {custseg['best_s']:.2f} s, "
                     f"median {custseg['median_s']:.2f} s | {'MET' if custseg['best_s'] <= TARGET_SECONDS else 'NOT MET'} |")
    if ratio:
        status = "MET" if ratio["best"] >= TARGET_RATIO else "NOT MET"
        loaded = max(r["load_before"][0] for r in results["runs"]) > info["cores"]
        cpu = ""
        ours = [r for r in results["runs"] if r["method"] == "custseg" and r["ok"]]
        if ours and pycaret_ok:
            cpu_ratio = min(r["cpu_s"] for r in pycaret_ok) / min(r["cpu_s"] for r in ours)
            cpu = f"; by CPU time {cpu_ratio:.2f}×"
        if loaded:
            status += " (on a loaded machine: PyCaret's threads suffer more from the load; see the notes)"
        lines.append(f"| ≥ {TARGET_RATIO:g}× faster than PyCaret's flow (same run) | best {ratio['best']:.2f}×, "
                     f"median {ratio['median']:.2f}×{cpu} | {status} |")
    else:
        lines.append(f"| ≥ {TARGET_RATIO:g}× faster than PyCaret's flow | not measured | — |")
    lines += ["", "Ratio: PyCaret's wall time / custseg's (with the report), of the best runs and of the medians.", ""]
    if results.get("notes"):
        lines += ["## Notes", "", *[f"- {n}" for n in results["notes"]], ""]
    path = RESULTS / f"{stem}.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every method (default 3)")
    parser.add_argument("--tag", help="suffix of the results' file names, e.g. before or after")
    parser.add_argument("--skip-pycaret", action="store_true", help="time custseg only")
    parser.add_argument("--src", type=Path, help="time the custseg package in this folder (DIR/custseg) instead")
    parser.add_argument("--note", action="append", default=[], help="a line for the results' notes (repeatable)")
    args = parser.parse_args(argv)
    if not SOURCE.exists():
        sys.exit(f"{SOURCE.relative_to(ROOT.parent)} is missing: the benchmark reads Online Retail from "
                 "../shared/data beside the repository")
    if not CUSTSEG.exists():
        sys.exit(f"{CUSTSEG} is missing; run `make install` first")

    python, status = (None, "skipped (--skip-pycaret)") if args.skip_pycaret else pycaret_python()
    if python is None:
        print(f"PyCaret is not measured: {status}", flush=True)
    started = dt.datetime.now()
    results = {"date": str(started.date()), "started": started.isoformat(timespec="seconds"),
               "machine": machine_info(),
               "commit": git_commit() if args.src is None else f"the source tree given with --src ({args.src.name})",
               "source": "online_retail/online_retail.parquet",
               "pycaret_status": status, "pycaret_versions": pycaret_versions(python) if python else {},
               "load_before": load_average(), "runs": [], "notes": args.note}
    with tempfile.TemporaryDirectory(prefix="custseg-e2e-") as tmp:
        work = Path(tmp)
        for round_ in range(1, args.rounds + 1):
            for method in ("custseg", "custseg-no-report", "pycaret"):
                if method == "pycaret" and python is None:
                    continue
                record = (run_pycaret(python, work) if method == "pycaret"
                          else run_custseg(method == "custseg", work, args.src))
                record.update(method=method, round=round_)
                results["runs"].append(record)
                print(f"round {round_} {method}: {record['wall_s']:.2f} s"
                      + ("" if record["ok"] else f" FAILED: {record.get('error')}"), flush=True)
    results.update(finished=dt.datetime.now().isoformat(timespec="seconds"), load_after=load_average())
    results["summary"] = {m: s for m in ("custseg", "custseg-no-report", "pycaret")
                          if (s := summarise([r for r in results["runs"] if r["method"] == m])) is not None}
    if "custseg" in results["summary"] and "pycaret" in results["summary"]:
        ours, theirs = results["summary"]["custseg"], results["summary"]["pycaret"]
        results["ratio"] = {"best": round(theirs["best_s"] / ours["best_s"], 2),
                            "median": round(theirs["median_s"] / ours["median_s"], 2)}
    path = write_results(results, args.tag)
    print(f"→ {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
