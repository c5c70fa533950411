"""The web app in headless Chromium (Playwright) against a real server: ``custseg serve`` with
its job worker, on a SQLite store, with users made by ``custseg users add``.

One walk through the app as a marketing analyst would take it — sign in, create a project,
upload the bundled sample and watch the upload's progress bar, preview it, change a role,
start a run and watch its progress, read the results and the report, download the CRM export,
assign a customer by hand — and a second user who gets the 404 of a missing project.  Each
page is saved as <page>.png in a temporary folder, or in docs/screenshots when
CUSTSEG_SCREENSHOTS=docs/screenshots is set (how the pictures in docs/ are made).

Like the report's browser tests, these fail (never skip) when Chromium or Playwright is missing.
"""

from __future__ import annotations

import csv
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from custseg import datasets

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
PASSWORD = "correct horse battery"
ANN, BOB = "ann@example.com", "bob@example.com"
SCREENSHOTS = Path(os.environ.get("CUSTSEG_SCREENSHOTS") or tempfile.mkdtemp(prefix="custseg-screenshots-"))
CLI = [sys.executable, "-c", "import sys; from custseg.cli import main; sys.exit(main())"]
#: the upload's speed in the browser (bytes/s): the sample (~0.5 MB) takes a few seconds
UPLOAD_SPEED = 200 * 1024
#: how each page reports its progress to the test: the values its <progress> shows
WATCH_PROGRESS = """
document.addEventListener("DOMContentLoaded", () => {
  for (const [bar, label, name] of [["upload-progress", "upload-percent", "upload"],
                                    ["run-progress", "run-percent", "run"]]) {
    const element = document.getElementById(bar), text = document.getElementById(label);
    if (!element || !text) continue;
    window.recordProgress(name, element.value, element.max);
    new MutationObserver(() => window.recordProgress(name, element.value, element.max))
      .observe(text, {childList: true, characterData: true, subtree: true});
  }
});
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``custseg serve`` with one worker on a fresh SQLite store and data folder; two users."""
    folder = tmp_path_factory.mktemp("web-app")
    store, data = f"sqlite:///{folder / 'store.sqlite'}", folder / "data"
    where = ["--db", store, "--data-dir", str(data)]
    for email in (ANN, BOB):
        made = subprocess.run([*CLI, "users", "add", email, *where], input=PASSWORD + "\n", text=True,
                              capture_output=True, timeout=120)
        assert made.returncode == 0, made.stderr
    port = _free_port()
    log = open(folder / "serve.log", "wb")
    process = subprocess.Popen([*CLI, "serve", *where, "--port", str(port), "--workers", "1"], stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        if process.poll() is not None:
            log.close()
            pytest.fail(f"custseg serve stopped (exit {process.returncode}):\n{(folder / 'serve.log').read_text()}")
        try:
            with urllib.request.urlopen(base + "/app/signin", timeout=2) as answer:
                if answer.status == 200:
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"custseg serve did not answer in 90 s:\n{(folder / 'serve.log').read_text()}")
        time.sleep(0.3)
    yield base
    # SIGINT: the server stops its workers on the way out (after SIGTERM uvicorn re-raises the
    # signal with its default action, which ends the server before it can stop them).
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=30)
    for pid in _workers_of(data):  # any worker the server left behind
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    log.close()


def _workers_of(data: Path) -> list[int]:
    """The ids of ``custseg worker`` processes on this data folder (the test's own)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"worker" in command and str(data.resolve()).encode() in command:
            found.append(int(entry.name))
    return found


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


def _shot(page, name: str) -> None:
    """The whole page as SCREENSHOTS/<name>.png (by a viewport as tall as the page: a
    full-page capture leaves the report's sandboxed frame blank)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    size = page.viewport_size
    height = page.evaluate("document.documentElement.scrollHeight")
    page.set_viewport_size({"width": size["width"], "height": max(height, size["height"])})
    page.wait_for_timeout(300)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))
    page.set_viewport_size(size)


def _sign_in(page, base: str, email: str, password: str = PASSWORD) -> None:
    page.goto(base + "/app")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", password)
    page.click("button:has-text('Sign in')")


