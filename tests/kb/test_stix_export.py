"""STIX 2.1 export: valid, joins the official ATLAS bundle by ID, deterministic, loads back."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any

import pytest
from atlas_paths import STIX_BUNDLE
from builders import write_extension
from stix2validator import ValidationOptions, validate_string

from mlthreat import kb as kbmod
from mlthreat.kb.export import exporter
from mlthreat.kb.export import stix as stix_export


@dataclass(frozen=True)
class Export:
    kb: kbmod.KnowledgeBase
    text: str
    objects: list[dict[str, Any]]

    def of_type(self, stix_type: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["type"] == stix_type]

    def atlas_ids(self) -> dict[str, str]:
        """ATLAS ID -> STIX ID for tactics, techniques and mitigations."""
        return {o["external_references"][0]["external_id"]: o["id"] for o in self.objects
                if o["type"] in ("x-mitre-tactic", "attack-pattern", "course-of-action")}

    def links(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o.get("relationship_type") == kind]


@pytest.fixture(scope="module")
def exports(embedded, official) -> dict[str, Export]:
    """Each knowledge base rendered once for the whole module (rendering takes ~0.4 s)."""
    out = {}
    for name, base in (("embedded", embedded), ("official", official)):
        text = stix_export.render(base)
        out[name] = Export(base, text, json.loads(text)["objects"])
    return out


@pytest.fixture(params=["embedded", "official"])
def export(request: pytest.FixtureRequest, exports: dict[str, Export]) -> Export:
    return exports[request.param]


@pytest.fixture(scope="module")
def official_bundle() -> list[dict[str, Any]]:
    return json.loads(STIX_BUNDLE.read_text("utf-8"))["objects"]


def _validate(text: str):
    # Not strict: ATT&CK's custom x-mitre-* types and x_ properties are warnings, not errors.
    # enforce_refs: every *_ref(s) must resolve inside the bundle.
    return validate_string(text, ValidationOptions(version="2.1", strict=False,
                                                   enforce_refs=True, silent=True))


def test_registered_and_named():
    assert exporter("stix") is stix_export
    assert (stix_export.FORMAT, stix_export.SUFFIX) == ("stix", ".json")


def test_passes_stix_validator(export):
    result = _validate(export.text)
    assert result.is_valid, [str(e) for e in result.errors]
    assert result.errors == []


def test_content_counts(export):
    counts = Counter(o["type"] for o in export.objects)
    assert counts == {"identity": 1, "x-mitre-collection": 1, "x-mitre-matrix": 1,
                      "x-mitre-tactic": 16, "attack-pattern": 170, "course-of-action": 35,
                      "report": 57, "relationship": counts["relationship"]}
    assert len(export.links("subtechnique-of")) == 69


def test_ids_equal_official_bundle(export, official_bundle):
    official = {o["external_references"][0]["external_id"]: o["id"] for o in official_bundle
                if o["type"] in ("x-mitre-tactic", "attack-pattern", "course-of-action")}
    assert len(official) == 221
    assert export.atlas_ids() == official
    # Parent links and the matrix keep their (unique, reproducible) official IDs too.
    parents = {o["id"] for o in official_bundle if o.get("relationship_type") == "subtechnique-of"}
    assert {o["id"] for o in export.links("subtechnique-of")} == parents
    assert ([o["id"] for o in export.of_type("x-mitre-matrix")]
            == [o["id"] for o in official_bundle if o["type"] == "x-mitre-matrix"])
    assert stix_export.stix_id("AML.T0000") == official["AML.T0000"]
    assert stix_export.stix_id("AML.TA0002") == (
        "x-mitre-tactic--8d151547-7423-5bac-bc2d-a6fd02afba29")


def test_ids_unique(export):
    ids = [o["id"] for o in export.objects]
    assert len(ids) == len(set(ids))
    rel = [o["id"] for o in export.of_type("relationship")]
    assert len(rel) == len(set(rel)) == len(export.links("subtechnique-of")) + len(
        export.links("mitigates"))


def test_mitigates_one_per_link(export):
    links = [(m.id, u.technique, u.use.strip()) for m in export.kb.mitigations
             for u in m.techniques]
    ids = export.atlas_ids()
    got = [(o["source_ref"], o["target_ref"], o.get("description", ""))
           for o in export.links("mitigates")]
    # A link listed twice with identical content is one relationship.
    assert Counter(got) == Counter((ids[m], ids[t], use) for m, t, use in set(links))
    assert len(got) == len(set(links))


def test_official_use_texts_give_distinct_links(exports):
    official = exports["official"].kb
    mitigates = exports["official"].links("mitigates")
    assert len(mitigates) == sum(len(m.techniques) for m in official.mitigations) == 248
    pair = (stix_export.stix_id("AML.M0002"), stix_export.stix_id("AML.T0043.001"))
    twins = [o for o in mitigates if (o["source_ref"], o["target_ref"]) == pair]
    assert len(twins) == 2 and twins[0]["id"] != twins[1]["id"]
    assert sorted(o["description"] for o in twins) == sorted(official.uses_of(
        "AML.M0002", "AML.T0043.001"))
    assert twins[1]["description"].startswith("Obfuscating model outputs")


def test_tactics_and_techniques(export):
    tactic = next(o for o in export.of_type("x-mitre-tactic")
                  if o["external_references"][0]["external_id"] == "AML.TA0001")
    assert tactic["x_mitre_shortname"] == "ai-attack-staging"
    assert tactic["external_references"][0] == {
        "source_name": "mitre-atlas", "url": "https://atlas.mitre.org/tactics/AML.TA0001",
        "external_id": "AML.TA0001"}
    by_atlas = {o["external_references"][0]["external_id"]: o
                for o in export.of_type("attack-pattern")}
    sub = by_atlas["AML.T0043.001"]
    assert sub["x_mitre_is_subtechnique"] is True
    assert sub["kill_chain_phases"] == [{"kill_chain_name": "mitre-atlas",
                                         "phase_name": "ai-attack-staging"}]
    assert sub["kill_chain_phases"] == by_atlas["AML.T0043"]["kill_chain_phases"]
    assert by_atlas["AML.T0043"]["x_mitre_is_subtechnique"] is False
    assert by_atlas["AML.T0016.001"]["external_references"][1] == {
        "source_name": "mitre-attack", "url": "https://attack.mitre.org/techniques/T1588/002/",
        "external_id": "T1588.002"}
    # The data's modified (2025-10-27) precedes created (2025-10-31); modified is raised.
    assert (by_atlas["AML.T0087"]["created"], by_atlas["AML.T0087"]["modified"]) == (
        "2025-10-31T00:00:00.000Z", "2025-10-31T00:00:00.000Z")


def test_reports_for_case_studies(export):
    reports = export.of_type("report")
    assert len(reports) == len(export.kb.case_studies) == 57
    report = next(o for o in reports if o["external_references"][0]["external_id"] == "AML.CS0000")
    ids = export.atlas_ids()
    assert report["object_refs"] == [ids[t] for t in (
        "AML.T0000.001", "AML.T0002.000", "AML.T0005", "AML.T0043.003", "AML.T0042", "AML.T0015")]
    assert report["published"] == "2020-01-01T00:00:00Z"
    assert report["name"] == "Evasion of Deep Learning Detector for Malware C&C Traffic"
    assert report["external_references"][0] == {
        "source_name": "mitre-atlas", "url": "https://atlas.mitre.org/studies/AML.CS0000",
        "external_id": "AML.CS0000"}
    assert report["x_mlthreat_procedure"][0]["technique"] == "AML.T0000.001"


def test_collection_records_version(export):
    (collection,) = export.of_type("x-mitre-collection")
    (identity,) = export.of_type("identity")
    assert collection["x_mitre_version"] == export.kb.version == "5.6.0"
    assert collection["created_by_ref"] == identity["id"]
    listed = [c["object_ref"] for c in collection["x_mitre_contents"]]
    assert listed == [o["id"] for o in export.objects[2:]]
    (matrix,) = export.of_type("x-mitre-matrix")
    assert matrix["tactic_refs"] == [export.atlas_ids()[t.id] for t in export.kb.tactics]


def test_render_is_byte_identical(export):
    assert stix_export.render(export.kb) == export.text


def test_loads_back(export, tmp_path):
    path = tmp_path / "bundle.json"
    path.write_text(export.text, "utf-8")
    back = kbmod.load_file(path)
    src = export.kb
    assert [(t.id, t.name, t.shortname) for t in back.tactics] == [
        (t.id, t.name, t.shortname) for t in src.tactics]
    assert [(t.id, t.name, t.parent) for t in back.techniques] == [
        (t.id, t.name, t.parent) for t in src.techniques]
    for t in src.techniques:
        assert back.tactics_of(t.id) == src.tactics_of(t.id)
    assert [m.name for m in back.mitigations] == [m.name for m in src.mitigations]

    def links(base):
        return [(m.id, u.technique, u.use.strip()) for m in base.mitigations
                for u in m.techniques]
    # One relationship per distinct link; the embedded snapshot lists two links twice.
    assert Counter(links(back)) == Counter(set(links(src)))


def _small_base(base: kbmod.KnowledgeBase) -> kbmod.KnowledgeBase:
    """The few ATLAS objects ACME_EXTENSION refers to, so its bundle validates fast."""
    techniques = ("AML.T0024", "AML.T0024.002")
    return replace(
        base,
        tactics=tuple(t for t in base.tactics if t.id in ("AML.TA0009", "AML.TA0010")),
        techniques=tuple(base.technique(t) for t in techniques),
        mitigations=(replace(base.mitigation("AML.M0004"), techniques=tuple(
            u for u in base.mitigation("AML.M0004").techniques if u.technique in techniques)),),
        case_studies=(),
    )


def test_extension_objects(tmp_path, embedded, official_bundle):
    from mlthreat.kb.sources.extension import merge

    merged = merge(_small_base(embedded), write_extension(tmp_path))
    text = stix_export.render(merged)
    result = _validate(text)
    assert result.is_valid, [str(e) for e in result.errors]
    objects = {o["id"]: o for o in json.loads(text)["objects"]}
    official_ids = {o["id"] for o in official_bundle}
    acme = stix_export.stix_id("ACME.T0001.000")
    assert acme.startswith("attack-pattern--") and acme not in official_ids
    assert objects[acme]["external_references"] == [
        {"source_name": "acme", "external_id": "ACME.T0001.000"}]
    assert objects[acme]["kill_chain_phases"][0]["phase_name"] == "collection"
    assert stix_export.stix_id("AML.T0024.002") in objects  # ATLAS IDs unchanged
    links = {(o["relationship_type"], o["source_ref"], o["target_ref"]): o
             for o in objects.values() if o["type"] == "relationship"}
    sub = links[("subtechnique-of", acme, stix_export.stix_id("ACME.T0001"))]
    assert sub["id"] not in official_ids
    use = links[("mitigates", stix_export.stix_id("ACME.M0001"),
                 stix_export.stix_id("AML.T0024.002"))]
    assert use["description"] == "Slows model theft through stolen features."
    report = objects[stix_export.stix_id("ACME.CS0001")]
    assert report["object_refs"] == [acme, stix_export.stix_id("AML.T0024.002")]
    assert report["external_references"][0] == {"source_name": "acme",
                                                "external_id": "ACME.CS0001"}
    (matrix,) = [o for o in objects.values() if o["type"] == "x-mitre-matrix"]
    assert matrix["tactic_refs"] == [stix_export.stix_id("AML.TA0009"),
                                     stix_export.stix_id("AML.TA0010")]
    (collection,) = [o for o in objects.values() if o["type"] == "x-mitre-collection"]
    assert collection["x_mitre_version"] == merged.version == "5.6.0+ACME"
    assert text == stix_export.render(merged)
