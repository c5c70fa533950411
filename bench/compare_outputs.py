"""Proof that two versions of custseg give the same results: record every output file, compare.

``record`` runs the custseg CLI of one version on four datasets and writes a manifest with a
normalised SHA-256 of every file the commands wrote; ``compare`` compares two manifests, prints
each file that differs (with what differs, when both records are still on disk) and writes
``bench/results/compare-YYYY-MM-DD.md`` and ``.json``.

    python bench/compare_outputs.py record --out /tmp/cmp/before --src /tmp/ref-14c3428/src
    python bench/compare_outputs.py record --out /tmp/cmp/after  --src src
    python bench/compare_outputs.py compare /tmp/cmp/before /tmp/cmp/after
    python bench/compare_outputs.py rehash /tmp/cmp/before    # after a change of the normalisation

``--python PY`` (default: this interpreter) runs ``PY -m custseg`` — or, for a version without
``custseg/__main__.py``, ``PY -c 'from custseg.cli import main; ...'`` — with
``PYTHONPATH=SRCDIR`` when ``--src SRCDIR`` is given, so that an older checkout's ``src/`` can be
run with the same virtualenv.  The record checks with ``PY -c 'import custseg; ...'`` that
custseg is imported from SRCDIR and stops otherwise.

Datasets (``--data``, default ``../shared/data`` beside the repository; ``--datasets`` picks some):

``online_retail``         UCI Online Retail, the file in ``online_retail/`` (transaction log)
``customer_personality``  ``customer_personality/marketing_campaign.csv`` (customer table)
``mall_customers``        ``mall_customers/Mall_Customers.csv`` (customer table)
``sample``                the bundled sample of the recorded version (``custseg.datasets.sample_path()``)

Each is copied to ``OUT/inputs/`` and every command runs in ``OUT`` with relative paths, so
that the paths written into run.json and the report are the same in every record.  Commands
(outputs under ``OUT/<dataset>/<command>/``; each command's console output is kept as
``console-<name>.txt``):

``features``  ``features.parquet`` (with ``rejects.csv`` for transaction logs), ``features.csv``,
              ``features.xlsx``
``rfm``       ``rfm.csv`` (with ``rejects.csv``), ``rfm.xlsx``, ``rfm.parquet`` — transaction
              logs; a customer table has no recency/frequency/monetary columns, so the command
              is run and its refusal (exit code and message) recorded
``cohorts``   ``cohorts.csv``, ``cohorts.xlsx``, ``cohorts_by_country.csv`` (``--by country``)
              — transaction logs; customer tables: the refusal is recorded
``segment``   ``segment SOURCE --out segment/run --seed 0`` (algorithm auto, k auto, with its
              report.html); ``--algorithm rfm`` is not run (it changed on purpose in b8f6d4a)
``export``    ``export segment/run --format csv|xlsx|parquet --out export/<format>``
``assign``    ``assign SOURCE --model segment/run/model.skops --out assign/assignments.csv``

Normalisation (the manifest's ``normalisation`` says the same):

- ``run.json``: the keys ``trained_at`` and every ``*seconds`` key are dropped at any depth, and
  the top-level keys new by design after 14c3428 (``schema_version``, ``request``) too; keys are
  sorted; the paths of the record and of the source tree become ``<out>`` / ``<src>``, the
  record's date (the as-of of a customer table without dates is the day of the run) ``<date>``.
- ``report.html``: the run record's "trained at" and "run time" cells, the footer's build time
  and the "fit (s)" column of the leaderboard table are masked (the only parts that differ
  between two runs of one version), then paths and the record's date as for run.json.
- CSV files: bytes, except that columns named ``*seconds`` (``leaderboard.csv``'s
  ``fit_seconds``) are dropped.
- ``.xlsx``: the cell values of every sheet (openpyxl), not the bytes (which hold a time stamp).
- ``.parquet``: the column names and rows (pyarrow ``to_pylist``; a float is not an int); the
  Arrow types are compared on their own and listed (``string`` and ``large_string`` hold the same
  text), not counted as a difference.
- ``model.skops``: the assignments it gives (the hash of ``assign/assignments.csv``).
- ``console-*.txt``: paths and the record's date as above; compared and listed separately.
- anything else: bytes.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import difflib
import hashlib
import io
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"  # ../shared/data
MANIFEST_FORMAT = 1

#: Keys dropped from run.json wherever they are: timings and the training time stamp.
RUN_JSON_VOLATILE = ("trained_at",)  # plus every key ending in "seconds"
#: Top-level run.json keys that are new by design after 14c3428 (5377de3: run.json records the
#: RunRequest that made the run, and the run folder's layout version).
RUN_JSON_NEW_KEYS = ("schema_version", "request")

SEED = 0

#: Numbers that differ by at most this relative amount differ in their last bits only: the
#: order in which floating-point values were added (see compare's "float noise" note).
FLOAT_NOISE = 1e-12
FLOAT_NOISE_NOTE = (f"float noise: every differing cell is a number within {FLOAT_NOISE:g} relative "
                    "(the last bits of a sum, which depend on the order of the additions)")
EXPORT_FORMATS = ("csv", "xlsx", "parquet")

NORMALISATION = {
    "run.json": f"drop {', '.join(RUN_JSON_VOLATILE)} and every *seconds key at any depth; drop the "
                f"top-level keys new by design after 14c3428: {', '.join(RUN_JSON_NEW_KEYS)}; sort keys; "
                "paths of the record / source tree -> <out> / <src>; the record's date -> <date>",
    "report.html": "mask the run record's 'trained at' and 'run time' cells, the footer's build time and the "
                   "'fit (s)' column of the leaderboard table; paths -> <out> / <src>; the record's date -> <date>",
    ".csv": "bytes; columns named *seconds (leaderboard.csv fit_seconds) dropped",
    ".xlsx": "cell values of every sheet (openpyxl), sheet names in order",
    ".parquet": "column names and rows (pyarrow to_pylist; a float is not an int); the Arrow types are "
                "compared on their own and listed, not counted as a difference",
    "model.skops": "the assignments it gives: hash of the dataset's assign/assignments.csv",
    "console-*.txt": "paths -> <out> / <src>; the record's date -> <date> (listed separately)",
    "other": "bytes",
}

INTENDED = [
    "`--algorithm rfm` no longer runs a K-Means sweep (b8f6d4a): its leaderboard, elbow, recommendation "
    "and run.json change on purpose, so it is not run here.",
    "run.json records the request and the layout version (5377de3): the top-level keys "
    f"{', '.join(RUN_JSON_NEW_KEYS)} are left out of the comparison.",
]


# ---------------------------------------------------------------------------------------------
# Datasets and commands
# ---------------------------------------------------------------------------------------------

def _online_retail(data: Path) -> Path:
    folder = data / "online_retail"
    for pattern in ("*.parquet", "*.csv", "*.xlsx"):
        found = sorted(folder.glob(pattern))
        if found:
            return found[0]
    raise SystemExit(f"compare_outputs: no Online Retail file (.parquet, .csv, .xlsx) in {folder}")


DATASETS: dict[str, dict[str, Any]] = {
    "online_retail": {"kind": "transactions", "file": _online_retail},
    "customer_personality": {"kind": "customers",
                             "file": lambda data: data / "customer_personality" / "marketing_campaign.csv"},
    "mall_customers": {"kind": "customers", "file": lambda data: data / "mall_customers" / "Mall_Customers.csv"},
    "sample": {"kind": "transactions", "file": None},  # the recorded version's bundled sample
}


def steps_for(name: str, kind: str, source: str) -> list[dict[str, Any]]:
    """The CLI calls for one dataset: (command folder, label, argv, expected to succeed)."""
    log = kind == "transactions"
    d = name
    steps: list[dict[str, Any]] = []

    def add(command: str, label: str, argv: list[str], supported: bool = True) -> None:
        steps.append({"dataset": d, "command": command, "label": label, "argv": argv, "supported": supported})

    f = f"{d}/features"
    add("features", "parquet", ["features", source, "--out", f"{f}/features.parquet"]
        + (["--rejects", f"{f}/rejects.csv"] if log else []))
    add("features", "csv", ["features", source, "--out", f"{f}/features.csv"])
    add("features", "xlsx", ["features", source, "--out", f"{f}/features.xlsx"])
    r = f"{d}/rfm"
    add("rfm", "csv", ["rfm", source, "--out", f"{r}/rfm.csv"] + (["--rejects", f"{r}/rejects.csv"] if log else []),
        supported=log)
    if log:
        add("rfm", "xlsx", ["rfm", source, "--out", f"{r}/rfm.xlsx"])
        add("rfm", "parquet", ["rfm", source, "--out", f"{r}/rfm.parquet"])
    c = f"{d}/cohorts"
    add("cohorts", "csv", ["cohorts", source, "--out", f"{c}/cohorts.csv"], supported=log)
    if log:
        add("cohorts", "xlsx", ["cohorts", source, "--out", f"{c}/cohorts.xlsx"])
        add("cohorts", "by-country", ["cohorts", source, "--out", f"{c}/cohorts_by_country.csv", "--by", "country"])
    run = f"{d}/segment/run"
    add("segment", "run", ["segment", source, "--out", run, "--seed", str(SEED)])
    for fmt in EXPORT_FORMATS:
        add("export", fmt, ["export", run, "--format", fmt, "--out", f"{d}/export/{fmt}"])
    add("assign", "csv", ["assign", source, "--model", f"{run}/model.skops", "--out", f"{d}/assign/assignments.csv"])
    return steps


# ---------------------------------------------------------------------------------------------
# Running the CLI of one version
# ---------------------------------------------------------------------------------------------

CLI_FALLBACK = "import sys; from custseg.cli import main; sys.exit(main())"


def child_env(src: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    # The same console everywhere: tables are drawn for this width, without colour.
    env.update({"COLUMNS": "120", "LINES": "50", "NO_COLOR": "1", "TERM": "dumb", "PYTHONIOENCODING": "utf-8"})
    env.pop("FORCE_COLOR", None)
    return env


def probe(python: str, env: dict[str, str], code: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([python, "-c", code], env=env, cwd=cwd, capture_output=True, text=True)


def imported_from(python: str, env: dict[str, str], cwd: Path) -> Path:
    done = probe(python, env, "import custseg; print(custseg.__file__)", cwd)
    if done.returncode != 0:
        raise SystemExit(f"compare_outputs: {python} cannot import custseg:\n{done.stderr.strip()}")
    return Path(done.stdout.strip().splitlines()[-1]).resolve()


def cli_prefix(python: str, env: dict[str, str], cwd: Path) -> list[str]:
    """``PY -m custseg`` where the version has a ``__main__``; else the CLI's ``main`` via -c."""
    done = subprocess.run([python, "-m", "custseg", "--help"], env=env, cwd=cwd, capture_output=True, text=True)
    if done.returncode == 0:
        return [python, "-m", "custseg"]
    return [python, "-c", CLI_FALLBACK]


