"""mlthreat.posture: applicability, coverage, priority, evidence, errors, rules, diff, example.

Profiles are small YAML files written by each test; evidence documents are built by hand in
the shapes their JSON schemas define (and checked against those schemas)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator
from posture_helpers import (
    assessment_report,
    detection_evaluation,
    scan_report,
    write_json,
    write_profile,
)

from mlthreat.errors import UsageError
from mlthreat.kb import KnowledgeBase
from mlthreat.posture import (
    ProfileError,
    assess_posture,
    diff_posture,
    example_profile_text,
    load_profile,
    load_rules,
    parse_profile,
)
from mlthreat.posture.compute import likelihood
from mlthreat.schemas import schema

# A public scoring API: 2 mitigations of AML.T0024.002 declared (implemented + partial), one
# planned, and a detection scored 3 for extraction.
SCORING = """
organisation: Test Org
systems:
  - name: scoring
    owner: team-a
    kind: classifier
    exposure: public-api
    returns: [scores]
    training_data: [curated]
    provenance: in-house
    telemetry: [model-registry]
    mitigations:
      - id: AML.M0004
        status: implemented
      - id: AML.M0002
        status: partial
      - id: AML.M0015
        status: planned
    detections:
      - name: volume alert
        techniques: [AML.T0024.002]
        score: 3
    evidence: {evidence}
"""

# An internal regressor: the fewest rules fire.
INTERNAL = """
organisation: Test Org
systems:
  - name: internal
    owner: team-b
    kind: regressor
    exposure: internal
    returns: scores
    training_data: curated
    provenance: in-house
