"""The ``mlthreat`` command line: a thin layer over the Python API, one module per group.

Exit codes: 0 fine, 1 findings (stale IDs, differences), 2 usage or input error. A user mistake
is one line on stderr, never a traceback.
"""

from __future__ import annotations

import sys

import typer

from mlthreat import __version__
from mlthreat.cli import kb as kb_cli
from mlthreat.errors import MlthreatError

__all__ = ["app", "main"]

app = typer.Typer(
    name="mlthreat",
    help="The adversarial ML threat matrix (MITRE ATLAS) as a working toolkit.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(kb_cli.app, name="kb")


def _version(value: bool) -> None:
    if value:
        print(f"mlthreat {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """The adversarial ML threat matrix (MITRE ATLAS) as a working toolkit."""


def main() -> None:
    """Entry point: run the app, turning mlthreat errors into one-line messages and exit codes."""
    try:
        app()
    except MlthreatError as exc:
        print(f"mlthreat: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("mlthreat: interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
