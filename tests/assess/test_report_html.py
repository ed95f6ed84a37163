"""report.html and report.json's schema, from report documents built by hand (no attack runs):
structure, outcome colours on the matrix, plots, mitigations, escaping, self-containment."""

from __future__ import annotations

import copy
import json
import math
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from builders import changed
from jsonschema import Draft202012Validator

from mlthreat import __version__
from mlthreat.assess.finding import Finding, Metric
from mlthreat.assess.report import next_step, report_data, verdict, write_report
from mlthreat.assess.report_html import OUTCOME_ORDER, render_report
from mlthreat.assess.runner import AssessmentResult, TargetFindings
from mlthreat.kb import KnowledgeBase
from mlthreat.render import plots
from mlthreat.schemas import schema

SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(1)>'
EPS = [round(0.05 * k, 4) for k in range(21)]
ROC_X = [round(k / 39, 6) for k in range(40)]
L2 = [0.12, 0.18, 0.2, 0.25, 0.31, 0.33, 0.4, 0.41, 0.47, 0.52, 0.6, 0.74]
SCHEMA = schema("mlthreat.assessment")


# -- building reports by hand ---------------------------------------------------------------------
def _finding(kb: KnowledgeBase, technique: str, status: str, **fields: Any) -> dict[str, Any]:
    tactics = [t.id for t in kb.tactics_of(technique)]
    return {
        "target": "logreg", "mitigation": None, "run": "run", "technique": technique,
        "name": "a run", "tactics": tactics, "tactic": tactics[0] if tactics else None,
        "related_techniques": [], "status": status, "reason": f"{status} because", "rule":
        "succeeded when it works", "metrics": {}, "queries": 0, "evaluation_queries": 0,
        "seconds": 0.5, "params": {}, "mitigations": [m.id for m in kb.mitigations_of(technique)],
        "curves": {}, "evidence": {}, **fields,
    }


def _target(model_id: str, description: str) -> dict[str, Any]:
    return {"kind": "sklearn", "model_id": model_id, "description": description,
            "input_shape": [64], "n_classes": 10, "output_kind": "scores",
            "access": "white-box", "task": "classification"}


def hand_report(kb: KnowledgeBase) -> dict[str, Any]:
    """A report.json document written out directly: two targets, five techniques covering every
    status, one extraction run against both targets, and one run behind a mitigation."""
    findings = [
        _finding(kb, "AML.T0024.002", "succeeded", run="extract-equations",
                 name="Equation-solving extraction", reason="fidelity 1.0 with 65 queries " + IMG,
                 metrics={"fidelity": {"value": 1.0, "unit": "fraction", "n": 450},
                          "queries_used": {"value": 65, "unit": "queries"}},
                 queries=65, evaluation_queries=450, params={"rounds": 1, "classes": [0, 1]},
                 curves={"fidelity_vs_queries": {
                     "x": [10, 20, 40, 65], "y": [0.52, 0.81, 0.97, 1.0],
                     "x_label": "queries", "y_label": "fidelity"}}),
        _finding(kb, "AML.T0043.001", "failed", run="hopskipjump", name="HopSkipJump evasion",
                 related_techniques=["AML.T0015"],
                 metrics={"success_rate_at_eps": {"value": 0.15, "unit": "fraction", "n": 20,
                                                  "ci95": [0.05, 0.36],
                                                  "note": "misclassified within ε = 0.5"},
                          "median_l2": {"value": 0.365, "unit": "L2", "n": 12}},
                 queries=900, params={"eps": 0.5, "norm": "l2"},
                 curves={"success_vs_eps": {"x": EPS, "y": [min(1.0, k / 40) for k in range(21)],
                                            "x_label": "ε (L2)", "y_label": "success rate"},
                         "perturbation_l2": {"values": L2, "x_label": "L2",
                                             "y_label": "samples"}}),
        _finding(kb, "AML.T0024.002", "failed", target="mlp", run="extract-equations",
                 name="Equation-solving extraction", reason="not a linear model",
                 metrics={"fidelity": {"value": 0.4, "unit": "fraction", "n": 450}}, queries=65),
        _finding(kb, "AML.T0024.000", "succeeded", target="mlp", run="lira",
                 name="LiRA membership inference",
                 metrics={"auc": {"value": 0.81, "unit": "fraction", "n": 900,
                                  "ci95": [0.78, 0.84]}},
                 queries=1234, curves={"roc": {"x": ROC_X, "y": [math.sqrt(x) for x in ROC_X],
                                               "x_label": "false-positive rate",
                                               "y_label": "true-positive rate"}}),
        _finding(kb, "AML.T0020", "not-applicable", target="mlp", run="backdoor",
                 name="Backdoor poisoning", reason="needs a training entry point (--fit)",
                 mitigations=[]),
        _finding(kb, "AML.T0043.000", "error", target="mlp", run="fgsm",
                 name="Gradient evasion", reason="ValueError: the estimator broke"),
        _finding(kb, "AML.T0024.002", "failed", mitigation="round:2", run="extract-equations",
                 name="Equation-solving extraction", reason="rounded scores",
                 metrics={"fidelity": {"value": 0.61, "unit": "fraction", "n": 450}},
                 queries=65),
    ]
    names = {t.id: t.name for t in kb.tactics}
    return {
        "kind": "mlthreat.assessment", "schema_version": 1, "mlthreat_version": __version__,
        "atlas_version": kb.version, "atlas_source": kb.source,
        "created": "2025-01-02T03:04:05Z", "seed": 7, "budget": 1000, "total_budget": None,
        "interrupted": False, "seconds": 12.5, "queries_total": 2264,
        "data": {"source": "scikit-learn digits", "sha256": "ab" * 32, "pool": 447, "eval": 450,
                 "members": 900, "non_members": 450, "features": 64},
        "targets": [_target("logreg", SCRIPT), _target("mlp", "an overfit MLP")],
        "mitigation": "round:2",
        "summary": {"succeeded": 2, "failed": 2, "not-applicable": 1, "error": 1},
        "findings": findings,
        "comparison": [{"target": "logreg", "run": "extract-equations",
                        "technique": "AML.T0024.002", "metric": "fidelity", "unit": "fraction",
                        "before": 1.0, "after": 0.61, "status_before": "succeeded",
                        "status_after": "failed", "queries_before": 65, "queries_after": 65}],
        "tactic_names": {t: names[t] for f in findings for t in f["tactics"]},
        "files": {"json": "report.json", "html": "report.html", "layer": "layer.json",
                  "queries": "queries.jsonl"},
    }