"""


def scoring(tmp_path: Path, kb: KnowledgeBase, evidence: str = "[]"):
    path = write_profile(tmp_path, SCORING.replace("{evidence}", evidence))
    return load_profile(path, kb)


# -- applicability ---------------------------------------------------------------------------
def test_applicability_of_an_internal_regressor_is_exactly_the_rules_that_fire(
        tmp_path: Path, embedded: KnowledgeBase) -> None:
    profile = load_profile(write_profile(tmp_path, INTERNAL), embedded)
    system = assess_posture(profile, embedded).system("internal")
    rules = {t.id: [a.rule for a in t.applicability] for t in system.techniques}
    assert rules == {
        "AML.T0007": ["artifacts-worth-stealing"], "AML.T0035": ["artifacts-worth-stealing"],
        "AML.T0025": ["artifacts-worth-stealing"],
        "AML.T0048.004": ["artifacts-worth-stealing"],
        "AML.T0012": ["operator-accounts"], "AML.T0055": ["operator-accounts"],
        "AML.T0010.004": ["operator-accounts"], "AML.T0036": ["internal-service"],
        "AML.T0043.002": ["predictive-model-proxy"], "AML.T0005": ["predictive-model-proxy"],
        "AML.T0010.001": ["in-house-toolchain"], "AML.T0011.001": ["in-house-toolchain"],
    }


def test_public_scores_make_inference_api_exfiltration_applicable(
        tmp_path: Path, embedded: KnowledgeBase) -> None:
    system = assess_posture(scoring(tmp_path, embedded), embedded).system("scoring")
    for tid in ("AML.T0024.000", "AML.T0024.001", "AML.T0024.002"):
        assert "external-scores" in [a.rule for a in system.technique(tid).applicability]
    # no LLM technique for a classifier, no poisoning for curated data
    for tid in ("AML.T0051.000", "AML.T0020"):
        with pytest.raises(KeyError):
            system.technique(tid)


def test_llm_agent_rag_hub_and_user_data_rules(tmp_path: Path, embedded: KnowledgeBase) -> None:
    text = """
    organisation: O
    systems:
      - {name: bot, owner: o, kind: agent, tools: [email], exposure: public-api,
         returns: text, training_data: user-contributed, provenance: [public-hub]}
    """
    system = assess_posture(load_profile(write_profile(tmp_path, text), embedded),
                            embedded).system("bot")
    ids = {t.id for t in system.techniques}
    assert {"AML.T0051.000", "AML.T0054", "AML.T0053", "AML.T0086", "AML.T0010.005",
            "AML.T0020", "AML.T0010.003", "AML.T0011.000"} <= ids
    assert "AML.T0070" not in ids  # RAG poisoning needs kind rag
    # every technique posture names only knowledge-base techniques
    assert all(t.id in embedded for t in system.techniques)


# -- coverage and priority -------------------------------------------------------------------
def test_coverage_and_priority_from_declared_claims(tmp_path: Path,
                                                    embedded: KnowledgeBase) -> None:
    system = assess_posture(scoring(tmp_path, embedded), embedded).system("scoring")
    t = system.technique("AML.T0024.002")
    # M0004 implemented (1.0) + M0002 partial (0.5) = 1.5 / 2
    assert t.mitigation_coverage == 0.75
    declared = {m.id: m.status for m in t.mitigations if m.status}
    assert declared == {"AML.M0004": "implemented", "AML.M0002": "partial"}
    # declared detection 3/5; C = 1 - 0.25 * (1 - 0.5 * 0.6) = 0.825
    assert (t.detection_source, t.detection_score, t.detection_coverage) == ("declared", 3, 0.6)
    assert t.coverage == 0.825 and t.status == "covered"
    # realized (1.0), 1 case study of at most 28: L = 0.6 + 0.4 * ln 2 / ln 29
    assert t.likelihood == round(0.6 + 0.4 * math.log(2) / math.log(29), 3) == 0.682
    assert t.exposure_weight == 1.0
    assert t.priority == 11.9 and t.band == "low"

    # membership inference: feasible, no case study; M0004 and M0002 link to it as well
    m = system.technique("AML.T0024.000")
    assert (m.mitigation_coverage, m.detection_coverage, m.coverage) == (0.75, 0.0, 0.75)
    assert m.likelihood == 0.24 and m.priority == 6.0 and m.status == "covered"

    # nothing declared against exfiltration by cyber means: uncovered, full gap
    p = system.technique("AML.T0025")
    assert (p.mitigation_coverage, p.coverage, p.status) == (0.0, 0.0, "uncovered")
    assert p.priority == round(100 * p.likelihood, 1)


def test_exposure_weights_priority(tmp_path: Path, embedded: KnowledgeBase) -> None:
    profile = load_profile(write_profile(tmp_path, INTERNAL), embedded)
    t = assess_posture(profile, embedded).system("internal").technique("AML.T0012")
    like, maturity, n = likelihood(embedded, "AML.T0012")
    assert (maturity, n) == ("realized", 8)
    assert t.exposure_weight == 0.5
    assert t.priority == round(100 * like * 0.5, 1) == 43.0
    assert t.band == "high"


def test_gaps_name_missing_mitigations_and_verifying_commands(
        tmp_path: Path, embedded: KnowledgeBase) -> None:
    text = SCORING.replace("{evidence}", "[]").split("    mitigations:")[0] + (
        "    mitigations: [{id: AML.M0002, status: planned}, {id: AML.M0004, status: partial}]\n")
    system = assess_posture(load_profile(write_profile(tmp_path, text), embedded),
                            embedded).system("scoring")
    gaps = {g.technique: g for g in system.gaps}
    assert [g.priority for g in system.gaps] == sorted((g.priority for g in system.gaps),
                                                       reverse=True)
    evasion = gaps["AML.T0043.001"]
    assert (evasion.status, evasion.coverage) == ("partial", 0.25)
    assert [(m.id, m.status) for m in evasion.mitigations][:4] == [
        ("AML.M0002", "planned"), ("AML.M0003", None), ("AML.M0004", "partial"),
        ("AML.M0006", None)]
    assert [(v.tool, v.command, v.ready) for v in evasion.verify] == [
        ("assess", "mlthreat assess --target TARGET --techniques AML.T0043.001", True),
        ("detect", "mlthreat detect run INFERENCE_LOGS", False),  # no inference logs kept
    ]
    assert gaps["AML.T0010.001"].verify == ()


# -- evidence overrides claims ---------------------------------------------------------------
def test_assessment_that_succeeded_marks_technique_exposed_despite_mitigations(
        tmp_path: Path, embedded: KnowledgeBase) -> None:
    report = assessment_report(embedded, [("AML.T0024.002", "succeeded"),
                                          ("AML.T0024.000", "failed"),
                                          ("AML.T0020", "succeeded")],
                               mitigated=[("AML.T0024.001", "succeeded")])
    Draft202012Validator(schema("mlthreat.assessment")).validate(report)
    (tmp_path / "runs").mkdir()
    write_json(tmp_path / "runs", "report.json", report)
    system = assess_posture(scoring(tmp_path, embedded, "[runs/report.json]"),
                            embedded).system("scoring")
    t = system.technique("AML.T0024.002")
    assert t.status == "exposed"
    assert t.mitigation_coverage == 0.75  # the claim is still shown...
    assert t.coverage == 0.3              # ...but only the detection counts: 0.5 * 0.6
    assert t.priority == round(100 * 0.682 * 0.7, 1) == 47.7
    assert [(o.outcome, o.evidence_kind) for o in t.evidence] == [
        ("exposed", "mlthreat.assessment")]
    assert "AML.T0024.002" in [g.technique for g in system.gaps]
    # a failed run is recorded but changes nothing
    m = system.technique("AML.T0024.000")
    assert (m.status, [o.outcome for o in m.evidence]) == ("covered", ["resisted"])
    # a run behind a mitigation says nothing about the deployed system
    assert system.technique("AML.T0024.001").evidence == ()
    # an attack shown to work applies even though no rule made it applicable
    poison = system.technique("AML.T0020")
    assert [a.rule for a in poison.applicability] == ["evidence"]
    assert poison.status == "exposed"


def test_successful_evasion_run_shows_the_model_evaded(tmp_path: Path,
                                                       embedded: KnowledgeBase) -> None:
    report = assessment_report(embedded, [("AML.T0043.001", "succeeded")])
    (tmp_path / "runs").mkdir()
    write_json(tmp_path / "runs", "report.json", report)
    system = assess_posture(scoring(tmp_path, embedded, "[runs/report.json]"),
                            embedded).system("scoring")
    for tid in ("AML.T0043.001", "AML.T0015"):
        t = system.technique(tid)
        assert t.status == "exposed"
        assert [o.detail for o in t.evidence] == ["succeeded: run-AML.T0043.001 against demo"]
    gap = {g.technique: g for g in system.gaps}["AML.T0015"]
    assert [v.command for v in gap.verify if v.tool == "assess"] == [
        "mlthreat assess --target TARGET --techniques AML.T0043"]


def test_measured_detection_replaces_declared_score(tmp_path: Path,
                                                    embedded: KnowledgeBase) -> None:
    doc = detection_evaluation(embedded, {
        "prada": {"AML.T0024.002": 0.9, "benign": 0.1},
        "volume": {"AML.T0024.002": 1.0, "benign": 0.5, "AML.T0043.001": 0.4},
    })
    Draft202012Validator(schema("mlthreat.detect.evaluation")).validate(doc)
    write_json(tmp_path, "eval.json", doc)
    system = assess_posture(scoring(tmp_path, embedded, "[eval.json]"),
                            embedded).system("scoring")
    t = system.technique("AML.T0024.002")
    # prada 0.9 * (1 - 0.1) = 0.81 beats volume 1.0 * (1 - 0.5) = 0.5; declared 3/5 is replaced
    assert (t.detection_source, t.detection_coverage, t.detection_score) == (
        "measured", 0.81, 3)
    assert t.evidence[0].detector == "prada"
    assert t.coverage == round(1 - 0.25 * (1 - 0.405), 3) == 0.851
    # a low measurement replaces a claim too: AML.T0043.001 had none declared
    e = system.technique("AML.T0043.001")
    assert (e.detection_source, e.detection_coverage) == ("measured", 0.2)


def test_scan_findings_mark_technique_exposed(tmp_path: Path, embedded: KnowledgeBase) -> None:
    text = """
    organisation: O
    systems:
      - name: hub
        owner: o
        kind: classifier
        exposure: internal
        returns: labels
        provenance: public-hub
        mitigations: [{id: AML.M0014, status: implemented}, {id: AML.M0016, status: implemented}]
        evidence: [scan.json]
    """
    write_json(tmp_path, "scan.json", scan_report([("AML.T0011.000", "high"),
                                                    ("AML.T0018.002", "info")]))
    system = assess_posture(load_profile(write_profile(tmp_path, text), embedded),
                            embedded).system("hub")
    unsafe = system.technique("AML.T0011.000")
    assert unsafe.mitigation_coverage == 1.0 and unsafe.status == "exposed"
    assert unsafe.coverage == 0.0
    assert "worst high" in unsafe.evidence[0].detail
    # an informational finding is not exposure
    assert system.technique("AML.T0018.002").status != "exposed"
    gap = next(g for g in system.gaps if g.technique == "AML.T0011.000")
    assert ("scan", "mlthreat scan MODEL_FILES") in [(v.tool, v.command) for v in gap.verify]


# -- bad input ---------------------------------------------------------------------------------
def _error(tmp_path: Path, kb: KnowledgeBase, text: str) -> str:
    path = write_profile(tmp_path, text)
    with pytest.raises(ProfileError) as info:
        load_profile(path, kb)
    assert isinstance(info.value, UsageError)
    message = str(info.value)
    assert "\n" not in message
    return message.replace(str(path), "FILE")


BAD_BASE = """
organisation: O
systems:
  - name: s
    owner: o
    kind: classifier
    exposure: public-api
    returns: scores
    provenance: in-house
