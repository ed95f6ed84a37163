"""The STIX bundle loader drops nothing silently: hostile bundles built from the official one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from atlas_paths import STIX_BUNDLE

from mlthreat import kb as kbmod
from mlthreat.kb.check import check_file
from mlthreat.kb.export import navigator

MISSING = "attack-pattern--00000000-0000-4000-8000-000000000000"


def _ref(objects: list[dict[str, Any]], atlas_id: str) -> dict[str, Any]:
    return next(o for o in objects if any(r.get("external_id") == atlas_id
                                          for r in o.get("external_references", ())))


def _relationship(kind: str, src: str, dst: str, n: int) -> dict[str, Any]:
    return {"type": "relationship", "spec_version": "2.1",
            "id": f"relationship--00000000-0000-4000-8000-{n:012d}",
            "created": "2025-01-01T00:00:00.000Z", "modified": "2025-01-01T00:00:00.000Z",
            "relationship_type": kind, "source_ref": src, "target_ref": dst}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Path:
    bundle = json.loads(STIX_BUNDLE.read_text(encoding="utf-8"))
    objs = bundle["objects"]
    # an id whose prefix is not its type (a mitigation filed as attack-pattern--)
    m0 = _ref(objs, "AML.M0000")
    old, new = m0["id"], m0["id"].replace("course-of-action--", "attack-pattern--")
    for o in objs:
        for key in ("id", "source_ref", "target_ref"):
            if o.get(key) == old:
                o[key] = new
    # modified before created
    _ref(objs, "AML.TA0002")["modified"] = "2020-01-01T00:00:00.000Z"
    # revoked (replaced by AML.T0043) and deprecated objects
    t15, t43 = _ref(objs, "AML.T0015"), _ref(objs, "AML.T0043")
    t15["revoked"] = True
    objs.append(_relationship("revoked-by", t15["id"], t43["id"], 1))
    _ref(objs, "AML.M0004")["x_mitre_deprecated"] = True
    # relationships to objects that are not there
    objs.append(_relationship("mitigates", _ref(objs, "AML.M0001")["id"], MISSING, 2))
    objs.append(_relationship("mitigates", "course-of-action--" + MISSING[15:], t43["id"], 3))
    # a kill-chain phase no tactic has
    _ref(objs, "AML.T0000")["kill_chain_phases"][0]["phase_name"] = "recon-legacy"
    # a sub-technique without its subtechnique-of relationship, and one without a parent at all
    t51 = _ref(objs, "AML.T0051.001")["id"]
    objs[:] = [o for o in objs if not (o.get("relationship_type") == "subtechnique-of"
                                       and o["source_ref"] == t51)]
    orphan = json.loads(json.dumps(_ref(objs, "AML.T0000.000")))
    orphan["id"] = "attack-pattern--11111111-1111-4111-8111-111111111111"
    orphan["external_references"][0]["external_id"] = "AML.T0199.001"
    orphan["name"] = "Orphan"
    objs.append(orphan)
    path = tmp_path_factory.mktemp("stix") / "hostile.json"
    path.write_text(json.dumps(bundle), encoding="utf-8")
    return path


def _codes(base: kbmod.KnowledgeBase) -> list[tuple[str, str]]:
    return [(w.code, w.atlas_id) for w in base.warnings]


def test_official_bundle_warns_only_about_its_dates(official_stix: kbmod.KnowledgeBase) -> None:
    assert _codes(official_stix) == [("modified-before-created", "AML.T0087"),
                                     ("modified-before-created", "AML.T0096")]
    assert official_stix.retired == ()
    assert str(official_stix.warnings[0]) == (
        f"{STIX_BUNDLE}, entry attack-pattern--c9f8f4b0-e377-55b1-bad3-aa5f13389216 "
        "(AML.T0087), field 'modified': modified 2025-10-27T00:00:00.000Z is before created "
        "2025-10-31T00:00:00.000Z")


def test_hostile_bundle_warnings(hostile: Path) -> None:
    base = kbmod.load_file(hostile)
    codes = _codes(base)
    assert codes.count(("modified-before-created", "AML.TA0002")) == 1
    assert ("id-type-mismatch", "AML.M0000") in codes
    assert ("revoked", "AML.T0015") in codes and ("deprecated", "AML.M0004") in codes
    assert ("no-tactic", "AML.T0000") in codes
    assert ("parent-inferred", "AML.T0051.001") in codes
    assert ("parent-missing", "AML.T0199.001") in codes
    dangling = [w for w in base.warnings if w.code == "dangling-relationship"]
    assert [w.field for w in dangling] == ["target_ref", "source_ref"]
    assert dangling[0].message == (f"mitigates link (from AML.M0001): target_ref {MISSING} is "
                                   "not in the bundle; left out")
    assert dangling[1].entry == "relationship--00000000-0000-4000-8000-000000000003"
    # the mitigations that linked the revoked technique lose the link, each said once
    assert sorted(w.atlas_id for w in base.warnings if w.code == "retired-link") == [
        "AML.M0003", "AML.M0006", "AML.M0009", "AML.M0010", "AML.M0015", "AML.M0034"]
    no_tactic = next(w for w in base.warnings if w.code == "no-tactic")
    assert no_tactic.message == ("kill-chain phase 'recon-legacy' matches no tactic of the "
                                 "bundle; it is under no tactic of the matrix")
    assert len(codes) == 1 + 1 + 2 + 1 + 1 + 1 + 2 + 6 + 2  # + the two official dates


def test_hostile_bundle_content(hostile: Path) -> None:
    base = kbmod.load_file(hostile)
    # the mismatched id is read by its type, with its links
    assert base.kind("AML.M0000") == "mitigation"
    assert [u.technique for u in base.mitigation("AML.M0000").techniques] == [
        "AML.T0000", "AML.T0003", "AML.T0002", "AML.T0004", "AML.T0005", "AML.T0005.000",
        "AML.T0005.002"]
    # retired objects resolve but leave the matrix
    assert base.get("AML.T0015").name == "Evade AI Model"
    assert (base.status("AML.T0015"), base.status("AML.M0004")) == ("revoked", "deprecated")
    assert base.status("AML.T0043") == "active"
    assert {(r.object.id, r.status, r.replaced_by) for r in base.retired} == {
        ("AML.T0015", "revoked", "AML.T0043"), ("AML.M0004", "deprecated", None)}
    assert "AML.T0015" not in [t.id for t in base.techniques]
    assert "AML.T0015" not in [t.id for t in base.techniques_of("AML.TA0007")]
    assert "AML.T0015" not in {o.id for o in base}
    assert "AML.M0004" not in [m.id for m in base.mitigations_of("AML.T0024.002")]
    assert "AML.T0015" not in [u.technique for u in base.mitigation("AML.M0003").techniques]
    layer = json.loads(navigator.render(base))
    assert "AML.T0015" not in {e["techniqueID"] for e in layer["techniques"]}
    assert "AML.T0043" in {e["techniqueID"] for e in layer["techniques"]}
    # the technique whose phase matched nothing is kept, under no tactic
    assert base.technique("AML.T0000").tactics == ()
    assert "AML.T0000" not in [t.id for t in base.techniques_of("AML.TA0002")]
    # parents: inferred from the ID, or none when that is missing too
    assert base.technique("AML.T0051.001").parent == "AML.T0051"
    assert "AML.T0051.001" in [t.id for t in base.subtechniques("AML.T0051")]
    orphan = base.technique("AML.T0199.001")
    assert (orphan.parent, orphan.tactics) == (None, ("AML.TA0002",))


def test_revoked_parent_takes_its_subtechniques(tmp_path: Path) -> None:
    bundle = json.loads(STIX_BUNDLE.read_text(encoding="utf-8"))
    _ref(bundle["objects"], "AML.T0051")["x_mitre_deprecated"] = True
    path = tmp_path / "b.json"
    path.write_text(json.dumps(bundle), encoding="utf-8")
    base = kbmod.load_file(path)
    assert {r.object.id for r in base.retired} == {
        "AML.T0051", "AML.T0051.000", "AML.T0051.001", "AML.T0051.002"}
    assert base.technique("AML.T0051.001").parent == "AML.T0051"
    assert not any(t.id.startswith("AML.T0051") for t in base.techniques)


def test_check_reports_the_same_diagnostics(hostile: Path) -> None:
    base = kbmod.load_file(hostile)
    report = check_file(kbmod.load(), hostile)
    assert report.file_format == "stix-bundle"
    stix = [(f.kind, f.id) for f in report.findings if f.kind not in ("newer-id",)]
    assert sorted(stix) == sorted(_codes(base))
    # and only the orphan's ID is missing from the embedded data (past its numbering)
    assert [f.found for f in report.findings if f.kind == "newer-id"] == ["AML.T0199.001"]
    revoked = next(f for f in report.findings if f.kind == "revoked")
    text = hostile.read_text(encoding="utf-8")
    assert revoked.found == _ref(json.loads(text)["objects"], "AML.T0015")["id"]
    assert revoked.location.endswith(".revoked") and revoked.location.startswith("objects[")
    assert revoked.line == 1  # the file is one line of JSON


def _write(tmp_path: Path, bundle: dict[str, Any]) -> Path:
    path = tmp_path / "b.json"
    path.write_text(json.dumps(bundle), encoding="utf-8")
    return path


def test_subtechnique_of_links_that_the_ids_contradict_are_left_out(tmp_path: Path) -> None:
    # a cycle of top-level techniques, a self-loop, a sub-technique filed under the wrong
    # technique: each was read as given (the cycle's techniques vanished from the matrix
    # without a word); now the IDs are believed and each link is a warning
    bundle = json.loads(STIX_BUNDLE.read_text(encoding="utf-8"))
    objs = bundle["objects"]
    t0, t1, t2 = (_ref(objs, i)["id"] for i in ("AML.T0000", "AML.T0001", "AML.T0002"))
    sub = _ref(objs, "AML.T0000.000")["id"]
    objs += [_relationship("subtechnique-of", t0, t1, 1),
             _relationship("subtechnique-of", t1, t0, 2),
             _relationship("subtechnique-of", t2, t2, 3),
             _relationship("subtechnique-of", sub, t2, 4)]
    base = kbmod.load_file(_write(tmp_path, bundle))
    mismatches = [w.message for w in base.warnings if w.code == "parent-mismatch"]
    assert mismatches == [
        "subtechnique-of AML.T0000 under AML.T0001, but AML.T0000 is not a sub-technique; "
        "left out",
        "subtechnique-of AML.T0001 under AML.T0000, but AML.T0001 is not a sub-technique; "
        "left out",
        "subtechnique-of AML.T0002 under AML.T0002, but AML.T0002 is not a sub-technique; "
        "left out",
        "subtechnique-of AML.T0000.000 under AML.T0002, but AML.T0000.000 already has parent "
        "AML.T0000; left out",
    ]
    assert [base.technique(i).parent for i in ("AML.T0000", "AML.T0001", "AML.T0002")] == \
        [None, None, None]
    assert base.technique("AML.T0000.000").parent == "AML.T0000"
    assert {"AML.T0000", "AML.T0001", "AML.T0002"} <= {t.id for t in base.techniques
                                                       if t.tactics}


@pytest.mark.parametrize("edit, message", [
    (lambda o: o.pop("id"), r"entry objects\[\d+\], field 'id': an attack-pattern needs a "
                            r"string 'id'"),
    (lambda o: o.update(external_references="AML.T0000"),
     r"field 'external_references': external_references must be a list of objects"),
    (lambda o: o["external_references"][0].update(external_id=42),
     r"field 'external_references': the 'mitre-atlas' external_id is int 42, not an ATLAS ID"),
    (lambda o: o.update(created=20240101), r"\(AML.T0000\), field 'created': expected a "
                                           r"timestamp, got int"),
])
def test_malformed_atlas_objects_name_the_entry_and_field(tmp_path: Path, edit: Any,
                                                          message: str) -> None:
    bundle = json.loads(STIX_BUNDLE.read_text(encoding="utf-8"))
    edit(_ref(bundle["objects"], "AML.T0000"))
    with pytest.raises(kbmod.DataFileError, match=message):
        kbmod.load_file(_write(tmp_path, bundle))


def test_a_relationship_with_non_text_ends_is_a_dangling_warning(tmp_path: Path) -> None:
    bundle = json.loads(STIX_BUNDLE.read_text(encoding="utf-8"))
    bundle["objects"].append({"type": "relationship", "id": "relationship--x",
                              "relationship_type": "subtechnique-of", "source_ref": ["a"],
                              "target_ref": {"x": 1}})
    base = kbmod.load_file(_write(tmp_path, bundle))
    assert [(w.code, w.entry) for w in base.warnings if w.code == "dangling-relationship"] == \
        [("dangling-relationship", "relationship--x")]