def git_info(path: Path) -> dict[str, Any]:
    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "HEAD")
    if not commit:
        return {"commit": None}
    top = git("rev-parse", "--show-toplevel")
    dirty = git("status", "--porcelain", "--", str(path)).splitlines()
    return {"commit": commit, "short": commit[:7], "subject": git("log", "-1", "--format=%s")[:200],
            "worktree": top, "dirty": dirty}


def tree_digest(src: Path) -> str:
    """One hash of every file of the custseg package in ``src`` (caches left out): tells whether
    the source changed while it was being recorded."""
    h = hashlib.sha256()
    for path in sorted((src / "custseg").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            h.update(path.relative_to(src).as_posix().encode() + b"\0" + sha256_file(path).encode())
    return h.hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def machine() -> dict[str, Any]:
    uname = subprocess.run(["uname", "-a"], capture_output=True, text=True).stdout.strip()
    return {"uname": uname or " ".join(platform.uname()), "nproc": os.cpu_count(),
            "python": platform.python_version()}


def hash_files(root: Path, context: Context) -> dict[str, Any]:
    """The manifest entry of every output file under ``root`` (inputs and the manifest aside)."""
    files = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel == "manifest.json" or rel.startswith("inputs/"):
            continue
        files[rel] = normalised_entry(path, rel, context)
    return files


def rehash(args: argparse.Namespace) -> int:
    """Recompute the file entries of an existing record (after a change of the normalisation)."""
    manifest = load_manifest(args.dir)
    root = Path(manifest["dir"])
    src = manifest.get("src") or (str(Path(manifest["custseg_file"]).parent.parent) if manifest.get("custseg_file") else None)
    context = Context(Path(manifest["recorded_dir"]), Path(src) if src else None, manifest.get("dates", []), root=root)
    manifest["files"] = hash_files(root, context)
    manifest["normalisation"] = NORMALISATION
    manifest["rehashed_at"] = dt.datetime.now().isoformat(timespec="seconds")
    manifest["dir"] = manifest.pop("recorded_dir")
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    print(f"{len(manifest['files'])} files rehashed in {root / 'manifest.json'}")
    return 0


def record(args: argparse.Namespace) -> int:
    out = Path(args.out).resolve()
    python = args.python
    src = Path(args.src).resolve() if args.src else None
    if src is not None and not (src / "custseg" / "__init__.py").is_file():
        raise SystemExit(f"compare_outputs: {src} has no custseg/__init__.py; --src names the src/ folder of a checkout")
    if out.exists() and any(out.iterdir()):
        if not args.force:
            raise SystemExit(f"compare_outputs: {out} is not empty; give --force to replace an earlier record")
        if not (out / "manifest.json").is_file() and not (out / "inputs").is_dir():
            raise SystemExit(f"compare_outputs: {out} holds no earlier record; not removing it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)

    env = child_env(src)
    where = imported_from(python, env, out)
    if src is not None and where != (src / "custseg" / "__init__.py").resolve():
        raise SystemExit(f"compare_outputs: custseg is imported from {where}, not from {src}; "
                         "the recorded version would not be the intended one")
    tree = src if src is not None else where.parent.parent
    print(f"custseg from {where}")
    prefix = cli_prefix(python, env, out)
    print("runner:", " ".join(prefix[:2] + (["<cli main>"] if prefix[1] == "-c" else prefix[2:])))

    data = Path(args.data)
    wanted = [d.strip() for d in args.datasets.split(",")] if args.datasets else list(DATASETS)
    unknown = [d for d in wanted if d not in DATASETS]
    if unknown:
        raise SystemExit(f"compare_outputs: unknown dataset {', '.join(unknown)}; known: {', '.join(DATASETS)}")

    inputs_dir = out / "inputs"
    inputs_dir.mkdir()
    inputs: dict[str, Any] = {}
    for name in wanted:
        spec = DATASETS[name]
        if spec["file"] is None:
            done = probe(python, env, "from custseg import datasets; print(datasets.sample_path())", out)
            if done.returncode != 0:
                raise SystemExit(f"compare_outputs: cannot find the bundled sample:\n{done.stderr.strip()}")
            original = Path(done.stdout.strip().splitlines()[-1])
        else:
            original = Path(spec["file"](data))
        if not original.is_file():
            raise SystemExit(f"compare_outputs: {name}: no such file {original}")
        copy = inputs_dir / original.name
        shutil.copyfile(original, copy)
        inputs[name] = {"original": str(original), "path": str(copy.relative_to(out)),
                        "sha256": sha256_file(copy), "bytes": copy.stat().st_size, "kind": spec["kind"]}

    dates = {dt.date.today().isoformat()}
    tree_before = tree_digest(tree)
    load_before = os.getloadavg()
    git_before = git_info(tree)
    started = time.time()
    steps: list[dict[str, Any]] = []
    for name in wanted:
        for step in steps_for(name, inputs[name]["kind"], inputs[name]["path"]):
            folder = out / step["dataset"] / step["command"]
            folder.mkdir(parents=True, exist_ok=True)
            t0 = time.perf_counter()
            done = subprocess.run(prefix + step["argv"], env=env, cwd=out, capture_output=True, text=True)
            step["seconds"] = round(time.perf_counter() - t0, 2)
            step["exit_code"] = done.returncode
            console = folder / f"console-{step['label']}.txt"
            console.write_text(done.stdout + (("\n--- stderr ---\n" + done.stderr) if done.stderr else ""),
                               encoding="utf-8")
            step["console"] = str(console.relative_to(out))
            ok = (done.returncode == 0) == step["supported"]
            step["ok"] = ok
            flag = "" if ok else "   <-- UNEXPECTED"
            print(f"{step['seconds']:7.2f} s  exit {done.returncode}  {name:<21} {step['command']:<9} "
                  f"{step['label']}{flag}", flush=True)
            if not ok:
                print("   " + (done.stderr.strip() or done.stdout.strip())[-2000:].replace("\n", "\n   "))
            steps.append(step)
    dates.add(dt.date.today().isoformat())
    tree_after = tree_digest(tree)
    if tree_after != tree_before:
        print(f"WARNING: the files of {tree} changed while they were recorded; this record mixes versions")

    files = hash_files(out, Context(out=out, src=tree, dates=sorted(dates)))

    manifest = {
        "format": MANIFEST_FORMAT,
        "recorded_at": dt.datetime.now().isoformat(timespec="seconds"),
        "dir": str(out),
        "python": python,
        "src": str(src) if src else None,
        "custseg_file": str(where),
        "runner": prefix[1:2] + (["custseg"] if prefix[1] == "-m" else ["<cli main>"]),
        "git": git_info(tree),
        "git_at_start": git_before,
        "src_digest": {"start": tree_before, "end": tree_after, "changed_during_record": tree_after != tree_before},
        "machine": machine(),
        "env": {k: v for k, v in os.environ.items() if k.startswith("CUSTSEG_") or k in ("TZ", "OMP_NUM_THREADS")},
        "dates": sorted(dates),
        "seed": SEED,
        "inputs": inputs,
        "normalisation": NORMALISATION,
        "run_json_dropped_keys": {"everywhere": list(RUN_JSON_VOLATILE) + ["*seconds"],
                                  "top_level_new_after_14c3428": list(RUN_JSON_NEW_KEYS)},
        "not_run": ["segment --algorithm rfm (changed on purpose in b8f6d4a)"],
        "steps": steps,
        "total_seconds": round(time.time() - started, 1),
        "load_average": {"start": [round(x, 2) for x in load_before], "end": [round(x, 2) for x in os.getloadavg()]},
        "files": files,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=False), encoding="utf-8")
    failed = [s for s in steps if not s["ok"]]
    print(f"{len(files)} files in {out / 'manifest.json'} ({manifest['total_seconds']} s)")
    if failed:
        print(f"{len(failed)} step(s) did not do what was expected: "
              + ", ".join(f"{s['dataset']}/{s['command']}/{s['label']}" for s in failed))
        return 1
    return 0


# ---------------------------------------------------------------------------------------------
# Normalisation
# ---------------------------------------------------------------------------------------------

class Context:
    """What a record's text outputs may hold that is not a result: its paths and its date."""

    def __init__(self, out: Path, src: Path | None, dates: Iterable[str], root: Path | None = None):
        self.out = Path(out)
        self.root = Path(root) if root is not None else self.out  # where the files are now
        self.src = Path(src) if src else None
        self.dates = list(dates)

    def text(self, s: str) -> str:
        for path, mark in ((self.out, "<out>"), (self.src, "<src>")):
            if path is not None:
                s = s.replace(str(path), mark)
        for day in self.dates:
            s = s.replace(day, "<date>")
        return s


def _is_seconds(key: str) -> bool:
    return key.endswith("seconds")


def normalise_run_json(text: str, ctx: Context) -> Any:
    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k not in RUN_JSON_VOLATILE and not _is_seconds(k)}
        if isinstance(node, list):
            return [strip(v) for v in node]
        if isinstance(node, str):
            return ctx.text(node)
        return node

    data = json.loads(text)
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if k not in RUN_JSON_NEW_KEYS}
    return strip(data)


