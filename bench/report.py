"""Benchmark: `custseg.report.build_report` on the UCI Online Retail run folder.

Times building ``report.html`` from a run folder written by ``custseg segment`` on
``../shared/data/online_retail/online_retail.parquet`` (4,338 customers).  Each run is a
fresh child process; the time is measured inside it around ``build_report`` (imports
excluded, reported separately), with its CPU time and peak resident memory.  The report's
size is recorded with and without the embedded plotly.js.

Results go to ``bench/results/report-YYYY-MM-DD.md``.  Nothing here asserts a time.

    python bench/report.py [--run-dir DIR] [--repeat 3] [--max-points 5000]

Without ``--run-dir`` the run folder is ``bench/data/run-online-retail``, made once with
``custseg segment`` (several minutes: it compares K-Means and Gaussian mixtures for k = 2..15).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
DEFAULT_RUN = HERE / "data" / "run-online-retail"
SOURCE = ROOT.parent / "shared" / "data" / "online_retail" / "online_retail.parquet"
CUSTSEG = Path(sys.executable).parent / "custseg"

# Runs inside the child: import, build, report numbers as one JSON line.
CHILD = r"""
import json, resource, sys, time
started = time.perf_counter()
from custseg.report import build_report
from custseg.report import _build
imported = time.perf_counter()
spent = {"tsne_s": 0.0}
tsne = _build._tsne
def timed_tsne(*args, **kwargs):
    t = time.perf_counter()
    try:
        return tsne(*args, **kwargs)
    finally:
        spent["tsne_s"] += time.perf_counter() - t
_build._tsne = timed_tsne
cpu0 = time.process_time()
path = build_report(sys.argv[1], out=sys.argv[2], max_points=int(sys.argv[3]))
built = time.perf_counter()
print(json.dumps({
    "import_s": imported - started,
    "build_s": built - imported,
    "cpu_s": time.process_time() - cpu0,
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    **spent,
}))
"""


def machine() -> dict:
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

    return {
        "cpu": cpu, "cores": os.cpu_count(), "ram_gib": round(memory, 1), "os": os_name,
        "python": platform.python_version(),
        "versions": {name: version(name) for name in ("custseg", "plotly", "scikit-learn", "numpy", "pandas", "jinja2")},
    }


def ensure_run(run_dir: Path) -> None:
    if (run_dir / "run.json").exists():
        return
    if not SOURCE.exists():
        sys.exit(f"{SOURCE} is missing; pass --run-dir with a folder written by custseg segment")
    print(f"making the run folder {run_dir} with custseg segment (several minutes) ...", flush=True)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(CUSTSEG), "segment", str(SOURCE), "--out", str(run_dir)], check=True,
                   stdout=subprocess.DEVNULL)


def load() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def one_run(run_dir: Path, out: Path, max_points: int) -> dict:
    before = load()
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD, str(run_dir), str(out), str(max_points)],
                          check=True, capture_output=True, text=True)
    wall = time.perf_counter() - started
    numbers = json.loads(done.stdout.strip().splitlines()[-1])
    numbers.update(wall_s=wall, load_before=before, load_after=load(), size_bytes=out.stat().st_size)
    return numbers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", type=Path, default=DEFAULT_RUN, help="run folder written by custseg segment")
    parser.add_argument("--repeat", type=int, default=3, help="number of runs (default 3)")
    parser.add_argument("--max-points", type=int, default=5000, help="max_points of build_report (default 5000)")
    args = parser.parse_args(argv)

    ensure_run(args.run_dir)
    from plotly.offline import get_plotlyjs

    summary = json.loads((args.run_dir / "run.json").read_text())
    customers = summary.get("run", {}).get("customers")
    started = dt.datetime.now()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report.html"
        for i in range(args.repeat):
            runs.append(one_run(args.run_dir, out, args.max_points))
            print(f"run {i + 1}: build {runs[-1]['build_s']:.2f} s, wall {runs[-1]['wall_s']:.2f} s", flush=True)
        html = out.read_text(encoding="utf-8")
    plotly_bytes = len(get_plotlyjs().encode("utf-8"))
    charts = html.count('class="plot-data"')
    best = min(runs, key=lambda r: r["build_s"])
    all_times = ", ".join(f"{r['build_s']:.2f}" for r in runs)
    info = machine()

    lines = [
        f"# Report generation benchmark — {started.date()}",
        "",
        "Produced by `bench/report.py`: `custseg.report.build_report` on the Online Retail run folder, "
        "each run in a fresh child process.",
        "",
        "## Machine",
        "",
        f"- CPU: {info['cpu']}, {info['cores']} cores; RAM {info['ram_gib']} GiB",
        f"- OS: {info['os']}",
        f"- Python {info['python']}; " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()),
        f"- run {started.isoformat(timespec='seconds')} → {dt.datetime.now().isoformat(timespec='seconds')}",
        "",
        "## Input",
        "",
        f"- run folder: `{args.run_dir}` ({customers:,} customers, {summary.get('algorithm')} with "
        f"{summary.get('n_clusters')} segments, {len(summary.get('feature_columns', []))} clustering features)"
        if customers else f"- run folder: `{args.run_dir}`",
        f"- max_points = {args.max_points:,} (scatter plots and t-SNE on at most this many customers)",
        "",
        "## Results",
        "",
        f"Best build time: **{best['build_s']:.2f} s** (CPU {best['cpu_s']:.2f} s, peak RSS {best['peak_rss_mb']:,.0f} MB).",
        "",
        "| run | build s | of which t-SNE s | CPU s | import s | child wall s | peak RSS MB | load avg before → after |",
        "|---:|---:|---:|---:|---:|---:|---:|---|",
        *[f"| {i + 1} | {r['build_s']:.2f} | {r['tsne_s']:.2f} | {r['cpu_s']:.2f} | {r['import_s']:.2f} | {r['wall_s']:.2f} | "
          f"{r['peak_rss_mb']:,.0f} | {r['load_before']:.2f} → {r['load_after']:.2f} |" for i, r in enumerate(runs)],
        "",
        f"All build times (s): {all_times}.",
        "",
        f"Report size: {best['size_bytes']:,} bytes ({best['size_bytes'] / 1e6:.2f} MB), of which plotly.js "
        f"{plotly_bytes:,} bytes ({plotly_bytes / 1e6:.2f} MB) and the rest — {charts} charts, tables and text — "
        f"{best['size_bytes'] - plotly_bytes:,} bytes ({(best['size_bytes'] - plotly_bytes) / 1e6:.2f} MB).",
        "",
        "Build time: the seconds inside `build_report` (reading the run folder, PCA, t-SNE, figures, "
        "rendering, writing); imports are the separate column. The load average is the machine's "
        "(other processes included); compare runs whose load is low.",
        "",
    ]
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"report-{started.date()}.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    print(f"→ {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
