"""The dashboard in a real browser: `streamlit run` headless, Debian's Chromium driven by
Selenium; every page opens without an exception element, and is saved as a screenshot under
artifacts/screenshots/ (git-ignored)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.integration.seed import seeded_database
from vigil.services.process import free_port
from vigil.settings import PROJECT_ROOT, Settings

SCREENSHOTS = PROJECT_ROOT / "artifacts" / "screenshots"
CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
PAGES = {"overview": ("", "Overview"), "timeline": ("timeline", "Timeline"),
         "services": ("services", "Services"), "events": ("events", "Events"),
         "detail": ("detail", "Event detail")}


@pytest.fixture(scope="module")
def dashboard(stack: Settings, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    with seeded_database(stack, datetime.now(UTC).replace(microsecond=0)) as (settings, rows):
        yield from _serve(settings, rows, tmp_path_factory)


def _serve(settings: Settings, rows: list[dict[str, Any]],
           tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    port = free_port()
    log = tmp_path_factory.mktemp("streamlit") / "streamlit.log"
    env = {**os.environ, "POSTGRES_DB": settings.postgres_db}
    with log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(PROJECT_ROOT / "dashboards" / "app.py"),
             "--server.headless", "true", "--server.address", "127.0.0.1",
             "--server.port", str(port), "--browser.gatherUsageStats", "false"],
            cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health",
                                            timeout=2):
                    break
            except OSError:
                assert server.poll() is None, log.read_text()
                time.sleep(0.3)
        yield f"http://127.0.0.1:{port}", rows
    finally:
        server.terminate()
        server.wait(timeout=20)


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    missing = [p for p in (CHROMIUM, DRIVER) if not shutil.which(p)]
    assert not missing, (f"{' and '.join(missing)} missing: install Debian's chromium and "
                         "chromium-driver (`make browser`; .ci/run does it)")
    options = Options()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--window-size=1440,1100", "--disable-gpu"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def _settled(driver: webdriver.Chrome, title: str) -> None:
    """The page's title is drawn and Streamlit has stopped running the script."""
    wait = WebDriverWait(driver, 45, poll_frequency=0.25)
    wait.until(lambda d: any(h.text.strip() == title
                             for h in d.find_elements(By.CSS_SELECTOR, "h1")))
    # A page with a live fragment may keep re-running; its content is drawn regardless.
    with contextlib.suppress(TimeoutException):
        WebDriverWait(driver, 20, poll_frequency=0.25).until(
            lambda d: not d.find_elements(By.CSS_SELECTOR,
                                          '[data-testid="stStatusWidget"] button'))
    time.sleep(1.5)  # charts and tables draw after the script's last message


@pytest.mark.parametrize("page", list(PAGES))
def test_every_page_opens_without_an_exception_and_is_saved(
        dashboard: tuple[str, list[dict[str, Any]]], browser: webdriver.Chrome,
        page: str) -> None:
    base, rows = dashboard
    path, title = PAGES[page]
    url = f"{base}/{path}" + (f"?id={rows[3]['id']}" if page == "detail" else "")
    browser.get(url)
    _settled(browser, title)
    exceptions = browser.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')
    assert exceptions == [], [e.text[:500] for e in exceptions]
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "Traceback" not in body
    if page == "overview":
        assert "Anomalies, last 24 h" in body
    if page == "events":
        assert f"{len(rows)} anomalies match" in body
    if page == "detail":
        assert rows[3]["alert_title"] in body
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shot = SCREENSHOTS / f"{page}.png"
    assert browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000  # a drawn page, not a blank one