"""


def test_bad_status_names_file_line_and_field(tmp_path: Path, embedded: KnowledgeBase) -> None:
    text = BAD_BASE + """    mitigations:
      - id: AML.M0004
        status: implemented
      - id: AML.M0002
        status: done
"""
    assert _error(tmp_path, embedded, text) == (
        "FILE:13: systems[0].mitigations[1].status: must be one of planned, partial, "
        "implemented")


def test_unknown_mitigation_id_suggests_a_close_one(tmp_path: Path,
                                                    embedded: KnowledgeBase) -> None:
    text = BAD_BASE + """    mitigations:
      - id: AML.M00004
        status: planned
"""
    assert _error(tmp_path, embedded, text) == (
        "FILE:10: systems[0].mitigations[0].id: unknown mitigation ID 'AML.M00004' in ATLAS "
        "data 5.6.0 (did you mean AML.M0004?)")
    # a technique ID where a mitigation belongs
    text = BAD_BASE + "    mitigations: [{id: AML.T0040, status: planned}]\n"
    assert _error(tmp_path, embedded, text) == (
        "FILE:9: systems[0].mitigations[0].id: AML.T0040 is a technique, not a mitigation")


def test_unknown_detection_technique(tmp_path: Path, embedded: KnowledgeBase) -> None:
    text = BAD_BASE + """    detections:
      - name: d
        techniques: [AML.T0024.000, AML.T0024.02]
        score: 2
