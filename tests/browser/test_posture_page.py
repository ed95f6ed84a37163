"""The posture page in a real headless Chromium: the coverage heat map has the matrix's shape
and colours each cell by its organisation-wide status, the gap table leads with the highest
priority, the system picker shows one system, and hostile text from a profile stays text.

Needs Debian's ``chromium`` and ``chromium-driver``; skipped otherwise, and a failure when
``MLTHREAT_REQUIRE_BROWSER=1``. The page is opened from a file (``file://``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from builders import HOSTILE
from page_helpers import open_page, severe, style

from mlthreat.kb import KnowledgeBase
from mlthreat.posture import assess_posture, example_profile_text, load_profile
from mlthreat.posture.layers import organisation_view, system_slugs
from mlthreat.posture.report import all_gaps, posture_document
from mlthreat.posture.report_html import render_html

pytestmark = pytest.mark.browser

#: posture.css status colours (light scheme), as the browser computes them.
COLOURS = {"exposed": "rgb(122, 23, 16)", "uncovered": "rgb(180, 35, 24)",
           "partial": "rgb(242, 183, 5)", "covered": "rgb(26, 127, 55)"}
TEXT = {"exposed": "rgb(255, 255, 255)", "uncovered": "rgb(255, 255, 255)",
        "partial": "rgb(27, 31, 36)", "covered": "rgb(255, 255, 255)"}
NOT_APPLICABLE = "rgb(244, 246, 248)"


def _page(kb: KnowledgeBase, folder: Path, profile_text: str) -> tuple[Path, dict[str, Any]]:
    profile = folder / "profile.yaml"
    profile.write_text(profile_text, encoding="utf-8")
    doc = posture_document(assess_posture(load_profile(profile, kb), kb), kb)
    path = folder / "posture.html"
    path.write_text(render_html(doc, kb), encoding="utf-8")
    return path, doc


@pytest.fixture(scope="module")
def posture_page(embedded: KnowledgeBase, tmp_path_factory: pytest.TempPathFactory
                 ) -> tuple[Path, dict[str, Any]]:
    return _page(embedded, tmp_path_factory.mktemp("posture"), example_profile_text())








def _pick(driver: Any, value: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element(By.ID, "view-select")).select_by_value(value)


def test_page_renders_without_console_errors(driver, posture_page):
    path, _ = posture_page
    entries = open_page(driver, path)
    assert not severe(entries), entries
    assert driver.title == "ML security posture: Northwind Lending"


def test_heatmap_has_the_matrix_shape(driver, posture_page, embedded):
    from selenium.webdriver.common.by import By

    path, doc = posture_page
    open_page(driver, path)
    headers = driver.find_elements(By.CSS_SELECTOR, "table.heatmap thead th")
    assert [h.find_element(By.CSS_SELECTOR, ".tactic-name").text for h in headers] == [
        t.name for t in embedded.tactics]
    assert len(driver.find_elements(By.CSS_SELECTOR, "table.heatmap tbody td")) == len(
        embedded.tactics)
    applicable = {t["id"] for t in organisation_view(doc)}
    expected = 0
    for tactic in embedded.tactics:
        for t in embedded.techniques_of(tactic.id):
            subs = [s.id for s in embedded.subtechniques(t.id)]
            expected += 1 + (len(subs) if applicable & set(subs) else 0)
    cells = driver.find_elements(By.CSS_SELECTOR, "table.heatmap .cell[data-id]")
    assert len(cells) == expected
    shown = driver.execute_script(
        "return Array.from(document.querySelectorAll('table.heatmap .cell.applicable'), "
        "(c) => c.dataset.id)")
    assert set(shown) == applicable


def test_cells_are_coloured_by_status(driver, posture_page):
    from selenium.webdriver.common.by import By

    path, doc = posture_page
    open_page(driver, path)
    view = {t["id"]: t for t in organisation_view(doc)}
    # AML.T0015 (evasion) applies to two systems and nothing covers it on the scoring API
    assert view["AML.T0015"]["status"] == "uncovered"
    for tid in ("AML.T0015", next(k for k, v in view.items() if v["status"] == "covered"),
                next(k for k, v in view.items() if v["status"] == "partial")):
        status = view[tid]["status"]
        cell = driver.find_element(By.CSS_SELECTOR, f'table.heatmap .cell[data-id="{tid}"]')
        assert f"status-{status}" in cell.get_attribute("class").split()
        assert cell.get_attribute("data-status") == status
        assert style(driver, cell, "background-color") == COLOURS[status]
        assert style(driver, cell, "color") == TEXT[status]  # legible on its background
        assert status in cell.find_element(By.CSS_SELECTOR, ".verdict").text.lower()
        lines = cell.get_attribute("title").splitlines()
        assert len(lines) == 1 + len(view[tid]["systems"])
    plain = driver.find_element(By.CSS_SELECTOR, 'table.heatmap .cell[data-id="AML.T0000"]')
    if "AML.T0000" not in view:
        assert "applicable" not in plain.get_attribute("class").split()
        assert style(driver, plain, "background-color") == NOT_APPLICABLE


def test_gap_table_starts_with_the_highest_priority(driver, posture_page):
    from selenium.webdriver.common.by import By

    path, doc = posture_page
    open_page(driver, path)
    gaps = all_gaps(doc)
    rows = driver.find_elements(By.CSS_SELECTOR, "table.gap-table tbody tr")
    assert len(rows) == len(gaps)
    first = rows[0]
    assert first.get_attribute("data-technique") == gaps[0]["technique"]
    assert first.find_element(By.CSS_SELECTOR, ".system-name").text == gaps[0]["system"]
    assert float(first.get_attribute("data-priority")) == max(g["priority"] for g in gaps)
    priorities = [float(r.get_attribute("data-priority")) for r in rows]
    assert priorities == sorted(priorities, reverse=True)


def test_picking_a_system_shows_its_gaps(driver, posture_page):
    from selenium.webdriver.common.by import By

    path, doc = posture_page
    open_page(driver, path)
    slugs = system_slugs([s["name"] for s in doc["systems"]])
    sections = driver.find_elements(By.CSS_SELECTOR, ".system-view")
    assert len(sections) == len(doc["systems"]) and all(s.is_displayed() for s in sections)
    system = doc["systems"][2]  # help-chatbot
    _pick(driver, slugs[2])
    visible = [s for s in sections if s.is_displayed()]
    assert [s.get_attribute("data-system") for s in visible] == [slugs[2]]
    assert visible[0].find_element(By.CSS_SELECTOR, "h3").text == system["name"]
    rows = visible[0].find_elements(By.CSS_SELECTOR, "table.system-gaps tbody tr")
    assert [r.get_attribute("data-technique") for r in rows] == [
        g["technique"] for g in system["gaps"]]
    table_rows = [r for r in driver.find_elements(By.CSS_SELECTOR, "table.gap-table tbody tr")
                  if r.is_displayed()]
    assert len(table_rows) == len(system["gaps"])
    assert {r.get_attribute("data-system") for r in table_rows} == {slugs[2]}
    _pick(driver, "")
    assert all(s.is_displayed() for s in sections)
    assert not severe(list(driver.get_log("browser")))


def test_hostile_text_is_shown_not_run(driver, embedded, tmp_path):
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    text = f"""
organisation: {json.dumps(HOSTILE)}
systems:
  - name: {json.dumps(HOSTILE)}
    owner: {json.dumps(HOSTILE)}
    kind: classifier
    exposure: public-api
    returns: scores
    provenance: in-house
"""
    path, _ = _page(embedded, tmp_path, text)
    entries = open_page(driver, path)
    section = driver.find_element(By.CSS_SELECTOR, ".system-view")
    assert section.find_element(By.CSS_SELECTOR, "h3").text == HOSTILE
    assert driver.find_element(By.CSS_SELECTOR, "#view-select option:nth-child(2)").text == (
        HOSTILE)
    assert driver.find_element(By.CSS_SELECTOR, "table.gap-table .system-name").text == HOSTILE
    assert driver.title == f"ML security posture: {HOSTILE}"
    assert not driver.find_elements(By.CSS_SELECTOR, "img")
    assert len(driver.find_elements(By.TAG_NAME, "script")) == 1  # posture.js only
    _pick(driver, section.get_attribute("data-system"))
    assert section.is_displayed()
    assert driver.execute_script("return window.__pwned") is None
    with pytest.raises(NoAlertPresentException):
        _ = driver.switch_to.alert.text
    assert not severe(entries + list(driver.get_log("browser")))
