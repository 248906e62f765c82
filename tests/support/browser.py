"""Debian's chromium driven through Selenium and Debian's chromium-driver (no browser download).

`chromium()` yields a headless driver whose console is readable (`console_errors`). With
`offline=True` every host name but loopback fails to resolve, so a page that needed a CDN
shows it: the asset fails to load and the console says so.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def require_chromium() -> None:
    if shutil.which(CHROMIUM) is None or shutil.which(CHROMEDRIVER) is None:
        pytest.fail("chromium and chromium-driver are missing: run ./scripts/install-system-deps.sh dev")


@contextmanager
def chromium(*, offline: bool = True, language: str = "en-US", extra_args: tuple[str, ...] = ()) -> Iterator[Any]:
    require_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--lang={language}", *extra_args):
        options.add_argument(arg)
    if offline:
        options.add_argument("--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def console_errors(driver: Any) -> list[str]:
    """The page's console errors so far (failed loads, CSP violations, uncaught exceptions)."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def wait_for_script(driver: Any, script: str, timeout: float = 15.0) -> Any:
    """Poll `script` in the page until it returns something truthy (a click does not wait for the next page)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for: {script}")