_CELL = re.compile(r"<td\b[^>]*>.*?</td>", re.S)


def _mask_seconds_columns(html: str) -> str:
    """The leaderboard's 'fit (s)' column (a timing) is masked in every row of its table."""
    def table(m: re.Match) -> str:
        t = m.group(0)
        head = re.search(r"<thead>(.*?)</thead>", t, re.S)
        if not head:
            return t
        titles = re.findall(r"<th\b[^>]*>(.*?)</th>", head.group(1), re.S)
        masked = {i for i, title in enumerate(titles) if re.search(r"\(s\)|seconds", title)}
        if not masked:
            return t

        def row(r: re.Match) -> str:
            cells = list(_CELL.finditer(r.group(0)))
            text, last = [], 0
            for i, cell in enumerate(cells):
                text.append(r.group(0)[last:cell.start()])
                text.append(re.sub(r">.*?</td>$", "><masked></td>", cell.group(0), flags=re.S) if i in masked
                            else cell.group(0))
                last = cell.end()
            text.append(r.group(0)[last:])
            return "".join(text)

        body_from = head.end()
        return t[:body_from] + re.sub(r"<tr\b.*?</tr>", row, t[body_from:], flags=re.S)

    return re.sub(r"<table\b.*?</table>", table, html, flags=re.S)


