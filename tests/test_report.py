"""The HTML report: built only from a run folder, self-contained, rendered by a real browser.

Browser tests drive Debian's Chromium (/usr/bin/chromium, installed by
scripts/install_browser.sh) with Playwright; they fail, never skip, when either is missing.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from custseg import datasets, pipeline
from custseg.errors import ConfigError, InputError
from custseg.report import REQUIRED_FILES, build_report

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
ALWAYS = {"overview", "data", "distributions", "correlations", "selection", "leaderboard", "maps", "profiles",
          "segments", "best-worst", "run"}


def _run_folder(tmp_path_factory, source, name, **config) -> Path:
    loaded = pipeline.load(pipeline.SourceSpec(str(source)))
    result = pipeline.run_segmentation(loaded, config=pipeline.SegmentConfig(**config))
    folder = tmp_path_factory.mktemp(name)
    pipeline.write_run(result, folder)
    return folder


@pytest.fixture(scope="session")
def sample_run(tmp_path_factory) -> Path:
    """K-Means swept over k = 2..6 on the bundled Online Retail sample (a transaction log)."""
    return _run_folder(tmp_path_factory, datasets.sample_path(), "sample", algorithm="kmeans", k_values=(2, 3, 4, 5, 6))


@pytest.fixture(scope="session")
def gmm_run(tmp_path_factory) -> Path:
    return _run_folder(tmp_path_factory, datasets.sample_path(), "gmm", algorithm="gmm", n_clusters=3)


@pytest.fixture(scope="session")
def ward_run(tmp_path_factory) -> Path:
    return _run_folder(tmp_path_factory, datasets.sample_path(), "ward", algorithm="agglomerative", n_clusters=3)


@pytest.fixture(scope="session")
def noise_run(tmp_path_factory) -> Path:
    """DBSCAN: many segments and customers in none (label -1)."""
    return _run_folder(tmp_path_factory, datasets.sample_path(), "dbscan", algorithm="dbscan")


@pytest.fixture(scope="session")
def campaign_run(tmp_path_factory, marketing_campaign) -> Path:
    """A customer table (no RFM, no cohorts)."""
    return _run_folder(tmp_path_factory, marketing_campaign, "campaign", algorithm="kmeans", n_clusters=3)


@pytest.fixture(scope="session")
def reports(sample_run, gmm_run, ward_run, noise_run, campaign_run) -> dict[str, Path]:
    """One report per run folder: the sample's draws every customer, the others a sample of 500."""
    return {
        "sample": build_report(sample_run),
        **{name: build_report(folder, max_points=500)
           for name, folder in {"gmm": gmm_run, "ward": ward_run, "noise": noise_run, "campaign": campaign_run}.items()},
    }


EXPECTED = {
    "sample": ALWAYS | {"rfm", "cohorts"},
    "gmm": ALWAYS | {"rfm", "cohorts", "uncertainty"},
    "ward": ALWAYS | {"rfm", "cohorts", "dendrogram"},
    "noise": ALWAYS | {"rfm", "cohorts"},
    "campaign": ALWAYS,
}


def _section_ids(html: str) -> set[str]:
    return set(re.findall(r'<section id="([^"]+)"', html))


def _figures(html: str) -> dict[str, dict]:
    return {
        target: json.loads(body)
        for target, body in re.findall(r'<script type="application/json" class="plot-data" data-target="([^"]+)">(.*?)</script>',
                                       html, flags=re.S)
    }


def _points(array) -> int:
    """Length of a plotly array (a list, or a base64 typed array {dtype, bdata})."""
    if isinstance(array, dict):
        return len(base64.b64decode(array["bdata"])) // np.dtype(array["dtype"]).itemsize
    return len(array)


# --- the file ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(EXPECTED))
def test_report_is_one_self_contained_file_with_every_section(reports, name):
    from plotly.offline import get_plotlyjs

    path = reports[name]
    assert path.name == "report.html"
    html = path.read_text(encoding="utf-8")
    assert html.count(get_plotlyjs()) == 1  # plotly.js embedded exactly once
    assert html.count("plotly.js v") == 1
    ours = html.replace(get_plotlyjs(), "")  # the page without the library's own code
    assert ours.count("<script") == len(_figures(html)) + 2  # plotly.js, one JSON block per chart, the loader
    assert not re.search(r"""<(script|link|img|iframe|source)\b[^>]*\b(src|href)\s*=""", ours, flags=re.I)
    assert not re.search(r"""url\(\s*['"]?(https?:)?//|@import|https?://""", ours, flags=re.I)
    assert _section_ids(html) == EXPECTED[name]
    toc = set(re.findall(r'<li><a href="#([^"]+)">', html))
    assert toc == EXPECTED[name]
    figures = _figures(html)
    assert figures and all(f'id="{target}"' in html for target in figures)
    assert len(re.findall(r'<div class="plot" id="[^"]+" role="img" aria-label="[^"]{10,}"', html)) == len(figures)