def small_result(kb: KnowledgeBase) -> AssessmentResult:
    """A real AssessmentResult put together from Findings, with a mitigated re-run."""

    def tactics(t: str) -> tuple[str, ...]:
        return tuple(x.id for x in kb.tactics_of(t))

    def mitigations(t: str) -> tuple[str, ...]:
        return tuple(m.id for m in kb.mitigations_of(t))

    extract = Finding(
        "AML.T0024.002", "Equation-solving extraction", "succeeded", reason="fidelity 1.0",
        rule="fidelity ≥ 0.9", related_techniques=("AML.T0005.001",),
        tactics=tactics("AML.T0024.002"),
        metrics={"fidelity": Metric(1.0, "fraction", n=450), "queries_used": Metric(65, "queries")},
        queries=65, evaluation_queries=450, seconds=0.2, params={"rounds": 1},
        curves={"fidelity_vs_queries": {"x": [16, 65], "y": [0.7, 1.0], "x_label": "queries",
                                        "y_label": "fidelity"}},
        mitigations=mitigations("AML.T0024.002"), run="extract-equations")
    evade = Finding(
        "AML.T0043.001", "HopSkipJump evasion", "failed", reason="2 of 10 within ε",
        rule="≥ 50 % within ε", tactics=tactics("AML.T0043.001"),
        metrics={"success_rate_at_eps": Metric(0.2, "fraction", n=10, ci=(0.06, 0.51),
                                               note="within ε")},
        queries=800, curves={"success_vs_eps": {"x": [0.0, 0.5, 1.0], "y": [0.0, 0.2, 0.5]},
                             "perturbation_l2": {"values": [0.3, 0.7], "x_label": "L2",
                                                 "y_label": "samples"}},
        mitigations=mitigations("AML.T0043.001"), run="hopskipjump")
    poison = Finding("AML.T0020", "Backdoor poisoning", "not-applicable",
                     reason="needs --fit", tactics=tactics("AML.T0020"), run="backdoor")
    rounded = Finding("AML.T0024.002", "Equation-solving extraction", "failed",
                      reason="fidelity 0.6", tactics=tactics("AML.T0024.002"),
                      metrics={"fidelity": Metric(0.6, "fraction", n=450)}, queries=65,
                      run="extract-equations")
    target = _target("logreg", "sklearn:logreg.skops (LogisticRegression)")
    return AssessmentResult(
        results=(TargetFindings(target, (extract, evade, poison)),
                 TargetFindings(target, (rounded,), "round:2")),
        data={"source": "digits", "sha256": "0" * 64, "pool": 447, "eval": 450,
              "members": None, "non_members": None, "features": 64},
        seed=0, budget=None, total_budget=5000, atlas_version=kb.version, mitigation="round:2",
        started=1_700_000_000.0, seconds=3.25, queries_total=930)


# -- reading the page ---------------------------------------------------------------------------
class Node:
    def __init__(self, tag: str, attrs: dict[str, str], parent: Node | None) -> None:
        self.tag, self.attrs, self.parent = tag, attrs, parent
        self.children: list[Node | str] = []

    @property
    def classes(self) -> list[str]:
        return self.attrs.get("class", "").split()

    def iter(self) -> list[Node]:
        out: list[Node] = []
        for child in self.children:
            if isinstance(child, Node):
                out += [child, *child.iter()]
        return out

    def find_all(self, tag: str | None = None, cls: str | None = None, **attrs: str
                 ) -> list[Node]:
        return [n for n in self.iter() if (tag is None or n.tag == tag)
                and (cls is None or cls in n.classes)
                and all(n.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items())]

    def find(self, tag: str | None = None, cls: str | None = None, **attrs: str) -> Node:
        found = self.find_all(tag, cls, **attrs)
        assert found, (tag, cls, attrs)
        return found[0]

    @property
    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text for c in self.children)


