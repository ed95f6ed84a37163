"""What every command group shares: data options, JSON envelopes, the console."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mlthreat import __version__

if TYPE_CHECKING:
    from rich.console import Console

    from mlthreat.kb.model import KnowledgeBase

AtlasOpt = Annotated[
    Path | None,
    typer.Option(
        "--atlas",
        envvar="MLTHREAT_ATLAS",
        help="Official ATLAS.yaml, official STIX bundle or snapshot to use instead of the "
        "embedded ATLAS data (env MLTHREAT_ATLAS).",
        show_default=False,
    ),
]
ExtensionOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--extension",
        "-x",
        help="Organisation extension YAML merged over the matrix (repeatable; env "
        "MLTHREAT_EXTENSIONS).",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for machines.")]


def load_kb(atlas: Path | None, extensions: list[Path] | None) -> KnowledgeBase:
    from mlthreat import kb

    return kb.load(atlas, extensions or ())


def envelope(kind: str, kb: KnowledgeBase, payload: dict[str, Any]) -> dict[str, Any]:
    """The fields every machine-readable output carries, then the payload."""
    return {
        "kind": kind,
        "schema_version": 1,
        "mlthreat_version": __version__,
        "atlas_version": kb.version,
        "atlas_source": kb.source,
        **payload,
    }


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def console() -> Console:
    from rich.console import Console

    return Console(highlight=False)


def footer(kb: KnowledgeBase) -> str:
    return f"[dim]ATLAS data {kb.version} ({kb.source})[/dim]"