def normalise_report(text: str, ctx: Context) -> str:
    text = re.sub(r"(<td>trained at</td><td>)[^<]*(</td>)", r"\1<masked>\2", text)
    text = re.sub(r"(<td>run time</td><td>)[^<]*(</td>)", r"\1<masked>\2", text)
    text = re.sub(r"(<footer>Built )\S+( by )", r"\1<masked>\2", text)
    text = _mask_seconds_columns(text)
    return ctx.text(text)


def _value(v: Any, numbers_as_excel: bool = False) -> Any:
    """A JSON-able canonical form of one cell (xlsx / parquet).  A float keeps its type (``1.0``
    is not ``1``) except with ``numbers_as_excel``: a spreadsheet has one type of number."""
    if isinstance(v, bool) or v is None or isinstance(v, (int, str)):
        return v
    if isinstance(v, float):
        if math.isnan(v):
            return "NaN"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        if numbers_as_excel and v.is_integer() and abs(v) < 2**53:
            return int(v)
        return "float:" + repr(v)
    if isinstance(v, (dt.datetime, dt.date, dt.time)):
        return v.isoformat()
    if isinstance(v, dt.timedelta):
        return f"timedelta:{v.total_seconds()!r}"
    if isinstance(v, bytes):
        return "bytes:" + v.hex()
    if isinstance(v, dict):
        return {str(k): _value(x, numbers_as_excel) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_value(x, numbers_as_excel) for x in v]
    return f"{type(v).__name__}:{v}"


