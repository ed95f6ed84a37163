"""The ``mlthreat`` command line: a thin layer over the Python API, one module per group.

Exit codes: 0 fine, 1 findings (stale IDs, differences), 2 usage or input error. A user mistake
is one line on stderr, never a traceback.
"""

from __future__ import annotations

import os
import sys

# OpenBLAS and OpenMP start one thread per core and, when the cores are busy, scikit-learn fits
# slow down a hundredfold; the models mlthreat trains are small, so one thread is fastest.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import typer  # noqa: E402

from mlthreat import __version__  # noqa: E402
from mlthreat.cli import assess as assess_cli  # noqa: E402
from mlthreat.cli import kb as kb_cli  # noqa: E402
from mlthreat.errors import MlthreatError  # noqa: E402

__all__ = ["app", "main"]

app = typer.Typer(
    name="mlthreat",
    help="The adversarial ML threat matrix (MITRE ATLAS) as a working toolkit.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(kb_cli.app, name="kb")
app.command("assess")(assess_cli.assess)


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
        try:
            app()
        finally:
            sys.stdout.flush()
    except MlthreatError as exc:
        print(f"mlthreat: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("mlthreat: interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:
        # The reader (| head) went away: not an error. Point stdout at devnull so the
        # interpreter's final flush does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(0)