def test_report_size_stays_small(reports):
    from plotly.offline import get_plotlyjs

    for path in reports.values():
        assert path.stat().st_size - len(get_plotlyjs()) < 1_500_000


def test_sentences_are_computed_from_the_run(sample_run, reports):
    html = reports["sample"].read_text(encoding="utf-8")
    profiles = pd.read_csv(sample_run / "profiles.csv")
    summary = json.loads((sample_run / "run.json").read_text())
    best = profiles.set_index("segment").loc[summary["best_segment"]]
    assert f"{best['name']} are {best['share']:.1%} of customers and bring {best['value_share']:.1%} of revenue" in html
    cleaning = pd.read_csv(sample_run / "cleaning.csv").set_index("rule")["rows"]
    assert f"Of {summary['cleaning']['rows_in']:,} rows" in html
    assert f"{cleaning['kept']:,}" in html
    assert f"Inertia falls steeply up to k = {summary['knee']}" in html
    assert summary["recommendation"]["text"] in html


def test_customer_table_report_names_spend_not_revenue(campaign_run, reports):
    html = reports["campaign"].read_text(encoding="utf-8")
    assert "of spend" in html and "of revenue" not in html
    assert "All 2,240 rows of marketing_campaign.csv were kept" in html


def test_scatter_plots_draw_a_seeded_sample_and_say_so(sample_run, tmp_path):
    out = build_report(sample_run, out=tmp_path / "r.html", max_points=200, random_state=3)
    html = out.read_text(encoding="utf-8")
    customers = len(pd.read_csv(sample_run / "assignments.csv"))
    assert html.count(f"A random sample of 200 of the {customers:,} customers is drawn (seed 3") == 3
    figures = _figures(html)
    for target in ("fig-pca-2d", "fig-tsne", "fig-pca-3d"):
        assert sum(_points(trace["x"]) for trace in figures[target]["data"]) == 200
    again = _figures(build_report(sample_run, out=tmp_path / "again.html", max_points=200, random_state=3)
                     .read_text(encoding="utf-8"))
    assert again == figures  # same seed, same report
    other = _figures(build_report(sample_run, out=tmp_path / "other.html", max_points=200, random_state=4)
                     .read_text(encoding="utf-8"))
    assert other["fig-pca-2d"] != figures["fig-pca-2d"]


def test_captions_say_whether_every_customer_is_drawn(reports, sample_run):
    customers = len(pd.read_csv(sample_run / "assignments.csv"))
    sample = reports["sample"].read_text(encoding="utf-8")
    assert f"All {customers:,} customers are drawn" in sample and "A random sample" not in sample
    campaign = reports["campaign"].read_text(encoding="utf-8")
    assert campaign.count("A random sample of 500 of the 2,240 customers is drawn (seed 0, at most 500 points)") == 3


def test_the_tsne_map_draws_a_sample_of_at_most_2000_customers(campaign_run, tmp_path):
    """t-SNE's cost grows faster than the customers: its map samples 2,000 of the 2,240 that the
    principal-component maps draw, and says so."""
    html = build_report(campaign_run, out=tmp_path / "r.html").read_text(encoding="utf-8")
    assert html.count("All 2,240 customers are drawn") == 2  # the two PCA maps
    assert html.count("A random sample of 2,000 of the 2,240 customers is drawn (seed 0, at most 2,000 points "
                      "in this map). t-SNE") == 1
    tsne = _figures(html)["fig-tsne"]
    assert sum(_points(trace["x"]) for trace in tsne["data"]) == 2000


_TSNE_PIDS: dict = {}  # "file": where _noted_tsne writes its process; "task": the real t-SNE


