"""The Space in a real browser: ``python spaces/ica_browser/app.py``, pointed at the local Hub
through ``ICA_HUB_ENDPOINT`` as the demo prints it, driven in headless Chromium by Playwright.

The browser is Debian's ``chromium`` package (``make install`` puts it there; Playwright's own
browser download needs the internet), launched through Playwright's ``executable_path``. The
tables are read from Gradio 6's Dataframe markup: a block labelled with the component's label,
holding rows of class ``virtual-row`` and cells of class ``body-cell``. Fast tier: the app
starts in about 10 s on 2 cores, the clicks take a few seconds.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
APP = REPO_ROOT / "spaces" / "ica_browser" / "app.py"
START_TIMEOUT_S = 120
UPDATE_TIMEOUT_MS = 30_000
ROWS = "Rows, sorted by the score column (first 200)"


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("No chromium on PATH: `make install` installs Debian's package (or run "
                    "`apt-get install chromium` as root).")
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_serving(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"app.py exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"app.py did not serve {url} within {START_TIMEOUT_S} s:\n{log.read_text()}")


@contextlib.contextmanager
def _running_app(published, folder: Path, **environment: str):
    """``app.py`` started as the demo says, reading the local Hub (not HF_ENDPOINT); its URL."""
    port = _free_port()
    env = {key: value for key, value in os.environ.items()
           if key not in ("HF_ENDPOINT", "HF_TOKEN")}
    env.update(ICA_HUB_ENDPOINT=published.hub.endpoint, ICA_HUB_TOKEN=published.hub.token,
               ICA_HUB_REPO=published.repo_id, GRADIO_SERVER_PORT=str(port),
               GRADIO_ANALYTICS_ENABLED="False", HF_HOME=str(folder / "hf-home"), **environment)
    log = folder / "app.log"
    with open(log, "w") as output:
        process = subprocess.Popen([sys.executable, str(APP)], cwd=REPO_ROOT, env=env,
                                   stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_until_serving(url, process, log)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def app_url(published, tmp_path_factory):
    with _running_app(published, tmp_path_factory.mktemp("space")) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=_chromium())
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, app_url):
    page = browser.new_page(viewport={"width": 1400, "height": 1600})
    page.set_default_timeout(UPDATE_TIMEOUT_MS)
    page.goto(app_url)
    yield page
    page.close()


def _table(page, label: str):
    return page.get_by_label(label, exact=True)


def _first_cells(page, label: str):
    return _table(page, label).locator(".virtual-row .body-cell.first-column")


def _pick(page, dropdown: str, option: str) -> None:
    page.get_by_label(dropdown).click()
    page.get_by_role("option", name=option).click()


def _wait_until_idle(page) -> None:
    """Until no output shows Gradio's status tracker (dimmed while an event runs)."""
    from playwright.sync_api import expect

    expect(page.locator("div.wrap.full:not(.hide)")).to_have_count(0)


def test_picking_a_version_shows_its_rows_scores_and_evaluation(page, published, tmp_path):
    from playwright.sync_api import expect

    # The newest version is shown first.
    expect(page.get_by_label("Scored version")).to_have_value(re.compile(published.pairs.tag))
    expect(_first_cells(page, ROWS)).to_have_text(["q-0", "q-1"])

    # The pool version: its rows by fit_score, highest first, the unscored row last.
    _pick(page, "Scored version", f"{published.pool.tag} (pool/train, 8 rows)")
    expect(_first_cells(page, ROWS)).to_have_text(
        ["p-3", "p-0", "p-6", "p-7", "p-1", "p-4", "p-2", "p-5"])
    summary = _table(page, "Summary per score column").locator(".virtual-row")
    expect(summary.first).to_have_text(re.compile(r"fit_score\s+8\s+7\s+1\s+2\s+0\.1429\s+-2\b"))
    expect(page.locator("img[src^='data:image/png']")).to_have_count(1)

    # Another score column re-sorts the rows.
    _pick(page, "Sort by score column", "ica_score")
    expect(_first_cells(page, ROWS)).to_have_text(
        ["p-7", "p-1", "p-6", "p-0", "p-2", "p-4", "p-5", "p-3"])
    _wait_until_idle(page)
    page.screenshot(path=tmp_path / "scores.png", full_page=True)

    # A text filter keeps the rows that mention it, in the same order.
    text = page.get_by_label("Text contains")
    text.fill("sahara")
    text.press("Enter")
    expect(_first_cells(page, ROWS)).to_have_text(["p-7", "p-2"])

    # The evaluation results filed under the pool version.
    page.get_by_role("tab", name="Evaluation").click()
    models = _table(page, "Models: held-out test loss, perplexity, preference accuracy")
    expect(models.locator(".virtual-row")).to_have_text(
        [re.compile(r"demo-eval\s+base\s+2\.5\s+12\.25\s+6\s+0\.625\s+8"),
         re.compile(r"demo-eval\s+sft-ica\s+2\.125\s+8\.375\s+6")])
    scores = _table(page, "Scores: AUROC of clean over noisy rows and of target over "
                          "off-domain rows")
    expect(scores.locator(".virtual-row")).to_have_text(
        [re.compile(r"ica-fit\s+fit_score\s+0\.9375\s+4 / 3\s+0\.8125\s+3 / 2"),
         re.compile(r"ica \(published\)\s+ica_score\s+0\.3125\s+4 / 4\s+3 / 0")])
    _wait_until_idle(page)
    page.screenshot(path=tmp_path / "evaluation.png", full_page=True)


def test_an_unknown_repo_is_named_in_the_page(page, published):
    from playwright.sync_api import expect

    expect(page.get_by_label("Scored version")).to_have_value(re.compile(published.pairs.tag))
    repo = page.get_by_label("Dataset repo")
    repo.fill("local/no-such-repo")
    repo.press("Enter")
    expect(page.get_by_text("'local/no-such-repo' was not found")).to_be_visible()


def test_the_version_named_in_the_environment_is_selected_first(browser, published, tmp_path):
    from playwright.sync_api import expect

    with _running_app(published, tmp_path, ICA_HUB_VERSION=published.pool.tag) as url:
        page = browser.new_page(viewport={"width": 1400, "height": 1600})
        page.set_default_timeout(UPDATE_TIMEOUT_MS)
        page.goto(url)
        expect(page.get_by_label("Scored version")).to_have_value(re.compile(published.pool.tag))
        expect(_first_cells(page, ROWS)).to_have_text(
            ["p-3", "p-0", "p-6", "p-7", "p-1", "p-4", "p-2", "p-5"])
        page.close()
