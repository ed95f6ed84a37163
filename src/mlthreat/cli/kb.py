"""``mlthreat kb``: browse, search, diff, check and export the threat matrix (``export`` is
defined in :mod:`mlthreat.cli.kb_export`)."""

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
    envelope,
    expect_exit,
    footer,
    indented,
    load_kb,
    plural,
    print_json,
    print_warnings,
)
from mlthreat.cli.kb_export import export

app = typer.Typer(help="The threat matrix: browse, search, diff, check, export.",
                  no_args_is_help=True)




@app.command()
def matrix(
    atlas: AtlasOpt = None,
    extension: ExtensionOpt = None,
    subtechniques: Annotated[bool, typer.Option("--subtechniques", "-s",
                                                help="List sub-techniques too.")] = False,
    ids: Annotated[bool, typer.Option("--ids", help="Show IDs instead of names.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Show the matrix: tactics as columns, their techniques below."""
    kb = load_kb(atlas, extension)
    columns = [(t, kb.techniques_of(t.id, subtechniques=subtechniques)) for t in kb.tactics]
    if as_json:
        print_json(envelope("mlthreat.kb.matrix", kb, {"tactics": [
            {"id": t.id, "name": t.name, "techniques": [
                {"id": x.id, "name": x.name, "parent": x.parent} for x in techs]}
            for t, techs in columns]}))
        return
    from rich.table import Table

    con = console()
    width = 24 if ids is False else 16
    per_table = max(1, con.width // width)
    for start in range(0, len(columns), per_table):
        table = Table(show_lines=False, expand=True, pad_edge=False)
        chunk = columns[start:start + per_table]
        for tactic, techs in chunk:
            table.add_column(f"[bold]{data_text(tactic.name)}[/bold]\n[dim]{tactic.id} · "
                             f"{len(techs)}[/dim]", overflow="fold", ratio=1)
        depth = max(len(techs) for _, techs in chunk)
        for row in range(depth):
            cells = []
            for _, techs in chunk:
                if row >= len(techs):
                    cells.append("")
                    continue
                t = techs[row]
                label = t.id if ids else data_text(t.name)
                cells.append(f"[dim]↳[/dim] {label}" if t.parent else label)
            table.add_row(*cells)
        con.print(table)
    con.print(f"{len(kb.tactics)} tactics, {sum(1 for t in kb.techniques if not t.parent)} "
              f"techniques, {sum(1 for t in kb.techniques if t.parent)} sub-techniques. "
              + footer(kb))


def _object_payload(kb: Any, atlas_id: str) -> dict[str, Any]:
    from mlthreat.kb.serialize import object_to_dict

    obj = kb.get(atlas_id)
    kind = kb.kind(atlas_id)
    data: dict[str, Any] = {"type": kind, **object_to_dict(obj, keep_empty=True)}
    if kind in ("technique", "sub-technique"):
        data["tactics"] = [{"id": t.id, "name": t.name} for t in kb.tactics_of(atlas_id)]
        data["subtechniques"] = [{"id": s.id, "name": s.name} for s in kb.subtechniques(atlas_id)]
        data["mitigations"] = [
            {"id": m.id, "name": m.name, "inherited": atlas_id not in {u.technique for u in
                                                                       m.techniques},
             "use": [u for u in kb.uses_of(m.id, atlas_id) if u]}
            for m in kb.mitigations_of(atlas_id)]
        data["case_studies"] = [{"id": c.id, "name": c.name}
                                for c in kb.case_studies_using(atlas_id)]
    elif kind == "tactic":
        data["techniques"] = [{"id": t.id, "name": t.name} for t in kb.techniques_of(atlas_id)]
    elif kind == "mitigation":
        data["techniques"] = [{"id": u.technique, "name": kb.get(u.technique).name
                               if u.technique in kb else None, "use": u.use}
                              for u in obj.techniques]
    return data


def _known_id(kb: Any, text: str) -> str:
    """``text`` as an ID of ``kb`` (IDs are upper case; aml.t0043 is accepted too). Raises
    UnknownIdError with the ID it likely means, or else the search to run."""
    from mlthreat.kb.errors import UnknownIdError
    from mlthreat.kb.names import canonical_ids

    raw = text.strip()
    if raw.upper() in kb:
        return raw.upper()
    try:
        kb.get(raw)
    except UnknownIdError as exc:
        if exc.suggestion is not None or canonical_ids(raw):
            raise
        import shlex

        # the suggested command echoes the text only when it is short, printable words
        # (never a terminal escape sequence or a 100 000-character argument)
        words = shlex.quote(raw) if raw and raw.isprintable() and len(raw) <= 60 else "WORDS"
        raise UnknownIdError(raw, kb.version, hint="search names and descriptions with: "
                             f"mlthreat kb search {words}") from None
    return raw


@app.command()
def show(
    atlas_id: Annotated[str, typer.Argument(metavar="ID", help="Any ATLAS ID, e.g. AML.T0043.")],
    atlas: AtlasOpt = None,
    extension: ExtensionOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one tactic, technique, mitigation or case study with everything linked to it."""
    kb = load_kb(atlas, extension)
    atlas_id = _known_id(kb, atlas_id)
    if kb.kind(atlas_id) == "case-study":
        _print_case_study(kb, atlas_id, as_json)
        return
    data = _object_payload(kb, atlas_id)
    if as_json:
        print_json(envelope("mlthreat.kb.object", kb, data))
        return
    con = console()
    obj = kb.get(atlas_id)
    con.print(f"[bold]{data_text(obj.name)}[/bold]  [cyan]{obj.id}[/cyan]  "
              f"[dim]{data['type']}[/dim]")
    description = getattr(obj, "description", "")
    if description:
        con.print(data_text(description))
    facts = []
    if kb.status(atlas_id) != "active":
        by = [r.replaced_by for r in kb.retired if r.object.id == atlas_id and r.replaced_by]
        facts.append(f"status: {kb.status(atlas_id)}, not in the matrix"
                     + (f" (replaced by {by[0]})" if by else ""))
    if data.get("maturity"):
        facts.append(f"maturity: {data['maturity']}")
    if data.get("platforms"):
        facts.append("platforms: " + ", ".join(map(data_text, data["platforms"])))
    if data.get("parent"):
        parent = data_text(kb.get(data["parent"]).name)
        facts.append(f"sub-technique of {data['parent']} ({parent})")
    ref = data.get("attack_reference")
    if ref:
        facts.append(f"ATT&CK: {ref['id']}")
    if data["type"] in ("technique", "sub-technique"):
        facts.append("tactics: " + ", ".join(f"{data_text(t['name'])} ({t['id']})"
                                             for t in data["tactics"]))
    for fact in facts:
        con.print(f"  {fact}")
    sections = {
        "Sub-techniques": data.get("subtechniques", []),
        "Techniques": data.get("techniques", []) if data["type"] != "technique" else [],
        "Mitigations": data.get("mitigations", []),
        "Case studies using it": data.get("case_studies", []),
    }
    for title, items in sections.items():
        if not items:
            continue
        con.print(f"\n[bold]{title}[/bold] ({len(items)})")
        for item in items:
            extra = " [dim](via parent)[/dim]" if item.get("inherited") else ""
            con.print(f"  {item['id']:<14} {data_text(item.get('name') or '?')}{extra}")
            uses = item.get("use")
            for use in [uses] if isinstance(uses, str) else uses or []:
                if use:
                    con.print(indented(f"[dim]{data_text(use)}[/dim]", 17))
    con.print("\n" + footer(kb))


@app.command()
def search(
    text: Annotated[list[str], typer.Argument(help="Words that must all occur.")],
    atlas: AtlasOpt = None,
    extension: ExtensionOpt = None,
    limit: Annotated[int, typer.Option(min=1, help="Most results to show.")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """Search IDs, names, descriptions and case studies (all words must match)."""
    kb = load_kb(atlas, extension)
    hits = kb.search(" ".join(text), limit=limit)
    if as_json:
        print_json(envelope("mlthreat.kb.search", kb, {"query": " ".join(text), "results": [
            {"id": h.id, "type": h.kind, "name": h.name, "score": h.score} for h in hits]}))
        return
    from rich.table import Table

    con = console()
    if not hits:
        con.print(f"No match for {data_text(' '.join(text))!r}. " + footer(kb))
        return
    table = Table("ID", "Type", "Name", "Score")
    for h in hits:
        table.add_row(h.id, h.kind, data_text(h.name), f"{h.score:g}")
    con.print(table)
    con.print(footer(kb))


def _print_case_study(kb: Any, atlas_id: str, as_json: bool) -> None:
    from mlthreat.kb.serialize import object_to_dict

    if atlas_id not in kb and atlas_id.startswith("AML.CS") and not kb.case_studies:
        from mlthreat.errors import UsageError

        raise UsageError(f"{atlas_id}: the ATLAS data in use ({kb.source}) holds no case "
                         "studies (the official STIX bundle has none); use ATLAS.yaml or the "
                         "embedded snapshot")
    cs = kb.case_study(atlas_id)
    if as_json:
        data = object_to_dict(cs, keep_empty=True)
        for step in data["procedure"]:
            step["tactic_name"] = kb.get(step["tactic"]).name if step["tactic"] in kb else None
            step["technique_name"] = (kb.get(step["technique"]).name
                                      if step["technique"] in kb else None)
        print_json(envelope("mlthreat.kb.case-study", kb, {"type": "case-study", **data}))
        return
    con = console()
    con.print(f"[bold]{data_text(cs.name)}[/bold]  [cyan]{cs.id}[/cyan]  "
              f"[dim]{cs.case_study_type}, {cs.date_label}[/dim]")
    for label, value in (("target", cs.target), ("actor", cs.actor), ("reporter", cs.reporter)):
        if value:
            con.print(f"  {label}: {data_text(value)}")
    con.print(data_text(cs.summary))
    con.print(f"\n[bold]Procedure[/bold] ({len(cs.procedure)} steps)")
    for n, step in enumerate(cs.procedure, 1):
        tac = kb.get(step.tactic).name if step.tactic in kb else "?"
        tech = kb.get(step.technique).name if step.technique in kb else "?"
        arrow = "   " if n == 1 else " → "
        con.print(f"{arrow}{n:>2}. [magenta]{data_text(tac)}[/magenta] · {data_text(tech)} "
                  f"[dim]{step.technique}[/dim]")
        if step.description:
            con.print(indented(f"[dim]{data_text(step.description)}[/dim]", 7))
    for ref in cs.references:
        con.print(f"  [dim]ref: {data_text(ref.title or ref.url)} {data_text(ref.url)}[/dim]")
    con.print("\n" + footer(kb))


@app.command("case-study")
def case_study(
    atlas_id: Annotated[str, typer.Argument(metavar="ID", help="A case study ID (AML.CS0000).")],
    atlas: AtlasOpt = None,
    extension: ExtensionOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a case study's procedure as an ordered attack chain."""
    kb = load_kb(atlas, extension)
    _print_case_study(kb, atlas_id.strip().upper(), as_json)


def _load_side(spec: str) -> Any:
    from mlthreat import kb

    if spec == "embedded":
        from mlthreat.kb.sources.snapshot import load_embedded

        return load_embedded()
    base = kb.load_file(spec)
    print_warnings(base.warnings, f"mlthreat kb check {spec}")
    return base


def _change_json(change: Any) -> dict[str, Any]:
    """A diff change as JSON: every field, but ``replaced_by`` only when something replaced a
    removed object, so documents without replacements read as they always have."""
    from mlthreat.kb.serialize import object_to_dict

    out: dict[str, Any] = object_to_dict(change, keep_empty=True)
    if not out["replaced_by"]:
        del out["replaced_by"]
    return out


def _change_kind(change: Any, new: Any) -> str:
    """The Change column: the kind, and for a removed object what replaced it, with names."""
    if not change.replaced_by:
        return str(change.kind)
    by = ", ".join(f"{i} ({new.get(i).name})" for i in change.replaced_by)
    return f"{change.kind}, replaced by {by}"


@app.command("diff")
def diff_cmd(
    old: Annotated[str, typer.Argument(help="Older data file, or 'embedded'.")],
    new: Annotated[str, typer.Argument(help="Newer data file, or 'embedded'.")],
    as_json: JsonOpt = False,
) -> None:
    """Compare two data files, legacy or format 6, of any releases: added, removed (and what
    replaced it), renamed and moved objects. Exits 1 if they differ, like diff(1)."""
    from mlthreat.kb.diff import diff

    a, b = _load_side(old), _load_side(new)
    result = diff(a, b)
    expect_exit(1 if result.changes else 0)
    if as_json:
        print_json({
            **envelope("mlthreat.kb.diff", b, {}),
            "old": {"atlas_version": a.version, "source": a.source},
            "new": {"atlas_version": b.version, "source": b.source},
            "counts": result.counts(),
            "changes": [_change_json(c) for c in result.changes],
        })
    else:
        from rich.table import Table

        con = console()
        con.print(f"ATLAS {result.old_version} ({a.source}) → {result.new_version} "
                  f"({b.source})")
        table = Table("Change", "Type", "ID", "Name", "Before", "After")
        for column in table.columns:
            column.overflow = "fold"
        kinds = [_change_kind(c, b) for c in result.changes]
        # "removed, replaced by ID (Name)" reads as one phrase: keep it on one line where it fits
        table.columns[0].min_width = min(max(map(len, kinds), default=0), 60)
        for c, kind in zip(result.changes, kinds, strict=True):
            # for a rename, Name and After are the same: show the name once
            name = "" if c.kind == "renamed" else c.name
            table.add_row(data_text(kind), c.object_type, c.id, data_text(name),
                          data_text(c.before), data_text(c.after.replace(",", ", ")))
        if result.changes:
            con.print(table)
        summary = ", ".join(f"{v} {k}" for k, v in sorted(result.counts().items()))
        con.print(summary or "No differences.")
    if result.changes:
        raise typer.Exit(1)


@app.command()
def check(
    files: Annotated[list[Path], typer.Argument(help="Layers, CSV, JSON, YAML or text files.")],
    atlas: AtlasOpt = None,
    extension: ExtensionOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Find stale ATLAS references: unknown or retired IDs, old names, names paired with the
    wrong ID, legacy tactic short names. Exits 1 when anything is found."""
    from mlthreat.kb.check import check_file
    from mlthreat.kb.serialize import object_to_dict

    kb = load_kb(atlas, extension)
    reports = [check_file(kb, f) for f in files]
    total = sum(len(r.findings) for r in reports)
    expect_exit(1 if total else 0)
    if as_json:
        print_json(envelope("mlthreat.kb.check", kb, {
            "files": [{**object_to_dict(r, keep_empty=True)} for r in reports],
            "findings": total,
        }))
    else:
        from rich.table import Table

        con = console()
        for r in reports:
            con.print(f"[bold]{data_text(r.path)}[/bold] ({r.file_format}): "
                      f"{plural(r.references_checked, 'reference')}, "
                      f"{plural(len(r.findings), 'finding')}")
            if not r.findings:
                continue
            table = Table("Line", "Where", "Finding", "Found", "Use instead", "Detail")
            for column in table.columns:
                column.overflow = "fold"
            for f in r.findings:
                use = f"{f.suggestion_id} {f.suggestion_name}" if f.suggestion_id else ""
                table.add_row(str(f.line or ""), data_text(f.location), f.kind, data_text(f.found),
                              data_text(use), data_text(f.message))
            con.print(table)
        con.print(footer(kb))
    if total:
        raise typer.Exit(1)


app.command()(export)  # defined in kb_export, listed here before update


@app.command()
def update(
    release: Annotated[str | None, typer.Option(
        "--release", metavar="YYYY.MM", help="Fetch this content release (2026.09, "
        "2026.09.1) instead of the newest.")] = None,
    previous: Annotated[bool, typer.Option("--previous", help="Go back to the copy the last "
                                           "update replaced (run again to swap back).")] = False,
    remove: Annotated[bool, typer.Option("--remove", help="Delete the downloaded releases and "
                                         "go back to the embedded snapshot.")] = False,
    dist_url: Annotated[str, typer.Option(help="URL of atlas-data's dist/ folder (a mirror).")]
    = "",
    timeout: Annotated[float, typer.Option(help="Seconds per request.")] = 30.0,
    as_json: JsonOpt = False,
) -> None:
    """Download the newest ATLAS content release into the user cache; later commands use it.
    The copy it replaces is kept (see --previous)."""
    from mlthreat.kb import update as upd

    if remove:
        found = upd.remove()
        console().print("removed the downloaded releases" if found else "no downloaded release")
        return
    if previous:
        now = upd.restore_previous()
        console().print(f"went back to ATLAS {data_text(now)} ({upd.cached_release()}); the "
                        "replaced copy is now the previous one")
        return
    result = upd.update(release=release, dist_url=dist_url or upd.DIST_URL, timeout=timeout)
    if as_json:
        from dataclasses import asdict

        from mlthreat import __version__

        print_json({"kind": "mlthreat.kb.update", "schema_version": 1,
                    "mlthreat_version": __version__, **asdict(result)})
        return
    _print_update(result)


def _print_update(result: Any) -> None:
    """One line on what ``kb update`` installed, from where, and where the old copy went."""
    fmt = f"format {result.format_version}" if result.format_version else "legacy format"
    what = f"ATLAS {data_text(result.release)} ({fmt})"
    if not result.changed:
        console().print(f"{what} from {result.url} is already installed at {result.path}; "
                        "nothing changed")
        return
    kept = (f"previous copy kept at {result.previous} (mlthreat kb update --previous goes "
            "back)" if result.previous else "no previous copy")
    # a fallback says why the manifest was passed over, so a changed layout gets noticed
    how = "" if result.found_by in ("manifest", "release") else \
        f" (found as {data_text(result.found_by)})"
    console().print(f"installed {what} from {result.url}{how} to {result.path}, "
                    f"{result.size:,} bytes, sha256 {result.sha256[:16]}…; {kept}")