def _noted_tsne(X, **options):
    """The report's t-SNE, noting the process that ran it (a module function: the background
    process gets it by reference)."""
    import os

    with open(_TSNE_PIDS["file"], "a") as out:
        out.write(f"{os.getpid()}\n")
    return _TSNE_PIDS["task"](X, **options)


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="forked on Linux only")
def test_the_tsne_map_is_computed_beside_the_other_sections_and_is_the_same(sample_run, tmp_path, monkeypatch):
    import os

    from custseg.report import _build

    pids = tmp_path / "pids"
    monkeypatch.setitem(_TSNE_PIDS, "file", pids)
    monkeypatch.setitem(_TSNE_PIDS, "task", _build._tsne)
    monkeypatch.setattr(_build, "_tsne", _noted_tsne)
    monkeypatch.setattr(_build, "can_fork", lambda **_: True)
    beside = build_report(sample_run, out=tmp_path / "beside.html").read_text(encoding="utf-8")
    assert pids.read_text().split() != [str(os.getpid())] and len(pids.read_text().split()) == 1
    pids.unlink()
    monkeypatch.setattr(_build, "can_fork", lambda **_: False)
    here = build_report(sample_run, out=tmp_path / "here.html").read_text(encoding="utf-8")
    assert pids.read_text().split() == [str(os.getpid())]
    built = re.compile(r"20\d\d-\d\d-\d\dT\d\d:\d\d:\d\d")
    assert built.sub("", beside) == built.sub("", here)
    assert _figures(beside)["fig-tsne"] == _figures(here)["fig-tsne"]


def test_a_run_starts_its_tsne_map_before_the_sweep_and_the_report_takes_it(tmp_path, monkeypatch):
    """The run starts the map from its own matrix (one t-SNE, before the sweep); the
    report takes it because the folder's matrix gives the same points, and draws what a report
    built later from the folder draws.  A map of other points is not taken."""
    import os

    from custseg.report import MapAhead, _build
    from custseg.runs import read_run

    pids = tmp_path / "pids"
    monkeypatch.setitem(_TSNE_PIDS, "file", pids)
    monkeypatch.setitem(_TSNE_PIDS, "task", _build._tsne)
    monkeypatch.setattr(_build, "_tsne", _noted_tsne)
    monkeypatch.setattr(_build, "can_fork", lambda **_: False)  # here, so the calls can be counted
    request = pipeline.RunRequest(pipeline.SourceSpec(str(datasets.sample_path())),
                                  segment=pipeline.SegmentConfig(algorithm="kmeans", k_values=(2, 3, 4)))
    folder = pipeline.run(request, tmp_path / "run")
    assert pids.read_text().split() == [str(os.getpid())]  # one t-SNE for the run and its report
    pids.unlink()
    later = build_report(tmp_path / "run", out=tmp_path / "later.html").read_text(encoding="utf-8")
    assert _figures(later)["fig-tsne"] == _figures((tmp_path / "run" / "report.html").read_text())["fig-tsne"]
    assert folder.files[-1] == tmp_path / "run" / "report.html"

    pids.unlink()
    run = read_run(tmp_path / "run")
    matrix = _build._matrix(_build._prepare(run))
    with MapAhead(matrix + 1.0) as other:  # other points: the report computes its own map
        html = build_report(run, out=tmp_path / "other.html", map_ahead=other).read_text(encoding="utf-8")
    assert pids.read_text().split() == [str(os.getpid())]  # its own (here, the other is never run)
    assert _figures(html)["fig-tsne"] == _figures(later)["fig-tsne"]


