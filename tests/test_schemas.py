"""The shipped JSON Schemas describe what ``mlthreat kb … --json`` really prints.

Every command runs as a user runs it (a real process, real files) and its output is validated
against the schema of its ``kind``; broken documents must fail the same schemas.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from atlas_paths import ATLAS_YAML, CASE_STUDY_LAYERS, RELEASES
from builders import changed, write_extension
from jsonschema import Draft202012Validator
from route_server import Route, route_server

from mlthreat import __version__
from mlthreat.kb.ids import ID_PATTERN
from mlthreat.schemas import kinds, schema

#: The documents ``mlthreat kb … --json`` prints, each with its schema here.
KINDS = ("mlthreat.kb.matrix", "mlthreat.kb.object", "mlthreat.kb.search", "mlthreat.kb.case-study",
         "mlthreat.kb.diff", "mlthreat.kb.check", "mlthreat.kb.update")
ENVELOPE = ("kind", "schema_version", "mlthreat_version", "atlas_version", "atlas_source")
STALE_CSV = (
    "technique_id,technique_name,control\n"
    "AML.T0015,Evade ML Model,WAF\n"
    "AML.T0024.002,Evade AI Model,oops\n"
    "AML.TA0001,ML Attack Staging,none\n"
    "AML.T0199,Something retired,none\n"
    "AML.T0043,Craft Adversarial Data,ok\n"
)


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    for name in ("MLTHREAT_ATLAS", "MLTHREAT_EXTENSIONS"):
        if name not in (env or {}):
            full_env.pop(name, None)
    return subprocess.run([sys.executable, "-m", "mlthreat", *args], capture_output=True,
                          text=True, env=full_env, timeout=120)


def run_json(*args: str, exit_code: int = 0, env: dict[str, str] | None = None) -> Any:
    out = run(*args, "--json", env=env)
    assert out.returncode == exit_code, out.stderr
    return json.loads(out.stdout)


def errors(doc: Any, kind: str | None = None) -> list[str]:
    validator = Draft202012Validator(schema(kind or doc["kind"]))
    return [f"{e.json_path}: {e.message}" for e in validator.iter_errors(doc)]


def assert_valid(doc: Any, kind: str) -> None:
    assert doc["kind"] == kind
    problems = errors(doc, kind)
    assert not problems, "\n".join(problems[:10])


# -- the schemas themselves ----------------------------------------------------------------------
def named_schema(kind: str) -> dict[str, Any]:
    """The schema of ``kind``, checked to be valid draft 2020-12 and named after the kind."""
    s = schema(kind)
    Draft202012Validator.check_schema(s)
    short = kind.removeprefix("mlthreat.")
    assert s["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert s["$id"] == f"https://mlthreat.invalid/schemas/{short}.schema.json"
    return s


@pytest.mark.parametrize("kind", KINDS)
def test_schema_is_valid_draft_2020_12(kind):
    s = named_schema(kind)
    assert s["title"] and len(s["description"]) > 40
    assert s["properties"]["kind"] == {"const": kind}
    assert s["properties"]["schema_version"] == {"const": 1}
    required = set(s["required"])
    assert {"kind", "schema_version", "mlthreat_version"} <= required
    if kind != "mlthreat.kb.update":
        assert set(ENVELOPE) <= required


def test_loader_short_names_and_unknown_kind():
    assert schema("kb.check") == schema("mlthreat.kb.check")
    assert set(KINDS) <= set(kinds())
    s = schema("kb.diff")
    s["title"] = "changed"
    assert schema("kb.diff")["title"] != "changed"  # each call is a fresh copy
    for bad in ("kb.nothing", "../kb.check", "KB.CHECK", ""):
        with pytest.raises(KeyError, match="no schema for document kind"):
            schema(bad)


@pytest.mark.parametrize("kind", kinds())
def test_every_shipped_schema_is_valid_and_named_after_its_kind(kind):
    """Holds for every file in mlthreat/schemas, not only the kb ones."""
    s = named_schema(kind)
    assert s.get("title") and s.get("description")
    if "kind" in s.get("properties", {}):
        assert s["properties"]["kind"] == {"const": kind}


def _patterns(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["pattern"]] if isinstance(node.get("pattern"), str) else []
        return found + [p for v in node.values() for p in _patterns(v)]
    if isinstance(node, list):
        return [p for v in node for p in _patterns(v)]
    return []


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "mlthreat.kb.update"])
def test_id_patterns_agree_with_the_package(kind):
    """Every single-ID pattern in a schema accepts some real ID and nothing that the package's
    own ID_PATTERN rejects (extension prefixes such as ``ACME.`` included)."""
    good = ["AML.T0043", "AML.T0043.001", "AML.TA0001", "AML.M0004", "AML.CS0001",
            "ACME.T0001", "ACME.T0001.000", "ACME.M0001"]
    bad = ["AML.T43", "AML.T0043.01", "aml.T0043", "AML.TA001", "T0043", "AML.T0043.0001",
           "AML.CS00001", "AML.X0001", "A.T0001", "AML.T0043 ", "AML.T0043,AML.T0044", ""]
    id_like = [p for p in _patterns(schema(kind)) if ("T\\d{4}" in p or "TA\\d{4}" in p)
               and "parent:" not in p and ",[A-Z]" not in p]
    assert id_like
    for pattern in id_like:
        assert any(re.search(pattern, text) for text in good), pattern
        for text in bad:
            assert not re.search(pattern, text), (pattern, text)
    assert all(ID_PATTERN.match(text) for text in good)
    assert not any(ID_PATTERN.match(text) for text in bad)


# -- real output validates ------------------------------------------------------------------------
@pytest.mark.parametrize("args", [
    ("kb", "matrix"),
    ("kb", "matrix", "--subtechniques"),
    ("kb", "matrix", "--subtechniques", "--atlas", str(ATLAS_YAML)),
], ids=["plain", "subtechniques", "official"])
def test_matrix(args):
    doc = run_json(*args)
    assert_valid(doc, "mlthreat.kb.matrix")
    assert doc["mlthreat_version"] == __version__


@pytest.mark.parametrize("atlas_id", ["AML.TA0001", "AML.T0043", "AML.T0024.002", "AML.M0002",
                                      "AML.M0018"])
@pytest.mark.parametrize("official", [False, True], ids=["embedded", "official"])
def test_show_object(atlas_id, official):
    doc = run_json("kb", "show", atlas_id, *(["--atlas", str(ATLAS_YAML)] if official else []))
    assert_valid(doc, "mlthreat.kb.object")
    assert doc["id"] == atlas_id


@pytest.mark.parametrize("args", [
    ("kb", "case-study", "AML.CS0000"),
    ("kb", "case-study", "AML.CS0010", "--atlas", str(ATLAS_YAML)),
    ("kb", "show", "AML.CS0001"),
], ids=["case-study", "official", "via-show"])
def test_case_study(args):
    doc = run_json(*args)
    assert_valid(doc, "mlthreat.kb.case-study")
    assert doc["procedure"] and doc["procedure"][0]["technique_name"]


@pytest.mark.parametrize("words", [["model", "extraction"], ["poison"], ["zzzzqqq"]])
def test_search(words):
    doc = run_json("kb", "search", *words, "--limit", "5")
    assert_valid(doc, "mlthreat.kb.search")
    assert doc["query"] == " ".join(words)
    assert bool(doc["results"]) == (words != ["zzzzqqq"])


@pytest.mark.parametrize(("old", "new", "exit_code"), [
    (RELEASES / "ATLAS-4.5.2.yaml", "embedded", 1),
    (RELEASES / "ATLAS-4.8.0.yaml", RELEASES / "ATLAS-5.0.0.yaml", 1),
    (RELEASES / "ATLAS-5.0.0.yaml", RELEASES / "ATLAS-4.5.2.yaml", 1),
    ("embedded", ATLAS_YAML, 0),
], ids=["4.5-to-embedded", "4.8-to-5.0", "backwards", "same"])
def test_diff(old, new, exit_code):
    doc = run_json("kb", "diff", str(old), str(new), exit_code=exit_code)
    assert_valid(doc, "mlthreat.kb.diff")
    kinds = {c["kind"] for c in doc["changes"]}
    if old == RELEASES / "ATLAS-4.5.2.yaml":
        assert kinds == {"added", "renamed", "moved", "links-added", "links-removed",
                         "procedure-changed"}
    if exit_code == 0:
        assert doc["changes"] == [] and doc["counts"] == {}


def test_check_all_finding_kinds(tmp_path):
    stale = tmp_path / "mapping.csv"
    stale.write_text(STALE_CSV, encoding="utf-8")
    layer = json.loads((CASE_STUDY_LAYERS / "AML.CS0000.json").read_text(encoding="utf-8"))
    for entry in layer["techniques"]:
        if entry.get("tactic") == "ai-attack-staging":
            entry["tactic"] = "ml-attack-staging"
    layer["techniques"].append({"techniqueID": "AML.T0015", "tactic": "reconnaissance"})
    layer["techniques"].append({"techniqueID": "AML.T0015", "tactic": "no-such-tactic"})
    layer["techniques"].append({"techniqueID": "AML.T0005", "tactic": "ai-attack-adaptation"})
    old_layer = tmp_path / "layer.json"
    old_layer.write_text(json.dumps(layer, indent=2), encoding="utf-8")
    notes = tmp_path / "notes.md"
    notes.write_text("We cover AML.T0043, AML.T0038 and AML.T9998.\n", encoding="utf-8")
    doc = run_json("kb", "check", str(stale), str(old_layer), str(notes),
                   str(CASE_STUDY_LAYERS / "AML.CS0001.json"), exit_code=1)
    assert_valid(doc, "mlthreat.kb.check")
    found = {f["kind"] for r in doc["files"] for f in r["findings"]}
    assert found == {"unknown-id", "newer-id", "outdated-name", "name-mismatch",
                     "legacy-tactic", "newer-tactic", "wrong-tactic"}
    assert [r["file_format"] for r in doc["files"]] == ["csv", "layer", "text", "layer"]
    assert doc["findings"] == sum(len(r["findings"]) for r in doc["files"])


def test_check_clean_file():
    doc = run_json("kb", "check", str(CASE_STUDY_LAYERS / "AML.CS0000.json"))
    assert_valid(doc, "mlthreat.kb.check")
    assert doc["findings"] == 0


def test_extension_ids_validate(tmp_path):
    ext = write_extension(tmp_path)
    doc = run_json("kb", "matrix", "--subtechniques", "-x", str(ext))
    assert_valid(doc, "mlthreat.kb.matrix")
    assert doc["atlas_version"] == "5.6.0+ACME"
    for atlas_id in ("ACME.T0001", "ACME.T0001.000", "ACME.M0001", "AML.T0024.002"):
        assert_valid(run_json("kb", "show", atlas_id, "-x", str(ext)), "mlthreat.kb.object")


@pytest.fixture(scope="module")
def release_server(tmp_path_factory):
    """Serves an atlas-data dist/ folder: a manifest naming 2026.09 and that release in
    format 6, made from the official 5.6.0 file."""
    import yaml
    from atlas_v6 import release_2026_09, write_v6

    doc = release_2026_09(yaml.safe_load(ATLAS_YAML.read_bytes()))
    body = write_v6(doc, tmp_path_factory.mktemp("v6") / "a.yaml").read_bytes()
    routes: dict[str, Route] = {
        "/dist/manifest.yaml": (200, b"releases:\n  2026.09: {v6: v6/ATLAS-2026.09.yaml}\n"),
        "/dist/v6/ATLAS-2026.09.yaml": (200, body)}
    with route_server(routes) as base:
        yield base, body


def test_update(release_server, tmp_path):
    base, body = release_server
    env = {"MLTHREAT_CACHE_DIR": str(tmp_path)}
    doc = run_json("kb", "update", "--dist-url", f"{base}/dist", "--timeout", "10", env=env)
    assert (doc["release"], doc["format_version"], doc["found_by"]) == ("2026.09", "6.0.0",
                                                                        "manifest")
    assert doc["sha256"] == hashlib.sha256(body).hexdigest() and doc["size"] == len(body)
    assert Path(doc["path"]).parent == tmp_path
    assert (doc["previous"], doc["changed"]) == (None, True)
    assert_valid(doc, "mlthreat.kb.update")
    again = run_json("kb", "update", "--dist-url", f"{base}/dist", "--timeout", "10", env=env)
    assert (again["previous"], again["changed"]) == (None, False)
    assert_valid(again, "mlthreat.kb.update")


# -- broken documents fail ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> dict[str, Any]:
    """One real, valid document of each kind that carries the full envelope."""
    tmp = tmp_path_factory.mktemp("samples")
    (tmp / "stale.csv").write_text(STALE_CSV, encoding="utf-8")
    env = {"MLTHREAT_CACHE_DIR": str(tmp / "cache")}
    docs = {
        "mlthreat.kb.matrix": run_json("kb", "matrix", "-s", env=env),
        "mlthreat.kb.object": run_json("kb", "show", "AML.T0043", env=env),
        "mlthreat.kb.search": run_json("kb", "search", "model", env=env),
        "mlthreat.kb.case-study": run_json("kb", "case-study", "AML.CS0000", env=env),
        "mlthreat.kb.diff": run_json("kb", "diff", str(RELEASES / "ATLAS-4.5.2.yaml"),
                                     "embedded", exit_code=1, env=env),
        "mlthreat.kb.check": run_json("kb", "check", str(tmp / "stale.csv"), exit_code=1,
                                      env=env),
    }
    for kind, doc in docs.items():
        assert not errors(doc, kind), kind
    return docs


ENVELOPED = [k for k in KINDS if k != "mlthreat.kb.update"]


def _broken(doc: dict[str, Any], how: str) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    if how == "wrong-kind":
        doc["kind"] = "mlthreat.kb.other"
    elif how == "schema-version-2":
        doc["schema_version"] = 2
    elif how == "schema-version-string":
        doc["schema_version"] = "1"
    elif how.startswith("missing-"):
        del doc[how.removeprefix("missing-")]
    elif how == "extra-field":
        doc["surprise"] = True
    elif how == "atlas-version-number":
        doc["atlas_version"] = 5.6
    return doc


@pytest.mark.parametrize("how", ["wrong-kind", "schema-version-2", "schema-version-string",
                                 "missing-kind", "missing-schema_version",
                                 "missing-mlthreat_version", "missing-atlas_version",
                                 "missing-atlas_source", "extra-field", "atlas-version-number"])
@pytest.mark.parametrize("kind", ENVELOPED)
def test_broken_envelope_fails(samples, kind, how):
    assert errors(_broken(samples[kind], how), kind)


PAYLOAD_BREAKS = [
    ("mlthreat.kb.matrix", ("tactics", 0, "id"), "AML.T0001"),
    ("mlthreat.kb.matrix", ("tactics", 0, "techniques", 0, "id"), "AML.T43"),
    ("mlthreat.kb.matrix", ("tactics", 0, "techniques", 0, "parent"), "AML.T0001"),
    ("mlthreat.kb.matrix", ("tactics", 0, "techniques", 0, "name"), KeyError),
    ("mlthreat.kb.object", ("type",), "procedure"),
    ("mlthreat.kb.object", ("type",), "tactic"),
    ("mlthreat.kb.object", ("maturity",), "proven"),
    ("mlthreat.kb.object", ("mitigations", 0, "inherited"), "no"),
    ("mlthreat.kb.object", ("subtechniques",), KeyError),
    ("mlthreat.kb.object", ("created",), "13 May 2021"),
    ("mlthreat.kb.search", ("results", 0, "type"), "technique-ish"),
    ("mlthreat.kb.search", ("results", 0, "score"), 0),
    ("mlthreat.kb.search", ("results", 0, "id"), "AML.CS0000"),
    ("mlthreat.kb.case-study", ("date_granularity",), "DAY"),
    ("mlthreat.kb.case-study", ("case_study_type",), "drill"),
    ("mlthreat.kb.case-study", ("procedure", 0, "tactic"), "reconnaissance"),
    ("mlthreat.kb.case-study", ("id",), "AML.T0000"),
    ("mlthreat.kb.diff", ("changes", 0, "kind"), "changed"),
    ("mlthreat.kb.diff", ("changes", 0, "object_type"), "case-study"),
    ("mlthreat.kb.diff", ("counts", "changed/tactic"), 1),
    ("mlthreat.kb.diff", ("counts", "added/tactic"), 0),
    ("mlthreat.kb.diff", ("old",), {"atlas_version": "4.5.1"}),
    ("mlthreat.kb.check", ("files", 0, "findings", 0, "kind"), "stale-name"),
    ("mlthreat.kb.check", ("files", 0, "findings", 0, "line"), 0),
    ("mlthreat.kb.check", ("files", 0, "findings", 0, "id"), "T0015"),
    ("mlthreat.kb.check", ("files", 0, "file_format"), "xlsx"),
    ("mlthreat.kb.check", ("findings",), -1),
]


@pytest.mark.parametrize(("kind", "path", "value"), PAYLOAD_BREAKS,
                         ids=[f"{k.removeprefix('mlthreat.kb.')}-{'.'.join(map(str, p))}"
                              for k, p, _ in PAYLOAD_BREAKS])
def test_broken_payload_fails(samples, kind, path, value):
    assert errors(changed(samples[kind], path, value), kind)


def test_diff_change_rules(samples):
    changes = samples["mlthreat.kb.diff"]["changes"]
    moved = next(c for c in changes if c["kind"] == "moved")
    renamed = next(c for c in changes if c["kind"] == "renamed")
    added = next(c for c in changes if c["kind"] == "added")
    procedure = next(c for c in changes if c["kind"] == "procedure-changed")
    for bad in ({**procedure, "object_type": "mitigation", "id": "AML.M0001"},
                {**procedure, "after": "AML.TA0001"},
                {**procedure, "id": "AML.T0043"},
                {**renamed, "object_type": "case-study"},
                {**added, "id": "AML.CS0001"},
                {**moved, "object_type": "mitigation", "id": "AML.M0001"},
                {**moved, "after": "reconnaissance"},
                {**added, "before": "something"},
                {**renamed, "kind": "links-added"},
                {**added, "object_type": "sub-technique"}):
        doc = {**samples["mlthreat.kb.diff"], "changes": [bad]}
        assert errors(doc, "mlthreat.kb.diff"), bad


def test_update_example_and_broken_update():
    good = {"kind": "mlthreat.kb.update", "schema_version": 1, "mlthreat_version": __version__,
            "release": "2026.09", "format_version": "6.0.0", "found_by": "manifest",
            "url": "https://example.invalid/dist/v6/ATLAS-2026.09.yaml",
            "path": "/cache/ATLAS.yaml", "sha256": "0" * 64, "size": 1234,
            "previous": "/cache/ATLAS.previous.yaml", "changed": True}
    assert not errors(good)
    assert not errors({**good, "format_version": "", "release": "5.6.0", "previous": None})
    for bad in ({**good, "kind": "mlthreat.kb.matrix"}, {**good, "sha256": "abc"},
                {**good, "size": "1234"}, {**good, "url": "file:///etc/passwd"},
                {**good, "format_version": "six"}, {**good, "changed": "yes"},
                {**good, "previous": ""}, {**good, "tag": "v5.6.0"},
                {k: v for k, v in good.items() if k != "mlthreat_version"},
                {k: v for k, v in good.items() if k != "previous"},
                {k: v for k, v in good.items() if k != "path"}):
        assert errors(bad, "mlthreat.kb.update"), bad
