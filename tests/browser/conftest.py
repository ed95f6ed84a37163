"""Shared by the browser tests: one headless Chromium (Debian's ``chromium`` and
``chromium-driver``) for the whole session, with a fresh profile and no background networking.

Skipped when either is missing, unless ``MLTHREAT_REQUIRE_BROWSER=1`` (scripts/test and CI sets
it), where a missing browser is a failure.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROME_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--window-size=1600,1000",
)


@pytest.fixture(scope="session")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        reason = (f"browser test needs {' and '.join(missing)} "
                  "(apt-get install chromium chromium-driver)")
        if os.environ.get("MLTHREAT_REQUIRE_BROWSER") == "1":
            pytest.fail(reason)  # scripts/test and CI: a skipped browser check is a failure
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(CHROMIUM)
    for arg in CHROME_ARGS:
        options.add_argument(arg)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    yield drv
    drv.quit()