def xlsx_rows(path: Path) -> dict[str, list[list[Any]]]:
    import openpyxl

    book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    try:
        sheets: dict[str, list[list[Any]]] = {}
        for sheet in book.worksheets:
            rows = []
            for values in sheet.iter_rows(values_only=True):
                row = [_value(v, numbers_as_excel=True) for v in values]
                while row and row[-1] is None:
                    row.pop()
                rows.append(row)
            while rows and not rows[-1]:
                rows.pop()
            sheets[sheet.title] = rows
        return sheets
    finally:
        book.close()


def parquet_table(path: Path) -> tuple[list[list[str]], list[list[Any]]]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    schema = [[f.name, str(f.type)] for f in table.schema]
    names = table.column_names
    rows = [[_value(r[n]) for n in names] for r in table.to_pylist()]
    return schema, rows


def csv_rows(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as fh:
        return list(csv.reader(fh))


def csv_without_seconds(path: Path) -> bytes | None:
    """The CSV without its *seconds columns, or None when it has none (compare bytes)."""
    with open(path, "rb") as fh:
        first = fh.readline().decode("utf-8-sig", errors="replace")
    header = next(csv.reader([first]), [])
    if not any(_is_seconds(h) for h in header):
        return None
    rows = csv_rows(path)
    keep = [i for i, h in enumerate(rows[0]) if not _is_seconds(h)]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    for row in rows:
        writer.writerow([row[i] if i < len(row) else "" for i in keep])
    return buf.getvalue().encode("utf-8")


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()).hexdigest()


def normalised_form(path: Path, rel: str, ctx: Context) -> tuple[str, Any]:
    """(method, normalised content) of one output file; content is bytes, str or JSON-able."""
    name = path.name
    if name == "run.json":
        return "run.json", normalise_run_json(path.read_text(encoding="utf-8"), ctx)
    if name.endswith(".html"):
        return "report.html", normalise_report(path.read_text(encoding="utf-8"), ctx)
    if name.startswith("console-") and name.endswith(".txt"):
        return "console", ctx.text(path.read_text(encoding="utf-8"))
    if name.endswith(".xlsx"):
        return "xlsx-cells", xlsx_rows(path)
    if name.endswith(".parquet"):
        schema, rows = parquet_table(path)
        return "parquet-table", {"columns": [c[0] for c in schema], "rows": rows, "schema": schema}
    if name.endswith(".csv"):
        stripped = csv_without_seconds(path)
        if stripped is not None:
            return "csv-without-seconds", stripped
    return "bytes", path.read_bytes()


def normalised_entry(path: Path, rel: str, ctx: Context) -> dict[str, Any]:
    entry: dict[str, Any] = {"bytes": path.stat().st_size, "raw_sha256": sha256_file(path)}
    if path.name == "model.skops":
        dataset = rel.split("/", 1)[0]
        assigned = ctx.root / dataset / "assign" / "assignments.csv"
        entry["method"] = "assign-output"
        entry["via"] = f"{dataset}/assign/assignments.csv"
        entry["sha256"] = sha256_file(assigned) if assigned.is_file() else "missing:" + entry["via"]
        return entry
    method, content = normalised_form(path, rel, ctx)
    entry["method"] = method
    if isinstance(content, bytes):
        entry["sha256"] = hashlib.sha256(content).hexdigest()
    elif isinstance(content, str):
        entry["sha256"] = hashlib.sha256(content.encode("utf-8")).hexdigest()
    elif method == "parquet-table":
        # The contents (column names and values) are the result; the Arrow types are kept
        # beside them and compared on their own (string and large_string hold the same text).
        entry["sha256"] = _digest({"columns": content["columns"], "rows": content["rows"]})
        entry["rows"] = len(content["rows"])
        entry["schema"] = content["schema"]
    else:
        entry["sha256"] = _digest(content)
    if method == "xlsx-cells":
        entry["sheets"] = {k: len(v) for k, v in content.items()}
    entry["kind"] = "console" if method == "console" else "output"
    return entry


# ---------------------------------------------------------------------------------------------
# Comparing two records
# ---------------------------------------------------------------------------------------------

def load_manifest(where: str) -> dict[str, Any]:
    path = Path(where)
    if path.is_dir():
        path = path / "manifest.json"
    if not path.is_file():
        raise SystemExit(f"compare_outputs: no manifest at {path}")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    # Paths written into the outputs are those of the folder it was recorded in; the files are
    # read from where the manifest is now (a record may have been moved).
    manifest["recorded_dir"] = manifest.get("dir") or str(path.parent)
    manifest["dir"] = str(path.parent.resolve())
    return manifest


def _short(v: Any, n: int = 160) -> str:
    s = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, default=str)
    return s if len(s) <= n else s[: n - 1] + "…"


def _num(s: Any) -> float | None:
    try:
        return float(s)
    except (TypeError, ValueError):
        return None