def _new_page(browser, base: str, progress: list):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True, base_url=base)
    context.set_default_timeout(30_000)
    page = context.new_page()
    page.expose_function("recordProgress", lambda name, value, top: progress.append((name, value, top)))
    page.add_init_script(WATCH_PROGRESS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda m: errors.append(m.text)
            if m.type == "error" and not m.text.startswith("Failed to load resource") else None)
    return context, page, errors


def test_the_whole_flow_in_chromium(server, browser):
    from playwright.sync_api import expect

    progress: list[tuple[str, float, float]] = []
    context, page, errors = _new_page(browser, server, progress)

    # Sign in (a wrong password first: the page says so).
    page.goto(server + "/")
    expect(page).to_have_url(re.compile(r"/app/signin"))
    _shot(page, "signin")
    _sign_in(page, server, ANN, "not the password")
    expect(page.locator(".error")).to_contain_text("wrong e-mail address or password")
    _sign_in(page, server, ANN)
    expect(page.locator("h1")).to_have_text("Projects")

    # Create a project (previews show the first 20 rows).
    page.fill("#create input[name=name]", "Spring campaign")
    page.fill("#create textarea[name=description]", "Online Retail customers for the spring mailing")
    page.fill("#create input[name=preview_rows]", "20")
    page.click("#create button[type=submit]")
    expect(page.locator("h1")).to_have_text("Spring campaign")
    project_url = page.url
    assert re.search(r"/app/projects/\d+$", project_url), project_url

    # Upload: a file that is not data gets the CLI's one line on the page …
    page.click("text=Upload a dataset")
    page.set_input_files("#file", files=[{"name": "orders.csv", "mimeType": "text/csv",
                                          "buffer": b"\x89PNG\r\n\x1a\n" + b"\0" * 64}])
    page.click("#upload-button")
    expect(page.locator("#upload-error")).to_contain_text("orders.csv: is a PNG image, not a data file")
    # … a dropped file is taken (a DataTransfer as a drag from the desktop makes it) …
    page.evaluate("""() => {
      const transfer = new DataTransfer();
      transfer.items.add(new File(["customer,spend\\n1,10\\n"], "dropped.csv", {type: "text/csv"}));
      document.getElementById("dropzone").dispatchEvent(new DragEvent("drop", {dataTransfer: transfer, bubbles: true}));
    }""")
    expect(page.locator("#chosen")).to_contain_text("dropped.csv")
    # … and the sample, sent at a throttled speed, moves the progress bar to 100.
    _shot(page, "upload")
    cdp = context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 0, "downloadThroughput": -1,
                                                  "uploadThroughput": UPLOAD_SPEED})
    page.set_input_files("#file", str(datasets.sample_path()))
    progress.clear()
    page.click("#upload-button")
    page.wait_for_url(re.compile(r"/datasets/\d+$"), timeout=120_000)
    cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 0, "downloadThroughput": -1,
                                                  "uploadThroughput": -1})
    upload = [value for name, value, top in progress if name == "upload"]
    assert max(upload) == 100, upload
    assert any(0 < value < 100 for value in upload), f"no intermediate progress value: {upload}"
    assert upload == sorted(upload), upload
    dataset_url = page.url

    # The dataset: preview (the project's first 20 rows), roles, quality.
    expect(page.locator("#dataset-kind")).to_have_text("transactions")
    expect(page.locator("#preview-table tbody tr")).to_have_count(20)
    expect(page.locator("#quality")).to_contain_text("missing_customer_id")
    page.select_option("#preview select[name=mode]", "last")
    page.fill("#preview input[name=rows]", "5")
    page.click("#preview button[type=submit]")
    expect(page.locator("#preview-table tbody tr")).to_have_count(5)
    expect(page.locator("#preview .hint").first).to_contain_text("5 of 79,780 rows (last)")
    # Change a role: the products are the descriptions, not the stock codes (the CLI's --map).
    page.select_option("select[data-column=Description]", "product_id")
    page.click("#roles-form button:has-text('Save roles')")
    expect(page.locator("#roles")).to_contain_text("product_id=Description")
    expect(page.locator("select[data-column=Description]")).to_have_value("product_id")
    expect(page.locator("select[data-column=StockCode]")).to_have_value("")
    _shot(page, "dataset")

    # A recipe: preview only.
    page.goto(project_url + "/recipes/new")
    name = page.locator("p:has-text('Datasets:') code").first.inner_text()
    page.fill("textarea[name=sql]", f"SELECT Country, count(*) AS orders FROM {name} GROUP BY Country ORDER BY orders DESC")
    page.click("button:has-text('Preview')")
    expect(page.locator("#recipe-preview tbody tr").first).to_contain_text("United Kingdom")
    _shot(page, "recipe")

    # The run form (the CLI's options), then the run's live progress.
    page.goto(dataset_url)
    page.click("text=Run a segmentation…")
    page.select_option("select[name=algorithm]", "kmeans")
    page.fill("input[name=k]", "4")
    page.fill("input[name=seed]", "7")
    _shot(page, "run_form")
    progress.clear()
    page.click("button:has-text('Start the run')")
    expect(page.locator("h1")).to_have_text(re.compile(r"Run \d+"))
    run_url = page.url
    try:
        page.wait_for_function("() => (document.getElementById('run-progress') || {}).value > 10", timeout=60_000)
        _shot(page, "run_progress")
    except Exception:  # the run may already be done: the page has reloaded
        pass
    expect(page.locator("#run-status")).to_have_text("done", timeout=300_000)
    seen = [value for name, value, top in progress if name == "run"]
    assert any(0 < value < 100 for value in seen), f"no intermediate run progress: {seen}"

    # The results: recommendation with reasons, segments, leaderboard, report.
    expect(page.locator("#recommendation .lead")).to_contain_text("K-Means with 4 segments")
    assert page.locator("#recommendation .reasons li").count() >= 1
    expect(page.locator("#segments tbody tr")).to_have_count(4)
    expect(page.locator("#leaderboard tr.chosen")).to_have_count(1)
    frame = page.locator("iframe.report")
    assert frame.get_attribute("sandbox") == "allow-scripts"
    assert frame.get_attribute("src").endswith("/files/report.html")
    expect(page.frame_locator("iframe.report").locator("body")).to_contain_text("segment", timeout=30_000)
    segment_names = page.locator("#segments tbody td:nth-child(2)").all_inner_texts()
    frame.scroll_into_view_if_needed()
    page.wait_for_timeout(500)
    page.locator("#report").screenshot(path=str(SCREENSHOTS / "report.png"))
    page.evaluate("window.scrollTo(0, 0)")
    _shot(page, "run")

    # The CRM export.
    with page.expect_download() as download:
        page.click("#download-crm_import-csv")
    path = download.value.path()
    with open(path, newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) > 100 and set(rows[0]) >= {"Customer ID", "Segment Name"}, rows[:1]
    assert download.value.suggested_filename == "crm_import.csv"

    # Assign a customer by hand (the form holds the run's first customer).
    page.fill("#assign-form input[name=customer_id]", "web-1")
    page.click("#assign-form button:has-text('Assign')")
    result = page.locator("#assigned")
    expect(result).to_contain_text("web-1")
    assigned = result.locator(".segment-name").inner_text()
    assert assigned in segment_names, (assigned, segment_names)
    result.scroll_into_view_if_needed()
    page.locator("#assign").screenshot(path=str(SCREENSHOTS / "assign.png"))

    # The project's page: datasets, runs, members and the audit log of all this.
    page.goto(project_url)
    expect(page.locator("#runs tbody tr")).to_have_count(1)
    for action in ("uploaded a dataset", "changed roles", "started a run", "exported"):
        expect(page.locator("#audit")).to_contain_text(action)
    _shot(page, "project")
    page.goto(server + "/app")
    expect(page.locator("#project-list")).to_contain_text("Spring campaign")
    _shot(page, "projects")
    assert not errors, errors

    # A second user sees nothing of it: the 404 of a missing project, everywhere.
    other, bob, _ = _new_page(browser, server, [])
    _sign_in(bob, server, BOB)
    expect(bob.locator(".empty")).to_contain_text("No projects yet")
    for url in (project_url, dataset_url, run_url):
        answer = bob.goto(url)
        assert answer.status == 404, (url, answer.status)
        expect(bob.locator("h1")).to_contain_text("404")
    _shot(bob, "not_found")
    answer = bob.request.get(run_url.replace("/app/", "/api/v1/") + "/files/report.html")
    assert answer.status == 404
    other.close()
    context.close()