class Page(HTMLParser):
    VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link",
                      "meta", "source", "track", "wbr"})

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {}, None)
        self._at = self.root
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs}, self._at)
        self._at.children.append(node)
        if tag not in self.VOID:
            self._at = node

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._at.children.append(Node(tag, {k: v or "" for k, v in attrs}, self._at))

    def handle_endtag(self, tag: str) -> None:
        node: Node | None = self._at
        while node is not None and node.tag != tag:
            node = node.parent
        assert node is not None and node.parent is not None, f"stray </{tag}>"
        self._at = node.parent

    def handle_data(self, data: str) -> None:
        self._at.children.append(data)


def errors(doc: Any) -> list[str]:
    return [f"{e.json_path}: {e.message}" for e in Draft202012Validator(SCHEMA).iter_errors(doc)]


@pytest.fixture(scope="module")
def report(embedded: KnowledgeBase) -> dict[str, Any]:
    return hand_report(embedded)


@pytest.fixture(scope="module")
def html(report: dict[str, Any], embedded: KnowledgeBase) -> str:
    return render_report(report, embedded)


@pytest.fixture(scope="module")
def page(html: str) -> Node:
    return Page(html).root


# -- the schema ---------------------------------------------------------------------------------
def test_schema_is_draft_2020_12_with_the_house_envelope():
    Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$id"] == "https://mlthreat.invalid/schemas/assessment.schema.json"
    assert SCHEMA["properties"]["kind"] == {"const": "mlthreat.assessment"}
    assert SCHEMA["properties"]["schema_version"] == {"const": 1}
    assert {"kind", "schema_version", "mlthreat_version", "atlas_version",
            "atlas_source"} <= set(SCHEMA["required"])


def test_hand_built_report_validates(report):
    assert not errors(report)


def test_report_data_of_a_real_result_validates_and_renders(embedded):
    data = report_data(small_result(embedded), embedded)
    assert not errors(data), errors(data)
    assert data["comparison"] and data["summary"]["succeeded"] == 1
    json.loads(json.dumps(data))  # plain JSON types only
    page = Page(render_report(data, embedded)).root
    rows = page.find("table", "summary-table").find("tbody").find_all("tr")
    assert [r.attrs["data-status"] for r in rows] == [f["status"] for f in data["findings"]]
    assert page.find("table", "comparison-table")


@pytest.mark.parametrize(("path", "value"), [
    (("findings", 0, "status"), "won"),
    (("findings", 0, "technique"), "AML.T24"),
    (("findings", 0, "tactic"), "exfiltration"),
    (("findings", 0, "mitigations", 0), "M0002"),
    (("findings", 0, "rule"), KeyError),
    (("findings", 0, "metrics", "fidelity", "unit"), KeyError),
    (("findings", 0, "metrics", "fidelity", "ci95"), [0.1]),
    (("findings", 0, "curves", "fidelity_vs_queries", "x", 0), "ten"),
    (("findings", 0, "queries"), -1),
    (("findings", 4, "reason"), ""),
    (("findings", 5, "reason"), ""),
    (("summary", "skipped"), 1),
    (("comparison", 0, "status_after"), "mitigated"),
    (("targets", 0, "access"), "grey-box"),
    (("data", "sha256"), "xyz"),
    (("created",), "yesterday"),
    (("tactic_names", "exfiltration"), "Exfiltration"),
    (("surprise",), True),
    (("kind",), "mlthreat.kb.matrix"),
    (("atlas_version",), KeyError),
])
def test_broken_reports_fail_the_schema(report, path, value):
    assert errors(changed(report, path, value))


# -- what the page shows ------------------------------------------------------------------------
def test_header_names_targets_data_seed_and_versions(page, report):
    header = page.find("header", "page-header")
    facts = dict(zip([n.text for n in header.find_all("dt")],
                     [n.text for n in header.find_all("dd")], strict=True))
    assert facts["Seed"] == "7"
    assert facts["Data"] == "scikit-learn digits"
    assert facts["ATLAS data"] == f"{report['atlas_version']} ({report['atlas_source']})"
    assert facts["mlthreat"] == __version__
    assert facts["Created"] == "2025-01-02T03:04:05Z"
    assert facts["Queries sent"].startswith("2,264")
    models = [r.find("th").text for r in header.find("tbody").find_all("tr")]
    assert models == ["logreg", "mlp"]
    assert not header.find_all(cls="warning")
    counts = {li.find("span", "status").text: li.find("strong").text
              for li in header.find("ul", "counts").find_all("li")}
    assert counts == {"succeeded": "2", "failed": "2", "not applicable": "1", "error": "1"}


def test_interrupted_report_warns(report, embedded):
    page = Page(render_report({**report, "interrupted": True}, embedded)).root
    assert "Interrupted" in page.find(cls="warning").text


