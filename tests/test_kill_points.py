"""A kill at any moment, or a full disk, never leaves a file that looks complete and is not.

``detect run --follow --state`` and ``scan -o`` run as real processes and are killed (SIGKILL,
or SIGTERM followed closely by SIGKILL so that some kills land while the state is being saved)
at seeded random moments. After each kill the state file is absent or a state the next run
accepts, the alert file holds only whole JSON lines, a report is absent or one complete version,
and only hidden staging names are left beside them.

A full disk is made by a launcher that replaces ``os.fsync`` with one failing ENOSPC (where a
full disk surfaces on file systems that allocate late): the command exits 2 with one line naming
the file, and the previous file is kept byte for byte.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sklearn.datasets import load_digits

from mlthreat.detect.engine import build_detectors, load_state, restore_detectors
from mlthreat.detect.evaluate import benign_events

DETECTORS = "prada,blacklight,volume"
KILLS = 4

# os.fsync failing as a full disk does, then the command line as `python -m mlthreat` runs it
FULL_DISK = """
import errno, os
def _full(fd):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
os.fsync = _full
from mlthreat.cli import main
main()
"""


def _env() -> dict[str, str]:
    return {**os.environ, "COLUMNS": "160"}


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "mlthreat", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env())


def run(*args: str, full_disk: bool = False) -> subprocess.CompletedProcess[str]:
    head = [sys.executable, "-c", FULL_DISK] if full_disk else [sys.executable, "-m",
                                                                 "mlthreat"]
    return subprocess.run([*head, *args], capture_output=True, text=True, env=_env(),
                          timeout=120)


def kill_at_random(proc: subprocess.Popen[str], rng: random.Random, earliest: float,
                   latest: float, grace: float | None = 0.3) -> str:
    """Stop ``proc`` after a random delay: half the time SIGKILL at once, else SIGTERM and
    SIGKILL a random part of ``grace`` seconds later, so the kill may land while a clean stop
    is writing its files (``grace=None``: :func:`stop_cleanly`). Returns its stderr."""
    time.sleep(rng.uniform(earliest, latest))
    if grace is None:
        return stop_cleanly(proc)
    if rng.random() < 0.5:
        with contextlib.suppress(ProcessLookupError):  # already ended
            proc.send_signal(signal.SIGTERM)
        time.sleep(rng.uniform(0.0, grace))
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGKILL)
    return proc.communicate(timeout=30)[1]


def stop_cleanly(proc: subprocess.Popen[str]) -> str:
    """SIGTERM once ``proc`` says it is following (before that a slow start could still be
    without its handler, and die of the signal), then wait for it."""
    assert proc.stderr is not None
    seen: list[str] = []
    while not (seen and seen[-1].startswith("following ")):
        seen.append(proc.stderr.readline())
        assert seen[-1], "ended before following: " + "".join(seen)
    proc.send_signal(signal.SIGTERM)
    return "".join(seen) + proc.communicate(timeout=30)[1]


def stray_files(folder: Path, real: set[str]) -> list[str]:
    """Files beside the real ones that are not hidden staging names (``.NAME.<id>.tmp`` or
    ``.NAME.<pid>.partial``): a leftover must never pass for a finished file."""
    names = "|".join(map(re.escape, real))
    staging = re.compile(rf"^\.({names})\.[^/]+\.(tmp|partial)$")
    return sorted(p.name for p in folder.iterdir()
                  if p.name not in real and not staging.match(p.name))


# --- detect run --follow --state -------------------------------------------------------------

def _probe(x: object, start_ts: float) -> list[dict[str, object]]:
    import numpy as np

    rng = np.random.default_rng(7)
    base = x[3]  # type: ignore[index]
    rows = np.clip(base + rng.normal(0, 0.01, (80, len(base))), 0, 1)
    return [{"ts": start_ts + 2.0 * i, "client_id": "prober-1", "model_id": "digits",
             "input": [round(float(v), 6) for v in row], "output": {"label": 3}}
            for i, row in enumerate(rows)]


@pytest.fixture(scope="module")
def log_lines() -> list[bytes]:
    x = load_digits().data / 16.0
    benign = benign_events(x, n_clients=30, queries=100, model_id="digits", seed=3)
    first = min(e["ts"] for e in benign)
    events = sorted(benign + _probe(x, first + 20.0), key=lambda e: e["ts"])
    return [(json.dumps(e) + "\n").encode() for e in events]


def _check_state(state: Path, log: Path) -> int | None:
    """The follow offset of a state file the next run accepts (None when absent)."""
    if not state.exists():
        return None
    data = load_state(state)  # DetectError unless whole, well-formed JSON
    restore_detectors(build_detectors(DETECTORS.split(",")), data, str(state))
    offset = data["follow"]["offset"]
    held = log.read_bytes()
    assert 0 <= offset <= len(held)
    assert offset == 0 or held[offset - 1:offset] == b"\n"  # a line boundary, never mid-line
    return int(offset)


def _check_alerts(alerts: Path) -> list[dict[str, object]]:
    if not alerts.exists():
        return []
    raw = alerts.read_bytes()
    assert raw == b"" or raw.endswith(b"\n"), "torn last alert line"
    got = [json.loads(line) for line in raw.splitlines()]
    assert all(isinstance(a, dict) and a["kind"] == "mlthreat.detect.alert" for a in got)
    return got


def test_detect_follow_killed_at_random_points(tmp_path: Path, log_lines: list[bytes]) -> None:
    log, state, alerts = tmp_path / "log.jsonl", tmp_path / "state.json", tmp_path / "alerts.jsonl"
    log.write_bytes(b"".join(log_lines[:200]))
    rest = log_lines[200:]
    chunks = [b"".join(rest[i:i + 100]) for i in range(0, len(rest), 100)]

    def writer() -> None:  # the log keeps growing while runs are started and killed
        with log.open("ab", buffering=0) as fh:
            for chunk in chunks:
                fh.write(chunk)
                time.sleep(0.1)

    feed = threading.Thread(target=writer)
    feed.start()
    rng = random.Random(20261207)
    args = ("detect", "run", str(log), "--follow", "--poll-interval", "0.05", "--detectors",
            DETECTORS, "--state", str(state), "-o", str(alerts))
    offsets: list[int | None] = []
    try:
        for i in range(KILLS):
            # the second stop is a clean SIGTERM, so the later kills hit resumed runs
            err = kill_at_random(start(*args), rng, 0.3, 1.0, None if i == 1 else 0.3)
            assert "Traceback" not in err and "error:" not in err, err
            offsets.append(_check_state(state, log))
            _check_alerts(alerts)
            assert stray_files(tmp_path, {log.name, state.name, alerts.name}) == []
    finally:
        feed.join()
    # a state once saved is replaced by a later clean stop, never lost to a kill
    saved = [o for o in offsets[1:] if o is not None]
    assert len(saved) == KILLS - 1 and saved[0] > 0 and saved == sorted(saved), offsets

    size = log.stat().st_size
    assert size == sum(map(len, log_lines))
    done = run(*args, "--max-seconds", "0.3")
    assert done.returncode in (0, 1) and "Traceback" not in done.stderr, done.stderr
    assert _check_state(state, log) == size
    after = _check_alerts(alerts)
    assert "prober-1" in {a["client_id"] for a in after}  # detection survived the kills
    assert not any(str(a["client_id"]).startswith("benign") for a in after)

    again = run(*args, "--max-seconds", "0.2")  # nothing new: no alert, nothing re-read
    assert again.returncode == 0, again.stderr
    assert _check_state(state, log) == size
    assert _check_alerts(alerts) == after
    assert stray_files(tmp_path, {log.name, state.name, alerts.name}) == []


# --- scan -o ---------------------------------------------------------------------------------

# a protocol-0 pickle that would call os.system when loaded (it is only ever scanned)
UNSAFE = b"cos\nsystem\n(S'echo owned'\ntR."


def _models(folder: Path, start_at: int, n: int) -> None:
    import pickle

    folder.mkdir(exist_ok=True)
    for i in range(start_at, start_at + n):
        (folder / f"m{i:03d}.pkl").write_bytes(pickle.dumps({"layer": i, "w": list(range(40))}))


def _findings(out: Path, fmt: str) -> int:
    """How many findings a complete report holds (json.loads fails on a truncated one)."""
    doc = json.loads(out.read_text("utf-8"))
    if fmt == "sarif":
        assert doc["version"] == "2.1.0"
        return len(doc["runs"][0]["results"])
    assert doc["verdicts"]["clean"] + doc["verdicts"]["findings"] == len(doc["files"])
    return len(doc["findings"])


@pytest.mark.parametrize("fmt", ["json", "sarif"])
def test_scan_output_killed_at_random_points(tmp_path: Path, fmt: str) -> None:
    models, out = tmp_path / "models", tmp_path / f"report.{fmt}"
    _models(models, 0, 150)
    args = ("scan", str(models), "-f", fmt, "--engines", "none", "-o", str(out))
    t0 = time.monotonic()
    first = run(*args)
    took = time.monotonic() - t0
    assert first.returncode == 0, first.stderr
    assert _findings(out, fmt) == 0
    _models(models, 150, 50)
    (models / "unsafe.pkl").write_bytes(UNSAFE)  # the next complete version has findings

    rng = random.Random(f"scan-{fmt}")
    previous = out.read_bytes()
    for _ in range(KILLS // 2):
        err = kill_at_random(start(*args), rng, 0.3 * took, 1.1 * took)
        assert "Traceback" not in err, err
        now = out.read_bytes()
        assert now == previous or _findings(out, fmt) > 0
        previous = now
        assert stray_files(tmp_path, {models.name, out.name}) == []


# --- a full disk -----------------------------------------------------------------------------

def _one_line_error(res: subprocess.CompletedProcess[str], after: int = 0) -> str:
    """The error line a command ended with, exit 2, no traceback; ``after`` status lines
    (resuming, following) may come before it."""
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == after + 1 and lines[-1].startswith("mlthreat: error: "), res.stderr
    return lines[-1]


def test_full_disk_keeps_the_previous_detector_state(tmp_path: Path,
                                                     log_lines: list[bytes]) -> None:
    log, state, alerts = tmp_path / "log.jsonl", tmp_path / "state.json", tmp_path / "alerts.jsonl"
    log.write_bytes(b"".join(log_lines[:300]))
    args = ("detect", "run", str(log), "--follow", "--max-seconds", "0", "--detectors",
            DETECTORS, "--state", str(state), "-o", str(alerts))
    assert run(*args).returncode in (0, 1)
    before = state.read_bytes()
    with log.open("ab") as fh:
        fh.write(b"".join(log_lines[300:600]))
    line = _one_line_error(run(*args, full_disk=True), after=2)
    assert line == (f"mlthreat: error: cannot write detector state {state}: "
                    "No space left on device")
    assert state.read_bytes() == before
    assert stray_files(tmp_path, {log.name, state.name, alerts.name}) == []


def test_full_disk_keeps_the_previous_scan_report(tmp_path: Path) -> None:
    models, out = tmp_path / "models", tmp_path / "report.json"
    _models(models, 0, 3)
    assert run("scan", str(models), "-f", "json", "-o", str(out)).returncode == 0
    before = out.read_bytes()
    _models(models, 3, 2)
    line = _one_line_error(run("scan", str(models), "-f", "json", "-o", str(out),
                               full_disk=True))
    assert line == f"mlthreat: error: {out}: cannot write (No space left on device)"
    assert out.read_bytes() == before


def test_full_disk_writes_no_manifest_or_calibration(tmp_path: Path,
                                                     log_lines: list[bytes]) -> None:
    models, manifest = tmp_path / "models", tmp_path / "manifest.json"
    _models(models, 0, 3)
    line = _one_line_error(run("scan", "manifest", str(models), "-o", str(manifest),
                               full_disk=True))
    assert line == (f"mlthreat: error: {manifest}: cannot write the manifest (No space left "
                    "on device)")
    log, calibration = tmp_path / "benign.jsonl", tmp_path / "calibration.json"
    log.write_bytes(b"".join(log_lines[:300]))
    line = _one_line_error(run("detect", "calibrate", str(log), "--detectors", "volume", "-o",
                               str(calibration), full_disk=True))
    assert line == f"mlthreat: error: cannot write {calibration}: No space left on device"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["benign.jsonl", "models"]