def describe_tables(a: list[list[Any]], b: list[list[Any]], key: str = "row") -> list[str]:
    """What differs between two tables given as rows (first row: header)."""
    lines: list[str] = []
    ha, hb = (a[0] if a else []), (b[0] if b else [])
    if ha != hb:
        gone = [h for h in ha if h not in hb]
        new = [h for h in hb if h not in ha]
        if gone or new:
            lines.append(f"columns: only in A {gone}, only in B {new}")
        else:
            lines.append(f"column order: A {ha} / B {hb}")
    ra, rb = a[1:], b[1:]
    if len(ra) != len(rb):
        lines.append(f"rows: A {len(ra)}, B {len(rb)}")
    common = [h for h in ha if h in hb]
    ia, ib = {h: ha.index(h) for h in common}, {h: hb.index(h) for h in common}
    differing_rows, cells, shown, max_rel, only_numbers = 0, {}, [], 0.0, True
    for n, (x, y) in enumerate(zip(ra, rb)):
        row_differs = False
        for h in common:
            u = x[ia[h]] if ia[h] < len(x) else None
            v = y[ib[h]] if ib[h] < len(y) else None
            if u == v:
                continue
            row_differs = True
            cells[h] = cells.get(h, 0) + 1
            fu, fv = _num(u), _num(v)
            if fu is not None and fv is not None and not (math.isnan(fu) or math.isnan(fv)):
                max_rel = max(max_rel, abs(fu - fv) / max(abs(fu), abs(fv), 1e-300))
            else:
                only_numbers = False
            if len(shown) < 6:
                ident = x[0] if x else n
                shown.append(f"row {n + 1} ({_short(ident, 40)}), {h}: A {_short(u, 60)} / B {_short(v, 60)}")
        differing_rows += row_differs
    if differing_rows:
        if only_numbers and max_rel <= FLOAT_NOISE and ha == hb and len(ra) == len(rb):
            lines.append(FLOAT_NOISE_NOTE)
        lines.append(f"{differing_rows} of {min(len(ra), len(rb))} rows differ; cells per column: "
                     + ", ".join(f"{h} {c}" for h, c in cells.items()))
        if max_rel:
            lines.append(f"largest relative difference of a number: {max_rel:.3g}")
        lines.extend(shown)
        if sorted(map(repr, ra)) == sorted(map(repr, rb)):
            lines.append("the same rows in another order")
    return lines


def schema_lines(a: list[list[str]], b: list[list[str]]) -> list[str]:
    """The Arrow types that differ between two Parquet schemas, column by column."""
    ta, tb = dict(map(tuple, a)), dict(map(tuple, b))
    changed = [f"{name} {ta[name]} -> {tb[name]}" for name in ta if name in tb and ta[name] != tb[name]]
    return [f"types (A -> B): {', '.join(changed)}"] if changed else []


def describe_json(a: Any, b: Any, path: str = "") -> list[str]:
    if type(a) is not type(b) or not isinstance(a, (dict, list)):
        return [] if a == b else [f"{path or '.'}: A {_short(a)} / B {_short(b)}"]
    out: list[str] = []
    if isinstance(a, dict):
        for k in list(a) + [k for k in b if k not in a]:
            p = f"{path}.{k}"
            if k not in b:
                out.append(f"{p}: only in A ({_short(a[k], 80)})")
            elif k not in a:
                out.append(f"{p}: only in B ({_short(b[k], 80)})")
            else:
                out.extend(describe_json(a[k], b[k], p))
    else:
        if len(a) != len(b):
            out.append(f"{path}: {len(a)} items in A, {len(b)} in B")
        for i, (x, y) in enumerate(zip(a, b)):
            out.extend(describe_json(x, y, f"{path}[{i}]"))
    return out


