"""Technique runs, one module per family; :data:`RUNS` lists them in the default suite order.

Each entry is ``"module:Class"``; a run class declares its ATLAS technique, access needs and
success rule (see :mod:`mlthreat.assess.techniques.base`).
"""

from __future__ import annotations

from importlib import import_module

from mlthreat.assess.techniques.base import RunContext, TechniqueRun
from mlthreat.errors import UsageError

__all__ = ["RUNS", "RunContext", "TechniqueRun", "run_class", "run_classes"]

RUNS: tuple[str, ...] = (
    "mlthreat.assess.techniques.extraction:EquationSolvingExtraction",
    "mlthreat.assess.techniques.extraction:SurrogateExtraction",
    "mlthreat.assess.techniques.evasion:HopSkipJumpEvasion",
    "mlthreat.assess.techniques.evasion:BoundaryEvasion",
    "mlthreat.assess.techniques.whitebox:GradientEvasion",
    "mlthreat.assess.techniques.transfer:TransferEvasion",
    "mlthreat.assess.techniques.chain:ChainEvasion",
    "mlthreat.assess.techniques.membership:BlackBoxMembership",
    "mlthreat.assess.techniques.membership:LiraMembership",
    "mlthreat.assess.techniques.inversion:ModelInversion",
    "mlthreat.assess.techniques.poisoning:BackdoorPoisoning",
)


def run_class(path: str) -> type[TechniqueRun]:
    module, _, name = path.partition(":")
    cls: type[TechniqueRun] = getattr(import_module(module), name)
    return cls


def run_classes(selection: list[str] | None = None) -> list[type[TechniqueRun]]:
    """The run classes, all or those whose run name or ATLAS technique ID is in ``selection``
    (a technique's ID also selects the runs of its sub-techniques: ``AML.T0043``).

    Raises
    ------
    UsageError
        When a selected name or ID matches no run.
    """
    classes = [run_class(p) for p in RUNS]
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