def test_summary_has_one_row_per_run_with_status_and_headline_metric(page, report, embedded):
    rows = page.find("table", "summary-table").find("tbody").find_all("tr")
    assert len(rows) == len(report["findings"])
    for row, f in zip(rows, report["findings"], strict=True):
        assert row.attrs["data-technique"] == f["technique"]
        assert row.find("span", "status").classes == ["status", f"status-{f['status']}"]
        cells = [td.text for td in row.find_all("td")]
        assert f["technique"] in cells[2] and embedded.technique(f["technique"]).name in cells[2]
        assert cells[3] == ", ".join(report["tactic_names"][t] for t in f["tactics"])
        if f["metrics"]:
            assert next(iter(f["metrics"])) in cells[5]
        assert cells[-1] == f"{f['queries']:,}"
    assert [td.text for td in rows[0].find_all("td")][5] == "fidelity 1"
    assert [td.text for td in rows[-1].find_all("td")][1] == "round:2"


def test_every_technique_and_status_appears(page, report):
    ids = {f["technique"] for f in report["findings"]}
    assert ids == {"AML.T0024.002", "AML.T0043.001", "AML.T0024.000", "AML.T0020",
                   "AML.T0043.000"}
    details = page.find("section", id="details").find_all("article", "finding")
    assert [d.attrs["data-technique"] for d in details] == [f["technique"]
                                                            for f in report["findings"]]
    for d, f in zip(details, report["findings"], strict=True):
        assert f"finding-{f['status']}" in d.classes
        facts = dict(zip([n.text for n in d.find_all("dt")], [n.text for n in d.find_all("dd")],
                         strict=True))
        assert facts["Reason"] == f["reason"] and facts["Rule"] == f["rule"]
    assert {s for f in report["findings"] for s in [f["status"]]} == set(OUTCOME_ORDER)


def test_metrics_show_units_n_and_ci(page):
    evasion = page.find("article", id="finding-2")
    rows = evasion.find("table", "metrics-table").find("tbody").find_all("tr")
    first = [rows[0].find("th").text] + [td.text for td in rows[0].find_all("td")]
    assert first == ["success_rate_at_eps", "0.15", "fraction", "20", "[0.05, 0.36]",
                     "misclassified within ε = 0.5"]
    params = {r.find("th").text: r.find("td").text
              for r in page.find("article", id="finding-1").find("table", "params-table")
              .find_all("tr")}
    assert params == {"rounds": "1", "classes": "[0, 1]"}


def _tested_first(items: list[Any], tested: set[str]) -> list[Any]:
    return sorted(items, key=lambda i: i not in tested)


def test_matrix_cells_are_coloured_by_the_worst_outcome(page, embedded):
    matrix = page.find("table", "matrix")
    tested = matrix.find_all(cls="tested")
    outcomes: dict[str, set[str]] = {}
    for cell in tested:
        outcomes.setdefault(cell.attrs["data-id"], set()).add(cell.attrs["data-outcome"])
        assert f"outcome-{cell.attrs['data-outcome']}" in cell.classes
        assert cell.tag == "a" and cell.attrs["href"].startswith("#finding-")
    assert outcomes == {"AML.T0024.002": {"succeeded"}, "AML.T0043.001": {"failed"},
                        "AML.T0024.000": {"succeeded"}, "AML.T0020": {"not-applicable"},
                        "AML.T0043.000": {"error"}}
    # A technique under two tactics is coloured in both columns.
    poison = [c for c in tested if c.attrs["data-id"] == "AML.T0020"]
    assert len(poison) == len(embedded.tactics_of("AML.T0020")) == 2
    # Tested against two targets: the worst colours it, the tooltip lists both (not the
    # mitigated run), and it says per outcome on how many of the targets it happened.
    extract = next(c for c in tested if c.attrs["data-id"] == "AML.T0024.002")
    assert extract.attrs["title"].splitlines() == [
        "AML.T0024.002 Extract AI Model", "logreg: succeeded (extract-equations)",
        "mlp: failed (extract-equations)"]
    assert extract.attrs["href"] == "#finding-1"
    assert [o.text for o in extract.find_all("span", "outcome")] == [
        "succeeded on 1 of 2 targets", "failed on 1 of 2 targets"]
    assert "targets" not in extract.find("span", "name").text
    # One run against one target: the outcome alone.
    lira = next(c for c in tested if c.attrs["data-id"] == "AML.T0024.000")
    assert [o.text for o in lira.find_all("span", "outcome")] == ["succeeded"]
    # Every technique is drawn; sub-techniques only under a parent with a tested one. Tactics
    # with a tested technique come first and tested techniques lead their column, each group
    # in ATLAS order.
    untested = [c for c in matrix.find_all(cls="cell") if "tested" not in c.classes]
    assert all(c.tag == "span" and "data-outcome" not in c.attrs for c in untested)
    used = {t.id for tid in outcomes for t in embedded.tactics_of(tid)}
    assert used == {"AML.TA0001", "AML.TA0010", "AML.TA0003", "AML.TA0006"}
    order = _tested_first(list(embedded.tactics), {t for t in embedded.tactics if t.id in used})
    assert [th.find("span", "tactic-name").text for th in matrix.find_all("th")] == [
        t.name for t in order]
    assert [th.find("span", "tactic-name").text for th in matrix.find_all("th")][:4] == [
        "Resource Development", "Persistence", "AI Attack Staging", "Exfiltration"]
    drawn: list[str] = []
    for tactic in order:
        cells = []
        for t in embedded.techniques_of(tactic.id):
            subs = [s.id for s in embedded.subtechniques(t.id)]
            shown = _tested_first(subs, set(outcomes)) if set(subs) & set(outcomes) else []
            cells.append((t.id in outcomes or bool(shown), [t.id, *shown]))
        drawn += [i for _, ids in sorted(cells, key=lambda c: not c[0]) for i in ids]
    assert [c.attrs["data-id"] for c in matrix.find_all(cls="cell")] == drawn
    assert drawn[:2] == ["AML.T0020", "AML.T0002"]  # Resource Development: tested first
    assert {"AML.T0024.001", "AML.T0043.002"} <= set(drawn)  # untested siblings, listed
    assert not any(d.startswith("AML.T0010.") for d in drawn)
    supply_chain = matrix.find(cls="cell", data_id="AML.T0010")
    folded = len(embedded.subtechniques("AML.T0010"))
    assert supply_chain.find("span", "folded").text == f"+{folded} sub-techniques"