def describe_text(a: str, b: str, limit: int = 6) -> list[str]:
    la, lb = a.splitlines(), b.splitlines()
    out: list[str] = []
    matcher = difflib.SequenceMatcher(None, la, lb, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            continue
        if len(out) >= limit:
            out.append("…")
            break
        if op == "replace" and i2 - i1 == j2 - j1:
            for x, y in zip(la[i1:i2], lb[j1:j2]):
                p = next((k for k in range(min(len(x), len(y))) if x[k] != y[k]), min(len(x), len(y)))
                s = max(0, p - 70)
                out.append(f"line {i1 + 1}: A …{x[s:p + 90]!r}… / B …{y[s:p + 90]!r}…")
                if len(out) >= limit:
                    break
        else:
            out.append(f"lines {i1 + 1}-{i2} of A ({_short(' | '.join(la[i1:i2]), 200)!r}) / "
                       f"lines {j1 + 1}-{j2} of B ({_short(' | '.join(lb[j1:j2]), 200)!r})")
    return out


def describe(rel: str, ma: dict[str, Any], mb: dict[str, Any]) -> list[str]:
    """What differs in one file, when both records are still on disk."""
    pa, pb = Path(ma["dir"]) / rel, Path(mb["dir"]) / rel
    ea, eb = ma["files"][rel], mb["files"][rel]
    if ea.get("method") == "assign-output":
        return [f"the assignments it gives differ (see {ea.get('via')})"]
    if not (pa.is_file() and pb.is_file()):
        return ["(record folders gone: no detail)"]
    try:
        ca = Context(Path(ma["recorded_dir"]), Path(ma["src"]) if ma.get("src") else None, ma.get("dates", []), root=Path(ma["dir"]))
        cb = Context(Path(mb["recorded_dir"]), Path(mb["src"]) if mb.get("src") else None, mb.get("dates", []), root=Path(mb["dir"]))
        method, xa = normalised_form(pa, rel, ca)
        _, xb = normalised_form(pb, rel, cb)
        if method == "run.json":
            return describe_json(xa, xb)[:40]
        if method == "parquet-table":
            lines = schema_lines(xa["schema"], xb["schema"])
            return lines + describe_tables([xa["columns"]] + xa["rows"], [xb["columns"]] + xb["rows"])
        if method == "xlsx-cells":
            lines = []
            if list(xa) != list(xb):
                lines.append(f"sheets: A {list(xa)} / B {list(xb)}")
            for sheet in [s for s in xa if s in xb]:
                if xa[sheet] != xb[sheet]:
                    lines += [f"sheet {sheet!r}: {line}" for line in describe_tables(xa[sheet], xb[sheet])]
            return lines
        if rel.endswith(".csv"):
            ra = csv_rows(pa) if method == "bytes" else list(csv.reader(io.StringIO(xa.decode())))
            rb = csv_rows(pb) if method == "bytes" else list(csv.reader(io.StringIO(xb.decode())))
            lines = describe_tables(ra, rb)
            return lines or ["same cells, different bytes (quoting, number format or line ends)"]
        if isinstance(xa, bytes) and isinstance(xb, bytes):
            try:
                xa, xb = xa.decode("utf-8"), xb.decode("utf-8")
            except UnicodeDecodeError:
                return [f"binary files differ ({len(xa)} / {len(xb)} bytes)"]
        return describe_text(xa, xb)
    except Exception as exc:  # a detail is a help, never a failure of the comparison
        return [f"(no detail: {type(exc).__name__}: {exc})"]


def compare(args: argparse.Namespace) -> int:
    ma, mb = load_manifest(args.a), load_manifest(args.b)
    fa, fb = ma["files"], mb["files"]
    names = sorted(set(fa) | set(fb))
    identical, different, only_a, only_b = [], [], [], []
    for rel in names:
        if rel not in fb:
            only_a.append(rel)
        elif rel not in fa:
            only_b.append(rel)
        elif fa[rel]["sha256"] == fb[rel]["sha256"]:
            identical.append(rel)
        else:
            different.append(rel)

    def is_console(rel: str) -> bool:
        return Path(rel).name.startswith("console-")

    outputs_diff = [r for r in different if not is_console(r)]
    console_diff = [r for r in different if is_console(r)]
    details = {rel: describe(rel, ma, mb) for rel in different}
    noise = [r for r in outputs_diff if any(FLOAT_NOISE_NOTE in line for line in details[r])]
    schema_only = {rel: schema_lines(fa[rel]["schema"], fb[rel]["schema"]) for rel in identical
                   if fa[rel].get("schema") and fb[rel].get("schema") and fa[rel]["schema"] != fb[rel]["schema"]}

    steps_a = {(s["dataset"], s["command"], s["label"]): s for s in ma["steps"]}
    steps_b = {(s["dataset"], s["command"], s["label"]): s for s in mb["steps"]}
    step_rows = []
    for key in list(steps_a) + [k for k in steps_b if k not in steps_a]:
        sa, sb = steps_a.get(key), steps_b.get(key)
        step_rows.append({"dataset": key[0], "command": key[1], "label": key[2],
                          "a_seconds": sa and sa["seconds"], "b_seconds": sb and sb["seconds"],
                          "a_exit": sa and sa["exit_code"], "b_exit": sb and sb["exit_code"],
                          "supported": (sa or sb)["supported"]})
    exit_diff = [r for r in step_rows if r["a_exit"] != r["b_exit"]]
    input_diff = [n for n in set(ma["inputs"]) | set(mb["inputs"])
                  if ma["inputs"].get(n, {}).get("sha256") != mb["inputs"].get(n, {}).get("sha256")]

    def label(m: dict[str, Any]) -> str:
        g = m.get("git", {})
        dirty = g.get("dirty") or []
        moved = (m.get("src_digest") or {}).get("changed_during_record")
        return (f"{g.get('short') or '?'} ({_short(g.get('subject') or '', 90)})"
                + (f" + {len(dirty)} uncommitted change(s) in src" if dirty else "")
                + (" — WARNING: the source changed during the record" if moved else ""))

    print(f"A: {label(ma)}  [{ma['dir']}]")
    print(f"B: {label(mb)}  [{mb['dir']}]")
    for rel in outputs_diff + console_diff:
        print(f"DIFFERENT {rel}")
        for line in details[rel]:
            print(f"    {line}")
    for rel, lines in schema_only.items():
        print(f"SAME VALUES, OTHER TYPES {rel}: {'; '.join(lines)}")
    for rel in only_a:
        print(f"ONLY IN A {rel}")
    for rel in only_b:
        print(f"ONLY IN B {rel}")
    for r in exit_diff:
        print(f"EXIT CODE {r['dataset']}/{r['command']}/{r['label']}: A {r['a_exit']} / B {r['b_exit']}")
    for n in input_diff:
        print(f"INPUT DIFFERS {n}")
    n_out = len([r for r in names if not is_console(r)])
    print(f"{n_out} output files: {n_out - len(outputs_diff) - len([r for r in only_a + only_b if not is_console(r)])} "
          f"identical, {len(outputs_diff)} different ({len(noise)} float noise only), {len(only_a)} only in A, "
          f"{len(only_b)} only in B; "
          f"console outputs: {len(console_diff)} different")

    today = dt.date.today().isoformat()
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    stem = results / f"compare-{today}"
    notes = Path(args.notes).read_text(encoding="utf-8") if args.notes else ""
    result = {
        "date": today,
        "machine": machine(),
        "a": {k: ma.get(k) for k in _SIDE_KEYS},
        "b": {k: mb.get(k) for k in _SIDE_KEYS},
        "counts": {"files": len(names), "output_files": n_out, "identical": len(identical),
                   "different_outputs": len(outputs_diff), "different_float_noise_only": len(noise),
                   "different_console": len(console_diff), "same_values_other_types": len(schema_only),
                   "only_in_a": len(only_a), "only_in_b": len(only_b)},
        "different": [{"file": rel, "a_sha256": fa[rel]["sha256"], "b_sha256": fb[rel]["sha256"],
                       "method": fa[rel].get("method"), "detail": details[rel]} for rel in outputs_diff],
        "different_console": [{"file": rel, "detail": details[rel]} for rel in console_diff],
        "same_values_other_types": [{"file": rel, "detail": lines} for rel, lines in schema_only.items()],
        "only_in_a": only_a, "only_in_b": only_b,
        "exit_codes_differ": exit_diff, "inputs_differ": input_diff,
        "steps": step_rows,
        "normalisation": ma.get("normalisation"),
        "run_json_dropped_keys": ma.get("run_json_dropped_keys"),
        "intended": INTENDED,
        "notes": notes,
    }
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")
    stem.with_suffix(".md").write_text(markdown(result, label(ma), label(mb)), encoding="utf-8")
    print(f"written {stem}.md and {stem}.json")
    return 0 if not (outputs_diff or only_a or only_b or exit_diff) else 1


_SIDE_KEYS = ("dir", "src", "custseg_file", "git", "recorded_at", "total_seconds", "load_average", "machine",
              "runner", "src_digest")


def markdown(r: dict[str, Any], la: str, lb: str) -> str:
    c = r["counts"]
    m = r["machine"]
    out = [
        f"# Outputs of two versions compared — {r['date']}",
        "",
        f"Machine: `{m['uname']}`, {m['nproc']} cores, Python {m['python']}.",
        "",
        f"- **A**: {la} — recorded {r['a']['recorded_at']} in {r['a']['total_seconds']} s from `{r['a']['custseg_file']}`",
        f"- **B**: {lb} — recorded {r['b']['recorded_at']} in {r['b']['total_seconds']} s from `{r['b']['custseg_file']}`",
        "",
        "Made by `python bench/compare_outputs.py record` (each version) and `compare` (see bench/README.md).",
        "",
    ]
    for side in ("a", "b"):
        dirty = (r[side].get("git") or {}).get("dirty") or []
        if dirty:
            out += [f"Uncommitted changes in {side.upper()}'s source tree when it was recorded: "
                    + ", ".join(f"`{d.strip()}`" for d in dirty), ""]
    out += [
        "## Counts",
        "",
        f"| | files |\n|---|---:|\n| output files | {c['output_files']} |\n| identical (after normalisation) | "
        f"{c['output_files'] - c['different_outputs'] - c['only_in_a'] - c['only_in_b']} |\n| different | {c['different_outputs']} |\n"
        f"| of which float noise only (numbers within {FLOAT_NOISE:g} relative) | {c['different_float_noise_only']} |\n"
        f"| only in A | {c['only_in_a']} |\n| only in B | {c['only_in_b']} |\n| console outputs that differ | {c['different_console']} |",
        "",
    ]
    if r["inputs_differ"]:
        out += [f"**Inputs differ**: {', '.join(r['inputs_differ'])}", ""]
    out += ["## Differences", ""]
    if not (r["different"] or r["only_in_a"] or r["only_in_b"] or r["exit_codes_differ"]):
        out += ["None: every output file is the same after normalisation.", ""]
    for d in r["different"]:
        out.append(f"- `{d['file']}` ({d['method']})")
        out += [f"    - {line}" for line in d["detail"]]
    out += [f"- `{f}`: only in A" for f in r["only_in_a"]] + [f"- `{f}`: only in B" for f in r["only_in_b"]]
    out += [f"- exit code of {e['dataset']} {e['command']} {e['label']}: A {e['a_exit']}, B {e['b_exit']}"
            for e in r["exit_codes_differ"]]
    if r["same_values_other_types"]:
        out += ["", "## Same values, other column types (Parquet; counted as identical)", ""]
        for d in r["same_values_other_types"]:
            out.append(f"- `{d['file']}`: {'; '.join(d['detail'])}")
    if r["different_console"]:
        out += ["", "## Console output that differs", ""]
        for d in r["different_console"]:
            out.append(f"- `{d['file']}`")
            out += [f"    - {line}" for line in d["detail"]]
    if r["notes"]:
        out += ["", r["notes"].rstrip()]
    out += ["", "## Left out on purpose", ""] + [f"- {x}" for x in r["intended"]]
    out += ["", "## Normalisation", ""] + [f"- `{k}`: {v}" for k, v in (r["normalisation"] or {}).items()]
    loads = []
    for side in ("a", "b"):
        la_ = r[side].get("load_average")
        if la_:
            loads.append(f"{side.upper()} {la_['start'][0]:.1f} at the start, {la_['end'][0]:.1f} at the end")
    out += ["", "## Timings (seconds; exit code when not 0)", "",
            "Wall-clock time of each command, interpreter start included, on a machine that may be "
            "shared: not a performance comparison."
            + (f" Load average (1 min): {'; '.join(loads)}." if loads else ""), "",
            "| dataset | command | output | A | B |", "|---|---|---|---:|---:|"]
    for s in r["steps"]:
        def cell(sec: Any, code: Any) -> str:
            return "—" if sec is None else f"{sec:.2f}" + ("" if code == 0 else f" (exit {code})")
        out.append(f"| {s['dataset']} | {s['command']} | {s['label']} | {cell(s['a_seconds'], s['a_exit'])} | "
                   f"{cell(s['b_seconds'], s['b_exit'])} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    rec = sub.add_parser("record", help="run every command of one version and write OUT/manifest.json")
    rec.add_argument("--out", required=True, help="folder for the outputs and manifest.json")
    rec.add_argument("--python", default=sys.executable, help="interpreter with custseg's dependencies (default: this one)")
    rec.add_argument("--src", help="src/ folder of the checkout to run (PYTHONPATH); default: what --python imports")
    rec.add_argument("--data", default=str(DEFAULT_DATA), help=f"reference datasets (default {DEFAULT_DATA})")
    rec.add_argument("--datasets", help=f"comma-separated subset of {','.join(DATASETS)}")
    rec.add_argument("--force", action="store_true", help="replace an earlier record in --out")
    cmp_ = sub.add_parser("compare", help="compare two records (folders or manifest.json files)")
    cmp_.add_argument("a")
    cmp_.add_argument("b")
    cmp_.add_argument("--results", default=str(RESULTS), help=f"folder for compare-DATE.md/.json (default {RESULTS})")
    cmp_.add_argument("--notes", help="a markdown file added to the result as it is (findings)")
    re_ = sub.add_parser("rehash", help="recompute the normalised hashes of an existing record")
    re_.add_argument("dir")
    args = parser.parse_args(argv)
    return {"record": record, "compare": compare, "rehash": rehash}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
