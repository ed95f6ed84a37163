"""The ``mlthreat`` command line: a thin layer over the Python API, one module per group.

Exit codes: 0 fine, 1 findings (stale IDs, differences), 2 usage or input error. A user mistake
is one line on stderr, never a traceback.
"""

from __future__ import annotations

import contextlib
import os
import sys

# OpenBLAS and OpenMP start one thread per core and, when the cores are busy, scikit-learn fits
# slow down a hundredfold; the models mlthreat trains are small, so one thread is fastest.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import typer  # noqa: E402

from mlthreat import __version__  # noqa: E402
from mlthreat.cli import assess as assess_cli  # noqa: E402
from mlthreat.cli import detect as detect_cli  # noqa: E402
from mlthreat.cli import kb as kb_cli  # noqa: E402
from mlthreat.cli import posture as posture_cli  # noqa: E402
from mlthreat.cli import scan as scan_cli  # noqa: E402
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
app.add_typer(detect_cli.app, name="detect")
app.add_typer(posture_cli.app, name="posture")
app.command("scan")(scan_cli.scan)


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


# What to exit with if the reader goes away mid-output (| head): commands that found something
# set it before printing, so a pipe never turns "findings" into "fine".
pending_exit = 0


def main() -> None:
    """Entry point: run the app, turning every error a user can cause into one line on stderr
    and an exit code (0 fine, 1 findings, 2 usage or input error). ``MLTHREAT_DEBUG=1`` shows
    the traceback of an unexpected error instead."""
    from typer._click.exceptions import ClickException  # the exceptions typer 0.27 raises

    command = typer.main.get_command(app)
    try:
        code = command.main(args=sys.argv[1:], prog_name="mlthreat", standalone_mode=False)
        sys.stdout.flush()
    except ClickException as exc:
        hint = " (see --help)" if exc.exit_code == 2 else ""
        _fail(f"{exc.format_message()}{hint}", exc.exit_code)
    except typer.Abort:
        _fail("aborted", 130)
    except MlthreatError as exc:
        _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except BrokenPipeError:
        _quiet_stdout()
        sys.exit(pending_exit)
    except OSError as exc:
        _fail(f"cannot write output: {exc.strerror or exc}", 2)
    except Exception as exc:
        if os.environ.get("MLTHREAT_DEBUG") == "1":
            raise
        _fail(f"internal error: {type(exc).__name__}: {str(exc)[:300]} (set MLTHREAT_DEBUG=1 "
              "for the traceback, and please report it)", 2)
    if isinstance(code, int) and code:
        sys.exit(code)


def _fail(message: str, code: int) -> None:
    text = " ".join(message.split())  # one line, whatever the message held
    with contextlib.suppress(OSError):
        print(f"mlthreat: error: {text}", file=sys.stderr)
    sys.exit(code)


def _quiet_stdout() -> None:
    """Point stdout at devnull so the interpreter's last flush cannot fail again."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