def _matrix_cell(report: dict[str, Any], kb: KnowledgeBase, findings: list[dict[str, Any]],
                 technique: str) -> Node:
    doc = {**report, "findings": findings, "comparison": []}
    return Page(render_report(doc, kb)).root.find("table", "matrix").find(
        cls="tested", data_id=technique)


def test_cell_counts_targets_per_outcome(report, embedded):
    def run(target: str, status: str, run: str = "evasion-hopskipjump", **more: Any
            ) -> dict[str, Any]:
        return _finding(embedded, "AML.T0043.001", status, target=target, run=run, **more)

    both_failed = _matrix_cell(report, embedded, [run("logreg", "failed"),
                                                  run("mlp", "failed")], "AML.T0043.001")
    assert [o.text for o in both_failed.find_all("span", "outcome")] == [
        "failed on 2 of 2 targets"]
    # Two runs on one target: counted in runs; three targets, one run each erroring.
    one_target = _matrix_cell(report, embedded, [
        run("logreg", "succeeded"), run("logreg", "failed", run="evasion-boundary")],
        "AML.T0043.001")
    assert [o.text for o in one_target.find_all("span", "outcome")] == [
        "succeeded in 1 of 2 runs", "failed in 1 of 2 runs"]
    three = _matrix_cell(report, embedded, [
        run("a", "succeeded"), run("b", "error"), run("c", "failed"),
        run("a", "failed", run="evasion-boundary")], "AML.T0043.001")
    assert three.attrs["data-outcome"] == "succeeded"
    assert [(o.attrs["data-status"], o.text) for o in three.find_all("span", "outcome")] == [
        ("succeeded", "succeeded on 1 of 3 targets"), ("error", "error on 1 of 3 targets"),
        ("failed", "failed on 2 of 3 targets")]


def _points(polyline: Node) -> list[tuple[float, float]]:
    return [tuple(map(float, p.split(","))) for p in polyline.attrs["points"].split()]


def test_line_plots_draw_every_point(page, report):
    expected = {"finding-1": ("fidelity_vs_queries", 4), "finding-2": ("success_vs_eps", 21),
                "finding-4": ("roc", 40)}
    for anchor, (curve, n) in expected.items():
        figure = page.find("article", id=anchor).find("figure", data_curve=curve)
        svg = figure.find("svg")
        assert svg.attrs["role"] == "img" and svg.attrs["data-count"] == str(n)
        points = _points(svg.find("polyline", "series"))
        assert len(points) == n
        assert all(0 <= x <= 480 and 0 <= y <= 300 for x, y in points)
        assert [x for x, _ in points] == sorted(x for x, _ in points)
        labels = [t.text for t in svg.find_all("text", "axis-label")]
        source = next(f for f in report["findings"] if curve in f["curves"])["curves"][curve]
        assert labels == [source["x_label"], source["y_label"]]
        assert len(svg.find("g", "x-ticks").find_all("text")) >= 3
        assert len(svg.find("g", "y-ticks").find_all("text")) >= 3
    roc = page.find("article", id="finding-4").find("svg")
    diagonal = roc.find("line", "diagonal")
    assert float(diagonal.attrs["x1"]) < float(diagonal.attrs["x2"])
    assert float(diagonal.attrs["y1"]) > float(diagonal.attrs["y2"])
    assert [t.text for t in roc.find("g", "x-ticks").find_all("text")] == [
        "0.0", "0.2", "0.4", "0.6", "0.8", "1.0"]
    assert not page.find("article", id="finding-1").find_all("line", "diagonal")


def test_perturbation_histogram_counts_every_sample(page):
    svg = page.find("article", id="finding-2").find("figure", data_curve="perturbation_l2")
    bars = svg.find_all("rect", "bar")
    assert len(bars) == math.ceil(math.sqrt(len(L2)))
    assert sum(int(b.attrs["data-count"]) for b in bars) == len(L2)
    assert all(float(b.attrs["height"]) >= 0 for b in bars)
    assert [t.text for t in svg.find_all("text", "axis-label")] == ["L2", "samples"]


