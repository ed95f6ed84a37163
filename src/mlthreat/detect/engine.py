"""The local engine: stream batches of events through detectors, turn detections into alerts.

Detectors see every event in time order; the engine resolves each detection's technique and
tactics through the knowledge base, drops allow-listed clients, keeps one alert per client and
technique per suppression window, and collects each detector's final verdict per client.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlthreat.detect.detectors import DEFAULT_DETECTORS, DETECTORS

if TYPE_CHECKING:
    from mlthreat.detect.alerts import Alert, Suppressor
    from mlthreat.detect.batch import EventBatch
    from mlthreat.detect.detectors.base import ClientStatus, Detection, Detector
    from mlthreat.detect.summary import Tally, TechniqueSummary
    from mlthreat.kb.model import KnowledgeBase

__all__ = ["DEFAULT_DETECTORS", "DETECTORS", "STATE_KIND", "DetectionResult", "admit",
           "build_detectors",
           "checkpoint_detectors", "load_state", "restore_detectors", "run_detectors",
           "save_state"]

def build_detectors(names: Iterable[str] | None = None,
                    params: dict[str, dict[str, Any]] | None = None) -> list[Detector]:
    """Instantiate and validate detectors by name (default: :data:`DEFAULT_DETECTORS`).

    Raises
    ------
    UsageError
        For an unknown detector name or a bad parameter.
    """
    params = params or {}
    chosen = list(names) if names else list(DEFAULT_DETECTORS)
    DETECTORS.check(chosen)
    out = []
    for name in chosen:
        detector = DETECTORS.load(name)(**params.get(name, {}))
        detector.validate()
        out.append(detector)
    return out


@dataclass
class DetectionResult:
    """Alerts raised, each detector's final verdict per client, suppression counts, and every
    detection that passed the allow list (``tally``, for :meth:`summary`)."""

    alerts: list[Alert] = field(default_factory=list)
    statuses: list[ClientStatus] = field(default_factory=list)
    events: int = 0
    ignored: int = 0
    suppression: dict[str, int] = field(default_factory=dict)
    suppression_state: dict[str, Any] = field(default_factory=dict)
    tally: Tally = field(default_factory=lambda: _tally())

    def summary(self, kb: KnowledgeBase) -> list[TechniqueSummary]:
        """Per ATLAS technique, the clients flagged and by which detectors, with counts
        (:func:`mlthreat.detect.summary.summarise`)."""
        from mlthreat.detect.summary import summarise

        return summarise(self.tally, kb)


def _tally() -> Tally:
    from mlthreat.detect.summary import Tally

    return Tally()


def admit(result: DetectionResult, detection: Detection, suppressor: Suppressor,
          kb: KnowledgeBase, *, include_inputs: bool = False,
          on_alert: Callable[[Alert], object] | None = None) -> None:
    """The one step every engine takes per detection, in time order: allow list and
    suppression, the tally, and the alert (resolved in ``kb``, appended to ``result`` and
    passed to ``on_alert``) when it is admitted."""
    from mlthreat.detect.alerts import Alert

    admitted = suppressor.admit(detection)
    if not admitted and suppressor.allowed(detection.client_id):
        return
    result.tally.add(detection, admitted)
    if not admitted:
        return
    alert = Alert.from_detection(detection, kb, include_inputs=include_inputs)
    result.alerts.append(alert)
    if on_alert is not None:
        on_alert(alert)


def run_detectors(batches: Iterable[EventBatch], detectors: list[Detector], kb: KnowledgeBase,
                  *, allow_list: Iterable[str] = (), suppression_window: float = 3600.0,
                  include_inputs: bool = False, on_alert: Callable[[Alert], object] | None = None,
                  per_detector: bool = False,
                  suppression_state: dict[str, Any] | None = None) -> DetectionResult:
    """Feed ``batches`` (time order) to every detector and collect alerts.

    Parameters
    ----------
    on_alert : callable, optional
        Called with each admitted Alert as soon as it is raised (streaming delivery).
    per_detector : bool
        Suppress per detector rather than per client and technique across detectors (for
        evaluation, where each detector must be scored on its own).
    suppression_state : dict, optional
        Open suppression windows from an earlier run (``DetectionResult.suppression_state``).

    Events whose ``truth`` is ``evaluation`` (queries an assessment spent measuring itself) are
    skipped: they are not traffic anyone would send.
    """
    from mlthreat.detect.alerts import Suppressor

    shared = Suppressor(suppression_window, list(allow_list))
    if suppression_state:
        shared.restore(suppression_state)
    suppressors = {d.name: (Suppressor(suppression_window, list(allow_list)) if per_detector
                            else shared) for d in detectors}
    result = DetectionResult()
    for batch in batches:
        if batch.truth is not None:
            keep = batch.truth != "evaluation"
            if not keep.all():
                result.ignored += int((~keep).sum())
                batch = batch.take(keep)
        if len(batch) == 0:
            continue
        result.events += len(batch)
        found = [d for detector in detectors for d in detector.observe(batch)]
        # time order, then detector order: how the Spark engine orders them too, so that a
        # suppression window keeps the same alert whichever engine ran and however the log was
        # cut into batches
        found.sort(key=lambda d: d.last_seen)
        for detection in found:
            admit(result, detection, suppressors[detection.detector], kb,
                  include_inputs=include_inputs, on_alert=on_alert)
    # the end of the log: detectors that hold events back (``ood`` learning its benign model
    # from the log) score them now
    tail = [d for detector in detectors for d in detector.finish()]
    tail.sort(key=lambda d: d.last_seen)
    for detection in tail:
        admit(result, detection, suppressors[detection.detector], kb,
              include_inputs=include_inputs, on_alert=on_alert)
    for detector in detectors:
        result.statuses.extend(detector.statuses())
    totals: dict[str, int] = {}
    for suppressor in {id(x): x for x in suppressors.values()}.values():
        for key, value in suppressor.counts.items():
            totals[key] = totals.get(key, 0) + value
    result.suppression = totals
    result.suppression_state = shared.checkpoint()
    return result


STATE_KIND = "mlthreat.detect.state"
STATE_SCHEMA_VERSION = 1


def checkpoint_detectors(detectors: list[Detector],
                         suppression: dict[str, Any] | None = None,
                         follow: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every detector's calibration and per-client state, the open suppression windows, and
    (``follow``, from :func:`mlthreat.detect.follow.position`) where following a log stopped,
    as a JSON-ready state document."""
    from mlthreat import __version__

    data = {"kind": STATE_KIND, "schema_version": STATE_SCHEMA_VERSION,
            "mlthreat_version": __version__,
            "detectors": {d.name: {"calibration": d.calibration(), "state": d.checkpoint()}
                          for d in detectors},
            "suppression": suppression or {}}
    if follow is not None:
        data["follow"] = follow
    return data


