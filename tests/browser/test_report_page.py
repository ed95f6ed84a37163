"""The assessment report page in a real headless Chromium: renders cleanly, colours statuses and
matrix cells by outcome, draws its SVG plots, and does not run hostile text from the report.

Needs Debian's ``chromium`` and ``chromium-driver`` (CI installs them); skipped otherwise, and a
failure when ``MLTHREAT_REQUIRE_BROWSER=1``. The page is opened from a file (``file://``), so no
network is involved.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from builders import HOSTILE
from page_helpers import open_page, severe, style

from mlthreat.assess.finding import Finding, Metric
from mlthreat.assess.report import report_data
from mlthreat.assess.report_html import render_report
from mlthreat.assess.runner import AssessmentResult, TargetFindings
from mlthreat.kb import KnowledgeBase

pytestmark = pytest.mark.browser

#: The report's status colours (report.css, light scheme), as the browser computes them.
COLOURS = {"succeeded": "rgb(180, 35, 24)", "failed": "rgb(26, 127, 55)",
           "error": "rgb(110, 119, 129)"}
ROC_POINTS = 60
EPS_POINTS = 21


def _result(kb: KnowledgeBase, description: str = "sklearn:logreg.skops",
            reason: str = "fidelity 1.0 with 65 queries") -> AssessmentResult:
    """Two targets, every status, one technique tested against both, and every plot kind."""

    def finding(technique: str, status: str, run: str, **fields: Any) -> Finding:
        return Finding(technique, run, status,  # type: ignore[arg-type]
                       reason=fields.pop("reason", f"{status}: see metrics"),
                       rule="a stated rule", run=run,
                       tactics=tuple(t.id for t in kb.tactics_of(technique)),
                       mitigations=tuple(m.id for m in kb.mitigations_of(technique)), **fields)

    roc_x = [k / (ROC_POINTS - 1) for k in range(ROC_POINTS)]
    logreg = (
        finding("AML.T0024.002", "succeeded", "extract-equations", reason=reason,
                metrics={"fidelity": Metric(1.0, "fraction", n=450)}, queries=65,
                curves={"fidelity_vs_queries": {"x": [10, 20, 40, 65],
                                                "y": [0.5, 0.8, 0.95, 1.0],
                                                "x_label": "queries", "y_label": "fidelity"}}),
        finding("AML.T0043.001", "failed", "hopskipjump",
                metrics={"success_rate_at_eps": Metric(0.2, "fraction", n=20)}, queries=900,
                curves={"success_vs_eps": {"x": [0.05 * k for k in range(EPS_POINTS)],
                                           "y": [k / 40 for k in range(EPS_POINTS)],
                                           "x_label": "ε (L2)", "y_label": "success rate"},
                        "perturbation_l2": {"values": [0.1 * k for k in range(1, 17)],
                                            "x_label": "L2", "y_label": "samples"}}),
    )
    mlp = (
        finding("AML.T0024.002", "failed", "extract-equations",
                metrics={"fidelity": Metric(0.4, "fraction", n=450)}, queries=65),
        finding("AML.T0024.000", "succeeded", "lira",
                metrics={"auc": Metric(0.8, "fraction", n=900, ci=(0.77, 0.83))}, queries=1200,
                curves={"roc": {"x": roc_x, "y": [math.sqrt(x) for x in roc_x],
                                "x_label": "false-positive rate",
                                "y_label": "true-positive rate"}}),
        finding("AML.T0020", "not-applicable", "backdoor", reason="needs --fit"),
        finding("AML.T0043.000", "error", "fgsm", reason="ValueError: broke"),
    )
    target = {"kind": "sklearn", "input_shape": [64], "n_classes": 10, "output_kind": "scores",
              "access": "white-box", "task": "classification"}
    return AssessmentResult(
        results=(TargetFindings({**target, "model_id": "logreg", "description": description},
                                logreg),
                 TargetFindings({**target, "model_id": "mlp", "description": "MLP"}, mlp)),
        data={"source": "scikit-learn digits", "sha256": "0" * 64, "pool": 447, "eval": 450,
              "members": 900, "non_members": 450, "features": 64},
        seed=0, budget=None, total_budget=None, atlas_version=kb.version,
        started=1_700_000_000.0, seconds=4.0, queries_total=2230)


@pytest.fixture(scope="module")
def report_page(embedded: KnowledgeBase, tmp_path_factory: pytest.TempPathFactory
                ) -> tuple[Path, dict[str, Any]]:
    data = report_data(_result(embedded), embedded)
    path = tmp_path_factory.mktemp("report") / "report.html"
    path.write_text(render_report(data, embedded), encoding="utf-8")
    return path, data








def test_page_renders_without_console_errors(driver, report_page):
    path, _ = report_page
    entries = open_page(driver, path)
    assert not severe(entries), entries
    assert driver.title == "mlthreat assessment report"


def test_summary_rows_and_status_colours(driver, report_page):
    from selenium.webdriver.common.by import By

    path, data = report_page
    open_page(driver, path)
    rows = driver.find_elements(By.CSS_SELECTOR, "table.summary-table tbody tr")
    assert len(rows) == len(data["findings"]) == 6
    assert all(r.is_displayed() for r in rows)
    for row, f in zip(rows, data["findings"], strict=True):
        chip = row.find_element(By.CSS_SELECTOR, ".status")
        assert chip.text == f["status"].replace("-", " ")
        if f["status"] in COLOURS:
            assert style(driver, chip, "background-color") == COLOURS[f["status"]]
            assert style(driver, chip, "color") == "rgb(255, 255, 255)"
        else:
            assert style(driver, chip, "border-top-style") == "dashed"


def test_tested_matrix_cells_show_their_outcome(driver, report_page, embedded):
    from selenium.webdriver.common.by import By

    path, _ = report_page
    open_page(driver, path)
    expected = {"AML.T0024.002": "succeeded", "AML.T0043.001": "failed",
                "AML.T0024.000": "succeeded", "AML.T0020": "not-applicable",
                "AML.T0043.000": "error"}
    cells = driver.find_elements(By.CSS_SELECTOR, "table.matrix .cell.tested")
    seen = {}
    for cell in cells:
        outcome = cell.get_attribute("data-outcome")
        seen[cell.get_attribute("data-id")] = outcome
        assert f"outcome-{outcome}" in cell.get_attribute("class").split()
        if outcome in COLOURS:
            assert style(driver, cell, "background-color") == COLOURS[outcome]
        else:
            assert style(driver, cell, "border-top-style") == "dashed"
    assert seen == expected
    assert len(cells) == sum(len(embedded.tactics_of(t)) for t in expected)
    untested = driver.find_element(By.CSS_SELECTOR, 'table.matrix .cell[data-id="AML.T0000"]')
    assert "tested" not in untested.get_attribute("class").split()
    assert style(driver, untested, "background-color") == "rgb(244, 246, 248)"
    extract = driver.find_element(By.CSS_SELECTOR, '.cell.tested[data-id="AML.T0024.002"]')
    assert extract.get_attribute("title").splitlines()[1:] == [
        "logreg: succeeded (extract-equations)", "mlp: failed (extract-equations)"]

    # A tested cell leads to its run's details.
    detail = driver.find_element(By.ID, "finding-1")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", extract)
    extract.click()
    assert driver.execute_script("return location.hash") == "#finding-1"
    assert detail.is_displayed() and "AML.T0024.002" in detail.text


def test_svg_plots_render_with_their_points(driver, report_page):
    from selenium.webdriver.common.by import By

    path, _ = report_page
    open_page(driver, path)
    charts = driver.find_elements(By.CSS_SELECTOR, "svg.chart")
    assert len(charts) == 4  # fidelity, success against ε, histogram, ROC
    for chart in charts:
        driver.execute_script("arguments[0].scrollIntoView()", chart)
        assert chart.is_displayed()
        assert chart.size["width"] > 100 and chart.size["height"] > 60
    points = driver.execute_script(
        "return Array.from(document.querySelectorAll('svg.chart polyline.series'), "
        "(p) => [p.closest('figure').dataset.curve, p.points.numberOfItems, p.getBBox().width])")
    assert [p[:2] for p in points] == [["fidelity_vs_queries", 4], ["success_vs_eps", EPS_POINTS],
                                       ["roc", ROC_POINTS]]
    assert all(width > 0 for _, _, width in points)
    bars = driver.execute_script(
        "return Array.from(document.querySelectorAll('svg.chart rect.bar'), "
        "(r) => [Number(r.dataset.count), r.getBBox().height])")
    assert sum(count for count, _ in bars) == 16 and max(h for _, h in bars) > 0
    diagonal = driver.find_element(By.CSS_SELECTOR, 'figure[data-curve="roc"] line.diagonal')
    assert style(driver, diagonal, "stroke-dasharray") != "none"


def test_hostile_text_is_shown_not_run(driver, embedded, tmp_path):
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    data = report_data(_result(embedded, description=HOSTILE, reason=HOSTILE), embedded)
    path = tmp_path / "hostile.html"
    path.write_text(render_report(data, embedded), encoding="utf-8")

    entries = open_page(driver, path)
    target = driver.find_element(By.CSS_SELECTOR, ".targets tbody tr td")
    assert target.text == HOSTILE
    assert HOSTILE in driver.find_element(By.ID, "finding-1").text
    assert not driver.find_elements(By.CSS_SELECTOR, "img, script")
    rows = driver.find_elements(By.CSS_SELECTOR, "table.summary-table tbody tr")
    rows[0].find_element(By.TAG_NAME, "a").click()
    assert driver.execute_script("return window.__pwned") is None
    with pytest.raises(NoAlertPresentException):
        _ = driver.switch_to.alert.text
    assert not severe(entries + list(driver.get_log("browser")))


def test_tested_tactics_are_in_view_at_a_laptop_viewport(driver, report_page):
    """At 1366x768, after following the Matrix link, every tested cell and its tactic's
    heading is inside the window: the matrix was not scrolled sideways (nor down) to show it."""
    from selenium.webdriver.common.by import By

    path, _ = report_page
    driver.set_window_size(1366, 768)
    try:
        open_page(driver, path)
        driver.find_element(By.CSS_SELECTOR, 'nav.toc a[href="#matrix"]').click()
        view = driver.execute_script("return [innerWidth, innerHeight]")
        scroll = driver.execute_script(
            "const m = document.querySelector('.matrix-scroll'); "
            "return [m.scrollLeft, m.scrollTop, m.scrollWidth > m.clientWidth]")
        assert scroll == [0, 0, True]  # the matrix is wider than the window, and unscrolled
        boxes = driver.execute_script("""
            const box = (e) => { const r = e.getBoundingClientRect();
                                 return [r.left, r.top, r.right, r.bottom]; };
            return Array.from(document.querySelectorAll('table.matrix .cell.tested'), (c) => {
                const td = c.closest('td');
                const th = document.getElementById('col-' + td.dataset.tactic);
                return [c.dataset.id, td.dataset.tactic, box(c), box(th)];
            });""")
        assert {b[0] for b in boxes} == {"AML.T0024.002", "AML.T0043.001", "AML.T0024.000",
                                         "AML.T0020", "AML.T0043.000"}
        assert sorted({b[1] for b in boxes}) == ["AML.TA0001", "AML.TA0003", "AML.TA0006",
                                                  "AML.TA0010"]
        for cell_id, tactic, cell, head in boxes:
            for left, top, right, bottom in (cell, head):
                assert left >= 0 and right <= view[0], (cell_id, tactic, cell, head, view)
                assert top >= 0 and bottom <= view[1], (cell_id, tactic, cell, head, view)
        # An untested tactic is pushed to the right, out of view.
        impact = driver.find_element(By.ID, "col-AML.TA0011").rect
        assert impact["x"] > view[0]
    finally:
        driver.set_window_size(1600, 1000)


def test_reconstructed_images_and_verify_commands_show(driver, embedded, tmp_path):
    from selenium.webdriver.common.by import By

    data = report_data(_result(embedded), embedded)
    data["findings"][0]["curves"]["reconstructions"] = {
        "images": [[(k % 8) / 7 for k in range(64)], [(k // 8) / 7 for k in range(64)]],
        "shape": [8, 8], "labels": ["class 0", "class 1"], "range": [0, 1]}
    path = tmp_path / "images.html"
    path.write_text(render_report(data, embedded), encoding="utf-8")
    entries = open_page(driver, path)
    assert not severe(entries), entries
    images = driver.find_elements(By.CSS_SELECTOR,
                                  'figure[data-curve="reconstructions"] svg.pixels')
    assert len(images) == 2
    for svg in images:
        driver.execute_script("arguments[0].scrollIntoView()", svg)
        assert svg.is_displayed() and svg.size == {"width": 96, "height": 96}
    # left column black, right column white: the first row's first and last pixel
    fills = driver.execute_script(
        "const r = document.querySelectorAll('svg.pixels')[0].querySelectorAll('rect');"
        "return [getComputedStyle(r[0]).fill, getComputedStyle(r[7]).fill]")
    assert fills == ["rgb(0, 0, 0)", "rgb(255, 255, 255)"]
    first = driver.find_element(By.CSS_SELECTOR, "ol.ranking.verifiable li.ranked")
    assert first.get_attribute("data-mitigation") == "AML.M0002"
    command = first.find_element(By.CSS_SELECTOR, "code.command")
    driver.execute_script("arguments[0].scrollIntoView()", command)
    assert command.is_displayed()
    assert command.text.startswith("mlthreat assess --target sklearn:logreg.skops --data ")