def test_histogram_accepts_a_plain_list_and_skips_bad_values(report, embedded):
    doc = copy.deepcopy(report)
    doc["findings"][1]["curves"] = {"perturbation_l2": [0.5, 0.5, 0.5],
                                    "success_vs_eps": {"x": [], "y": []}}
    assert not errors(doc)
    article = Page(render_report(doc, embedded)).root.find("article", id="finding-2")
    bars = article.find("figure", data_curve="perturbation_l2").find_all("rect", "bar")
    assert sum(int(b.attrs["data-count"]) for b in bars) == 3
    empty = article.find("figure", data_curve="success_vs_eps")
    assert not empty.find_all("svg") and "No points" in empty.text


def test_mitigations_are_ranked_verifiable_first_with_commands(page, report, embedded):
    section = page.find("section", id="mitigations")
    ranked = section.find_all("li", "ranked")
    # AML.T0024.002 and AML.T0024.000 succeeded; both link the same four mitigations.
    assert [(li.attrs["data-mitigation"], li.attrs["data-verifiable"], li.attrs["data-rank"])
            for li in ranked] == [("AML.M0002", "yes", "1"), ("AML.M0004", "yes", "2"),
                                  ("AML.M0019", "no", "3"), ("AML.M0024", "no", "4")]
    assert section.find("ol", "verifiable").find_all("li", "ranked") == ranked[:2]
    assert section.find("ol", "others").attrs["start"] == "3"
    commands = {li.attrs["data-spec"]: li.find("code", "command").text
                for li in ranked[0].find_all("li") + ranked[1].find_all("li")}
    base = ("mlthreat assess --target TARGET --data 'scikit-learn digits' --seed 7 --budget 1000 "
            "--techniques extract-equations,lira")
    assert commands == {
        "round:2": f"{base} --mitigation round:2 -o mlthreat-report-round-2",
        "top1": f"{base} --mitigation top1 -o mlthreat-report-top1",
        "noise:0.05": f"{base} --mitigation noise:0.05 -o mlthreat-report-noise-0.05",
        "reverse-sigmoid:0.5": f"{base} --mitigation reverse-sigmoid:0.5 -o "
                               "mlthreat-report-reverse-sigmoid-0.5",
        # half the 65 queries of the cheapest run, so the limit bites
        "query-limit:32": f"{base} --mitigation query-limit:32 -o mlthreat-report-query-limit-32",
    }
    assert "below the 65 queries" in ranked[1].find("span", "spec").text
    assert not ranked[2].find_all("ul", "commands")
    for li in ranked:
        assert "Addresses 2 techniques that succeeded" in li.find("p", "meta").text
        links = [a.attrs["href"] for a in li.find("p", "meta").find_all("a")]
        assert links == ["#finding-1", "#finding-4"]
        assert embedded.mitigation(li.attrs["data-mitigation"]).name in li.find("h4").text
    # Techniques that only failed or did not apply are not listed.
    assert "AML.T0043.001" not in section.text and "AML.T0020" not in section.text
    # A run's own card lists its mitigations, the verifiable ones first.
    detail = page.find("article", id="finding-1")
    assert [n.text for n in detail.find("ul", "inline-list").find_all("span", "id")] == [
        "AML.M0002", "AML.M0004", "AML.M0024", "AML.M0019"]


def test_before_after_table_only_with_a_comparison(page, report, embedded):
    rows = page.find("table", "comparison-table").find("tbody").find_all("tr")
    assert len(rows) == 1
    cells = [td.text for td in rows[0].find_all("td")]
    assert cells[3:6] == ["1", "0.61", "-0.39"]
    assert [s.text for s in rows[0].find_all("span", "status")] == ["succeeded", "failed"]
    plain = Page(render_report({**report, "comparison": [], "mitigation": None}, embedded)).root
    assert not plain.find_all("section", id="comparison")


def test_hostile_text_is_escaped(html, page):
    assert SCRIPT not in html and IMG not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in html
    assert not page.find_all("script") and not page.find_all("img")
    assert not [n for n in page.iter() if any(a.startswith("on") for a in n.attrs)]
    assert page.find("header", "page-header").find("tbody").find("td").text == SCRIPT
    assert page.find("article", id="finding-1").text.count(IMG) == 1


def test_page_loads_nothing(html, page):
    csp = page.find("meta", http_equiv="Content-Security-Policy").attrs["content"]
    assert "default-src 'none'" in csp and "script-src 'none'" in csp
    for node in page.iter():
        for name, value in node.attrs.items():
            if name in ("src", "srcset", "data", "poster", "action", "formaction"):
                pytest.fail(f"<{node.tag} {name}={value!r}>")
            if name == "href":
                assert value.startswith("#") or value == "data:,", (node.tag, value)
            if name == "xmlns":
                assert value == "http://www.w3.org/2000/svg"
    assert not re.search(r"url\(|@import", html)
    assert [n.tag for n in page.iter() if n.tag in ("link", "iframe", "object", "embed")] == [
        "link"]  # the empty data: favicon only


def test_same_report_same_page(report, embedded, html):
    assert render_report(copy.deepcopy(report), embedded) == html


def test_report_without_findings(report, embedded):
    doc = {**report, "findings": [], "comparison": [], "tactic_names": {},
           "summary": dict.fromkeys(OUTCOME_ORDER, 0)}
    assert not errors(doc)
    page = Page(render_report(doc, embedded)).root
    assert "No technique run finished" in page.find("table", "summary-table").text
    assert not page.find("table", "matrix").find_all(cls="tested")