def test_the_maps_process_writes_the_model_and_the_run_never_imports_its_writer(tmp_path):
    """With a report, the process that draws the map beside the run imports the model's writer
    (skops, which imports all of scikit-learn) after the map and writes model.skops; the run's
    own process imports neither, and the file holds the model the run used."""
    import subprocess
    import sys

    from custseg import _fork
    from custseg import model as model_io

    if not _fork.can_fork(min_cores=2):
        pytest.skip("the map has a process of its own only on Linux with two cores or more")
    script = (
        "import json, sys\n"
        "from custseg import datasets, pipeline\n"
        "request = pipeline.RunRequest(pipeline.SourceSpec(str(datasets.sample_path())),\n"
        "                              segment=pipeline.SegmentConfig(algorithm='kmeans', k_values=(2, 3, 4)))\n"
        "folder = pipeline.run(request, sys.argv[1])\n"
        "print(json.dumps({'writer': 'skops' in sys.modules, 'files': [p.name for p in folder.files],\n"
        "                  'labels': folder.model.assign(folder.features)['segment'].tolist()}))\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "run")], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["writer"] is False
    assert seen["files"][-2:] == ["model.skops", "report.html"]
    written = model_io.load(tmp_path / "run" / "model.skops")
    features = pd.read_parquet(tmp_path / "run" / "features.parquet")
    assigned = pd.read_csv(tmp_path / "run" / "assignments.csv", dtype={"customer_id": "string"})
    assert written.assign(features)["segment"].tolist() == seen["labels"] == assigned["segment"].tolist()


def test_a_model_the_process_beside_could_not_write_is_written_by_the_run(tmp_path):
    from custseg import model as model_io
    from custseg import runs

    loaded = pipeline.load(pipeline.SourceSpec(str(datasets.sample_path())))
    result = pipeline.run_segmentation(loaded, config=pipeline.SegmentConfig(algorithm="kmeans", n_clusters=3))
    asked = []

    def failed(model, path):
        asked.append(path.name)
        return lambda: False

    written = runs.write_run(result, tmp_path / "run", save_model=failed)
    assert asked == ["model.skops"] and written[-1] == tmp_path / "run" / "model.skops"
    assert model_io.load(written[-1]).segment_ids == result.model.segment_ids
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.startswith(".")]  # no staging left


def test_the_sweep_leaves_a_core_to_the_map_drawn_beside_it(tmp_path, monkeypatch):
    """With a report the map's process starts before the sweep, which then counts that core as
    busy (on two cores: the sweep runs in the run's own process); without a report, or where the
    map cannot have a process of its own, the sweep has every core."""
    from custseg import selection
    from custseg.report import _build

    events: list[str] = []
    workers, enter = selection._workers, _build._Background.__enter__

    def counted_workers(*args, busy_cores=0, **kwargs):
        events.append(f"sweep busy={busy_cores}")
        return workers(*args, busy_cores=busy_cores, **kwargs)

    def noted_enter(self):
        started = enter(self)
        events.append("map started" if self.pending is not None else "map not started")
        return started

    monkeypatch.setattr(selection, "_workers", counted_workers)
    monkeypatch.setattr(_build._Background, "__enter__", noted_enter)
    monkeypatch.setattr(_build, "can_fork", lambda **_: True)
    config = pipeline.SegmentConfig(algorithm="kmeans", k_values=(2, 3, 4))
    source = pipeline.SourceSpec(str(datasets.sample_path()))
    pipeline.run(pipeline.RunRequest(source, segment=config), tmp_path / "report")
    assert events == ["map started", "sweep busy=1", "map not started"]  # the report takes it: no map of its own
    assert "fig-tsne" in _figures((tmp_path / "report" / "report.html").read_text(encoding="utf-8"))

    events.clear()
    pipeline.run(pipeline.RunRequest(source, segment=config, report=False), tmp_path / "no-report")
    assert events == ["sweep busy=0"]

    events.clear()
    monkeypatch.setattr(_build, "can_fork", lambda **_: False)
    pipeline.run(pipeline.RunRequest(source, segment=config), tmp_path / "here")
    assert events == ["map not started", "sweep busy=0", "map not started"]


def test_dendrogram_and_uncertainty_sections_use_the_model_and_probabilities(reports):
    ward = _figures(reports["ward"].read_text(encoding="utf-8"))
    assert "fig-dendrogram" in ward and "fig-uncertainty" not in ward
    assert "leaves 3 segments" in reports["ward"].read_text(encoding="utf-8")
    gmm_html = reports["gmm"].read_text(encoding="utf-8")
    gmm = _figures(gmm_html)
    assert "fig-uncertainty" in gmm and len(gmm["fig-uncertainty"]["data"]) == 3
    assert "with probability 0.9 or more" in gmm_html


def test_customers_in_no_segment_are_grey_and_not_a_segment(noise_run, reports):
    html = reports["noise"].read_text(encoding="utf-8")
    assignments = pd.read_csv(noise_run / "assignments.csv")
    assert (assignments["segment"] == -1).any()
    noise_name = assignments.loc[assignments["segment"] == -1, "segment_name"].iloc[0]
    traces = _figures(html)["fig-pca-2d"]["data"]
    noise = [t for t in traces if t["name"] == noise_name]
    assert len(noise) == 1 and noise[0]["marker"]["color"] == "#999999"
    assert f"The largest segment is {noise_name} " not in html


