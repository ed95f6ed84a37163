"""Golden files: every export format rendered from a small fixed input and compared, byte for
byte, with the expected text checked in next to this module (stix2's habit).

A failure shows the first difference; when the change is intended, rewrite the files with
``pytest tests/golden --update-golden`` and read the diff before committing it. Only what is
legitimately variable is replaced, in :func:`normalise`; everything else (field order, indent,
IDs derived from content, escaping) is pinned.

Inputs: a knowledge base cut from the embedded ATLAS data to three tactics, five techniques, two
mitigations and one case study (:func:`tiny_kb`); two fixed alerts; three small files scanned in
a temporary folder; an assessment put together from fixed findings; a two-system posture
profile assessed with two rules of its own. Golden files are named ``<area>-<format>.<ext>``.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest

from mlthreat import __version__
from mlthreat.detect.alerts import FORMATS as ALERT_FORMATS
from mlthreat.kb import KnowledgeBase
from mlthreat.kb.export import EXPORTERS

GOLDEN = Path(__file__).parent

_VERSION = re.escape(__version__)


# -- comparing -------------------------------------------------------------------------------------
def normalise(text: str, *, clock: bool = False, tmp: Path | None = None) -> str:
    """``text`` with its variable parts replaced by placeholders.

    Always: mlthreat's own version (``<VERSION>``), wherever an output names its generator;
    it changes with every release, not with the format. With ``clock``: the wall-clock time
    and duration of a scan, and the CycloneDX ``serialNumber``, a UUID 5 that hashes the
    scan's start time in (``<STARTED>``, ``<SECONDS>``, ``<SERIAL>``). With ``tmp``: that
    temporary folder, as a ``file:`` URI or a path, is ``<TMP>`` (pytest names it per run).
    """
    if tmp is not None:
        # SARIF's fingerprint hashes the path relative to the scanned root, not the folder
        # itself: it is pinned as it is
        text = text.replace(tmp.as_uri(), "file://<TMP>").replace(str(tmp), "<TMP>")
    text = re.sub(rf'("(?:mlthreat_version|x_mlthreat_version|version|semanticVersion)":\s*)'
                  rf'"{_VERSION}"', r'\1"<VERSION>"', text)
    text = re.sub(rf"\bmlthreat {_VERSION}(?![\w.])", "mlthreat <VERSION>", text)
    if clock:
        text = re.sub(r'("(?:started|timestamp)":\s*)"[^"]*"', r'\1"<STARTED>"', text)
        text = re.sub(r'("seconds":\s*)[0-9.eE+-]+', r'\1"<SECONDS>"', text)
        text = re.sub(r'("serialNumber":\s*)"urn:uuid:[0-9a-f-]{36}"', r'\1"<SERIAL>"', text)
    return text


def check(request: pytest.FixtureRequest, name: str, output: str | bytes, *,
          clock: bool = False, tmp: Path | None = None) -> None:
    """Compare ``output`` (normalised) with the golden file ``name``, or rewrite the file
    under ``--update-golden``."""
    data = output.encode("utf-8") if isinstance(output, str) else output
    text = normalise(data.decode("utf-8"), clock=clock, tmp=tmp)
    actual = text.encode("utf-8")
    path = GOLDEN / name
    if request.config.getoption("--update-golden", default=False):
        path.write_bytes(actual)
        return
    assert path.exists(), f"{path.name} missing: run pytest {GOLDEN} --update-golden"
    expected = path.read_bytes()
    if actual != expected:
        # assert on text so pytest shows a readable diff of the first lines that differ
        assert text == expected.decode("utf-8"), (
            f"{path.name} differs from the golden file; if intended, run "
            f"pytest {GOLDEN} --update-golden and review the diff")


def test_normalise_replaces_only_the_variable_parts() -> None:
    doc = json.dumps({"mlthreat_version": __version__, "version": "1.5.0",
                      "generated_by": f"mlthreat {__version__}", "seconds": 0.25,
                      "started": "2026-12-07T23:00:00+00:00"})
    assert normalise(doc) == doc.replace(f'"{__version__}"', '"<VERSION>"').replace(
        f"mlthreat {__version__}", "mlthreat <VERSION>")
    assert '"seconds": "<SECONDS>"' in normalise(doc, clock=True)
    assert '"started": "<STARTED>"' in normalise(doc, clock=True)
    assert '"version": "1.5.0"' in normalise(doc)  # another standard's version stays


# -- inputs ----------------------------------------------------------------------------------------
TACTICS = ("AML.TA0000", "AML.TA0001", "AML.TA0010")
TECHNIQUES = ("AML.T0040", "AML.T0043", "AML.T0043.001", "AML.T0024", "AML.T0024.002")
MITIGATIONS = ("AML.M0002", "AML.M0004")
CASE_STUDY = "AML.CS0056"


@pytest.fixture(scope="module")
def tiny_kb(embedded: KnowledgeBase) -> KnowledgeBase:
    """The embedded data cut down to :data:`TACTICS`, :data:`TECHNIQUES`, :data:`MITIGATIONS`
    and :data:`CASE_STUDY`, links to anything else dropped (AML.M0004 links AML.T0043.001
    twice in the official data; both links are kept)."""
    keep = set(TACTICS) | set(TECHNIQUES)
    mitigations = tuple(
        dataclasses.replace(m, techniques=tuple(u for u in m.techniques if u.technique in keep))
        for m in embedded.mitigations if m.id in MITIGATIONS)
    case_study = next(c for c in embedded.case_studies if c.id == CASE_STUDY)
    steps = tuple(s for s in case_study.procedure if s.tactic in keep and s.technique in keep)
    kb = dataclasses.replace(
        embedded,
        tactics=tuple(t for t in embedded.tactics if t.id in TACTICS),
        techniques=tuple(t for t in embedded.techniques if t.id in TECHNIQUES),
        mitigations=mitigations,
        case_studies=(dataclasses.replace(case_study, procedure=steps),),
        retired=(), warnings=())
    assert sorted(t.id for t in kb.techniques) == sorted(TECHNIQUES)
    assert len(steps) == 2
    return kb


# -- knowledge-base exports ------------------------------------------------------------------------
# formats come from the registries: a new one fails here until its golden file is checked in
@pytest.mark.parametrize("fmt", [f for f in EXPORTERS if f != "navigator"])  # layers: below
def test_kb_export(request: pytest.FixtureRequest, tiny_kb: KnowledgeBase, fmt: str) -> None:
    from mlthreat.kb.export import exporter

    module = exporter(fmt)
    check(request, f"kb-{fmt}{module.SUFFIX}", module.render(tiny_kb))


@pytest.mark.parametrize(("layer", "options"), [
    ("matrix", {}),
    ("matrix", {"layer_version": "4.5"}),  # the legacy data defaults to 4.3
    ("case-study", {"case_study": CASE_STUDY}),
    ("frequency", {}),
    ("scores", {"scores": {"AML.T0024.002": 0.75, "AML.T0040": 1.0}, "name": "Scores",
                "comments": {"AML.T0040": "seen in every log"}}),
])
def test_kb_navigator_layer(request: pytest.FixtureRequest, tiny_kb: KnowledgeBase, layer: str,
                            options: dict[str, Any]) -> None:
    from mlthreat.kb.export import navigator

    suffix = f"-{options['layer_version']}" if "layer_version" in options else ""
    check(request, f"kb-navigator-{layer}{suffix}.json",
          navigator.render(tiny_kb, layer=layer, **options))


def test_kb_html_with_scores(request: pytest.FixtureRequest, tiny_kb: KnowledgeBase) -> None:
    from mlthreat.kb.export import html

    check(request, "kb-html-scores.html",
          html.render(tiny_kb, scores={"AML.T0024.002": 0.75, "AML.T0043": -0.5},
                      title="Scored <matrix>"))


# -- detection alerts ------------------------------------------------------------------------------
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


@pytest.fixture(scope="module")
def alerts(tiny_kb: KnowledgeBase) -> list[Any]:
    """Two alerts: a sub-technique under Exfiltration (rated High), with a raw input that
    must be dropped, and a technique under AI Attack Staging (Medium)."""
    from mlthreat.detect.alerts import Alert
    from mlthreat.detect.detectors.base import Detection

    extraction = Detection(
        detector="prada", technique="AML.T0024.002", client_id="client-7", model_id="credit",
        first_seen=T0, last_seen=T0 + 90.5, queries_observed=412, score=0.61, threshold=0.9,
        unit="shapiro_w", evidence={"window": 200, "w": 0.61, "input": [0.1, 0.2]})
    evasion = Detection(
        detector="blacklight", technique="AML.T0043", client_id="tenant/ü", model_id="credit",
        first_seen=T0 + 3600, last_seen=T0 + 3600.25, queries_observed=25, score=7.0,
        threshold=5.0, unit="matches", evidence={"fingerprints": ["a1", "b2"]})
    return [Alert.from_detection(d, tiny_kb) for d in (extraction, evasion)]


@pytest.mark.parametrize("fmt", list(ALERT_FORMATS))
def test_alert_file(request: pytest.FixtureRequest, tmp_path: Path, alerts: list[Any],
                    fmt: str) -> None:
    from mlthreat.detect.sinks import FileSink, deliver

    sink = FileSink(tmp_path / "alerts.jsonl", fmt=fmt)
    try:
        assert deliver(alerts, sink, fmt) == 2
    finally:
        sink.close()
    check(request, f"alerts-{fmt}.jsonl", (tmp_path / "alerts.jsonl").read_bytes())


def test_alert_identity_is_the_kb_exports(tiny_kb: KnowledgeBase, alerts: list[Any]) -> None:
    """STIX 2.1 (3.6, versioning): objects with the same ``id`` and ``modified`` are the same
    version, so a store that loads both bundles must find the same identity in each."""
    from mlthreat.detect.alerts import render
    from mlthreat.kb.export import stix

    exported = json.loads(stix.render(tiny_kb))["objects"][0]
    sighted = render(alerts[0], "stix")["objects"][0]
    assert (exported["id"], exported["modified"]) == (sighted["id"], sighted["modified"])
    assert exported == sighted


def test_alert_syslog_message(request: pytest.FixtureRequest, alerts: list[Any]) -> None:
    from mlthreat.detect.alerts import render
    from mlthreat.detect.sinks import SyslogSink

    # the hostname is fixed: the sink would otherwise write this machine's name
    sink = SyslogSink(hostname="detector-1")
    lines = [sink.format(render(a, "ocsf"), a.last_seen) + b"\n" for a in alerts]
    check(request, "alerts-syslog.txt", b"".join(lines))


def test_alert_hec_body(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
                        alerts: list[Any]) -> None:
    from mlthreat.detect import sinks

    bodies: list[bytes] = []

    class Answer:
        status = 200

        def __enter__(self) -> Answer:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def read(self) -> bytes:
            return b'{"text":"Success","code":0}'

    class Collector:
        def open(self, request: Any, timeout: float) -> Answer:
            assert request.get_header("Authorization") == "Splunk secret-token"
            bodies.append(request.data)
            return Answer()

    monkeypatch.setenv(sinks.HEC_TOKEN_ENV, "secret-token")
    monkeypatch.setattr(sinks, "_OPENER", Collector())
    assert sinks.deliver(alerts, sinks.HecSink("https://127.0.0.1:8088/services/collector"),
                         "ecs") == 2
    check(request, "alerts-hec.jsonl", b"".join(b + b"\n" for b in bodies))


def test_query_log(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    from mlthreat.events import QueryLog

    log = QueryLog(tmp_path / "queries.jsonl", "credit")
    log.log([[0.1, 0.25], [1 / 3, 0.0]], [1, 0], [[0.2, 0.8], [0.9, 0.1]], client_id="client-7",
            truth="attack", ts=T0)
    log.log([[0.5, 0.5]], [1], None, client_id="client-8", truth=None, ts=T0 + 1.5,
            model_id="fraud")
    log.close()
    check(request, "queries.jsonl", (tmp_path / "queries.jsonl").read_bytes())


# -- scan reports ----------------------------------------------------------------------------------
# GLOBAL os.system; MARK; SHORT_STRING 'id'; TUPLE; REDUCE; STOP (protocol 0)
MALICIOUS = b"cos\nsystem\n(S'id'\ntR."
# PROTO 2; EMPTY_DICT; BINPUT 0; STOP: an empty dict
CLEAN = b"\x80\x02}q\x00."


@pytest.fixture
def scanned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder with a malicious pickle, a clean one and a text file, as the current folder
    (so every path in a report is relative and the same on every machine)."""
    folder = tmp_path / "models"
    (folder / "sub").mkdir(parents=True)
    (folder / "evil.pkl").write_bytes(MALICIOUS)
    (folder / "sub" / "clean.pkl").write_bytes(CLEAN)
    (folder / "README.txt").write_text("weights for the credit model\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")
    return folder