def _tick_labels(plot: dict[str, Any], axis: str = "xticks") -> list[str]:
    return [t["label"] for t in plot[axis]]


def test_axes_run_between_round_numbers():
    def line(xs: list[float], ys: list[float] | None = None, **kw: Any) -> dict[str, Any]:
        return plots.line_plot(xs, ys or [0.5] * len(xs), plot_id="p", title="t", x_label="x",
                               y_label="y", **kw)

    assert _tick_labels(line([16, 1030])) == ["0", "250", "500", "750", "1,000", "1,250"]
    assert _tick_labels(line([0.12, 0.74])) == ["0.0", "0.2", "0.4", "0.6", "0.8"]
    assert _tick_labels(line([0.0, 1.25])) == ["0.00", "0.25", "0.50", "0.75", "1.00", "1.25"]
    assert _tick_labels(line([-0.2, 0.3]))[:3] == ["-0.2", "-0.1", "0.0"]
    assert _tick_labels(line([0, 1], [0, 0.3]), "yticks") == ["0.0", "0.2", "0.4", "0.6",
                                                                  "0.8", "1.0"]  # fractions
    assert _tick_labels(line([0, 1], [-2, 7]), "yticks") == ["-2", "0", "2", "4", "6", "8"]
    single = line([5.0])
    assert single["count"] == 1 and len(single["points"].split()) == 1
    counts = plots.histogram([1, 1, 1, 2], plot_id="h", title="t", x_label="x")
    assert _tick_labels(counts, "yticks") == ["0", "1", "2", "3"]  # whole numbers of samples
    assert [b["count"] for b in counts["bars"]] == [3, 1]
    nan = plots.histogram([math.nan, math.inf, "x"], plot_id="h", title="t", x_label="x")
    assert nan["kind"] == "empty" and not nan["bars"]


def test_write_report_writes_the_page(tmp_path: Path, embedded):
    paths = write_report(small_result(embedded), tmp_path, embedded)
    data = json.loads(paths["json"].read_text("utf-8"))
    assert not errors(data)
    assert paths["html"].read_text("utf-8") == render_report(data, embedded)