def test_writes_atomically_to_out(sample_run, tmp_path):
    out = tmp_path / "nested.html"
    assert build_report(sample_run, out=out, max_points=50) == out
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert [p.name for p in tmp_path.iterdir()] == ["nested.html"]


# --- errors -----------------------------------------------------------------------------------

def test_missing_run_folder_is_one_clear_error(tmp_path):
    with pytest.raises(InputError, match=r"nowhere: no such run folder; run `custseg segment SOURCE --out .*nowhere` first"):
        build_report(tmp_path / "nowhere")


def test_incomplete_run_folder_names_the_missing_files(sample_run, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(sample_run, folder)
    (folder / "model.skops").unlink()
    (folder / "elbow.csv").unlink()
    with pytest.raises(InputError, match=r"missing elbow.csv, model.skops; run `custseg segment SOURCE --out"):
        build_report(folder)
    assert "model.skops" in REQUIRED_FILES


def test_a_file_is_not_a_run_folder(tmp_path):
    path = tmp_path / "report.csv"
    path.write_text("a\n1\n")
    with pytest.raises(InputError, match="is a file, not a run folder"):
        build_report(path)


def test_broken_tables_are_all_reported_at_once(sample_run, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(sample_run, folder)
    pd.read_csv(folder / "profiles.csv").drop(columns=["rule"]).to_csv(folder / "profiles.csv", index=False)
    (folder / "run.json").write_text("{not json")
    with pytest.raises(InputError, match=r"profiles.csv lacks column rule; run.json cannot be read"):
        build_report(folder)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"max_points": 0}, "max_points must be an integer >= 10, got 0"),
    ({"max_points": 5.5}, "max_points must be an integer >= 10, got 5.5"),
    ({"random_state": -1}, "random_state must be an integer >= 0, got -1"),
])
def test_bad_options(sample_run, kwargs, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        build_report(sample_run, **kwargs)


def test_out_in_a_missing_folder(sample_run, tmp_path):
    with pytest.raises(ConfigError, match="does not exist; create it first"):
        build_report(sample_run, out=tmp_path / "no" / "report.html")


# --- in a browser -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    """Headless Debian Chromium through Playwright; fails (never skips) when it is missing."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing; install it with scripts/install_browser.sh (the browser tests need it)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Playwright is missing; install it with: pip install -e '.[dev]' (or pip install playwright)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.mark.parametrize("name", list(EXPECTED))
def test_report_renders_offline_in_chromium(browser, reports, name, tmp_path):
    path = reports[name]
    url = path.resolve().as_uri()
    page = browser.new_page(viewport={"width": 1366, "height": 800})
    errors: list[str] = []
    requests: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("request", lambda request: requests.append(request.url))
    try:
        page.goto(url, wait_until="load")
        page.wait_for_function(
            "() => Array.from(document.querySelectorAll('div.plot')).every(d => d.querySelector('.main-svg, canvas'))",
            timeout=30_000,
        )
        charts = page.evaluate("""() => Array.from(document.querySelectorAll('div.plot')).map(d => ({
            id: d.id, drawn: !!d.querySelector('.main-svg, canvas'), label: d.getAttribute('aria-label'),
            width: d.getBoundingClientRect().width}))""")
        sections = page.evaluate("() => Array.from(document.querySelectorAll('main section')).map(s => s.id)")
        overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        shot = tmp_path / f"{name}.png"
        page.screenshot(path=str(shot), full_page=True)
    finally:
        page.close()
    assert errors == []
    assert requests == [url]  # nothing but the file itself
    assert charts and all(c["drawn"] and c["label"] and c["width"] > 200 for c in charts)
    assert len(charts) == len(_figures(path.read_text(encoding="utf-8")))
    assert set(sections) == EXPECTED[name]
    assert overflow <= 0  # fits the laptop-width window, no sideways scrolling
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000


def test_report_fits_a_narrow_window(browser, reports):
    page = browser.new_page(viewport={"width": 800, "height": 900})
    try:
        page.goto(reports["sample"].resolve().as_uri(), wait_until="load")
        page.wait_for_function("() => document.querySelectorAll('div.plot .main-svg').length > 0", timeout=30_000)
        overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    finally:
        page.close()
    assert overflow <= 0


def test_rfm_rules_report_says_no_k_was_chosen_and_shows_no_empty_leaderboard(tmp_path_factory):

    folder = _run_folder(tmp_path_factory, datasets.sample_path(), "rfm", algorithm="rfm")
    html = build_report(folder).read_text(encoding="utf-8")
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))
    assert "No number of segments was chosen: the RFM segments come from rules" in text
    assert "no clear knee" not in text and "is not one of the compared rows" not in text
    assert "Every fit compared (0 rows" not in text


