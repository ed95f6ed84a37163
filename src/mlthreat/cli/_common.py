"""What every command group shares: data options, JSON envelopes, the console."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
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
        # MLTHREAT_ATLAS is read by mlthreat.kb.load, so its errors can name the variable
        help="Official ATLAS.yaml, official STIX bundle or snapshot to use instead of the "
        "embedded ATLAS data (also MLTHREAT_ATLAS).",
        show_default=False,
    ),
]
ExtensionOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--extension",
        "-x",
        help="Organisation extension YAML merged over the matrix (repeatable; also "
        "MLTHREAT_EXTENSIONS, paths separated by ':').",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for machines.")]


def load_kb(atlas: Path | None, extensions: list[Path] | None) -> KnowledgeBase:
    """The knowledge base of ``--atlas``/``--extension`` (or their environment variables), its
    data warnings printed on stderr."""
    from mlthreat import kb

    base = kb.load(atlas, extensions or ())
    print_warnings(base.warnings, f"mlthreat kb check {base.source.split(' + ')[0]}")
    return base


MAX_WARNINGS = 5  # printed one a line; the rest counted, the check command lists them all


def print_warnings(warnings: Sequence[object], lister: str = "") -> None:
    """Data warnings on stderr, ``mlthreat: warning: …`` one a line, at most
    :data:`MAX_WARNINGS` of them and then how many more (and ``lister``, the command that lists
    them all)."""
    for w in warnings[:MAX_WARNINGS]:
        sys.stderr.write(f"mlthreat: warning: {' '.join(str(w).split())}\n")
    if len(warnings) > MAX_WARNINGS:
        more = len(warnings) - MAX_WARNINGS
        sys.stderr.write(f"mlthreat: warning: {more} more" + (f" ({lister} lists them all)"
                                                              if lister else "") + "\n")


def envelope(kind: str, kb: KnowledgeBase, payload: dict[str, Any]) -> dict[str, Any]:
    """The fields every machine-readable output carries, then the payload."""
    return {
        "kind": kind,
        "schema_version": 1,
        "mlthreat_version": __version__,
        **kb.provenance(),
        **payload,
    }


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def expect_exit(code: int) -> None:
    """Record the exit code a command will end with, before it prints (see cli.pending_exit)."""
    from mlthreat import cli

    cli.pending_exit = code


def console() -> Console:
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            # rich exits 1 here, which mlthreat uses for "findings"; a reader that stopped
            # early (| head) is not a finding.
            from mlthreat import cli

            self.quiet = True
            cli._quiet_stdout()
            raise SystemExit(cli.pending_exit)

    return _Console(highlight=False)


def plural(n: int, word: str) -> str:
    """``1 finding``, ``2 findings``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def indented(text: str, indent: int) -> Any:
    """Text whose wrapped lines keep ``indent`` spaces (rich markup allowed)."""
    from rich.padding import Padding

    return Padding(text, (0, 0, 0, indent))


# Characters a terminal acts on instead of printing: C0 controls but tab and newline, DEL, C1
# controls (U+009B is a one-byte CSI), and the bidirectional overrides and isolates that
# reorder what follows them (U+202E).
_TERMINAL_CONTROL = dict.fromkeys(
    [*range(0, 9), *range(11, 32), 127, *range(0x80, 0xA0), 0x061C, 0x200E, 0x200F,
     *range(0x202A, 0x202F), *range(0x2066, 0x206A)], None)


def data_text(text: Any) -> str:
    """Text from data files (names, descriptions) made safe to print with rich and to keep
    its lines: the characters of ``_TERMINAL_CONTROL`` are dropped (so no escape sequence,
    OSC 52 clipboard write included, reaches the terminal) and rich markup is escaped."""
    from rich.markup import escape

    return escape(str(text).translate(_TERMINAL_CONTROL))


def shown_name(text: Any) -> str:
    """A name read from data (a file name, a symbol from a file) made safe to print with rich
    and told apart from look-alikes: C0 and C1 controls, bidirectional overrides and other
    invisible characters become visible ``\\xNN``/``\\uNNNN`` escapes instead of being dropped
    (:func:`data_text` drops them, for prose), and rich markup is escaped."""
    from rich.markup import escape

    from mlthreat.scan.findings import printable

    return escape(printable(str(text)))


def write_output(text: str, output: Path | None) -> bool:
    """Write ``text`` to ``output`` whole or not at all (see :mod:`mlthreat.files`), or to
    stdout when it is None or ``-``; return whether a file was written. Raises UsageError
    when the file cannot be written."""
    from mlthreat.errors import UsageError

    if output is None or str(output) == "-":
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return False
    from mlthreat.files import OutputError, write_atomic

    try:
        write_atomic(output, text)  # whole or not at all: a kill never leaves half a file
    except OutputError as exc:
        raise UsageError(str(exc)) from None
    return True


def footer(kb: KnowledgeBase) -> str:
    return f"[dim]ATLAS data {kb.version} ({kb.source})[/dim]"
