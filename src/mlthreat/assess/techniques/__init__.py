"""Technique runs, one module per family; :data:`RUNS` lists them in the default suite order.

Each entry maps a run's name to its ``"module:Class"``; a run class declares its ATLAS
technique, access needs and success rule (see :mod:`mlthreat.assess.techniques.base`), and its
``name`` is its key. A new run is one module here and one line in :data:`RUNS`.
"""

from __future__ import annotations

from mlthreat.assess.techniques.base import RunContext, TechniqueRun
from mlthreat.errors import UsageError
from mlthreat.registry import Registry, load_spec

__all__ = ["RUNS", "RunContext", "TechniqueRun", "run_class", "run_classes"]

RUNS: Registry[type[TechniqueRun]] = Registry("technique run", {
    "extraction-equations": "mlthreat.assess.techniques.extraction:EquationSolvingExtraction",
    "extraction-surrogate": "mlthreat.assess.techniques.extraction:SurrogateExtraction",
    "evasion-hopskipjump": "mlthreat.assess.techniques.evasion:HopSkipJumpEvasion",
    "evasion-boundary": "mlthreat.assess.techniques.evasion:BoundaryEvasion",
    "evasion-whitebox": "mlthreat.assess.techniques.whitebox:GradientEvasion",
    "evasion-transfer": "mlthreat.assess.techniques.transfer:TransferEvasion",
    "evasion-chain": "mlthreat.assess.techniques.chain:ChainEvasion",
    "membership-blackbox": "mlthreat.assess.techniques.membership:BlackBoxMembership",
    "membership-lira": "mlthreat.assess.techniques.membership:LiraMembership",
    "inversion-miface": "mlthreat.assess.techniques.inversion:ModelInversion",
    "poisoning-backdoor": "mlthreat.assess.techniques.poisoning:BackdoorPoisoning",
})
"""Technique runs by name, in suite order (imports none of them)."""


def run_class(path: str) -> type[TechniqueRun]:
    """The run class at ``path`` (``"module:Class"``, as in :data:`RUNS`)."""
    cls: type[TechniqueRun] = load_spec(path)
    return cls


def run_classes(selection: list[str] | None = None) -> list[type[TechniqueRun]]:
    """The run classes, all or those whose run name or ATLAS technique ID is in ``selection``
    (a technique's ID also selects the runs of its sub-techniques: ``AML.T0043``).

    Raises
    ------
    UsageError
        When a selected name or ID matches no run.
    """
    classes = RUNS.load_all()
    if not selection:
        return classes
    def picks(cls: type[TechniqueRun], item: str) -> bool:
        # a parent technique ID selects the runs of its sub-techniques
        return item in (cls.name, cls.technique) or cls.technique.startswith(item + ".")

    chosen = [c for c in classes if any(picks(c, item) for item in selection)]
    unknown = [s for s in selection if not any(picks(c, s) for c in classes)]
    known = {c.name for c in classes} | {c.technique for c in classes}
    if unknown:
        raise UsageError(f"no technique run for {', '.join(unknown)}; known: "
                         f"{', '.join(sorted(known))}")
    return chosen