def test_a_run_of_more_customers_than_the_read_limit_is_read_and_reported_as_a_sample(tmp_path):
    """A run folder larger than the limit (a run segmented on Spark) is read as a seeded sample:
    the same customers' rows of every per-customer file (ids written for spreadsheets matched
    back), the same sample each time; the report counts everyone and says what is sampled."""
    from custseg.runs import read_run

    customers, _ = datasets.make_customers(600, n_segments=3, random_state=0)
    customers["customer_id"] = [f"={c}" if i % 3 == 0 else c for i, c in enumerate(customers["customer_id"])]
    source = tmp_path / "customers.parquet"
    customers.to_parquet(source)
    request = pipeline.RunRequest(pipeline.SourceSpec(str(source)),
                                  segment=pipeline.SegmentConfig(algorithm="kmeans", n_clusters=3))
    pipeline.run(request, tmp_path / "run")
    whole = read_run(tmp_path / "run")
    assert (whole.customers, whole.sampled) == (600, False)

    part = read_run(tmp_path / "run", max_customers=100)
    assert (part.customers, part.sampled, len(part.features), len(part.assignments), len(part.rfm)) == (
        600, True, 100, 100, 100)
    ids = part.features["customer_id"]
    assert ids.str.startswith("=").any() and set(part.assignments["customer_id"]) == set(ids) == set(part.rfm["customer_id"])
    by_id = pd.Series(whole.labels, index=whole.features["customer_id"])
    assert (by_id.reindex(ids).to_numpy() == part.labels).all()
    expected = whole.features[whole.features["customer_id"].isin(ids)].reset_index(drop=True)
    pd.testing.assert_frame_equal(part.features, expected)  # in the file's order
    for name in ("assignments", "rfm"):  # CSV files: the same values and types as the whole file's rows
        whole_rows = getattr(whole, name)
        pd.testing.assert_frame_equal(getattr(part, name),
                                      whole_rows[whole_rows["customer_id"].isin(ids)].reset_index(drop=True))
    assert read_run(tmp_path / "run", max_customers=100).features["customer_id"].tolist() == ids.tolist()
    pd.testing.assert_frame_equal(part.profiles, whole.profiles)  # per segment: everyone

    html = build_report(part, out=tmp_path / "sampled.html").read_text(encoding="utf-8")
    assert "600 customers from" in html and "drawn from a seeded sample of 100 of them" in html
    assert "RFM segments, best first (a seeded sample of 100 of 600 customers)" in html
    full = (tmp_path / "run" / "report.html").read_text(encoding="utf-8")
    assert "600 customers from" in full and "seeded sample of" not in full


def test_a_sampled_csv_run_file_keeps_the_file_s_order_and_types(tmp_path):
    """The sample's rows of a large per-customer CSV, read in parallel by DuckDB, come back in the
    file's order with the types pandas gives the whole file (ids written for spreadsheets)."""
    from custseg import runs
    from custseg.outputs import write_table

    n = 1_000_000
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"customer_id": [f"={i}" if i % 7 == 0 else f"C{i}" for i in range(n)],
                          "segment": rng.integers(0, 6, n),
                          "segment_name": rng.choice(["Champions, loyal", 'The "new" ones', "At risk"], n),
                          "probability": rng.random(n).round(6)})
    path = write_table(frame, tmp_path / "assignments.csv")
    sample = set(frame["customer_id"].sample(50_000, random_state=1))
    dtype = {"customer_id": "string", "cohort": "string", "rfm_code": "string"}
    got, rows = runs._rows_of(path, "customer_id", sample, dtype)
    whole = pd.read_csv(path, dtype=dtype)
    expected = whole[frame["customer_id"].isin(sample).to_numpy()].reset_index(drop=True)
    assert rows == n and len(got) == 50_000
    pd.testing.assert_frame_equal(got, expected)
