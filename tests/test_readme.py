"""README.md's examples run as written (issue 10).

Every command of every ``sh`` block of README.md is either run here, in README order, in a
temporary copy of the files a clone has (README.md, ``examples/``, ``tests/data/atlas-data/``),
and must exit with the code its comment states (``# ... exit N ...``; 0 when it states none), or
is listed in ``EXCLUDED`` with the reason. A README command that is in neither, or an entry of
``EXCLUDED`` the README no longer has, fails the test. The ``yaml`` block of the organisation
extension must be ``examples/acme.yaml``, and the ``python`` block runs.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

# README commands not run here, each with the reason. Keys are the commands without comments.
EXCLUDED: dict[str, str] = {
    "python3 -m venv .venv && . .venv/bin/activate && pip install . && mlthreat assess":
        "installs from PyPI (minutes); the test runs inside an installed environment",
    "./scripts/test": "the whole suite (this test included), about 9 minutes on two cores",
    "mlthreat assess": "the demo takes about 35 s on two cores; STAND_IN writes a smaller "
                       "mlthreat-report/ for the detect examples that read it",
    "mlthreat assess --techniques AML.T0024.002 --mitigation round:2 -o rounded-report":
        "about 30 s on two cores (four runs, each twice); tests/cli/test_assess_cli.py covers "
        "--mitigation",
    "mlthreat detect run examples/logs/*.jsonl --engine spark -o alerts.jsonl":
        "starts a Spark JVM (tens of seconds); tests/detect/test_spark.py compares the engines",
    "mlthreat detect stream examples/logs/ --checkpoint detect-ckpt/ -o stream-alerts.jsonl "
    "--available-now": "starts a Spark JVM (tens of seconds); tests/detect/test_spark.py "
                       "covers streaming",
    "mlthreat kb update": "needs the network (GitHub); tests/kb test it against a local server",
    "mlthreat kb update --release 2026.09": "needs the network (GitHub); tests/kb/test_update.py "
                                            "tests --release against a local server",
    "mlthreat kb show AML.T0115 --atlas ATLAS-latest.yaml":
        "needs an official format-6 file, which no test machine can fetch; "
        "tests/cli/test_kb_cli.py shows AML.T0115 from a converted one",
}

# In place of the demo's report: the same command, two runs instead of every run (the
# extraction clients are what the detect examples find in it).
STAND_IN = "mlthreat assess --techniques extraction-equations -q"

# Written by examples/make_inputs.py (also listed in examples/.gitignore): not copied.
GENERATED = ("model.skops", "train.csv", "holdout.csv", "rows.csv", "benign.jsonl", "live.jsonl",
             "logs", "models")

_EXIT = re.compile(r"\bexit (\d)\b")


def blocks(lang: str) -> list[str]:
    """The bodies of README's fenced blocks of ``lang``, in order."""
    return re.findall(rf"^```{lang}\n(.*?)^```$", README.read_text(encoding="utf-8"),
                      flags=re.M | re.S)


