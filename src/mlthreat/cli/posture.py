"""``mlthreat posture``: an organisation's ML systems measured against the matrix.

Exit codes: 0 fine; 1 findings (``report --fail-on BAND`` and a gap at or above that band;
``diff`` when the posture got worse: a gap opened or a coverage went down); 2 usage or input
error (a profile problem is one line, ``FILE:LINE: FIELD: REASON``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from mlthreat.cli._common import (
    AtlasOpt,
    ExtensionOpt,
    JsonOpt,
    console,
    data_text,
    expect_exit,
    footer,
    indented,
    load_kb,
    plural,
    print_json,
)
from mlthreat.errors import UsageError

app = typer.Typer(help="Posture: which techniques apply to your ML systems, how well each is "
                  "covered, and what to fix first.", no_args_is_help=True)

FAIL_ON = ("high", "medium", "low", "never")
TOP_GAPS = 5

RulesOpt = Annotated[
    list[Path] | None,
    typer.Option("--rules", help="Applicability rules YAML merged over the built-in rules "
                 "(repeatable).", show_default=False),
]



def _assess(profile: Path, kb: Any, rules: list[Path] | None) -> dict[str, Any]:
    from mlthreat import posture
    from mlthreat.posture.report import posture_document

    ruleset = posture.load_rules(kb, rules or ())
    result = posture.assess_posture(posture.load_profile(profile, kb), kb, ruleset)
    return posture_document(result, kb)


def _failing(doc: dict[str, Any], fail_on: str) -> tuple[int, list[str]]:
    """How many gaps are in ``fail_on``'s band or a higher one, and those bands."""
    if fail_on == "never":
        return 0, []
    from mlthreat.posture.report import BAND_ORDER

    worst = list(BAND_ORDER[: BAND_ORDER.index(fail_on) + 1])
    return sum(1 for s in doc["systems"] for g in s["gaps"] if g["band"] in worst), worst


@app.command()
def report(
    profile: Annotated[Path, typer.Argument(help="The organisation profile (YAML); "
                                            "'mlthreat posture example' writes one.")],
    rules: RulesOpt = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Folder to write posture.json, "
                                             "posture.html, posture.md and layers/ to.",
                                             show_default=False)] = None,
    fail_on: Annotated[str, typer.Option(help="Exit 1 when any gap is in this priority band "
                                         "or a higher one: high, medium, low or never.")
                       ] = "never",
    layer_version: Annotated[str | None, typer.Option(
        help="Navigator layer format: 4.3 or 4.5 (default: 4.5 for format-6 ATLAS data, 4.3 "
        "for the legacy data).", show_default=False)] = None,
    atlas: AtlasOpt = None,
    extension: ExtensionOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Assess every system of PROFILE: applicable techniques, coverage, and gaps by priority.
    With --out, write the JSON, HTML page, Markdown and Navigator layers."""
    if fail_on not in FAIL_ON:
        raise UsageError(f"--fail-on takes one of {', '.join(FAIL_ON)}, not {fail_on!r}")
    kb = load_kb(atlas, extension)
    doc = _assess(profile, kb, rules)
    written = []
    if out is not None:
        from mlthreat.posture.report import write_outputs

        written = write_outputs(doc, kb, out, layer_version)
    failing, worst = _failing(doc, fail_on)
    expect_exit(1 if failing else 0)
    if as_json:
        print_json(doc)
        if written:
            console_err = _stderr()
            console_err.print(f"wrote {plural(len(written), 'file')} to {data_text(out)}")
    else:
        _print_report(doc, kb, written, out)
    if failing:
        _stderr().print(f"failing (--fail-on {fail_on}): {plural(failing, 'gap')} in the "
                        f"{' or '.join(worst)} band")
        raise typer.Exit(1)


def _stderr() -> Any:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def _print_report(doc: dict[str, Any], kb: Any, written: list[Path], out: Path | None) -> None:
    from rich.table import Table

    con = console()
    con.print(f"[bold]{data_text(doc['organisation'])}[/bold]: "
              f"{plural(len(doc['systems']), 'system')}, profile {data_text(doc['source'])}")
    for s in doc["systems"]:
        n = s["summary"]
        con.print(f"\n[bold]{data_text(s['name'])}[/bold] [dim]{data_text(s['kind'])}, "
                  f"{data_text(', '.join(s['exposure']))}, owner {data_text(s['owner'])}[/dim]")
        con.print(indented(
            f"{n['applicable']} applicable: [green]{n['covered']} covered[/green], "
            f"[yellow]{n['partial']} partial[/yellow], [red]{n['uncovered']} uncovered[/red], "
            f"[bold red]{n['exposed']} exposed[/bold red]; mean coverage "
            f"{100 * n['mean_coverage']:.0f}%, {plural(n['gaps'], 'gap')}", 2))
        if not s["gaps"]:
            continue
        table = Table("Priority", "Technique", "Status", "Mitigations to implement",
                      "Verify with", title=f"Top {min(TOP_GAPS, len(s['gaps']))} gaps",
                      title_justify="left")
        for column in table.columns:
            column.overflow = "fold"
        for g in s["gaps"][:TOP_GAPS]:
            todo = ", ".join(m["id"] for m in g["mitigations"]) or "none in the matrix"
            verify = "\n".join(v["command"] + ("" if v["ready"] else f" (needs {v['needs']})")
                               for v in g["verify"]) or "-"
            table.add_row(f"{g['priority']:g} {g['band']}",
                          f"{g['technique']} {data_text(g['name'])}", g["status"],
                          data_text(todo), data_text(verify))
        con.print(table)
    if written:
        con.print(f"\nWrote {plural(len(written), 'file')} to {data_text(out)}:")
        for path in written:
            con.print(f"  {data_text(path)}")
    con.print("\n" + footer(kb))


# -- diff ---------------------------------------------------------------------------------------
@app.command("diff")
def diff_cmd(
    old: Annotated[Path, typer.Argument(help="Older profile (YAML) or saved posture.json.")],
    new: Annotated[Path, typer.Argument(help="Newer profile (YAML) or saved posture.json.")],
    rules: RulesOpt = None,
    atlas: AtlasOpt = None,
    extension: ExtensionOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Compare two postures (profiles or saved posture.json): coverage up and down, status and
    priority changes, gaps opened and closed. Exits 1 when the posture got worse (a gap opened
    or a coverage went down)."""
    from mlthreat import posture
    from mlthreat.posture.report import diff_document, is_worse, load_posture

    kb = load_kb(atlas, extension)
    a, b = load_posture(old, kb, rules or ()), load_posture(new, kb, rules or ())
    result = posture.diff_posture(a, b)
    worse = is_worse(result)
    expect_exit(1 if worse else 0)
    if as_json:
        print_json(diff_document(result, kb, str(old), str(new)))
    else:
        _print_diff(result, kb, old, new, worse)
    if worse:
        raise typer.Exit(1)


