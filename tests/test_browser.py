"""The report in a real browser: Debian's headless Chromium, driven by Selenium through the
system chromedriver (never a downloaded browser), opens report.html from disk with the network
off, finds every section, every image decoded, no console error, no script but the page's own.

In CI (env CI set) a missing Chromium, chromedriver or Selenium FAILS the test: `.ci/run`
installs them. Elsewhere the test is skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import lrlab
from lrlab import report
from test_report import BLOBS, XSS_FILE, XSS_NAME, xss_experiment

CHROME_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-extensions",
                "--disable-dev-shm-usage", "--window-size=1366,900",
                # no network: every request would go to a closed local port
                "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=<-loopback>")


def _which(name: str, *fallbacks: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    return next((p for p in fallbacks if os.access(p, os.X_OK)), None)


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must run the browser test; .ci/run installs Debian's "
                    "chromium and chromium-driver, `make test` installs selenium)")
    pytest.skip(f"{reason}; install Debian's chromium + chromium-driver and `pip install "
                "selenium` (or run .ci/run) to run the browser test")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium = _which("chromium", "/usr/bin/chromium", "/usr/lib/chromium/chromium")
    driver_bin = _which("chromedriver", "/usr/bin/chromedriver",
                        "/usr/lib/chromium/chromedriver")
    if not chromium or not driver_bin:
        _unavailable("Chromium or chromedriver is not installed")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _unavailable("selenium is not installed")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in CHROME_FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    opts.set_capability("unhandledPromptBehavior", "ignore")  # an alert stays open: we look
    driver = webdriver.Chrome(options=opts, service=Service(driver_bin))
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.emulateNetworkConditions", {
        "offline": True, "latency": 0, "downloadThroughput": 0, "uploadThroughput": 0})
    yield driver
    driver.quit()


def open_report(driver, path: Path) -> list[dict]:
    """Load a page from disk; return the console entries it produced."""
    driver.get_log("browser")  # drop anything from before
    driver.get(path.resolve().as_uri())
    driver.execute_script("return document.readyState")
    return driver.get_log("browser")


def alert_text(driver) -> str | None:
    from selenium.common.exceptions import NoAlertPresentException

    try:
        return driver.switch_to.alert.text
    except NoAlertPresentException:
        return None


def check_page(driver, path: Path, ids: list[str], shot: Path) -> None:
    console = open_report(driver, path)
    assert alert_text(driver) is None
    errors = [e for e in console if e["level"] in ("SEVERE", "ERROR")]
    assert not errors, errors
    tops = [driver.execute_script(
        f"var e = document.getElementById('{sid}'); "
        "return e ? e.getBoundingClientRect().top + window.scrollY : null;") for sid in ids]
    assert None not in tops, dict(zip(ids, tops))
    assert tops == sorted(tops)  # in this order on the page
    images = driver.execute_script(
        "return Array.from(document.images).map(function (i) {"
        "  return [i.alt, i.complete, i.naturalWidth, i.naturalHeight]; });")
    assert images and all(done and w > 0 and h > 0 for _, done, w, h in images), images
    # nothing was fetched from the network: every resource is the file or a data: URI
    fetched = driver.execute_script(
        "return performance.getEntriesByType('resource').map(function (r) { return r.name; });")
    assert all(u.startswith(("data:", "file:")) for u in fetched), fetched
    assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    blobs = root / "blobs"
    lrlab.sweep(dict(BLOBS, sweep={"lr": [0.03, 0.3, 300.0], "preprocess": ["none",
                                                                           "standardize"]}),
                blobs)
    xss = xss_experiment(root)
    compare = report.build_compare([blobs, xss], root / "cmp")
    return {"blobs": blobs / "report.html", "xss": xss / "report.html", "compare": compare}


def test_report_opens_from_disk_with_every_section_and_image(browser, pages, tmp_path):
    ids = [sid for sid, _ in report.SECTIONS]
    check_page(browser, pages["blobs"], ids, tmp_path / "blobs.png")
    # the page's own script runs under the CSP: a click sorts the verdict table by lr
    from selenium.webdriver.common.by import By

    table = browser.find_element(By.CSS_SELECTOR, "#verdicts table")
    header = next(th for th in table.find_elements(By.TAG_NAME, "th") if th.text == "lr")
    col = [th.text for th in table.find_elements(By.TAG_NAME, "th")].index("lr")

    def lrs() -> list[float]:
        return [float(row.find_elements(By.TAG_NAME, "td")[col].text)
                for row in table.find_elements(By.CSS_SELECTOR, "tbody tr")]

    header.click()
    assert lrs() == sorted(lrs()) and len(set(lrs())) == 3
    header.click()
    assert lrs() == sorted(lrs(), reverse=True)
    assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def test_injected_names_run_no_script(browser, pages, tmp_path):
    ids = [sid for sid, _ in report.SECTIONS]
    check_page(browser, pages["xss"], ids, tmp_path / "xss.png")
    assert alert_text(browser) is None
    assert browser.title == f"lrlab: {XSS_NAME}"  # shown as text, not run
    h1 = browser.execute_script("return document.querySelector('h1').textContent")
    assert XSS_NAME in h1
    body = browser.execute_script("return document.body.textContent")
    assert XSS_FILE in body
    n_scripts = browser.execute_script("return document.scripts.length")
    assert n_scripts == 1
    assert browser.execute_script("return document.querySelectorAll('img[onerror]').length") \
        == 0


def test_compare_page_opens(browser, pages, tmp_path):
    ids = [sid for sid, _ in report.COMPARE_SECTIONS]
    check_page(browser, pages["compare"], ids, tmp_path / "compare.png")
    assert XSS_NAME in browser.execute_script("return document.body.textContent")