def split_comment(line: str) -> tuple[str, str]:
    """A shell line's command and its trailing comment (``#`` outside quotes)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip(), line[i + 1:].strip()
    return line.rstrip(), ""


def examples() -> list[tuple[str, int]]:
    """Every command of the ``sh`` blocks with the exit code its comment states."""
    out = []
    for body in blocks("sh"):
        joined = re.sub(r"\\\n\s*", " ", body)  # continuation lines
        for line in joined.splitlines():
            command, comment = split_comment(line)
            if command:
                found = _EXIT.search(comment)
                out.append((" ".join(command.split()), int(found.group(1)) if found else 0))
    return out


def test_every_example_is_run_or_excluded_with_a_reason() -> None:
    commands = [c for c, _ in examples()]
    assert len(commands) == len(set(commands)), "a README command appears twice"
    assert sorted(set(EXCLUDED) - set(commands)) == []  # no stale exclusions
    assert all(len(reason) > 20 for reason in EXCLUDED.values())
    run = [c for c in commands if c not in EXCLUDED]
    assert len(run) == 41
    assert run[0] == "python examples/make_inputs.py"


def test_stated_exit_codes() -> None:
    codes = dict(examples())
    assert codes["mlthreat detect run mlthreat-report/queries.jsonl -o alerts.jsonl "
                 "--format ocsf"] == 1
    assert codes["mlthreat posture report profile.yaml --fail-on high"] == 1
    assert codes["mlthreat kb show AML.T0024.002 --json"] == 0
    assert sorted(c for c, code in codes.items() if code not in (0, 1)) == []


def test_extension_block_is_the_example_file() -> None:
    (acme,) = [b for b in blocks("yaml") if b.startswith("# examples/acme.yaml\n")]
    assert acme == (ROOT / "examples" / "acme.yaml").read_text(encoding="utf-8")


def test_python_block_runs() -> None:
    (code,) = blocks("python")
    namespace: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["t"].id == "AML.T0024.002"  # type: ignore[attr-defined]
    assert "AML.M0002" in [m.id for m in namespace["base"].mitigations_of("AML.T0024.002")]  # type: ignore[attr-defined]
    assert namespace["base"].search("membership inference")[0].id == "AML.T0024.000"  # type: ignore[attr-defined]
    assert str(namespace["html"]).lstrip().lower().startswith("<!doctype html")


# -- values the run examples leave behind -------------------------------------------------------
def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _inputs(work: Path, out: str) -> None:
    assert "wrote the example inputs to examples/" in out
    ex = work / "examples"
    assert len(_lines(ex / "benign.jsonl")) == 50 * 150
    assert sorted(p.name for p in (ex / "models").iterdir()) == ["model.pkl", "model.skops",
                                                                 "unsafe.pkl"]
    assert (ex / "rows.csv").read_text().splitlines()[0].endswith(",label")


def _calibrated(work: Path, out: str) -> None:
    cal = json.loads((work / "calibration.json").read_text())
    assert cal["target_fpr"] == 0.001
    assert {"prada", "blacklight", "ood", "volume", "repeat"} <= set(cal["detectors"])


def _logs_run(work: Path, out: str) -> None:
    (bad,) = _lines(work / "bad.jsonl")
    assert bad["reason"] == "bad_json"
    assert "prober-7" in out and "batch-scorer-01" not in out


def _evaluated(work: Path, out: str) -> None:
    assert "benign" in out and "AML.T0024.002" in out


def _followed(work: Path, out: str) -> None:
    assert (work / "detect-state.json").is_file()
    assert "200 events, 0 alerts" in out


def _sarif(work: Path, out: str) -> None:
    sarif = json.loads((work / "scan.sarif").read_text())
    assert sarif["version"] == "2.1.0"
    uris = {loc["physicalLocation"]["artifactLocation"]["uri"]
            for r in sarif["runs"][0]["results"] for loc in r["locations"]}
    assert any(u.endswith("unsafe.pkl") for u in uris)


def _cyclonedx(work: Path, out: str) -> None:
    bom = json.loads((work / "models.cdx.json").read_text())
    assert (bom["bomFormat"], bom["specVersion"]) == ("CycloneDX", "1.6")
    assert {v["id"] for v in bom["vulnerabilities"]} == {"AML.T0011.000"}


def _manifest(work: Path, out: str) -> None:
    files = json.loads((work / "models.manifest.json").read_text())["files"]
    assert sorted(f["path"] for f in files) == ["model.pkl", "model.skops", "unsafe.pkl"]


def _checked(work: Path, out: str) -> None:
    for finding in ("name-mismatch", "outdated-name", "unknown-id", "newer-id", "legacy-tactic",
                    "wrong-tactic"):
        assert finding in out


CHECKS: dict[str, Callable[[Path, str], None]] = {
    "python examples/make_inputs.py": _inputs,
    "mlthreat detect calibrate examples/benign.jsonl": _calibrated,
    "mlthreat detect run examples/logs/*.jsonl --calibration": _logs_run,
    "mlthreat detect evaluate examples/benign.jsonl": _evaluated,
    "mlthreat detect run examples/live.jsonl --follow": _followed,
    "mlthreat scan examples/models/ -f sarif": _sarif,
    "mlthreat scan examples/models/ -f cyclonedx": _cyclonedx,
    "mlthreat scan manifest examples/models/": _manifest,
    "mlthreat kb check examples/controls.csv": _checked,
}


def _copy(work: Path) -> None:
    shutil.copy(README, work / "README.md")
    shutil.copytree(ROOT / "examples", work / "examples",
                    ignore=lambda folder, names: [n for n in names if n in GENERATED
                                                  or n == "__pycache__"])
    shutil.copytree(ROOT / "tests" / "data" / "atlas-data", work / "tests" / "data" / "atlas-data")


def _shell(command: str, work: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", command], cwd=work, env=env, capture_output=True,
                          text=True, timeout=300)


def test_examples_run_as_written(tmp_path: Path) -> None:
    work = tmp_path / "clone"
    work.mkdir()
    _copy(work)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLTHREAT_")}
    env |= {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            "MLTHREAT_CACHE_DIR": str(tmp_path / "cache"), "COLUMNS": "120",
            "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    stand_in = _shell(STAND_IN, work, env)
    assert stand_in.returncode == 0, stand_in.stderr
    ran = []
    with _Receiver() as port:
        for command, code in examples():
            if command in EXCLUDED:
                continue
            # alerts go to a port this test listens on, not to the machine's syslog
            shown = command.replace("syslog://127.0.0.1:514", f"syslog://127.0.0.1:{port}")
            done = _shell(shown, work, env)
            out = done.stdout + done.stderr
            assert done.returncode == code, f"{command}\nexit {done.returncode}\n{out[-2000:]}"
            assert "Traceback" not in out, f"{command}\n{out[-2000:]}"
            for prefix, check in CHECKS.items():
                if command.startswith(prefix):
                    check(work, out)
            ran.append(command)
    assert len(ran) == 41


class _Receiver:
    """A UDP socket on 127.0.0.1 that collects syslog datagrams; ``with`` gives its port."""

    def __enter__(self) -> int:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        return int(self.sock.getsockname()[1])

    def received(self) -> list[bytes]:
        out = []
        while True:
            try:
                out.append(self.sock.recv(65536))
            except TimeoutError:
                return out

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


def test_syslog_example_reaches_the_port_it_names(tmp_path: Path) -> None:
    log = tmp_path / "replay.jsonl"
    log.write_text("".join(json.dumps({"ts": 1.7e9 + i, "client_id": "loop", "model_id": "m",
                                       "input": [0.5, 0.25], "output": {"label": 1}}) + "\n"
                           for i in range(40)))
    receiver = _Receiver()
    port = receiver.__enter__()
    try:
        done = subprocess.run([sys.executable, "-m", "mlthreat", "detect", "run", str(log),
                               "--detectors", "repeat", "-o", f"syslog://127.0.0.1:{port}"],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 1, done.stderr
        datagrams = receiver.received()
    finally:
        receiver.__exit__()
    assert len(datagrams) == 1
    assert datagrams[0].startswith(b"<84>1 ") and b" mlthreat - alert - " in datagrams[0]


@pytest.mark.parametrize("line", ["a # b", "echo '# no' # yes", "x --allow 'b-*'"])
def test_split_comment(line: str) -> None:
    command, comment = split_comment(line)
    assert (command, comment) == {"a # b": ("a", "b"), "echo '# no' # yes": ("echo '# no'", "yes"),
                                  "x --allow 'b-*'": ("x --allow 'b-*'", "")}[line]
    assert shlex.split(command)  # still a command
