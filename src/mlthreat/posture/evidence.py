"""Evidence files a profile attaches to a system: what mlthreat actually measured.

Three kinds are recognised by their ``kind`` and ``schema_version`` fields:

``mlthreat.assessment`` (version 1, ``report.json`` of ``mlthreat assess``)
    Each finding against a target *as deployed* (``mitigation`` null) with status ``succeeded``
    or ``failed`` becomes an observation of its technique: ``exposed`` when any run of the
    technique succeeded, else ``resisted``. Runs behind an ``--mitigation`` are ignored: they
    describe a set-up that is not (yet) the deployed one.
``mlthreat.detect.evaluation`` (version 1, ``mlthreat detect evaluate --json``)
    For each attack technique among the ``truth`` values, the detector with the best
    ``TPR x (1 - FPR)`` gives a ``measured`` observation with its TPR (its ``rate`` on that
    technique) and FPR (its ``rate`` on ``benign`` clients; 0 when it saw no benign client).
``mlthreat.scan.report`` (version 1, ``mlthreat scan --json``)
    Findings carrying a technique with a severity other than ``info`` make that technique
    ``exposed`` (an informational note is not a problem found in the artifact).

A file is attached to one system in the profile, so everything it reports is taken to be about
that system, whatever names its targets or paths carry.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from mlthreat.errors import UsageError

__all__ = [
    "ASSESSMENT_KIND", "DETECTION_KIND", "KINDS", "SCAN_KIND", "Evidence", "EvidenceError",
    "Observation", "load_evidence", "parse_evidence",
]

ASSESSMENT_KIND = "mlthreat.assessment"
DETECTION_KIND = "mlthreat.detect.evaluation"
SCAN_KIND = "mlthreat.scan.report"
# kind -> the schema versions this module can read
KINDS: dict[str, tuple[int, ...]] = {ASSESSMENT_KIND: (1,), DETECTION_KIND: (1,), SCAN_KIND: (1,)}

Outcome = Literal["exposed", "resisted", "measured"]


class EvidenceError(UsageError):
    """An evidence file that cannot be read or is not a supported mlthreat report. The message
    is the reason only; the profile loader prefixes the file, line and field that named it."""


@dataclass(frozen=True)
class Observation:
    """What one evidence file says about one technique.

    ``outcome`` is ``exposed`` (the attack worked / the artifact is unsafe), ``resisted`` (the
    attack was tried and failed) or ``measured`` (a detector's TPR and FPR on the technique).
    """

    technique: str
    source: str
    evidence_kind: str
    outcome: Outcome
    detail: str
    tpr: float | None = None
    fpr: float | None = None
    detector: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Evidence:
    """One loaded evidence file: its path, kind, and the observations it yields."""

    path: str
    kind: str
    schema_version: int
    observations: tuple[Observation, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "kind": self.kind, "schema_version": self.schema_version,
                "observations": [o.to_dict() for o in self.observations]}


def load_evidence(path: str | Path) -> Evidence:
    """Read and interpret one evidence file. Raises :class:`EvidenceError` (reason only)."""
    p = Path(path)
    try:
        text = p.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise EvidenceError(f"cannot read evidence file '{p}': "
                            f"{getattr(exc, 'strerror', None) or exc}") from None
    from mlthreat.safeload import SafeLoadError, parse_json

    try:
        data = parse_json(text, p)
    except SafeLoadError as exc:
        line = "" if exc.line is None else f"line {exc.line}: "
        reason = exc.reason.removeprefix("invalid JSON: ")
        raise EvidenceError(f"evidence file '{p}' is not JSON ({line}{reason})") from None
    return parse_evidence(data, str(p))


def _fail(source: str, msg: str) -> EvidenceError:
    return EvidenceError(f"evidence file '{source}': {msg}")


def _list(data: dict[str, Any], key: str, source: str) -> list[dict[str, Any]]:
    value = data.get(key)
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise _fail(source, f"field '{key}' must be a list of objects")
    return value


def parse_evidence(data: Any, source: str) -> Evidence:
    """Interpret an already parsed evidence document (``source`` names it in messages)."""
    if not isinstance(data, dict) or "kind" not in data:
        raise _fail(source, "not an mlthreat report (no 'kind' field); expected one of "
                    + ", ".join(KINDS))
    kind = data["kind"]
    if kind not in KINDS:
        raise _fail(source, f"kind '{kind}' is not evidence posture can use; expected one of "
                    + ", ".join(KINDS))
    version = data.get("schema_version")
    if version not in KINDS[kind]:
        raise _fail(source, f"schema_version {version!r} of {kind} is not supported "
                    f"(expected {', '.join(map(str, KINDS[kind]))})")
    reader = {ASSESSMENT_KIND: _assessment, DETECTION_KIND: _detection, SCAN_KIND: _scan}[kind]
    return Evidence(source, kind, int(version), tuple(reader(data, source)))


# An assessment run is keyed by the technique it performs; one that succeeds also demonstrates
# the technique it serves: adversarial data that fooled the target (AML.T0043.*) evaded it.
DEMONSTRATES: dict[str, str] = {"AML.T0043": "AML.T0015"}


def demonstrated_by(technique: str) -> str | None:
    """The technique a successful run of ``technique`` also demonstrates, if any."""
    return next((then for prefix, then in DEMONSTRATES.items()
                 if technique == prefix or technique.startswith(prefix + ".")), None)


def _assessment(data: dict[str, Any], source: str) -> list[Observation]:
    succeeded: dict[str, list[str]] = {}
    failed: dict[str, list[str]] = {}
    for f in _list(data, "findings", source):
        technique, status = f.get("technique"), f.get("status")
        if not isinstance(technique, str) or not isinstance(status, str):
            raise _fail(source, "every finding needs 'technique' and 'status' strings")
        if f.get("mitigation") or status not in ("succeeded", "failed"):
            continue  # behind a mitigation, not applicable or errored: says nothing as deployed
        label = f"{f.get('run', '?')} against {f.get('target', '?')}"
        (succeeded if status == "succeeded" else failed).setdefault(technique, []).append(label)
        also = demonstrated_by(technique)
        if also is not None:
            (succeeded if status == "succeeded" else failed).setdefault(also, []).append(label)
    out = [Observation(t, source, ASSESSMENT_KIND, "exposed",
                       "succeeded: " + ", ".join(runs)) for t, runs in succeeded.items()]
    out += [Observation(t, source, ASSESSMENT_KIND, "resisted", "failed: " + ", ".join(runs))
            for t, runs in failed.items() if t not in succeeded]
    return out


def _rate(score: dict[str, Any], source: str) -> float:
    rate = score.get("rate")
    if not isinstance(rate, int | float) or isinstance(rate, bool) or not 0 <= rate <= 1:
        raise _fail(source, "every score needs a 'rate' between 0 and 1")
    return float(rate)


def _detection(data: dict[str, Any], source: str) -> list[Observation]:
    scores = _list(data, "scores", source)
    fpr: dict[str, float] = {}
    for s in scores:
        if s.get("truth") == "benign":
            fpr[str(s.get("detector"))] = _rate(s, source)
    best: dict[str, tuple[float, str, float, float]] = {}
    for s in scores:
        truth, detector = s.get("truth"), str(s.get("detector"))
        if not isinstance(truth, str) or truth == "benign":
            continue
        tpr, false_pos = _rate(s, source), fpr.get(detector, 0.0)
        value = tpr * (1.0 - false_pos)
        # ties keep the first detector in the file, so the choice is stable
        if truth not in best or value > best[truth][0]:
            best[truth] = (value, detector, tpr, false_pos)
    return [Observation(t, source, DETECTION_KIND, "measured",
                        f"{d}: TPR {tpr:.2f}, FPR {f:.2f}", tpr=tpr, fpr=f, detector=d)
            for t, (_, d, tpr, f) in best.items()]


def _scan(data: dict[str, Any], source: str) -> list[Observation]:
    from mlthreat.scan.findings import SEVERITIES

    hits: dict[str, list[dict[str, Any]]] = {}
    for f in _list(data, "findings", source):
        technique, severity = f.get("technique"), f.get("severity")
        if severity not in SEVERITIES:
            raise _fail(source, f"finding severity {severity!r} is not one of "
                        + ", ".join(SEVERITIES))
        if isinstance(technique, str) and severity != "info":
            hits.setdefault(technique, []).append(f)
    out = []
    for technique, found in hits.items():
        worst = min(found, key=lambda f: SEVERITIES.index(f["severity"]))
        out.append(Observation(
            technique, source, SCAN_KIND, "exposed",
            f"{len(found)} finding(s), worst {worst['severity']}: {worst.get('rule', '?')} in "
            f"{worst.get('path', '?')}"))
    return out
