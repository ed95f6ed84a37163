"""``mlthreat kb export``: the matrix as a Navigator layer, STIX 2.1 bundle, Markdown, CSV or HTML
page, coloured by scores read from a file where the format takes them.

Registered on :data:`mlthreat.cli.kb.app`, between ``check`` and ``update``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from mlthreat.cli._common import AtlasOpt, ExtensionOpt, console, load_kb, write_output
from mlthreat.errors import UsageError

__all__ = ["export"]


def _read_scores(path: Path, kb: Any) -> dict[str, float]:
    """Scores from a JSON/YAML mapping of technique ID to number, or a Navigator layer (JSON).

    Raises DataFileError naming the file and entry for anything that is not a finite number
    keyed by a technique or sub-technique of ``kb``."""
    import math

    from mlthreat.kb.errors import DataFileError
    from mlthreat.kb.sources import read_structured

    data = read_structured(path)
    if isinstance(data, dict) and "techniques" in data:
        from mlthreat.kb.layers import read_layer

        if path.suffix.lower() in (".yaml", ".yml"):
            raise DataFileError(path, "Navigator layers are JSON files")
        data = dict(read_layer(path).scores)
    if not isinstance(data, dict):
        raise DataFileError(path, "scores must be a mapping of ATLAS technique ID to number, "
                            "or a Navigator layer")
    out = {}
    for key, value in data.items():
        key = str(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or \
                not math.isfinite(value):
            raise DataFileError(path, f"score must be a finite number, got {value!r}",
                                entry=key)
        if key not in kb:
            raise DataFileError(path, f"unknown ATLAS ID in ATLAS data {kb.version}", entry=key)
        if kb.kind(key) not in ("technique", "sub-technique"):
            raise DataFileError(path, f"{key} is a {kb.kind(key)}; scores are per technique",
                                entry=key)
        out[key] = float(value)
    return out


def export(
    fmt: Annotated[str, typer.Option("--format", "-f",
                                     help="navigator, stix, markdown, csv or html.")] = "navigator",
    output: Annotated[Path | None, typer.Option("--output", "-o",
                                                help="File to write ('-' or none: "
                                                "stdout).")] = None,
    layer: Annotated[str, typer.Option(help="Navigator layer: matrix, case-study, frequency "
                                       "or scores.")] = "matrix",
    case_study_id: Annotated[str | None, typer.Option("--case-study",
                                                      help="Case study ID for --layer "
                                                      "case-study.")] = None,
    scores: Annotated[Path | None, typer.Option(help="JSON/YAML mapping of ID to score, or a "
                                                "layer, to colour the layer or HTML page.")] = None,
    layer_version: Annotated[str, typer.Option(help="Navigator layer format: 4.3 (ATLAS "
                                               "Navigator) or 4.5 (current ATT&CK "
                                               "Navigator).")] = "4.3",
    name: Annotated[str | None, typer.Option(help="Layer or page title.")] = None,
    atlas: AtlasOpt = None,
    extension: ExtensionOpt = None,
) -> None:
    """Export the matrix: Navigator layer, STIX 2.1 bundle, Markdown, CSV or HTML."""
    from mlthreat.kb.export import exporter

    kb = load_kb(atlas, extension)
    module = exporter(fmt)
    if fmt != "navigator" and (layer != "matrix" or case_study_id or layer_version != "4.3"):
        raise UsageError("--layer, --case-study and --layer-version apply to --format "
                         "navigator only")
    if scores and fmt not in ("navigator", "html"):
        raise UsageError("--scores applies to --format navigator or html only")
    if case_study_id:
        case_study_id = case_study_id.strip().upper()
    score_map = _read_scores(scores, kb) if scores else None
    if fmt == "navigator":
        if layer == "case-study" and not case_study_id:
            raise UsageError("--layer case-study needs --case-study ID")
        if layer == "scores" and score_map is None:
            raise UsageError("--layer scores needs --scores FILE")
        text = module.render(kb, layer=layer, case_study=case_study_id, scores=score_map,
                             name=name, layer_version=layer_version)
    elif fmt == "html":
        text = module.render(kb, scores=score_map, title=name)
    else:
        text = module.render(kb)
    if write_output(text, output):
        console().print(f"wrote {output} ({fmt}, ATLAS data {kb.version})", highlight=False)
