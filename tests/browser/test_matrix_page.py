"""The HTML matrix page in a real headless Chromium: renders cleanly, filters, shows details,
and does not run hostile text from the data.

Needs Debian's ``chromium`` and ``chromium-driver`` (CI installs them); skipped otherwise. The page
is opened from a file (``file://``), so no network is involved.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from builders import HOSTILE, hostile_kb
from page_helpers import severe

from mlthreat.kb import KnowledgeBase
from mlthreat.kb.export import html

pytestmark = pytest.mark.browser

SCRIPT_READY = "return !document.querySelector('.filter').hidden"
VISIBLE_CELLS = """
return Array.from(document.querySelectorAll('.cell'))
    .filter((cell) => cell.checkVisibility())
    .map((cell) => [cell.closest('td').dataset.tactic, cell.dataset.id]);
"""


@pytest.fixture(scope="module")
def matrix_page(embedded: KnowledgeBase, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("page") / "matrix.html"
    path.write_text(html.render(embedded, scores={"AML.T0024.002": 1.0, "AML.T0043": 0.4}),
                    encoding="utf-8")
    return path


def _open(driver: Any, path: Path) -> list[dict[str, Any]]:
    """Load ``path`` fresh, wait for the page script, and return the console entries it made."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get("about:blank")
    driver.get_log("browser")  # drop entries of earlier pages
    driver.get(path.as_uri())
    WebDriverWait(driver, 10).until(lambda d: d.execute_script(SCRIPT_READY))
    return list(driver.get_log("browser"))




def test_page_renders_without_console_errors(driver: Any, matrix_page: Path) -> None:
    entries = _open(driver, matrix_page)
    assert not severe(entries), entries
    assert driver.title == "Adversarial Threat Landscape for AI Systems"


def test_tactic_headers_are_visible_in_matrix_order(
    driver: Any, matrix_page: Path, embedded: KnowledgeBase
) -> None:
    from selenium.webdriver.common.by import By

    _open(driver, matrix_page)
    headers = driver.find_elements(By.CSS_SELECTOR, "table.matrix thead th .tactic-name")
    assert len(headers) == 16
    assert all(h.is_displayed() for h in headers)
    assert [h.text for h in headers] == [t.name for t in embedded.tactics]


def test_filter_leaves_exactly_the_matching_cells(
    driver: Any, matrix_page: Path, embedded: KnowledgeBase
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    _open(driver, matrix_page)
    query = "extract"
    expected = Counter(
        (tactic.id, t.id)
        for tactic in embedded.tactics
        for t in embedded.techniques_of(tactic.id, subtechniques=True)
        if query in t.id.lower() or query in t.name.lower()
    )
    assert ("AML.TA0010", "AML.T0024.002") in expected  # Extract AI Model, a sub-technique
    assert ("AML.TA0010", "AML.T0024") not in expected  # ...whose parent does not match
    total = len(driver.execute_script(VISIBLE_CELLS))

    driver.find_element(By.ID, "filter-input").send_keys(query)

    visible = Counter(tuple(pair) for pair in driver.execute_script(VISIBLE_CELLS))
    assert visible == expected
    status = driver.find_element(By.ID, "filter-status").text
    assert status == f"{sum(expected.values())} of {total} cells match"
    # Columns left without a match are hidden, so the matches come into view.
    headers = driver.find_elements(By.CSS_SELECTOR, "table.matrix thead th")
    assert [h.get_attribute("id") for h in headers if h.is_displayed()] == [
        f"col-{t.id}" for t in embedded.tactics if any(tac == t.id for tac, _ in expected)
    ]
    # Selenium's own visibility check agrees on a match and on a hidden parent.
    assert driver.find_element(By.CSS_SELECTOR, '.cell[data-id="AML.T0024.002"]').is_displayed()
    assert not driver.find_element(By.CSS_SELECTOR, '.cell[data-id="AML.T0024"]').is_displayed()

    driver.find_element(By.ID, "filter-input").send_keys(Keys.BACKSPACE * len(query))
    assert len(driver.execute_script(VISIBLE_CELLS)) == total
    assert driver.find_element(By.ID, "filter-status").text == f"{total} cells"


def test_clicking_a_cell_shows_its_details_with_mitigations(
    driver: Any, matrix_page: Path, embedded: KnowledgeBase
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    _open(driver, matrix_page)
    tid = "AML.T0024.002"
    detail = driver.find_element(By.ID, tid)
    assert not detail.is_displayed()

    driver.find_element(By.CSS_SELECTOR, f'.cell[data-id="{tid}"]').click()

    assert detail.is_displayed()
    text = detail.text
    assert embedded.technique(tid).name in text
    mitigations = embedded.mitigations_of(tid)
    assert mitigations
    for m in mitigations:
        assert m.id in text and m.name in text

    # A case study's procedure is one step per item, in order.
    cs = embedded.case_studies_using(tid)[0]
    detail.find_element(By.CSS_SELECTOR, f'a[href="#{cs.id}"]').click()
    study = driver.find_element(By.ID, cs.id)
    assert study.is_displayed() and not detail.is_displayed()
    steps = study.find_elements(By.CSS_SELECTOR, "ol.procedure > li")
    assert [s.find_element(By.CSS_SELECTOR, ".step-technique .id").text for s in steps] == [
        step.technique for step in cs.procedure
    ]

    driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
    assert not study.is_displayed()


def test_hostile_text_is_shown_not_run(
    driver: Any, embedded: KnowledgeBase, tmp_path: Path
) -> None:
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    path = tmp_path / "hostile.html"
    path.write_text(html.render(hostile_kb(embedded), title=HOSTILE), encoding="utf-8")

    entries = _open(driver, path)
    driver.find_element(By.ID, "filter-input").send_keys("<img src")
    cell = driver.find_element(By.CSS_SELECTOR, '.cell[data-id="AML.T0043"]')
    assert cell.is_displayed()
    assert cell.find_element(By.CSS_SELECTOR, ".name").text == HOSTILE
    cell.click()
    assert HOSTILE in driver.find_element(By.ID, "AML.T0043").text

    assert driver.execute_script("return window.__pwned") is None
    with pytest.raises(NoAlertPresentException):
        _ = driver.switch_to.alert.text
    assert driver.title == HOSTILE
    assert not severe(entries + list(driver.get_log("browser")))