def _cli(*args: str) -> Any:
    from typer.testing import CliRunner

    from mlthreat.cli import app

    return CliRunner().invoke(app, list(args))


@pytest.mark.parametrize(("fmt", "name"), [("json", "scan-report.json"),
                                           ("sarif", "scan.sarif"),
                                           ("cyclonedx", "scan-cyclonedx.json")])
def test_scan_report(request: pytest.FixtureRequest, scanned: Path, fmt: str, name: str) -> None:
    result = _cli("scan", "models", "--format", fmt, "--engines", "none",
                  "--output", "report.out")
    assert result.exit_code == 1, result.output  # the malicious pickle is critical
    check(request, name, Path("report.out").read_bytes(), clock=True)


def test_scan_sarif_outside_the_current_folder(request: pytest.FixtureRequest, scanned: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder outside the current one: URIs relative to ``SCANROOT0``, which
    ``originalUriBaseIds`` maps to the folder's ``file:`` URI; an archive member's finding
    points at the archive on disk."""
    import zipfile

    with zipfile.ZipFile(scanned / "bundle.zip", "w") as z:
        z.writestr("inner/evil.pkl", MALICIOUS)
    (scanned.parent / "elsewhere").mkdir()
    monkeypatch.chdir(scanned.parent / "elsewhere")
    result = _cli("scan", str(scanned), "--format", "sarif", "--engines", "none",
                  "--output", "report.sarif")
    assert result.exit_code == 1, result.output
    check(request, "scan-outside.sarif", Path("report.sarif").read_bytes(), tmp=scanned.parent)


def test_scan_manifest(request: pytest.FixtureRequest, scanned: Path) -> None:
    result = _cli("scan", "manifest", "models", "--output", "manifest.json")
    assert result.exit_code == 0, result.output
    check(request, "scan-manifest.json", Path("manifest.json").read_bytes())


# -- assessment report -----------------------------------------------------------------------------
def _assessment(kb: KnowledgeBase) -> Any:
    """An AssessmentResult of three runs against one target (a verdict that holds, one whose
    interval crosses its threshold, a target failure) and one re-run behind a mitigation,
    put together from fixed findings (no model is trained)."""
    from mlthreat.assess.finding import Finding, Metric
    from mlthreat.assess.runner import AssessmentResult, TargetFindings

    def tactics(t: str) -> tuple[str, ...]:
        return tuple(x.id for x in kb.tactics_of(t))

    def mitigations(t: str) -> tuple[str, ...]:
        return tuple(m.id for m in kb.mitigations_of(t))

    extract = Finding(
        "AML.T0024.002", "Equation-solving extraction", "succeeded", reason="fidelity 1.0",
        rule="fidelity ≥ 0.9", related_techniques=("AML.T0040",),
        tactics=tactics("AML.T0024.002"),
        metrics={"fidelity": Metric(1.0, "fraction", n=450, ci=(0.99, 1.0)),
                 "queries_used": Metric(65, "queries")},
        queries=65, evaluation_queries=450, seconds=0.2, params={"rounds": 1, "min_fidelity": 0.9},
        curves={"fidelity_vs_queries": {"x": [16, 65], "y": [0.7, 1.0],
                                        "x_label": "queries", "y_label": "fidelity"}},
        mitigations=mitigations("AML.T0024.002"), run="extraction-equations")
    evade = Finding(
        "AML.T0043.001", "HopSkipJump evasion", "failed", reason="2 of 10 within ε",
        rule="≥ 50 % within ε", tactics=tactics("AML.T0043.001"),
        metrics={"success_rate_at_eps": Metric(0.2, "fraction", n=10, ci=(0.06, 0.51),
                                               note="within ε")},
        queries=800, seconds=1.5, params={"min_success_rate": 0.5}, curves={"perturbation_l2": {
            "values": [0.3, 0.7, 0.9], "x_label": "L2", "y_label": "samples"}},
        mitigations=mitigations("AML.T0043.001"), run="evasion-hopskipjump")
    errored = Finding("AML.T0024.002", "Surrogate extraction", "error",
                      reason="target failed: connection refused",
                      tactics=tactics("AML.T0024.002"), run="extraction-surrogate")
    rounded = Finding("AML.T0024.002", "Equation-solving extraction", "failed",
                      reason="fidelity 0.6", rule="fidelity ≥ 0.9",
                      tactics=tactics("AML.T0024.002"),
                      metrics={"fidelity": Metric(0.6, "fraction", n=450)}, queries=65,
                      params={"min_fidelity": 0.9}, mitigations=mitigations("AML.T0024.002"),
                      run="extraction-equations")
    target = {"kind": "sklearn", "model_id": "credit",
              "description": "sklearn:credit.skops", "input_shape": [4],
              "n_classes": 2, "output_kind": "scores", "access": "white-box",
              "task": "classification"}
    return AssessmentResult(
        results=(TargetFindings(target, (extract, evade, errored)),
                 TargetFindings(target, (rounded,), "round:2")),
        data={"source": "digits", "sha256": "0" * 64, "pool": 447, "eval": 450,
              "members": None, "non_members": None, "features": 4},
        seed=0, budget=None, total_budget=5000, atlas_version=kb.version, mitigation="round:2",
        started=T0, seconds=3.25, queries_total=930)


def test_assessment_report(request: pytest.FixtureRequest, tmp_path: Path,
                           tiny_kb: KnowledgeBase) -> None:
    from mlthreat.assess.report import write_report

    written = write_report(_assessment(tiny_kb), tmp_path / "out", tiny_kb)
    assert set(written) == {"json", "html", "layer"}
    for role, name in (("json", "assess-report.json"), ("html", "assess-report.html"),
                       ("layer", "assess-layer.json")):
        check(request, name, written[role].read_bytes())


# -- posture ---------------------------------------------------------------------------------------
RULES = """\
- id: public-endpoint
  condition: {exposure: [public-api]}
  techniques: [AML.T0040, AML.T0024.002]
  reason: Anyone on the internet can send inputs.
- id: scores-returned
  condition: {returns: [scores]}
  techniques: [AML.T0043.001]
  reason: Scores guide a black-box search.
"""

PROFILE = """\
organisation: Northwind <Lending>
systems:
  - name: credit-score-api
    owner: risk-ml@northwind.example
    description: Default-risk classifier sold as a scoring API.
    kind: classifier
    exposure: [public-api]
    returns: [scores, labels]
    training_data: [curated]
    provenance: [in-house]
    telemetry: [inference-logs]
    mitigations:
      - {id: AML.M0004, status: implemented, note: 1000 requests per key per day.}
      - {id: AML.M0002, status: planned}
    detections:
      - name: PRADA on inference logs
        techniques: [AML.T0024.002]
        score: 2
  - name: fraud-amount-model
    owner: fraud-analytics@northwind.example
    kind: regressor
    exposure: internal
    returns: scores
    training_data: [curated, user-contributed]
    provenance: in-house
    telemetry: [model-registry]
"""


def _posture(kb: KnowledgeBase, profile: str, folder: Path) -> dict[str, Any]:
    """The posture document of ``profile`` under :data:`RULES` alone, the rules file written
    to ``folder`` (the current folder, so it is named relative, as a user would)."""
    from mlthreat import posture
    from mlthreat.posture.report import posture_document

    (folder / "rules.yaml").write_text(RULES, encoding="utf-8")
    rules = posture.load_rules(kb, ["rules.yaml"], builtin=False)
    result = posture.assess_posture(posture.parse_profile(profile, kb, source="profile.yaml"),
                                    kb, rules)
    return posture_document(result, kb)


def test_posture_outputs(request: pytest.FixtureRequest, tmp_path: Path,
                         monkeypatch: pytest.MonkeyPatch, tiny_kb: KnowledgeBase) -> None:
    from mlthreat.posture.report import write_outputs

    monkeypatch.chdir(tmp_path)
    written = write_outputs(_posture(tiny_kb, PROFILE, tmp_path), tiny_kb, tmp_path / "out")
    names = [p.relative_to(tmp_path / "out").as_posix() for p in written]
    assert names[:3] == ["posture.json", "posture.html", "posture.md"]
    for path, name in zip(written, names, strict=True):
        check(request, name if name.startswith("posture.") else "posture-" + name.replace("/", "-"),
              path.read_bytes())


def test_posture_diff(request: pytest.FixtureRequest, tmp_path: Path,
                      monkeypatch: pytest.MonkeyPatch, tiny_kb: KnowledgeBase) -> None:
    """A quarter later: output obfuscation done, the detection dropped, inference logs
    turned on for the second system."""
    from mlthreat.posture import diff_posture
    from mlthreat.posture.report import diff_document

    monkeypatch.chdir(tmp_path)
    later = PROFILE.replace("{id: AML.M0002, status: planned}",
                            "{id: AML.M0002, status: implemented}")
    later = later[:later.index("    detections:")] + later[later.index("  - name: fraud"):]
    later = later.replace("telemetry: [model-registry]",
                          "telemetry: [model-registry, inference-logs]")
    assert later.count("implemented") == 2 and "detections" not in later
    old, new = _posture(tiny_kb, PROFILE, tmp_path), _posture(tiny_kb, later, tmp_path)
    doc = diff_document(diff_posture(old, new), tiny_kb, "old/posture.json", "profile.yaml")
    check(request, "posture-diff.json", json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
