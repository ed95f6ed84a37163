"""What ``mlthreat assess`` prints: every ATLAS ID whole on one line at any width, what the
statuses mean, inconclusive verdicts, the next step of a run in error, a verify command, and
"run k of N" on the progress bars."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from mlthreat.assess.report import next_step, verdict
from mlthreat.cli import assess as cli_assess
from mlthreat.kb import KnowledgeBase

ID = re.compile(r"AML\.T\d{4}(?:\.\d{3})?")
RUNS = [  # (target, run, technique, status, metrics, params, reason, queries)
    ("demo-logreg", "extraction-equations", "AML.T0024.002", "succeeded",
     {"fidelity": {"value": 1.0, "unit": "fraction"}}, {"min_fidelity": 0.999}, "", 65),
    ("demo-logreg", "evasion-hopskipjump", "AML.T0043.001", "succeeded",
     {"success_rate_at_eps": {"value": 0.6, "unit": "fraction", "n": 20,
                              "ci95": [0.3605, 0.8088]}}, {"min_success_rate": 0.5}, "", 10766),
    ("demo-mlp", "membership-lira", "AML.T0024.000", "failed",
     {"auc": {"value": 0.5784, "unit": "fraction", "ci95": [0.5478, 0.6101]},
      "tpr_at_1pct_fpr": {"value": 0.0489, "unit": "fraction", "ci95": [0.0357, 0.0651]}},
     {"min_auc": 0.6, "min_tpr_at_1pct": 0.1}, "", 1350),
    ("demo-mlp", "evasion-whitebox", "AML.T0043.000", "error", {}, {},
     "ValueError: the estimator broke", 0),
    ("demo-mlp", "poisoning-backdoor", "AML.T0020", "not-applicable", {}, {},
     "needs a training entry point (--fit)", 0),
]


def _report() -> dict[str, Any]:
    findings = [{"target": t, "mitigation": None, "run": r, "technique": tid, "status": s,
                 "metrics": m, "params": p, "reason": why, "queries": q}
                for t, r, tid, s, m, p, why, q in RUNS]
    doc: dict[str, Any] = {
        "findings": findings, "comparison": [], "mitigation": None, "interrupted": False,
        "summary": {"succeeded": 2, "failed": 1, "not-applicable": 1, "error": 1},
        "queries_total": 12181, "seconds": 71.0, "atlas_version": "5.6.0", "seed": 0,
        "budget": None, "data": {"source": "scikit-learn digits (8x8, scaled to [0, 1])"},
        "targets": [{"model_id": "demo-logreg", "output_kind": "scores"},
                    {"model_id": "demo-mlp", "output_kind": "scores"}]}
    for f in findings:
        f["verdict"], f["next_step"] = verdict(f), next_step(f, doc)
    return doc


def _printed(monkeypatch: pytest.MonkeyPatch, kb: KnowledgeBase, width: int) -> list[str]:
    out = io.StringIO()
    monkeypatch.setattr(cli_assess, "console",
                        lambda: Console(file=out, width=width, highlight=False,
                                        color_system=None))
    cli_assess._print_summary(_report(), {"json": Path("r/report.json")}, kb)
    return out.getvalue().splitlines()


@pytest.mark.parametrize("width", [40, 60, 80, 100, 160])
def test_every_atlas_id_is_whole_on_one_line(monkeypatch, embedded, width):
    lines = _printed(monkeypatch, embedded, width)
    assert all(len(line) <= width for line in lines if not line.startswith("mlthreat assess"))
    for _, _, technique, *_ in RUNS:
        assert any(technique in ID.findall(line) for line in lines), (technique, lines)
    for line in lines:  # no ID cut short or carried on to the next line
        for m in re.finditer(r"AML\.[A-Z0-9.]*", line):
            assert ID.fullmatch(m.group().rstrip(".")) or re.fullmatch(
                r"AML\.M\d{4}", m.group().rstrip(".")), (m.group(), line)


def test_summary_says_what_statuses_mean_and_what_to_do(monkeypatch, embedded):
    text = "\n".join(_printed(monkeypatch, embedded, 400))
    assert ("succeeded = the attack worked against the model; failed = the model resisted it; "
            "inconclusive = the 95 % interval of the metric crosses the rule's threshold, so "
            "more samples could turn the verdict.") in text
    # HopSkipJump's 0.6 [0.36, 0.81] against 0.5 and LiRA's AUC [0.548, 0.610] against 0.6
    assert "2 succeeded, 1 failed, 1 not applicable, 1 errors, 2 of the verdicts inconclusive" \
        in text
    assert "error demo-mlp evasion-whitebox: ValueError: the estimator broke" in text
    assert ("  Next step: The run stopped on an error of its own; run it alone again to see "
            "whether it repeats: mlthreat assess --techniques evasion-whitebox -o "
            "mlthreat-report-evasion-whitebox.") in text
    assert ("To verify a mitigation of what succeeded (AML.M0002 Passive AI Output Obfuscation;"
            " report.html ranks them all):\nmlthreat assess --techniques "
            "extraction-equations,evasion-hopskipjump --mitigation round:2 -o "
            "mlthreat-report-round-2\n") in text


def test_verify_command_is_one_line_on_a_narrow_terminal(monkeypatch, embedded):
    lines = _printed(monkeypatch, embedded, 40)
    assert ("mlthreat assess --techniques extraction-equations,evasion-hopskipjump "
            "--mitigation round:2 -o mlthreat-report-round-2") in lines


def test_narrow_terminal_lists_runs_with_their_status(monkeypatch, embedded):
    lines = _printed(monkeypatch, embedded, 60)
    assert lines[:5] == ["demo-logreg", "  AML.T0024.002  succeeded",
                         "      extraction-equations: fidelity = 1",
                         "  AML.T0043.001  succeeded, inconclusive",
                         "      evasion-hopskipjump: success_rate_at_eps = 0.6"]
    assert "  AML.T0024.000  failed, inconclusive" in lines


def test_progress_says_run_k_of_n(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(cli_assess, "console", lambda: Console(file=out, width=120))
    progress = cli_assess._Progress(quiet=False)
    with progress:
        progress.run_started("demo-mlp", "membership-lira", "AML.T0024.000", 2000, index=7,
                             total=20)
        assert progress._bar.tasks[-1].description == "run 7 of 20 demo-mlp membership-lira"
        progress.run_started("[red]x", "y", "AML.T0024.000", 10)  # no place: no "run k of N"
        assert progress._bar.tasks[-1].description == "\\[red]x y"


def test_behind_a_mitigation_the_hint_is_another_one(monkeypatch, embedded):
    """After `--mitigation round:2`, suggesting round:2 again would send the user in a circle."""
    doc = _report()
    doc["mitigation"] = "round:2"
    out = io.StringIO()
    monkeypatch.setattr(cli_assess, "console",
                        lambda: Console(file=out, width=400, highlight=False,
                                        color_system=None))
    cli_assess._print_summary(doc, {"json": Path("r/report.json")}, embedded)
    text = out.getvalue()
    assert "--mitigation round:2 -o" not in text
    hint = re.search(r"To verify another mitigation of what succeeded \((AML\.M\d{4})[^)]*\):"
                     r"\n(mlthreat assess .*)\n", text)
    assert hint is not None, text
    assert "--mitigation " in hint.group(2)