def _print_diff(result: Any, kb: Any, old: Path, new: Path, worse: bool) -> None:
    con = console()
    con.print(f"{data_text(old)} → {data_text(new)}")
    for name in result.systems_added:
        con.print(f"[green]+ system {data_text(name)}[/green]")
    for name in result.systems_removed:
        con.print(f"[red]- system {data_text(name)}[/red]")
    for s in result.systems:
        if not s.changed:
            continue
        con.print(f"\n[bold]{data_text(s.name)}[/bold]")
        for c in s.coverage_up:
            con.print(f"  [green]coverage up[/green]   {c.technique}: {100 * c.old:.0f}% → "
                      f"{100 * c.new:.0f}% (+{100 * (c.delta or 0):.1f})")
        for c in s.coverage_down:
            con.print(f"  [red]coverage down[/red] {c.technique}: {100 * c.old:.0f}% → "
                      f"{100 * c.new:.0f}% ({100 * (c.delta or 0):.1f})")
        for c in s.status_changes:
            con.print(f"  status        {c.technique}: {c.old} → {c.new}")
        for c in s.priority_changes:
            con.print(f"  priority      {c.technique}: {c.old:g} → {c.new:g} ({c.delta:+g})")
        for label, ids in (("gaps closed", s.gaps_closed), ("gaps opened", s.gaps_opened),
                           ("now applicable", s.newly_applicable),
                           ("no longer applicable", s.no_longer_applicable)):
            if ids:
                con.print(f"  {label}: {', '.join(ids)}")
    if not result.changed:
        con.print("No differences.")
    elif worse:
        con.print("\n[red]The posture got worse[/red] (a gap opened or a coverage went down).")
    con.print(footer(kb))


# -- example ------------------------------------------------------------------------------------
@app.command()
def example(
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File to write (default: "
                                                "standard output).", show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
) -> None:
    """Write the worked example profile (a lending company's four ML systems, every field
    explained) to start your own from."""
    from mlthreat.cli._common import write_output
    from mlthreat.posture import example_profile_text

    if output is not None and str(output) != "-" and output.exists() and not force:
        raise UsageError(f"{output} exists; pass --force to overwrite it")
    if write_output(example_profile_text(), output):
        console().print(f"wrote the example profile to {data_text(output)}; assess it with: "
                        f"mlthreat posture report {data_text(output)}")