# -- inconclusive verdicts, next steps, images ---------------------------------------------------
def _with_advice(report: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(report)
    for f in doc["findings"]:
        f["verdict"], f["next_step"] = verdict(f), next_step(f, doc)
    return doc


def test_inconclusive_verdict_is_marked_everywhere(report, embedded):
    doc = copy.deepcopy(report)
    # 12 of 20 within ε against a 50 % rule: the interval [0.36, 0.81] crosses 0.5.
    doc["findings"][1].update(status="succeeded", params={"min_success_rate": 0.5},
                              metrics={"success_rate_at_eps": {
                                  "value": 0.6, "unit": "fraction", "n": 20,
                                  "ci95": [0.3605, 0.8088]}})
    doc["findings"][3]["params"] = {"min_auc": 0.6, "min_tpr_at_1pct": 0.1}  # 0.81 [0.78, 0.84]
    doc["findings"][3]["metrics"]["tpr_at_1pct_fpr"] = {"value": 0.05, "unit": "fraction",
                                                        "n": 900, "ci95": [0.03, 0.08]}
    doc = _with_advice(doc)
    assert not errors(doc), errors(doc)
    assert doc["findings"][1]["verdict"]["inconclusive"] is True
    assert doc["findings"][3]["verdict"]["inconclusive"] is False
    page = Page(render_report(doc, embedded)).root
    rows = page.find("table", "summary-table").find("tbody").find_all("tr")
    assert [[s.text for s in r.find_all("span", "status")] for r in rows[:4]] == [
        ["succeeded"], ["succeeded", "inconclusive"], ["failed"], ["succeeded"]]
    evasion = page.find("article", id="finding-2")
    facts = dict(zip([n.text for n in evasion.find_all("dt")],
                     [n.text for n in evasion.find_all("dd")], strict=True))
    assert facts["Verdict"] == (
        "inconclusive: the 95 % interval of success_rate_at_eps [0.36, 0.809] crosses the "
        "threshold 0.5, so the true value may lie on either side; measure on more samples "
        "before relying on this verdict")
    lira = page.find("article", id="finding-4")
    assert "holds across the 95 % intervals of auc" in lira.text
    assert not lira.find_all("span", "status-inconclusive")
    cell = page.find("table", "matrix").find(cls="tested", data_id="AML.T0043.001")
    assert "inconclusive" in cell.classes
    assert [o.text for o in cell.find_all("span", "outcome")] == ["succeeded, inconclusive"]
    assert cell.attrs["title"].splitlines()[1] == (
        "logreg: succeeded, inconclusive (hopskipjump)")
    count = page.find("ul", "counts").find("li", "inconclusive-count")
    assert count.find("strong").text == "1"


def test_error_run_shows_its_next_step(report, embedded):
    doc = _with_advice(report)
    page = Page(render_report(doc, embedded)).root
    error = page.find("article", id="finding-6")
    step = error.find("dd", "next-step").text
    assert step == (
        "The run stopped on an error of its own; run it alone again to see whether it repeats: "
        "mlthreat assess --target TARGET --data 'scikit-learn digits' --seed 7 --budget 1000 "
        "--techniques fgsm -o mlthreat-report-fgsm. If it does, change its parameters (--param "
        "fgsm.NAME=VALUE; `mlthreat assess --list` shows whether it applies) or report the "
        "reason above with report.json.")
    assert len(page.find_all("dd", "next-step")) == 1  # only the run in error


def test_reconstructed_images_are_drawn_inline(report, embedded):
    doc = copy.deepcopy(report)
    images = [[k / 63 for k in range(64)], [1.0 - k / 63 for k in range(64)], [0.5] * 64]
    doc["findings"][0]["curves"] = {
        "reconstructions": {"images": images, "shape": [8, 8],
                            "labels": ["class 0", SCRIPT, 2], "range": [0, 1]},
        "mse_per_class": {"x": [0, 1, 2], "y": [0.01, 0.02, 0.015],
                          "baseline": [0.03, 0.03, 0.04], "x_label": "class",
                          "y_label": "MSE to class mean"}}
    assert not errors(doc), errors(doc)
    html = render_report(doc, embedded)
    assert SCRIPT not in html
    article = Page(html).root.find("article", id="finding-1")
    figure = article.find("figure", data_curve="reconstructions")
    svgs = figure.find_all("svg", "pixels")
    assert len(svgs) == 3 and figure.find("ul", "image-grid").attrs["data-count"] == "3"
    for svg in svgs:
        assert svg.attrs["viewbox"] == "0 0 8 8" and svg.attrs["role"] == "img"
        assert len(svg.find_all("rect")) == 64
    first = svgs[0].find_all("rect")
    assert (first[0].attrs["fill"], first[-1].attrs["fill"]) == ("rgb(0,0,0)",
                                                                 "rgb(255,255,255)")
    assert (first[9].attrs["x"], first[9].attrs["y"]) == ("1", "1")
    assert {r.attrs["fill"] for r in svgs[2].find_all("rect")} == {"rgb(128,128,128)"}
    assert [s.text for s in figure.find_all("span", "image-label")] == ["class 0", SCRIPT, "2"]
    assert "Plots and images" in article.text
    line = article.find("figure", data_curve="mse_per_class").find("svg")
    assert len(_points(line.find("polyline", "baseline"))) == 3
    assert len(_points(line.find("polyline", "series"))) == 3


def test_image_grid_shapes_and_bad_input():
    rgb = plots.image_grid([[1.0] * 12 + [0.0] * 12 + [0.5] * 12], [3, 3, 4], plot_id="i",
                           title="t")  # channels first: their mean
    assert rgb["kind"] == "images"
    assert {(p["x"], p["y"]) for p in rgb["images"][0]["pixels"]} == {
        (c, r) for r in range(3) for c in range(4)}
    assert {p["fill"] for p in rgb["images"][0]["pixels"]} == {"rgb(128,128,128)"}
    big = plots.image_grid([[float(k % 2) for k in range(64 * 64)]], [64, 64], plot_id="b",
                           title="t")  # averaged down to 32 x 32
    assert big["images"][0]["side_w"] == 32 and len(big["images"][0]["pixels"]) == 32 * 32
    wrong = plots.image_grid([[0.0] * 10, [math.nan] * 64], [8, 8], plot_id="w", title="t")
    assert wrong["kind"] == "empty" and not wrong["images"]


def test_target_notes_trust_parity_and_domain_are_shown_escaped(report, embedded):
    import copy

    doc = copy.deepcopy(report)
    doc["targets"][0].update(
        notes=["scores have negative values: read as logits and softmaxed",
               "<script>alert(1)</script> answered"],
        trusted_types=["sklearn.tree._tree.Tree"],
        parity={"reference": "sklearn:/m/model.skops", "rows": 285, "agree": 284,
                "rate": 0.996491, "ci95": [0.98, 1.0]})
    doc["data"]["domain"] = {"source": "inferred from the data",
                             "kinds": {"integer": 58, "constant": 4, "binary": 2},
                             "one_hot": []}
    assert not errors(doc)
    html = render_report(doc, embedded)
    assert "<script>alert(1)</script>" not in html
    header = Page(html).root.find("header", "page-header")
    notes = [li.text for li in header.find("tr", "target-notes").find_all("li")]
    assert notes == [
        "scores have negative values: read as logits and softmaxed",
        "<script>alert(1)</script> answered",
        "Types trusted beyond skops' defaults: sklearn.tree._tree.Tree",
        "Parity with sklearn:/m/model.skops: 284 of 285 evaluation rows get the same label; "
        "every finding is measured on logreg"]
    facts = dict(zip([n.text for n in header.find_all("dt")],
                     [n.text for n in header.find_all("dd")], strict=True))
    assert facts["Feature domain"] == ("58 integer, 4 constant, 2 binary columns (inferred "
                                       "from the data)")
    models = [r.find_all("th")[0].text for r in header.find("tbody").find_all("tr")
              if r.find_all("th")]
    assert models == ["logreg", "mlp"]