"""
    assert _error(tmp_path, embedded, text) == (
        "FILE:11: systems[0].detections[0].techniques[1]: unknown technique ID "
        "'AML.T0024.02' in ATLAS data 5.6.0 (did you mean AML.T0024.002?)")


@pytest.mark.parametrize("score", ["7", "-1", "2.5", "true", "high"])
def test_bad_detection_score(tmp_path: Path, embedded: KnowledgeBase, score: str) -> None:
    text = BAD_BASE + f"""    detections:
      - name: d
        techniques: [AML.T0024.000]
        score: {score}
"""
    assert _error(tmp_path, embedded, text) == (
        "FILE:12: systems[0].detections[0].score: must be a whole number from 0 to 5")


def test_missing_and_unknown_fields(tmp_path: Path, embedded: KnowledgeBase) -> None:
    text = BAD_BASE.replace("    owner: o\n", "")
    assert _error(tmp_path, embedded, text) == "FILE:3: systems[0].owner: required field is missing"
    text = BAD_BASE.replace("returns: scores", "returns: [scores, probabilities]")
    assert _error(tmp_path, embedded, text) == (
        "FILE:7: systems[0].returns[1]: must be one of scores, labels, text")
    text = BAD_BASE + "    exposures: internal\n"
    assert _error(tmp_path, embedded, text) == "FILE:9: systems[0].exposures: unknown field"
    assert _error(tmp_path, embedded, "organisation: O\nsystems: []\n") == (
        "FILE:2: systems: must not be empty")
    assert _error(tmp_path, embedded, "organisation: [O\n").startswith("FILE:2: invalid YAML")
    text = BAD_BASE + BAD_BASE.split("systems:\n", 1)[1]
    assert _error(tmp_path, embedded, text) == "FILE:9: systems[1].name: duplicate system name 's'"


def test_bad_evidence_files(tmp_path: Path, embedded: KnowledgeBase) -> None:
    write_json(tmp_path, "manifest.json", {"kind": "mlthreat.scan.manifest",
                                           "schema_version": 1, "files": {}})
    write_json(tmp_path, "future.json", {"kind": "mlthreat.assessment", "schema_version": 9})
    (tmp_path / "broken.json").write_text("{not json", "utf-8")
    cases = {
        "manifest.json": "kind 'mlthreat.scan.manifest' is not evidence posture can use; "
                         "expected one of mlthreat.assessment, mlthreat.detect.evaluation, "
                         "mlthreat.scan.report",
        "future.json": "schema_version 9 of mlthreat.assessment is not supported (expected 1)",
        "broken.json": "is not JSON (line 1: Expecting property name enclosed in double "
                       "quotes)",
    }
    for name, reason in cases.items():
        message = _error(tmp_path, embedded, BAD_BASE + f"    evidence:\n      - {name}\n")
        evidence = tmp_path / name
        if name == "broken.json":
            assert message == f"FILE:10: systems[0].evidence[0]: evidence file '{evidence}' " \
                              + reason
        else:
            assert message == f"FILE:10: systems[0].evidence[0]: evidence file '{evidence}': " \
                              + reason
    message = _error(tmp_path, embedded, BAD_BASE + "    evidence: [missing.json]\n")
    assert message == (f"FILE:9: systems[0].evidence[0]: cannot read evidence file "
                       f"'{tmp_path / 'missing.json'}': No such file or directory")


# -- rules -------------------------------------------------------------------------------------
def test_builtin_rules_are_valid_and_cover_the_matrix_sensibly(embedded: KnowledgeBase) -> None:
    rules = load_rules(embedded)
    assert 25 <= len(rules) <= 40
    assert len({r.id for r in rules}) == len(rules)
    assert all(r.reason and r.techniques for r in rules)
    assert rules.get("external-scores").techniques == (
        "AML.T0024.000", "AML.T0024.001", "AML.T0024.002")
    assert rules.get("user-contributed-data").techniques[0] == "AML.T0020"
    assert {"AML.T0010.003", "AML.T0011.000"} <= set(rules.get("public-hub-model").techniques)


def test_user_rules_replace_add_and_disable(tmp_path: Path, embedded: KnowledgeBase) -> None:
    user = tmp_path / "rules.yaml"
    user.write_text("""
