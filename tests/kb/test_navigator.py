"""Navigator layers: checked against the official ATLAS layers, and read back."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from atlas_paths import ATLAS_DATA, CASE_STUDY_LAYERS

from mlthreat import __version__
from mlthreat.errors import UsageError
from mlthreat.kb import KnowledgeBase, UnknownIdError
from mlthreat.kb.errors import DataFileError
from mlthreat.kb.export import exporter
from mlthreat.kb.export import navigator as nav

DEFAULT_LAYERS = ATLAS_DATA / "navigator-data" / "default-navigator-layers"
OFFICIAL_MATRIX = DEFAULT_LAYERS / "atlas_layer_matrix.json"
OFFICIAL_FREQUENCY = DEFAULT_LAYERS / "atlas_case_study_frequency.json"
GREEN = "#C8E6C9"


@pytest.fixture(params=["embedded", "official"])
def base(request: pytest.FixtureRequest) -> KnowledgeBase:
    """Both the embedded snapshot and the official ATLAS.yaml must give the official layers."""
    return request.getfixturevalue(request.param)  # type: ignore[no-any-return]


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text("utf-8"))  # type: ignore[no-any-return]


def _colored(layer: dict[str, Any]) -> set[str]:
    return {e["techniqueID"] for e in layer["techniques"] if e.get("color")}


def _placed(layer: dict[str, Any], *, colored_only: bool = False) -> set[tuple[str, str]]:
    return {
        (e["techniqueID"], e["tactic"])
        for e in layer["techniques"]
        if "tactic" in e and (e.get("color") or not colored_only)
    }


def _frozen(entries: list[dict[str, Any]]) -> set[frozenset[tuple[str, Any]]]:
    return {frozenset(e.items()) for e in entries}


def _write(tmp_path: Path, text: str, name: str = "layer.json") -> Path:
    path = tmp_path / name
    path.write_text(text, "utf-8")
    return path


# -- header -------------------------------------------------------------------------------------

def test_registered_exporter() -> None:
    assert exporter("navigator") is nav
    assert (nav.FORMAT, nav.SUFFIX) == ("navigator", ".json")


@pytest.mark.parametrize(
    ("layer_version", "versions"),
    [
        ("4.3", {"layer": "4.3", "navigator": "4.6.4"}),
        ("4.5", {"layer": "4.5", "navigator": "5.1.0"}),
    ],
)
def test_header(embedded: KnowledgeBase, layer_version: str, versions: dict[str, str]) -> None:
    layers = [
        nav.matrix_layer(embedded, layer_version),
        nav.case_study_layer(embedded, "AML.CS0000", layer_version),
        nav.frequency_layer(embedded, layer_version),
        nav.scores_layer(embedded, {"AML.T0024": 1.0}, "s", layer_version=layer_version),
    ]
    for layer in layers:
        assert layer["versions"] == versions  # no "attack": the data is ATLAS, not ATT&CK
        assert layer["domain"] == "atlas-atlas"
        assert layer["metadata"][:2] == [
            {"name": "atlas_data_version", "value": "5.6.0"},
            {"name": "generated_by", "value": f"mlthreat {__version__}"},
        ]


def test_unsupported_layer_version(embedded: KnowledgeBase) -> None:
    calls: list[Callable[[], object]] = [
        lambda: nav.render(embedded, layer_version="9.9"),
        lambda: nav.matrix_layer(embedded, "9.9"),
        lambda: nav.case_study_layer(embedded, "AML.CS0000", "9.9"),
        lambda: nav.frequency_layer(embedded, "9.9"),
        lambda: nav.scores_layer(embedded, {}, "s", layer_version="9.9"),
    ]
    for call in calls:
        with pytest.raises(UsageError, match=r"'9\.9'.*4\.3, 4\.5"):
            call()


# -- the official layers --------------------------------------------------------------------------

def test_matrix_layer_matches_official(base: KnowledgeBase) -> None:
    official = _load(OFFICIAL_MATRIX)
    ours = nav.matrix_layer(base)
    assert len(ours["techniques"]) == len(official["techniques"]) == 180
    assert _frozen(ours["techniques"]) == _frozen(official["techniques"])
    assert ours["techniques"][:2] == [
        {"techniqueID": "AML.T0000", "tactic": "reconnaissance", "showSubtechniques": True,
         "color": GREEN},
        {"techniqueID": "AML.T0000.000", "color": GREEN},
    ]
    # one entry per tactic, in matrix order
    assert [e.get("tactic") for e in ours["techniques"] if e["techniqueID"] == "AML.T0015"] == [
        "initial-access", "defense-evasion", "impact"]


def test_case_study_layers_match_official(base: KnowledgeBase) -> None:
    files = sorted(CASE_STUDY_LAYERS.glob("AML.CS*.json"))
    assert len(files) == 57
    assert [f.stem for f in files] == [cs.id for cs in base.case_studies]
    for path in files:
        official = _load(path)
        ours = nav.case_study_layer(base, path.stem)
        assert _colored(ours) == _colored(official), path.name
        assert _placed(ours) == _placed(official), path.name
        assert _placed(ours, colored_only=True) == _placed(official, colored_only=True), path.name
        assert ours["name"] == official["name"]


def test_case_study_layer_entries(base: KnowledgeBase) -> None:
    layer = nav.case_study_layer(base, "AML.CS0000")
    assert layer["techniques"] == [
        {"techniqueID": "AML.T0000", "tactic": "reconnaissance", "showSubtechniques": True},
        {"techniqueID": "AML.T0000.001", "color": GREEN},
        {"techniqueID": "AML.T0002", "tactic": "resource-development", "showSubtechniques": True},
        {"techniqueID": "AML.T0002.000", "color": GREEN},
        {"techniqueID": "AML.T0005", "tactic": "ai-attack-staging", "showSubtechniques": False,
         "color": GREEN},
        {"techniqueID": "AML.T0015", "tactic": "defense-evasion", "showSubtechniques": False,
         "color": GREEN},
        {"techniqueID": "AML.T0042", "tactic": "ai-attack-staging", "showSubtechniques": False,
         "color": GREEN},
        {"techniqueID": "AML.T0043", "tactic": "ai-attack-staging", "showSubtechniques": True},
        {"techniqueID": "AML.T0043.003", "color": GREEN},
    ]
    assert {"name": "case_study", "value": "AML.CS0000"} in layer["metadata"]
    assert {"name": "url", "value": "https://atlas.mitre.org/studies/AML.CS0000"} in layer[
        "metadata"]


def test_case_study_description_is_the_kb_summary(embedded: KnowledgeBase) -> None:
    official = _load(CASE_STUDY_LAYERS / "AML.CS0000.json")
    layer = nav.case_study_layer(embedded, "AML.CS0000")
    assert layer["description"] == embedded.case_study("AML.CS0000").summary
    assert layer["description"] != official["description"]


def test_case_study_unknown(embedded: KnowledgeBase) -> None:
    with pytest.raises(UnknownIdError, match=re.escape("AML.CS9999")):
        nav.case_study_layer(embedded, "AML.CS9999")


def test_frequency_layer_matches_official(base: KnowledgeBase) -> None:
    official = _load(OFFICIAL_FREQUENCY)
    ours = nav.frequency_layer(base)

    def scores(layer: dict[str, Any]) -> dict[tuple[str, str | None], float]:
        return {(e["techniqueID"], e.get("tactic")): e["score"] for e in layer["techniques"]}

    assert scores(ours) == scores(official)  # every technique, every tactic
    assert len(scores(ours)) == 180
    assert _frozen(ours["techniques"]) == _frozen(official["techniques"])
    assert ours["gradient"]["minValue"] == 0
    assert ours["gradient"]["maxValue"] == official["gradient"]["maxValue"] == 57
    # the counting rule: steps (not distinct case studies), per tactic, parent not credited
    got = scores(ours)
    assert got[("AML.T0012", "initial-access")] == 6
    assert got[("AML.T0012", "privilege-escalation")] == 2
    assert got[("AML.T0065", "resource-development")] == 20
    assert len(base.case_studies_using("AML.T0065")) == 18
    assert got[("AML.T0000", "reconnaissance")] == 8
    assert len(base.case_studies_using("AML.T0000")) == 9
    assert sum(got.values()) == sum(len(cs.procedure) for cs in base.case_studies) == 449


# -- scores --------------------------------------------------------------------------------------

def test_scores_layer_entries(embedded: KnowledgeBase) -> None:
    layer = nav.scores_layer(
        embedded, {"AML.T0043.001": 0.75, "AML.T0012": 0.5}, "Assessment", "success rates"
    )
    assert layer["techniques"] == [
        {"techniqueID": "AML.T0012", "tactic": "initial-access", "showSubtechniques": False,
         "score": 0.5},
        {"techniqueID": "AML.T0012", "tactic": "privilege-escalation", "showSubtechniques": False,
         "score": 0.5},
        {"techniqueID": "AML.T0043", "tactic": "ai-attack-staging", "showSubtechniques": True},
        {"techniqueID": "AML.T0043.001", "score": 0.75},
    ]
    assert (layer["name"], layer["description"]) == ("Assessment", "success rates")
    assert layer["gradient"]["minValue"] == 0
    assert layer["gradient"]["maxValue"] == 0.75


def test_scores_layer_rejects_bad_input(embedded: KnowledgeBase) -> None:
    with pytest.raises(UnknownIdError, match=re.escape("AML.T9999")):
        nav.scores_layer(embedded, {"AML.T9999": 1.0}, "s")
    with pytest.raises(UnknownIdError, match=re.escape("AML.TA0002 is a tactic")):
        nav.scores_layer(embedded, {"AML.TA0002": 1.0}, "s")
    for bad in (float("nan"), float("inf"), True, "1"):
        with pytest.raises(UsageError, match=r"score of AML\.T0024 must be a finite"):
            nav.scores_layer(embedded, {"AML.T0024": bad}, "s")  # type: ignore[dict-item]


# -- render --------------------------------------------------------------------------------------

def test_render_is_deterministic_json(embedded: KnowledgeBase) -> None:
    text = nav.render(embedded, layer="case-study", case_study="AML.CS0000")
    assert text == nav.render(embedded, layer="case-study", case_study="AML.CS0000")
    assert text.endswith("}\n")
    assert text.splitlines()[1] == '  "versions": {'
    assert json.loads(text) == nav.case_study_layer(embedded, "AML.CS0000")
    assert json.loads(nav.render(embedded)) == nav.matrix_layer(embedded)
    assert json.loads(nav.render(embedded, layer="frequency", layer_version="4.5")) == (
        nav.frequency_layer(embedded, "4.5"))
    scored = json.loads(nav.render(embedded, layer="scores", scores={"AML.T0024": 2}, name="Run"))
    assert scored == nav.scores_layer(embedded, {"AML.T0024": 2}, "Run")
    assert json.loads(nav.render(embedded, name="Mine"))["name"] == "Mine"


def test_render_rejects_bad_options(embedded: KnowledgeBase) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"layer": "nope"}, "unknown layer 'nope'"),
        ({"layer": "case-study"}, "needs case_study"),
        ({"layer": "scores"}, "needs scores"),
        ({"layer": "matrix", "case_study": "AML.CS0000"}, "case_study only applies"),
        ({"layer": "frequency", "scores": {}}, "scores only apply"),
    ]
    for options, message in cases:
        with pytest.raises(UsageError, match=message):
            nav.render(embedded, **options)


# -- reading -------------------------------------------------------------------------------------

@pytest.mark.parametrize("layer_version", ["4.3", "4.5"])
def test_round_trip(embedded: KnowledgeBase, tmp_path: Path, layer_version: str) -> None:
    options: list[dict[str, Any]] = [
        {"layer": "matrix"},
        {"layer": "case-study", "case_study": "AML.CS0041"},
        {"layer": "frequency"},
        {"layer": "scores", "scores": {"AML.T0043.001": 0.25, "AML.T0015": 3}},
    ]
    for opts in options:
        text = nav.render(embedded, layer_version=layer_version, **opts)
        layer = nav.read_layer(_write(tmp_path, text))
        data = json.loads(text)
        want_scores = {
            (e["techniqueID"], e.get("tactic")): e["score"]
            for e in data["techniques"] if "score" in e
        }
        assert layer.tactic_scores == want_scores
        assert layer.colored == _colored(data)
        assert {(t, tac) for t, tacs in layer.tactics.items() for tac in tacs} == _placed(data)
        assert (layer.name, layer.domain, layer.layer_version) == (
            data["name"], "atlas-atlas", layer_version)
        assert layer.navigator_version == nav.LAYER_VERSIONS[layer_version]["navigator"]
        assert layer.atlas_data_version == "5.6.0"
        assert layer.metadata["generated_by"] == f"mlthreat {__version__}"
    scored = nav.read_layer(_write(tmp_path, nav.render(
        embedded, layer="scores", scores={"AML.T0043.001": 0.25, "AML.T0015": 3},
        layer_version=layer_version)))
    assert scored.scores == {"AML.T0043.001": 0.25, "AML.T0015": 3.0}
    assert scored.colored == frozenset()


def test_read_official_layers(base: KnowledgeBase) -> None:
    layer = nav.read_layer(CASE_STUDY_LAYERS / "AML.CS0000.json")
    assert layer.name == "Evasion of Deep Learning Detector for Malware C&C Traffic"
    assert (layer.domain, layer.layer_version, layer.navigator_version) == (
        "atlas-atlas", "4.3", "4.6.4")
    assert layer.atlas_data_version == base.version == "5.6.0"
    assert layer.colored == set(base.case_study("AML.CS0000").techniques)
    assert layer.tactics["AML.T0043"] == ("ai-attack-staging",)
    freq = nav.read_layer(OFFICIAL_FREQUENCY)
    assert freq.tactic_scores[("AML.T0012", "initial-access")] == 6
    assert freq.scores["AML.T0012"] == 6  # the highest of its tactics
    assert freq.colored == frozenset()
    matrix = nav.read_layer(OFFICIAL_MATRIX)
    assert matrix.colored == {t.id for t in base.techniques}
    assert matrix.tactics["AML.T0015"] == ("initial-access", "defense-evasion", "impact")


def _entry(**fields: Any) -> str:
    return json.dumps(fields)


def _layer_text(*entries: str, extra: str = "") -> str:
    body = ",\n    ".join(entries)
    return (
        '{\n  "name": "x",\n  "domain": "atlas-atlas",\n'
        f'  "versions": {{"layer": "4.5", "navigator": "5.1.0"}},{extra}\n'
        f'  "techniques": [\n    {body}\n  ]\n}}\n'
    )


def test_read_layer_entry_errors(tmp_path: Path) -> None:
    good = _entry(techniqueID="AML.T0000", tactic="reconnaissance")
    cases = [
        (_layer_text(good, _entry(tactic="impact")),
         ":7, entry techniques[1], field 'techniqueID': missing techniqueID"),
        (_layer_text(_entry(techniqueID="T1110")),
         ":6, entry techniques[0], field 'techniqueID': 'T1110' is not an ATLAS technique ID"),
        (_layer_text(good, good, _entry(techniqueID="AML.TA0002")),
         ":8, entry techniques[2], field 'techniqueID': 'AML.TA0002' is not an ATLAS technique"),
        (_layer_text(_entry(techniqueID="AML.T0000", score="high")),
         ":6, entry techniques[0] (AML.T0000), field 'score': score must be a finite number"),
        (_layer_text(_entry(techniqueID="AML.T0000", tactic=3)),
         "entry techniques[0] (AML.T0000), field 'tactic'"),
        (_layer_text(_entry(techniqueID="AML.T0000", color=1)),
         "entry techniques[0] (AML.T0000), field 'color'"),
        (_layer_text('"AML.T0000"'), "entry techniques[0], field 'techniqueID'"),
    ]
    for i, (text, message) in enumerate(cases):
        path = _write(tmp_path, text, f"bad{i}.json")
        with pytest.raises(DataFileError) as err:
            nav.read_layer(path)
        assert str(err.value).startswith(str(path)), str(err.value)
        assert message in str(err.value)


def test_read_layer_file_errors(tmp_path: Path) -> None:
    cases = [
        ('{\n  "name": "x",\n  "techniques": [\n    {"techniqueID": }\n  ]\n}\n',
         ":4: invalid JSON: Expecting value"),
        ('{"name": "x", "domain": "atlas-atlas", "versions": {"layer": "4.3"}}',
         ", field 'techniques': not a Navigator layer: no 'techniques' list"),
        ('{"name": "x", "domain": "atlas-atlas", "techniques": {}}',
         "field 'techniques': not a Navigator layer"),
        ('[1, 2]', ": not a Navigator layer: expected a JSON object"),
        ('"layer"', ": not a Navigator layer"),
        ('{"domain": "atlas-atlas", "techniques": []}', "field 'name': a layer needs a string"),
        ('{"name": "x", "domain": "enterprise-attack", "version": "2.2", "techniques": []}',
         "field 'versions.layer': layer format '2.2' is not supported"),
        ('{"name": "x", "domain": "d", "versions": {"layer": "9.9"}, "techniques": []}',
         "field 'versions.layer': layer format '9.9' is not supported"),
    ]
    for i, (text, message) in enumerate(cases):
        path = _write(tmp_path, text, f"bad{i}.json")
        with pytest.raises(DataFileError) as err:
            nav.read_layer(path)
        assert str(err.value).startswith(str(path)), str(err.value)
        assert message in str(err.value), str(err.value)
    missing = tmp_path / "absent.json"
    with pytest.raises(DataFileError, match=re.escape("absent.json")):
        nav.read_layer(missing)


def test_read_layer_accepts_4x_variants(tmp_path: Path) -> None:
    entry = {"techniqueID": "ACME.T0001.002", "score": 4, "color": "", "enabled": False}
    single = {"name": "one", "domain": "atlas-atlas", "techniques": [entry]}
    layer = nav.read_layer(_write(tmp_path, json.dumps([single])))
    assert (layer.name, layer.layer_version, layer.atlas_data_version) == ("one", None, None)
    assert layer.scores == {"ACME.T0001.002": 4.0}
    assert layer.colored == frozenset()  # an empty colour is no colour
    empty = nav.read_layer(_write(tmp_path, '{"name": "e", "domain": "atlas-atlas", '
                                              '"versions": {"layer": "4.4"}, "techniques": []}'))
    assert (empty.layer_version, empty.scores, empty.tactics) == ("4.4", {}, {})


def test_read_layer_cells_and_comments_survive_a_round_trip(
        embedded: KnowledgeBase, tmp_path: Path) -> None:
    """An entry with a tactic is one cell; without one, every cell of the technique."""
    from mlthreat.kb.layers import read_scores

    text = _layer_text(
        _entry(techniqueID="AML.T0015", tactic="impact", score=5, comment="seen in prod"),
        _entry(techniqueID="AML.T0043", score=2, comment="all of it"),
        _entry(techniqueID="AML.T0043", tactic="ai-attack-staging", score=7),
        _entry(techniqueID="AML.T0024.002", score=1),
    )
    path = _write(tmp_path, text, "in.json")
    layer = nav.read_layer(path)
    assert layer.tactic_scores == {("AML.T0015", "impact"): 5, ("AML.T0043", None): 2,
                                   ("AML.T0043", "ai-attack-staging"): 7,
                                   ("AML.T0024.002", None): 1}
    assert layer.comments == {("AML.T0015", "impact"): "seen in prod",
                              ("AML.T0043", None): "all of it"}
    assert layer.warnings == ()
    scores = read_scores(path, embedded)
    assert scores.by_technique == {"AML.T0015": 5, "AML.T0043": 7, "AML.T0024.002": 1}
    out = json.loads(nav.render(embedded, layer="scores", scores=scores.cells,
                                comments=scores.comments))
    got = {(e["techniqueID"], e.get("tactic")): (e.get("score"), e.get("comment"))
           for e in out["techniques"]}
    assert got == {
        ("AML.T0015", "impact"): (5, "seen in prod"),  # only that cell, not its other two
        ("AML.T0043", "ai-attack-staging"): (7, "all of it"),  # AML.T0043 has one tactic
        ("AML.T0024", "exfiltration"): (None, None),  # the parent, expanded
        ("AML.T0024.002", None): (1, None),
    }
    # read back again: the same cells and comments
    again = nav.read_layer(_write(tmp_path, json.dumps(out), "out.json"))
    assert again.tactic_scores == {("AML.T0015", "impact"): 5,
                                   ("AML.T0043", "ai-attack-staging"): 7,
                                   ("AML.T0024.002", None): 1}
    assert again.comments == {("AML.T0015", "impact"): "seen in prod",
                              ("AML.T0043", "ai-attack-staging"): "all of it"}


def test_a_technique_entry_without_tactic_fills_every_cell(embedded: KnowledgeBase) -> None:
    layer = nav.scores_layer(embedded, {("AML.T0015", None): 3, ("AML.T0015", "impact"): 9},
                             "x")
    cells = {(e["techniqueID"], e.get("tactic")): e["score"] for e in layer["techniques"]}
    assert cells == {("AML.T0015", "initial-access"): 3, ("AML.T0015", "defense-evasion"): 3,
                     ("AML.T0015", "impact"): 9}


@pytest.mark.parametrize("header,version,warning", [
    ('"version": "3.0",', "3.0", "layer format 3.0 is older than 4.3; read as 4.x"),
    ('"versions": {"layer": "4.0", "attack": "8"},', "4.0", "layer format 4.0 is older"),
    ('"versions": {"layer": "4.2"},', "4.2", "layer format 4.2 is older than 4.3"),
    ("", None, "no 'versions' block giving the layer format; read as a 4.x layer"),
])
def test_older_and_unversioned_layers_read_with_a_warning(
        tmp_path: Path, header: str, version: str | None, warning: str) -> None:
    path = _write(tmp_path, '{"name": "old", "domain": "mitre-enterprise", ' + header
                  + ' "techniques": [{"techniqueID": "AML.T0015", "tactic": "impact", '
                  '"score": 1, "comment": "c"}]}', "old.json")
    layer = nav.read_layer(path)
    assert layer.layer_version == version
    assert layer.tactic_scores == {("AML.T0015", "impact"): 1.0}
    assert [w.code for w in layer.warnings] == ["layer-version"]
    assert warning in str(layer.warnings[0]) and str(layer.warnings[0]).startswith(str(path))


def test_official_layers_read_without_warnings_and_round_trip(base: KnowledgeBase,
                                                             tmp_path: Path) -> None:
    freq = nav.read_layer(OFFICIAL_FREQUENCY)
    assert freq.warnings == () and freq.comments == {}
    out = json.loads(nav.render(base, layer="scores", scores=freq.tactic_scores))
    again = nav.read_layer(_write(tmp_path, json.dumps(out), "freq.json"))
    assert again.tactic_scores == freq.tactic_scores
    assert again.tactic_scores[("AML.T0012", "initial-access")] == 6


def test_a_layer_of_many_entries_names_the_bad_ones_line_quickly(tmp_path: Path) -> None:
    # the line of each entry was counted from the file's start: 200 000 entries took minutes
    import time

    from mlthreat.kb.layers import read_layer

    entries = ['{"techniqueID": "AML.T0043", "score": 1}'] * 200_000
    entries.append('{"techniqueID": "AML.T0043", "score": "high"}')
    path = tmp_path / "big.json"
    path.write_text('{"name": "big", "domain": "atlas-atlas", "versions": {"layer": "4.5"}, '
                    '"techniques": [\n'
                    + ",\n".join(entries) + "\n]}", encoding="utf-8")
    start = time.perf_counter()
    with pytest.raises(DataFileError, match=r"big\.json:200002, entry techniques\[200000\] "
                                            r"\(AML\.T0043\), field 'score'"):
        read_layer(path)
    assert time.perf_counter() - start < 20
