"""``mlthreat scan``: model files that run code when loaded, and tampered artifacts, found
without loading them (a thin layer over :class:`mlthreat.scan.scanner.Scanner`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mlthreat.cli._common import (
    AtlasOpt,
    ExtensionOpt,
    expect_exit,
    load_kb,
    print_json,
    shown_name,
)
from mlthreat.errors import UsageError
from mlthreat.scan.findings import printable
from mlthreat.scan.report import FAIL_ON, SIGNATURE_NAME, build_report, signature_in, technique_info

if TYPE_CHECKING:
    from mlthreat.scan.scanner import Progress

FORMATS = ("table", "json", "sarif", "cyclonedx")


def _engines(text: str) -> tuple[str, ...]:
    from mlthreat.scan.engines import ENGINES

    if text.strip().lower() in ("", "none"):
        return ()
    if text.strip().lower() == "all":
        return tuple(ENGINES)
    return tuple(e.strip() for e in text.split(",") if e.strip())


def _write(text: str, output: Path | None) -> None:
    """Write a report whole or not at all: encoded first (a stray surrogate from a file name
    becomes an escape, not a crash half-way), then to a temporary file renamed over
    ``output``, so a failure never leaves an earlier report truncated."""
    from mlthreat.files import OutputError, write_atomic

    data = text.encode("utf-8", "backslashreplace")
    if output is None or str(output) == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    try:
        # a per-process staging name (two scans to one file cannot mix their bytes) and
        # fsync before the rename, so a crash right after it cannot leave an empty report
        write_atomic(output, data, parents=False)
    except OutputError as exc:
        raise UsageError(f"{output}: cannot write ({exc.reason})") from None
    print(f"wrote {printable(str(output))}", file=sys.stderr)


def _manifest(paths: list[Path], output: Path | None, as_json: bool) -> None:
    """``mlthreat scan manifest PATH -o FILE``."""
    from mlthreat.scan.manifest import write_manifest

    if len(paths) != 1:
        raise UsageError("scan manifest takes one folder (or file): mlthreat scan manifest "
                         "PATH -o manifest.json")
    root = paths[0]
    if not root.exists():
        raise UsageError(f"{root}: no such file or folder")
    out = output or (root / "manifest.json" if root.is_dir() else
                     root.with_name(root.name + ".manifest.json"))
    from mlthreat.files import OutputError

    try:
        doc = write_manifest(root if root.is_dir() else [root], out)
    except OutputError as exc:
        raise UsageError(f"{out}: cannot write the manifest ({exc.reason})") from None
    except OSError as exc:  # a file being digested could not be read
        raise UsageError(f"{out}: cannot write the manifest ({exc.strerror or exc})") from None
    expect_exit(0)
    if as_json:
        print_json(doc)
    else:
        print(f"{len(doc.get('files', []))} files hashed (SHA-256) into {printable(str(out))}")


def scan(
    paths: Annotated[list[Path], typer.Argument(help="Model files, folders (recursive) and "
                                                "archives; 'manifest PATH' writes a digest "
                                                "manifest instead.", show_default=False)],
    fmt: Annotated[str, typer.Option("--format", "-f", help="table, json, sarif (SARIF "
                                     "2.1.0 for code scanning) or cyclonedx (a CycloneDX 1.6 "
                                     "ML-BOM: the files scanned as components, findings as "
                                     "vulnerabilities keyed by ATLAS technique).")] = "table",
    as_json: Annotated[bool, typer.Option("--json", help="Same as --format json.")] = False,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the report (or "
                                                "the manifest) here instead of stdout.")
                      ] = None,
    fail_on: Annotated[str, typer.Option(help="Exit 1 when a finding is at least this severe: "
                                         "critical, high, medium, low, info, or never.")
                       ] = "high",
    engines: Annotated[str, typer.Option(help="Third-party scanners to run as well: a comma "
                                         "list of fickling, picklescan, modelscan; 'all' or "
                                         "'none'.")] = "all",
    policy: Annotated[Path | None, typer.Option(help="Allow-list policy YAML added to the "
                                                "default one ('replace: true' to replace "
                                                "it).")] = None,
    manifest: Annotated[Path | None, typer.Option(help="Check the files against this SHA-256 "
                                                  "manifest (added, missing, changed).")
                        ] = None,
    signature: Annotated[Path | None, typer.Option(help="OpenSSF model signature (Sigstore "
                                                   "bundle) of the scanned model folder.")
                         ] = None,
    public_key: Annotated[Path | None, typer.Option(help="PEM public key that made "
                                                    "--signature.")] = None,
    certificate: Annotated[list[Path] | None, typer.Option(help="PEM certificate chain "
                                                           "that made --signature "
                                                           "(repeatable).")] = None,
    hash_files: Annotated[bool, typer.Option(help="Record every file's SHA-256 in the "
                                             "report.")] = True,
    follow_symlinks: Annotated[bool, typer.Option(help="Scan what symbolic links inside a "
                                                  "folder point to, under the link's name "
                                                  "(each folder once; a loop is a finding). "
                                                  "Without it a link leading out of the "
                                                  "folder, dangling or looping is a high "
                                                  "finding.")] = False,
    seconds_per_file: Annotated[float, typer.Option(min=0.0, help="Time budget per "
                                                    "top-level file.")] = 300.0,
    show: Annotated[str, typer.Option(help="Least severe finding the table lists (JSON, "
                                      "SARIF and CycloneDX list all): the engines report every "
                                      "non-standard import as low.")] = "medium",
    atlas: AtlasOpt = None,
    extension: ExtensionOpt = None,
) -> None:
    """Scan model files for code that runs when they are loaded (unsafe pickle globals,
    Keras Lambda layers, template code …) and for tampering, without loading them. Exits 0
    clean, 1 findings at or above --fail-on, 2 usage or input error."""
    from dataclasses import replace

    from mlthreat import __version__
    from mlthreat.scan.findings import Limits
    from mlthreat.scan.policy import Policy
    from mlthreat.scan.scanner import Scanner

    if as_json:
        fmt = "json"
    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if show not in FAIL_ON[:-1]:
        raise UsageError(f"unknown severity {show!r} for --show; choose one of "
                         f"{', '.join(FAIL_ON[:-1])}")
    if fail_on not in FAIL_ON:
        raise UsageError(f"unknown severity {fail_on!r} for --fail-on; choose one of "
                         f"{', '.join(FAIL_ON)}")
    if paths and str(paths[0]) == "manifest" and not paths[0].exists():
        _manifest(paths[1:], output, fmt == "json")
        return
    if (public_key or certificate) and signature is None and signature_in(paths) is None:
        raise UsageError("--public-key and --certificate need --signature (or a "
                         f"{SIGNATURE_NAME} in the scanned model folder)")
    if manifest is not None and len(paths) != 1:
        raise UsageError("--manifest checks one folder or file; give exactly one PATH")
    if (signature is not None or public_key or certificate) and len(paths) != 1:
        raise UsageError("--signature verifies one model folder; give exactly one PATH")
    kb = load_kb(atlas, extension)
    chosen = Policy.from_file(policy) if policy is not None else None
    scanner = Scanner(policy=chosen, limits=replace(Limits(), seconds_per_file=seconds_per_file),
                      engines=_engines(engines), hash_files=hash_files,
                      follow_symlinks=follow_symlinks).validate()
    found = scanner.run(paths, progress=_progress() if fmt == "table" else None)
    result = build_report(found, paths, kb, manifest=manifest, signature=signature,
                          public_key=public_key, certificate_chain=certificate, fail_on=fail_on,
                          verify_hint="--public-key or --certificate")
    report, notes, code = result.report, result.notes, result.exit_code
    expect_exit(code)
    if fmt == "sarif":
        from mlthreat.scan.sarif import to_sarif

        doc = to_sarif(report.findings, kb=kb, tool_version=__version__,
                       scanned=[str(p) for p in paths])
        _write(json.dumps(doc, indent=2) + "\n", output)
    elif fmt == "cyclonedx":
        from mlthreat.scan.cyclonedx import to_cyclonedx

        _write(to_cyclonedx(report, tool_version=__version__, kb=kb,
                            scanned=[str(p) for p in paths]), output)
    elif fmt == "json":
        _write(result.to_json(), output)
    else:
        _table(report, kb, fail_on, show, output, notes)
    if code:
        raise typer.Exit(code)


def _progress() -> Progress | None:
    """A progress line on stderr while scanning, when stderr is a terminal."""
    if not sys.stderr.isatty():
        return None
    from rich.console import Console

    err = Console(stderr=True)

    def show(done: int, total: int | None, path: str) -> None:
        err.print(f"[{done}/{total}] {shown_name(path)}", end="\r", highlight=False,
                  soft_wrap=True)

    return show


def _table(report: Any, kb: Any, fail_on: str, show: str, output: Path | None,
           notes: list[str]) -> None:
    from io import StringIO

    from rich.console import Console
    from rich.table import Table

    from mlthreat.scan.findings import severity_rank

    buffer = StringIO() if output is not None else None
    con = Console(file=buffer, width=160) if buffer is not None else Console()
    shown = [f for f in report.findings if severity_rank(f.severity) <= severity_rank(show)]
    if shown:
        table = Table()
        table.add_column("severity", no_wrap=True)
        table.add_column("technique", no_wrap=True)
        for col in ("path", "rule", "symbol", "where"):
            table.add_column(col, overflow="fold")
        for f in shown:
            # a merged finding names every third-party engine that agreed with it
            others = [e for e in (f.engines or (f.engine,)) if e != "mlthreat"]
            where = f"{f.location} ({', '.join(others)})".strip() if others else f.location
            table.add_row(*map(shown_name, (f.severity, f.technique, f.path, f.rule,
                                               f.symbol, where)))
        con.print(table)
        for tid, info in technique_info(kb, shown).items():
            mits = ", ".join(f"{m['id']} {m['name']}" for m in info["mitigations"]) or "none"
            con.print(shown_name(f"{tid} {info['name']}: mitigations {mits}"),
                      highlight=False)
    hidden = len(report.findings) - len(shown)
    counts = ", ".join(f"{n} {s}" for s, n in report.counts().items() if n)
    verdicts = report.verdicts()
    con.print(f"{len(report.files)} files: {verdicts['clean']} clean, {verdicts['findings']} "
              f"with findings, {verdicts['error']} not fully scanned, {verdicts['skipped']} "
              f"skipped (not model files). Findings: {counts or 'none'}"
              + (f" ({hidden} below {show} not listed; --show "
                 f"{'info' if show == 'low' else 'low'} lists them)" if hidden else "")
              + f". Fail on {fail_on}. ATLAS data {shown_name(kb.version)}.",
              highlight=False)
    for note in notes:
        con.print(shown_name(note), highlight=False, soft_wrap=True)  # paths stay whole
    for message in report.engine_messages:
        con.print(f"note: {shown_name(message)}", highlight=False, style="dim")
    if buffer is not None:
        _write(buffer.getvalue(), output)
