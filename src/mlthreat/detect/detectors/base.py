"""What a detector is: per-client state fed batches of events in time order, detections out.

A detector follows scikit-learn's manners: the constructor stores parameters; ``validate``
checks them; ``calibrate(benign, target_fpr)`` sets thresholds from benign traffic (the
defaults are the source paper's parameters, scaled to the input dimension, so calibration is
optional); state and calibration are plain JSON-ready data (``checkpoint`` / ``restore``,
``calibration`` / ``load_calibration``), so a restarted detector loses nothing.

Per-client state is bounded: at most ``max_clients`` clients are tracked, and the
longest-idle one is evicted first (and counted).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from numbers import Integral
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from mlthreat.constraints import Configurable, Interval, Spec
from mlthreat.detect.errors import CalibrationError

if TYPE_CHECKING:
    from mlthreat.detect.batch import EventBatch

__all__ = ["ClientStatus", "Detection", "Detector", "client_state"]


_K = TypeVar("_K")
_V = TypeVar("_V")


def client_state(table: OrderedDict[_K, _V], key: _K, limit: int, new: Callable[..., _V],
                 *args: Any) -> tuple[_V, int]:
    """The bounded per-client state every detector keeps: ``table[key]``, created with
    ``new(*args)`` when absent, and marked most recently seen. While the table holds more than
    ``limit`` clients the longest-idle one is dropped. Returns the state and how many clients
    were dropped (for the detector's eviction count)."""
    state = table.get(key)
    if state is not None:
        table.move_to_end(key)
        return state, 0
    state = table[key] = new(*args)
    dropped = 0
    while len(table) > limit:
        table.popitem(last=False)
        dropped += 1
    return state, dropped


@dataclass(frozen=True)
class Detection:
    """One detector's verdict that one client is attacking.

    ``technique`` is the ATLAS ID the pattern indicates (tactics are resolved later through the
    knowledge base, never written here); ``score`` and ``threshold`` are in the detector's own
    unit, named in ``unit`` (``score >= threshold`` raised it, unless ``unit`` says lower is
    worse); ``evidence`` holds statistics and fingerprints, never raw inputs.
    """

    detector: str
    technique: str
    client_id: str
    model_id: str
    first_seen: float
    last_seen: float
    queries_observed: int
    score: float
    threshold: float
    unit: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ClientStatus:
    """How a detector left one client at the end of a run: ``verdict`` is ``flagged``,
    ``clear`` (tested, nothing found), or ``untested`` with the ``reason`` (too few queries,
    degenerate statistics…), never silently benign."""

    detector: str
    client_id: str
    model_id: str
    verdict: str
    queries_observed: int
    reason: str = ""


class Detector(Configurable):
    """Base class. Subclasses declare ``name``, ``technique`` (primary ATLAS ID), ``related``,
    ``defaults``, ``_constraints`` (parameter → :data:`~mlthreat.constraints.Spec`) and
    ``_rules`` (cross-parameter :class:`~mlthreat.constraints.Rule` s), and implement
    ``observe``, ``statuses``, ``calibrate``, and the state methods."""

    name: ClassVar[str]
    technique: ClassVar[str]
    related: ClassVar[tuple[str, ...]] = ()
    defaults: ClassVar[dict[str, Any]] = {"max_clients": 100_000}
    _constraints: ClassVar[dict[str, Spec]] = {"max_clients": Interval(Integral, 1, None)}

    def _check_dim(self, batch: EventBatch, expected: int) -> None:
        """Raise CalibrationError naming the batch's source and first line when its inputs
        are not ``expected`` values wide."""
        if batch.dim != expected:
            where = batch.source or "batch"
            if batch.line is not None and len(batch.line):
                where += f":{int(batch.line[0])}"
            raise CalibrationError(f"{self.name}: input dimension {batch.dim} at {where} does "
                                   f"not match the detector's {expected}")

    def observe(self, batch: EventBatch) -> list[Detection]:
        """Feed events (time order); return the detections they complete."""
        raise NotImplementedError

    def finish(self) -> list[Detection]:
        """The end of the log: return detections of events held back so far (a detector
        that learns from the log's population before scoring); the default holds none."""
        return []

    def statuses(self) -> list[ClientStatus]:
        """Every tracked client's verdict so far."""
        raise NotImplementedError

    def calibrate(self, benign: Iterable[EventBatch], target_fpr: float) -> dict[str, Any]:
        """Set thresholds so that about ``target_fpr`` of benign clients would be flagged;
        return the calibration (also kept on the detector)."""
        raise NotImplementedError

    def calibration(self) -> dict[str, Any]:
        raise NotImplementedError

    def load_calibration(self, data: dict[str, Any]) -> None:
        raise NotImplementedError

    def checkpoint(self) -> dict[str, Any]:
        """All per-client state as JSON-ready data."""
        raise NotImplementedError

    def restore(self, state: dict[str, Any]) -> None:
        raise NotImplementedError
