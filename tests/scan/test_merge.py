"""One finding per problem (engines merged into ours), engine notes that leave a verdict
clean, medium for unrecognised bytes, and engines kept off our standard output."""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import pytest

from mlthreat.scan.engines import run_engines
from mlthreat.scan.findings import TECHNIQUES, Finding, Limits
from mlthreat.scan.merge import merge_findings
from mlthreat.scan.scanner import Scanner

# PROTO 4; BININT1 1; BININT1 2; STACK_GLOBAL; EMPTY_TUPLE; REDUCE; STOP: STACK_GLOBAL on two
# integers, which fickling 0.1.12 reports by writing a warning to sys.stdout
MALFORMED = b"\x80\x04K\x01K\x02\x93)R."


def _f(engine: str, rule: str, severity: str, symbol: str = "", location: str = "") -> Finding:
    return Finding("m.pkl", "pickle", severity, rule, f"{engine} says so", TECHNIQUES["unsafe"],
                   location=location, symbol=symbol, engine=engine)


def test_merge_keeps_ours_takes_worst_severity_and_lists_engines() -> None:
    ours = _f("mlthreat", "pickle.global-not-allowed", "high", "os.system", "offset 0")
    found = [ours,
             _f("fickling", "fickling.unsafe-imports", "critical", "os.system"),
             _f("fickling", "fickling.overtly-bad-eval", "critical", "os.system"),
             _f("picklescan", "picklescan.unsafe-global", "critical", "os.system"),
             _f("fickling", "fickling.unused-variables", "low"),
             _f("fickling", "fickling.unused-variables", "low"),
             _f("mlthreat", "pickle.global-not-allowed", "high", "os.system", "offset 9")]
    merged = merge_findings(found)
    assert [(f.rule, f.severity, f.location, f.engines) for f in merged] == [
        ("pickle.global-not-allowed", "critical", "offset 0", ("mlthreat", "fickling",
                                                               "picklescan")),
        ("fickling.unused-variables", "low", "", ("fickling",)),
        # our second place in the file stays its own finding
        ("pickle.global-not-allowed", "high", "offset 9", ())]
    assert [e["rule"] for e in merged[0].details["engine_findings"]] == [
        "fickling.unsafe-imports", "fickling.overtly-bad-eval", "picklescan.unsafe-global"]


def test_engines_alone_merge_on_the_most_severe() -> None:
    found = [_f("picklescan", "picklescan.unsafe-global", "low", "a.b"),
             _f("modelscan", "modelscan.unsafe-operator", "critical", "a.b")]
    [one] = merge_findings(found)
    assert (one.engine, one.severity, one.engines) == ("modelscan", "critical",
                                                       ("picklescan", "modelscan"))


def test_two_engines_agreeing_in_a_scan_give_one_finding(tmp_path: Path) -> None:
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(b"cos\nsystem\n(S'id'\ntR.")
    report = Scanner(engines=("picklescan", "modelscan")).run([evil])
    [finding] = report.findings
    assert (finding.symbol, finding.severity) == ("os.system", "critical")
    assert finding.engines == ("mlthreat", "picklescan", "modelscan")
    assert finding.to_dict()["engines"] == ["mlthreat", "picklescan", "modelscan"]


def test_unrecognised_bytes_named_like_a_model_are_medium(tmp_path: Path) -> None:
    (tmp_path / "model.pkl").write_bytes(b"\x00\xffnot a pickle at all" * 8)
    report = Scanner(engines=()).run([tmp_path])
    [f] = report.findings
    assert (f.rule, f.severity, Path(f.path).name) == ("scan.unrecognised", "medium",
                                                       "model.pkl")
    assert report.exit_code("high") == 0 and report.exit_code("medium") == 1


def test_torch_state_dict_is_clean_with_engines_on(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("fickling")
    path = tmp_path / "weights.pt"
    torch.save(torch.nn.Linear(3, 2).state_dict(), path)
    report = Scanner().run([path])
    assert [r.verdict for r in report.files] == ["clean"]
    assert report.exit_code("medium") == 0
    # the engines' notes stay in the report, but none is above low
    assert all(f.severity in ("low", "info") and f.engine != "mlthreat"
               for f in report.findings)


def test_an_engine_note_below_medium_does_not_make_findings() -> None:
    from mlthreat.scan.scanner import _verdict

    note = _f("fickling", "fickling.overtly-bad-eval", "low")
    assert _verdict([note]) == "clean"
    assert _verdict([dataclasses.replace(note, severity="medium")]) == "findings"
    assert _verdict([_f("mlthreat", "pickle.x", "low")]) == "findings"
    merged = dataclasses.replace(note, engines=("mlthreat", "fickling"))
    assert _verdict([merged]) == "findings"


def test_engine_output_never_reaches_file_descriptor_1(tmp_path: Path,
                                                       capfd: pytest.CaptureFixture[str]
                                                       ) -> None:
    pytest.importorskip("fickling")
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(MALFORMED)
    _, messages = run_engines(bad, "pickle", engines=["fickling"], limits=Limits())
    assert capfd.readouterr().out == ""
    assert any(m.startswith("fickling: printed") and "malformed pickle" in m
               for m in messages)


def test_native_writes_to_fd_1_are_captured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capfd: pytest.CaptureFixture[str]) -> None:
    import mlthreat.scan.engines as engines

    def noisy(path: Path, fmt: str, limits: Limits, max_bytes: int):  # type: ignore[no-untyped-def]
        os.write(1, b"from C\n")
        print("from Python")
        sys.__stdout__.write("from the real stdout object\n")  # type: ignore[union-attr]
        raise RuntimeError("and then it crashed")

    monkeypatch.setattr(engines, "_run_picklescan", noisy)
    path = tmp_path / "x.pkl"
    path.write_bytes(b"N.")
    _, messages = run_engines(path, "pickle", engines=["picklescan"], limits=Limits())
    print("ours again")
    assert capfd.readouterr().out == "ours again\n"
    assert messages[0] == "picklescan: failed: RuntimeError: and then it crashed"
    assert messages[1].startswith("picklescan: printed") and "from C" in messages[1]
