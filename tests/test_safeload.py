"""The safe reader of user YAML/JSON files, and the readers switched to it, on hostile files
(billion laughs, 10k-deep nesting, duplicate keys, oversize): one-line errors, fast."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from mlthreat import safeload
from mlthreat.errors import MlthreatError
from mlthreat.safeload import parse_json, parse_yaml, parse_yaml_node

LAUGHS = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]\n"
    for i in range(8)
)
DEEP_YAML = "[" * 10_000 + "]" * 10_000
DEEP_JSON = '{"a": ' * 10_000 + "1" + "}" * 10_000
DUP_YAML = "a: 1\nb:\n  c: 2\na: 3\n"
DUP_JSON = '{"a": 1,\n "b": {"c": 1,\n       "c": 2}}'


def _one_line_fast(call: object, *args: object) -> str:
    t0 = time.perf_counter()
    with pytest.raises(MlthreatError) as info:
        call(*args)  # type: ignore[operator]
    assert time.perf_counter() - t0 < 0.5
    text = str(info.value)
    assert "\n" not in text and len(text) < 300
    return text


def test_billion_laughs_refused() -> None:
    msg = _one_line_fast(parse_yaml, LAUGHS, "s.yaml")
    assert msg == "s.yaml:6: aliases expand to more than 100,000 nodes"


def test_deep_nesting_refused() -> None:
    assert "nest" in _one_line_fast(parse_yaml, DEEP_YAML, "d.yaml")  # libyaml stops at 1000
    assert _one_line_fast(parse_json, DEEP_JSON, "d.json") == (
        "d.json: invalid JSON: nested deeper than 100 levels")
    assert "nested deeper than 3" in _one_line_fast(
        lambda: parse_yaml("a:\n  b:\n    c:\n      d: 1\n", "x", max_depth=3))


def test_duplicate_keys_name_both_lines() -> None:
    assert _one_line_fast(parse_yaml, DUP_YAML, "p.yaml") == (
        "p.yaml:4: key 'a' given twice (lines 1 and 4)")
    assert _one_line_fast(parse_json, DUP_JSON, "p.json") == (
        "p.json:3: key 'c' given twice (lines 2 and 3)")
    assert "given twice" in _one_line_fast(parse_yaml, "{x: 1, x: 2}", "f")


def test_recursive_and_undefined_aliases() -> None:
    assert "refers to itself" in _one_line_fast(parse_yaml, "&x [*x]", "r")
    assert "not defined" in _one_line_fast(parse_yaml, "[*y]", "r")


def test_ordinary_yaml_as_safe_load() -> None:
    text = "base: &b {k: 1}\nuse:\n  <<: *b\n  k2: 2\nlist: [1, 2.5, true, null, '3']\n"
    data, root = parse_yaml_node(text, "ok.yaml")
    assert data == {"base": {"k": 1}, "use": {"k": 1, "k2": 2},
                    "list": [1, 2.5, True, None, "3"]}
    assert root.start_mark.line == 0
    assert parse_yaml("", "e") is None
    assert parse_json('{"a": [1, {"b": null}]}') == {"a": [1, {"b": None}]}


def test_size_cap_before_reading(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_bytes(b"a: 1\n" * 300)
    msg = _one_line_fast(lambda: safeload.load(big, max_bytes=1000))
    assert msg.endswith("file is 1,500 bytes, over the 1,000-byte limit for a data file")
    assert "No such file" in _one_line_fast(safeload.load, tmp_path / "none.yaml")


def test_excerpt_is_short() -> None:
    shared: list[object] = ["lol"] * 9
    for _ in range(9):
        shared = [shared] * 9
    assert len(safeload.excerpt(shared)) <= 60
    assert len(safeload.excerpt("x" * 1000)) <= 60


# -- the readers switched to it ------------------------------------------------------------

HOSTILE = {"laughs": LAUGHS, "deep": DEEP_YAML, "dup": DUP_YAML}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_kb_scores_and_extension(kind: str, tmp_path: Path) -> None:
    from mlthreat.kb.errors import DataFileError
    from mlthreat.kb.layers import read_scores
    from mlthreat.kb.sources import read_structured
    from mlthreat.kb.sources.extension import _read_with_lines

    f = tmp_path / "in.yaml"
    f.write_text(HOSTILE[kind])
    for call in (read_structured, _read_with_lines, lambda p: read_scores(p, None)):  # type: ignore[arg-type]
        with pytest.raises(DataFileError):
            call(f)
        msg = _one_line_fast(call, f)
        assert msg.startswith(str(f))


@pytest.mark.parametrize("text", [DEEP_JSON, DUP_JSON])
def test_kb_layer_json(text: str, tmp_path: Path) -> None:
    from mlthreat.kb.layers import read_layer

    f = tmp_path / "layer.json"
    f.write_text(text)
    assert _one_line_fast(read_layer, f).startswith(str(f))


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_posture_profile_and_rules(kind: str) -> None:
    from mlthreat.posture.profile import ProfileError, parse_profile
    from mlthreat.posture.rules import _parse

    for call in (lambda: parse_profile(HOSTILE[kind], None, source="prof.yaml"),  # type: ignore[arg-type]
                 lambda: _parse(HOSTILE[kind], "prof.yaml", None)):  # type: ignore[arg-type]
        with pytest.raises(ProfileError):
            call()
        assert _one_line_fast(call).startswith("prof.yaml")


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_detect_mapping(kind: str, tmp_path: Path) -> None:
    from mlthreat.detect.errors import LogFormatError
    from mlthreat.detect.mappings import FieldMapping

    f = tmp_path / "map.yaml"
    f.write_text(HOSTILE[kind])
    with pytest.raises(LogFormatError):
        FieldMapping.from_file(f)
    assert _one_line_fast(FieldMapping.from_file, f).startswith(f"mapping file {f}")


@pytest.mark.parametrize("text", [DEEP_JSON, DUP_JSON])
def test_detect_state_and_evidence(text: str, tmp_path: Path) -> None:
    from mlthreat.detect.engine import load_state
    from mlthreat.detect.errors import DetectError
    from mlthreat.posture.evidence import EvidenceError, load_evidence

    f = tmp_path / "state.json"
    f.write_text(text)
    with pytest.raises(DetectError):
        load_state(f)
    assert _one_line_fast(load_state, f).startswith(str(f))
    with pytest.raises(EvidenceError):
        load_evidence(f)
    assert str(f) in _one_line_fast(load_evidence, f)
