"""What the browser tests share: loading a page fresh, its console errors, computed styles."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def open_page(driver: Any, path: Path) -> list[dict[str, Any]]:
    """Load ``path`` fresh and return the console entries it made."""
    driver.get("about:blank")
    driver.get_log("browser")  # drop entries of earlier pages
    driver.get(path.as_uri())
    assert driver.execute_script("return document.readyState") == "complete"
    return list(driver.get_log("browser"))


def severe(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The console entries that are errors."""
    return [e for e in entries if e.get("level") == "SEVERE"]


def style(driver: Any, element: Any, prop: str) -> str:
    """The computed value of CSS property ``prop`` on ``element``."""
    return str(driver.execute_script(
        "return getComputedStyle(arguments[0]).getPropertyValue(arguments[1])", element, prop))
