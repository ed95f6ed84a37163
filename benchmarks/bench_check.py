"""``kb check`` on large generated files (issue target: a 300k-entry Navigator layer, ~15 MB, and
a 500k-ID text file, ~5 MB, each well under 60 s; plus 500k distinct unknown IDs, ~7 MB, the
worst case for suggestions). Each case runs in a fresh process and prints one JSON line: file
size, references, findings, seconds spent in ``check_file`` and peak RSS.

    python benchmarks/bench_check.py [--entries N] [--ids N] [--case NAME]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = ("layer", "text-mixed", "text-unknown")


def _write_layer(path: Path, entries: int, rng: random.Random) -> None:
    """A layer of ``entries`` entries: mostly right, some wrong or legacy tactics, some unknown
    IDs (distinct, so every one needs its own suggestion)."""
    from mlthreat.kb.sources.snapshot import load_embedded

    kb = load_embedded()
    pairs = [(t.id, tac.shortname) for t in kb.techniques for tac in kb.tactics_of(t.id)]
    shortnames = [t.shortname for t in kb.tactics]
    with path.open("w", encoding="utf-8") as out:
        out.write('{"name": "bench", "domain": "atlas-atlas", "techniques": [\n')
        for i in range(entries):
            tid, tactic = rng.choice(pairs)
            roll = rng.random()
            if roll < 0.05:
                tid = f"AML.T{rng.randrange(200, 10000):04d}.{rng.randrange(1000):03d}"
            elif roll < 0.15:
                tactic = rng.choice(shortnames)
            elif roll < 0.20:
                tactic = "ml-attack-staging"
            sep = ",\n" if i < entries - 1 else "\n"
            out.write(json.dumps({"techniqueID": tid, "tactic": tactic}) + sep)
        out.write("]}\n")


def _write_text(path: Path, ids: int, rng: random.Random, unknown_share: float) -> None:
    """Known IDs and unknown ones; with ``unknown_share`` 1, all unknown sub-technique IDs, nearly
    all distinct: the worst case for suggestions."""
    from mlthreat.kb.sources.snapshot import load_embedded

    known = [o.id for o in load_embedded()]
    words = []
    for i in range(ids):
        if unknown_share == 1:
            words.append(f"AML.T{rng.randrange(200, 10000):04d}.{rng.randrange(1000):03d}")
        elif rng.random() < unknown_share:
            words.append(f"AML.T{rng.randrange(200, 10000):04d}")
        else:
            words.append(rng.choice(known))
        words.append("\n" if i % 8 == 7 else " ")
    path.write_text("".join(words), encoding="utf-8")


def run_case(case: str, entries: int, ids: int) -> dict[str, object]:
    from mlthreat.kb.check import check_file
    from mlthreat.kb.sources.snapshot import load_embedded

    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        if case == "layer":
            path = Path(tmp) / "big.layer.json"
            _write_layer(path, entries, rng)
        else:
            path = Path(tmp) / "ids.txt"
            _write_text(path, ids, rng, 0.5 if case == "text-mixed" else 1.0)
        kb = load_embedded()
        start = time.perf_counter()
        report = check_file(kb, path)
        seconds = time.perf_counter() - start
        return {"case": case, "bytes": path.stat().st_size, "format": report.file_format,
                "references": report.references_checked, "findings": len(report.findings),
                "check_file_s": round(seconds, 2),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=300_000, help="layer entries")
    ap.add_argument("--ids", type=int, default=500_000, help="IDs in the text files")
    ap.add_argument("--case", choices=CASES, help="run one case in this process")
    args = ap.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, args.entries, args.ids)), flush=True)
        return 0
    for case in CASES:  # a fresh process each, so peak RSS is the case's own
        subprocess.run([sys.executable, __file__, "--case", case, "--entries", str(args.entries),
                        "--ids", str(args.ids)], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
