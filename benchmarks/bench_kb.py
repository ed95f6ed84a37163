"""Knowledge-base start-up and load times (issue 2 targets: ``kb show`` cold start < 0.2 s,
official ATLAS.yaml load < 0.2 s). Prints one JSON line per figure; median of repeated runs.

    python benchmarks/bench_kb.py [--atlas PATH] [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _median_seconds(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser()
    shared = ROOT.parent / "shared/atlas-data/ATLAS.yaml"
    vendored = ROOT / "tests/data/atlas-data/ATLAS.yaml"
    ap.add_argument("--atlas", default=str(shared if shared.is_file() else vendored))
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args()
    env = {**os.environ, "MLTHREAT_CACHE_DIR": "/nonexistent-mlthreat-bench"}
    env.pop("MLTHREAT_ATLAS", None)
    exe = Path(sys.executable).with_name("mlthreat")

    def cold_show() -> None:
        subprocess.run([str(exe), "kb", "show", "AML.T0043"], env=env, check=True,
                       stdout=subprocess.DEVNULL)

    def bare_python() -> None:
        subprocess.run([sys.executable, "-c", "pass"], check=True)

    def embedded() -> None:
        subprocess.run([sys.executable, "-c", "from mlthreat import kb; kb.load()"], env=env,
                       check=True)

    from mlthreat.kb import load_file

    figures = {
        "python_startup_s": _median_seconds(bare_python, args.repeat),
        "cli_kb_show_cold_s": _median_seconds(cold_show, args.repeat),
        "import_and_load_embedded_s": _median_seconds(embedded, args.repeat),
        "load_official_atlas_yaml_s": _median_seconds(lambda: load_file(args.atlas), args.repeat),
    }
    for name, value in figures.items():
        print(json.dumps({"figure": name, "median_seconds": round(value, 4),
                          "repeat": args.repeat}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