def restore_detectors(detectors: list[Detector], data: Any, source: str = "state") -> None:
    """Restore each detector's calibration and state from a :func:`checkpoint_detectors`
    document (detectors it does not hold start afresh; ones it holds but not running are
    ignored).

    Raises
    ------
    DetectError
        Naming ``source``, for anything but a well-formed state document.
    """
    from mlthreat.detect.errors import DetectError

    if not isinstance(data, dict) or data.get("kind") != STATE_KIND or \
            not isinstance(data.get("detectors"), dict):
        raise DetectError(f"{source}: not an mlthreat detector state file (kind {STATE_KIND})")
    if data.get("schema_version") != STATE_SCHEMA_VERSION:
        raise DetectError(f"{source}: unsupported state schema_version "
                          f"{data.get('schema_version')!r}")
    for detector in detectors:
        entry = data["detectors"].get(detector.name)
        if entry is None:
            continue
        try:
            if not isinstance(entry, dict) or not isinstance(entry.get("state"), dict):
                raise ValueError("no 'state' object")
            if isinstance(entry.get("calibration"), dict):
                detector.load_calibration(entry["calibration"])
            detector.restore(entry["state"])
        except DetectError as exc:
            raise DetectError(f"{source}: bad state for detector {detector.name}: {exc}"
                              ) from None
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            what = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
            raise DetectError(f"{source}: bad state for detector {detector.name}: {what}"
                              ) from None


def load_state(path: str | Path) -> dict[str, Any]:
    """Read a state file (DetectError naming it if unreadable or not JSON)."""
    from mlthreat.detect.errors import DetectError
    from mlthreat.safeload import SafeLoadError, parse_json, read_text

    try:
        data = parse_json(read_text(path), path)
    except SafeLoadError as exc:
        raise DetectError(f"{exc.path}{'' if exc.line is None else f':{exc.line}'}: cannot "
                          f"read detector state: {exc.reason}") from None
    if not isinstance(data, dict):
        raise DetectError(f"{path}: not an mlthreat detector state file (kind {STATE_KIND})")
    return data


def save_state(path: str | Path, detectors: list[Detector],
               suppression: dict[str, Any] | None = None,
               follow: dict[str, Any] | None = None) -> None:
    """Write the detectors' checkpoint to ``path`` atomically (temporary file, then replace)."""
    from mlthreat.detect.errors import DetectError

    path = Path(path)
    text = json.dumps(checkpoint_detectors(detectors, suppression, follow),
                      default=_json_default) + "\n"
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise DetectError(f"cannot write detector state {path}: {exc.strerror or exc}"
                          ) from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