- id: external-scores
  condition: {exposure: public-api, returns: scores}
  techniques: [AML.T0024.002]
  reason: Only extraction matters to us.
- id: predictive-model-proxy
  disabled: true
- id: no-hashes
  condition: {provenance: in-house, unless: {telemetry: artifact-hashes}}
  techniques: [AML.T0018.000]
  reason: Nothing would tell us the weights changed.
""", "utf-8")
    rules = load_rules(embedded, [user])
    ids = [r.id for r in rules]
    assert ids.index("external-scores") == [r.id for r in load_rules(embedded)].index(
        "external-scores")  # replaced in place
    assert "predictive-model-proxy" not in ids and ids[-1] == "no-hashes"
    system = assess_posture(scoring(tmp_path, embedded), embedded, rules).system("scoring")
    assert [(a.rule, a.reason) for a in system.technique("AML.T0024.002").applicability] == [
        ("external-scores", "Only extraction matters to us.")]
    with pytest.raises(KeyError):
        system.technique("AML.T0005")  # its rule was disabled
    with pytest.raises(KeyError):
        system.technique("AML.T0024.001")
    assert system.technique("AML.T0018.000").applicability[0].reason == (
        "Nothing would tell us the weights changed.")


def test_bad_user_rule_is_reported_with_file_and_line(tmp_path: Path,
                                                      embedded: KnowledgeBase) -> None:
    user = tmp_path / "rules.yaml"
    user.write_text("- id: mine\n  condition: {kind: llm}\n  techniques:\n    - AML.T0051\n"
                    "    - AML.T9999\n  reason: r\n", "utf-8")
    with pytest.raises(ProfileError) as info:
        load_rules(embedded, [user])
    assert str(info.value) == (f"{user}:5: rules[0].techniques[1]: unknown technique ID "
                               "'AML.T9999' in ATLAS data 5.6.0")
    user.write_text("- id: Mine\n  techniques: [AML.T0051]\n  reason: r\n", "utf-8")
    with pytest.raises(ProfileError) as info:
        load_rules(embedded, [user])
    assert str(info.value) == f"{user}:1: rules[0].id: must be lower-case words joined by hyphens"
    user.write_text("- id: mine\n  condition: {kind: robot}\n  techniques: [AML.T0051]\n"
                    "  reason: r\n", "utf-8")
    with pytest.raises(ProfileError) as info:
        load_rules(embedded, [user])
    assert str(info.value) == (f"{user}:2: rules[0].condition.kind[0]: must be one of "
                               "classifier, regressor, llm, agent, rag")


# -- change over time --------------------------------------------------------------------------
def test_diff_reports_applicability_coverage_priority_and_gaps(
        tmp_path: Path, embedded: KnowledgeBase) -> None:
    old = assess_posture(scoring(tmp_path, embedded), embedded)
    newer = SCORING.replace("{evidence}", "[]").replace(
        "      - id: AML.M0015\n        status: planned",
        "      - id: AML.M0015\n        status: implemented\n"
        "      - id: AML.M0003\n        status: implemented").replace(
        "training_data: [curated]", "training_data: [curated, user-contributed]")
    new_profile = parse_profile(newer, embedded, source="new.yaml", base_dir=tmp_path)
    new = assess_posture(new_profile, embedded)
    diff = diff_posture(old, new)
    assert diff.changed and diff.systems_added == () and diff.systems_removed == ()
    s = diff.system("scoring")
    assert s.newly_applicable == ("AML.T0020", "AML.T0031", "AML.T0043.004", "AML.T0059")
    assert s.no_longer_applicable == ()
    up = {c.technique: c for c in s.coverage_up}
    # evasion: M0004 1 + M0002 0.5 -> + M0015 1 + M0003 1, capped at 1
    assert (up["AML.T0043.001"].old, up["AML.T0043.001"].new) == (0.75, 1.0)
    assert s.coverage_down == ()
    assert "AML.T0015" in s.gaps_closed and "AML.T0020" in s.gaps_opened
    assert all(c.delta is not None and c.delta < 0 for c in s.priority_changes)
    # the saved JSON form diffs the same way
    saved = json.loads(json.dumps(old.to_dict()))
    assert diff_posture(saved, new.to_dict()).to_dict() == diff.to_dict()
    assert not diff_posture(old, old).changed
    renamed = json.loads(json.dumps(new.to_dict()))
    renamed["systems"][0]["name"] = "scoring-v2"
    d = diff_posture(old, renamed)
    assert (d.systems_added, d.systems_removed, d.systems) == (("scoring-v2",), ("scoring",), ())


# -- the example ---------------------------------------------------------------------------
def test_example_profile_loads_and_every_system_has_a_result(tmp_path: Path,
                                                             embedded: KnowledgeBase) -> None:
    text = example_profile_text()
    path = tmp_path / "example.yaml"
    path.write_text(text, "utf-8")
    profile = load_profile(path, embedded)
    assert [s.kind for s in profile.systems] == ["classifier", "regressor", "rag", "classifier"]
    used = {f for s in profile.systems for f, v in s.to_dict().items() if v not in ([], "")}
    # every system field appears somewhere in the example (evidence is shown commented out)
    assert used | {"evidence"} == set(profile.systems[0].to_dict())
    result = assess_posture(profile, embedded)
    for system in result.systems:
        assert system.techniques and system.gaps, system.name
    json.dumps(result.to_dict())  # plain data all the way down
    assert result.to_dict()["kind"] == "mlthreat.posture"


def test_a_real_assessment_report_is_evidence(tmp_path: Path, embedded: KnowledgeBase) -> None:
    """report.json as `mlthreat assess` writes it: equation-solving extraction copies the demo
    logistic regression, so extraction is exposed whatever the profile claims (~4 s)."""
    from mlthreat.assess import Assessment, demo_targets, digits_demo
    from mlthreat.assess.report import report_data

    data = digits_demo(0)
    logreg = demo_targets(data, 0)[0]
    result = Assessment([logreg], data, techniques=["extraction-equations"]).run()
    write_json(tmp_path, "report.json", report_data(result, embedded))
    system = assess_posture(scoring(tmp_path, embedded, "[report.json]"),
                            embedded).system("scoring")
    t = system.technique("AML.T0024.002")
    assert (t.status, t.mitigation_coverage, t.coverage) == ("exposed", 0.75, 0.3)
    assert t.evidence[0].detail == "succeeded: extraction-equations against demo-logreg"
