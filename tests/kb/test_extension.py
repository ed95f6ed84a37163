"""Organisation extensions merge over the base; every mistake names file, line, entry, field."""

from __future__ import annotations

import pytest
from builders import ACME_EXTENSION, write_extension

from mlthreat import kb as kbmod


def test_merge_adds_objects_and_links(tmp_path):
    merged = kbmod.load(extensions=[write_extension(tmp_path)])
    assert merged.version == "5.6.0+ACME"
    assert merged.technique("ACME.T0001.000").parent == "ACME.T0001"
    assert [t.id for t in merged.tactics_of("ACME.T0001.000")] == ["AML.TA0009"]
    assert "ACME.T0001" in [t.id for t in merged.techniques_of("AML.TA0009")]
    mits = [m.id for m in merged.mitigations_of("AML.T0024.002")]
    assert "ACME.M0001" in mits and "AML.M0004" in mits
    assert merged.uses_of("ACME.M0001", "AML.T0024.002") == (
        "Slows model theft through stolen features.",)
    assert [c.id for c in merged.case_studies_using("AML.T0024.002")][-1] == "ACME.CS0001"
    assert merged.case_study("ACME.CS0001").date_label == "2025-03"
    assert len(merged.techniques) == 172


@pytest.mark.parametrize("old,new,line,entry,field,message", [
    ("    name: Scrape the feature store\n", "", 4, "ACME.T0001", "name",
     "missing required field"),
    ("  - id: ACME.T0001.000\n", "  - id: ACME.T0001\n", 9, "ACME.T0001", "id",
     "duplicate ID 'ACME.T0001' (already in this file)"),
    ("  - id: ACME.M0001\n", "  - id: AML.M0001\n", 14, "AML.M0001", "id",
     "outside this file's namespace"),
    ("  - id: ACME.CS0001\n", "  - id: ACME.CS01\n", 21, "ACME.CS01", "id", "malformed ID"),
    ("tactics: [AML.TA0009]", "tactics: [AML.TA0099]", 7, "ACME.T0001", "tactics",
     "unknown ID 'AML.TA0099'"),
    ("      - ACME.T0001\n", "      - ACME.T0404\n", 17, "ACME.M0001", "techniques",
     "unknown ID 'ACME.T0404'"),
    ("maturity: demonstrated", "maturity: certain", 8, "ACME.T0001", "maturity",
     "Input should be"),
    ("case-study-type: incident", "case-study-type: rumour", 26, "ACME.CS0001",
     "case-study-type", "Input should be"),
    ("    maturity: demonstrated\n", "    maturity: demonstrated\n    colour: red\n",
     9, "ACME.T0001", "colour", "unknown field"),
])
def test_errors_name_file_line_entry_field(tmp_path, old, new, line, entry, field, message):
    assert old in ACME_EXTENSION
    path = write_extension(tmp_path, ACME_EXTENSION.replace(old, new, 1))
    with pytest.raises(kbmod.DataFileError) as info:
        kbmod.load(extensions=[path])
    err = info.value
    assert (err.path, err.line, err.entry, err.field) == (str(path), line, entry, field)
    assert message in err.reason


def test_duplicate_of_base_id_and_bad_yaml(tmp_path):
    first = write_extension(tmp_path)
    second = tmp_path / "again.yaml"
    second.write_text(ACME_EXTENSION)
    with pytest.raises(kbmod.DataFileError, match=r"duplicate ID 'ACME.T0001'.*base"):
        kbmod.load(extensions=[first, second])
    reserved = ACME_EXTENSION.replace("namespace: ACME", "namespace: AML").replace("ACME.", "AML.")
    with pytest.raises(kbmod.DataFileError, match=r"acme.yaml:1, field 'namespace': the AML "):
        kbmod.load(extensions=[write_extension(tmp_path, reserved)])
    with pytest.raises(kbmod.DataFileError, match=r"acme.yaml:3: invalid YAML"):
        kbmod.load(extensions=[write_extension(tmp_path, "namespace: ACME\ntechniques: [\n")])
    with pytest.raises(kbmod.DataFileError, match="must be a mapping"):
        kbmod.load(extensions=[write_extension(tmp_path, "- just a list\n")])


@pytest.mark.parametrize("old,new,message", [
    ("    subtechnique-of: ACME.T0001\n", "    subtechnique-of: ACME.T0001.000\n",
     "is a sub-technique, expected a technique"),
    ("  - id: ACME.T0001.000\n", "  - id: ACME.T0002.000\n", "numbered ACME.T0001.NNN"),
    ("    subtechnique-of: ACME.T0001\n", "    tactics: [AML.TA0009]\n",
     "numbered as a sub-technique"),
    ("    maturity: demonstrated\n", "    maturity: demonstrated\n    name: Again\n",
     "key 'name' given twice"),
    ("incident-date: 2025-03-01", "incident-date: 2025-13-45", "month must be in 1..12"),
])
def test_structure_mistakes(tmp_path, old, new, message):
    assert old in ACME_EXTENSION
    with pytest.raises(kbmod.DataFileError, match=message):
        kbmod.load(extensions=[write_extension(tmp_path, ACME_EXTENSION.replace(old, new, 1))])


def test_extension_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MLTHREAT_EXTENSIONS", str(write_extension(tmp_path)))
    assert "ACME.T0001" in kbmod.load()
