"""A SARIF rule describes the rule, not one of its results: its ``fullDescription`` was the
first result's message, naming that result's global."""

from __future__ import annotations

import pytest

from mlthreat.kb import KnowledgeBase
from mlthreat.scan.findings import TECHNIQUES, Finding
from mlthreat.scan.sarif import to_sarif


@pytest.mark.parametrize("order", [1, -1])
def test_full_description_is_the_rules_not_a_results(embedded: KnowledgeBase,
                                                     order: int) -> None:
    findings = [Finding(path=f"models/{name}.pkl", format="pickle", severity="critical",
                        rule="pickle.dangerous-global", message=f"pickle imports {symbol}: a "
                        "global that runs code", technique=TECHNIQUES["unsafe"],
                        symbol=symbol, engine="mlthreat")
                for name, symbol in (("a", "os.system"), ("b", "builtins.eval"))][::order]
    log = to_sarif(findings, kb=embedded, tool_version="0.1.0", scanned=["models"])
    [rule] = log["runs"][0]["tool"]["driver"]["rules"]
    assert rule["fullDescription"] == {"text": (
        "Rule pickle.dangerous-global of the mlthreat model scanner. Its findings are mapped to "
        "ATLAS AML.T0011.000 Unsafe AI Artifacts; each result's message says what was found "
        "and where.")}
    assert [r["message"]["text"] for r in log["runs"][0]["results"]] == [
        f.message for f in findings]
