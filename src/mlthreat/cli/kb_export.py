"""``mlthreat kb export``: the matrix as a Navigator layer, STIX 2.1 bundle, Markdown, CSV or HTML
page, coloured by scores read from a file where the format takes them.

Registered on :data:`mlthreat.cli.kb.app`, between ``check`` and ``update``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mlthreat.cli._common import (
    AtlasOpt,
    ExtensionOpt,
    console,
    load_kb,
    print_warnings,
    write_output,
)
from mlthreat.errors import UsageError
from mlthreat.kb.export import EXPORTERS

__all__ = ["export"]


def export(
    fmt: Annotated[str, typer.Option("--format", "-f",
                                     help=f"{EXPORTERS.choices(' or ')}.")] = "navigator",
    output: Annotated[Path | None, typer.Option("--output", "-o",
                                                help="File to write ('-' or none: "
                                                "stdout).")] = None,
    layer: Annotated[str, typer.Option(help="Navigator layer: matrix, case-study, frequency "
                                       "or scores.")] = "matrix",
    case_study_id: Annotated[str | None, typer.Option("--case-study",
                                                      help="Case study ID for --layer "
                                                      "case-study.")] = None,
    scores: Annotated[Path | None, typer.Option(help="JSON/YAML mapping of ID to score, or a "
                                                "layer (its per-tactic scores and comments "
                                                "kept), to colour the layer or HTML "
                                                "page.")] = None,
    layer_version: Annotated[str | None, typer.Option(
        help="Navigator layer format: 4.3 (ATLAS Navigator 4.6) or 4.5 (Navigator 5.x); "
        "default 4.5 for format-6 ATLAS data, 4.3 for the legacy data.",
        show_default=False)] = None,
    name: Annotated[str | None, typer.Option(help="Layer or page title.")] = None,
    atlas: AtlasOpt = None,
    extension: ExtensionOpt = None,
) -> None:
    """Export the matrix: Navigator layer, STIX 2.1 bundle, Markdown, CSV or HTML."""
    from mlthreat.kb.export import exporter

    kb = load_kb(atlas, extension)
    module = exporter(fmt)
    if fmt != "navigator" and (layer != "matrix" or case_study_id or layer_version is not None):
        raise UsageError("--layer, --case-study and --layer-version apply to --format "
                         "navigator only")
    if scores and fmt not in ("navigator", "html"):
        raise UsageError("--scores applies to --format navigator or html only")
    if case_study_id:
        case_study_id = case_study_id.strip().upper()
    from mlthreat.kb.layers import read_scores

    read = read_scores(scores, kb) if scores else None
    if read is not None:
        print_warnings(read.warnings)
    if fmt == "navigator":
        if layer == "case-study" and not case_study_id:
            raise UsageError("--layer case-study needs --case-study ID")
        if layer == "scores" and read is None:
            raise UsageError("--layer scores needs --scores FILE")
        text = module.render(kb, layer=layer, case_study=case_study_id,
                             scores=None if read is None else read.cells, name=name,
                             layer_version=layer_version,
                             comments=None if read is None else read.comments)
    elif fmt == "html":
        text = module.render(kb, scores=None if read is None else read.by_technique, title=name)
    else:
        text = module.render(kb)
    if write_output(text, output):
        console().print(f"wrote {output} ({fmt}, ATLAS data {kb.version})", highlight=False)
