"""Rebuild the embedded snapshot from an official ATLAS data file: the legacy ATLAS.yaml or a
format-6 content release (``ATLAS-2026.09.yaml``), read by the same loader as ``--atlas``.

Facts come from the official file; descriptions and summaries are this project's own texts,
taken from the current snapshot (or from YAML files mapping ID to text, for a first build).
Procedure step descriptions and mitigation "use" texts are left empty on purpose.

    python tools/build_snapshot.py ../shared/atlas-data/ATLAS.yaml \
        --releases ../shared/atlas-data/releases/*.yaml [--descriptions FILE.yaml ...] \
        [--out FILE]

Older releases, legacy or format 6, are ordered by :func:`mlthreat.kb.history.release_key`.

Fails, listing them, when any object lacks a description of ours.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import yaml

from mlthreat.kb.history import release_key
from mlthreat.kb.model import KnowledgeBase
from mlthreat.kb.serialize import to_dict
from mlthreat.kb.sources import load_file
from mlthreat.kb.sources.snapshot import KIND, SNAPSHOT_FILE

OUT = Path(__file__).resolve().parents[1] / "src/mlthreat/kb/data" / SNAPSHOT_FILE


def _history(current: KnowledgeBase, releases: list[KnowledgeBase]) -> dict:
    names: dict[str, list[list[str]]] = {}
    removed: dict[str, list[str]] = {}
    releases = sorted(releases, key=lambda k: release_key(k.version))
    for old in releases:
        for obj in (*old.tactics, *old.techniques, *old.mitigations):
            if obj.id not in current:
                removed[obj.id] = [obj.name, old.version]
            elif current.get(obj.id).name != obj.name:
                seen = names.setdefault(obj.id, [])
                seen[:] = [e for e in seen if e[0] != obj.name] + [[obj.name, old.version]]
    return {"releases": [k.version for k in releases], "names": names, "removed": removed}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("atlas")
    ap.add_argument("--releases", nargs="*", default=[])
    ap.add_argument("--descriptions", nargs="*", default=[])
    ap.add_argument("--out", type=Path, default=OUT, help="the snapshot file to write")
    args = ap.parse_args()
    out: Path = args.out

    kb = load_file(args.atlas)
    ours: dict[str, str] = {}
    if OUT.exists():  # the texts of the shipped snapshot, whatever file is written
        old = json.loads(OUT.read_text("utf-8"))
        for section in ("tactics", "techniques", "mitigations"):
            ours.update({o["id"]: o.get("description", "") for o in old[section]})
        ours.update({o["id"]: o.get("summary", "") for o in old["case_studies"]})
    for f in args.descriptions:
        ours.update(yaml.safe_load(Path(f).read_text("utf-8")))

    missing = [o.id for o in kb if not ours.get(o.id)]
    if missing:
        print(f"no description of ours for {len(missing)} objects: {missing}", file=sys.stderr)
        return 1

    def own(obj):
        if hasattr(obj, "summary"):
            steps = tuple(dataclasses.replace(s, description="") for s in obj.procedure)
            return dataclasses.replace(obj, summary=ours[obj.id], procedure=steps)
        changes = {"description": ours[obj.id]}
        if hasattr(obj, "lifecycle"):
            changes["techniques"] = tuple(
                dataclasses.replace(u, use="") for u in obj.techniques
            )
        return dataclasses.replace(obj, **changes)

    snap = KnowledgeBase(
        version=kb.version,
        format_version=kb.format_version,
        name=kb.name,
        tactics=tuple(map(own, kb.tactics)),
        techniques=tuple(map(own, kb.techniques)),
        mitigations=tuple(map(own, kb.mitigations)),
        case_studies=tuple(map(own, kb.case_studies)),
    )
    data = {"kind": KIND, "schema_version": 1, **to_dict(snap)}
    data["history"] = _history(snap, [load_file(p) for p in args.releases])
    data["provenance"] = (
        "Facts (IDs, names, relations, maturity, dates, ATT&CK references, procedures) from the "
        f"official MITRE ATLAS data {kb.version} (Apache-2.0); descriptions written for mlthreat."
    )
    out.write_text(json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n", "utf-8")
    print(f"wrote {out} ({out.stat().st_size} bytes, {len(snap)} objects)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
