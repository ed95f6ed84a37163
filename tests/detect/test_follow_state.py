"""``mlthreat detect run --state`` (a restarted run loses nothing) and ``--follow`` (tailing a
growing JSONL log, alerts delivered as raised), as real processes on real traffic.

Benign traffic: scikit-learn's digits scaled to [0, 1], drawn by the documented generator
(:func:`mlthreat.detect.evaluate.benign_events`). The probing client sends near-duplicates of one
digit (Gaussian noise, sigma 0.01, clipped to [0, 1]) every 2 s, the black-box evasion pattern.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from sklearn.datasets import load_digits

from mlthreat.detect.evaluate import benign_events

DETECTORS = "prada,blacklight,volume"


def cli(*args, **kwargs):
    env = {**os.environ, "COLUMNS": "160"}
    return subprocess.run([sys.executable, "-m", "mlthreat", "detect", *args],
                          capture_output=True, text=True, env=env, timeout=600, **kwargs)


def probe_events(x, start, n=80, client="prober-1", seed=7):
    rng = np.random.default_rng(seed)
    base = x[3]
    rows = np.clip(base + rng.normal(0, 0.01, (n, x.shape[1])), 0, 1)
    return [{"ts": start + 2.0 * i, "client_id": client, "model_id": "digits",
             "input": [round(float(v), 6) for v in row], "output": {"label": 3}}
            for i, row in enumerate(rows)]


def lines(events):
    return "".join(json.dumps(e) + "\n" for e in events)


@pytest.fixture(scope="module")
def traffic():
    x = load_digits().data / 16.0
    benign = benign_events(x, n_clients=30, queries=100, model_id="digits", seed=3)
    start = min(e["ts"] for e in benign)
    events = sorted(benign + probe_events(x, start + 20.0), key=lambda e: e["ts"])
    return x, events


def read_alerts(path):
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_split_run_with_state_equals_one_run(tmp_path, traffic):
    _, events = traffic
    probe_ts = [e["ts"] for e in events if e["client_id"] == "prober-1"]
    cut = next(i for i, e in enumerate(events) if e["ts"] > probe_ts[len(probe_ts) // 2])
    whole, part1, part2 = tmp_path / "all.jsonl", tmp_path / "p1.jsonl", tmp_path / "p2.jsonl"
    whole.write_text(lines(events))
    part1.write_text(lines(events[:cut]))
    part2.write_text(lines(events[cut:]))
    # the probe straddles the split
    assert any(e["client_id"] == "prober-1" for e in events[:cut])
    assert any(e["client_id"] == "prober-1" for e in events[cut:])

    once = tmp_path / "once.jsonl"
    res = cli("run", str(whole), "--detectors", DETECTORS, "-o", str(once))
    assert res.returncode == 1, res.stderr
    expected = read_alerts(once)
    assert "prober-1" in {a["client_id"] for a in expected}
    assert not any(a["client_id"].startswith("benign") for a in expected)

    state, split = tmp_path / "state.json", tmp_path / "split.jsonl"
    first = cli("run", str(part1), "--detectors", DETECTORS, "--state", str(state),
                "-o", str(split))
    assert first.returncode in (0, 1), first.stderr
    saved = json.loads(state.read_text())
    assert saved["kind"] == "mlthreat.detect.state" and saved["schema_version"] == 1
    assert saved["mlthreat_version"]
    assert set(saved["detectors"]) == {"prada", "blacklight", "volume"}
    assert all({"calibration", "state"} <= set(v) for v in saved["detectors"].values())
    second = cli("run", str(part2), "--detectors", DETECTORS, "--state", str(state),
                 "-o", str(split), "--append")
    assert second.returncode in (0, 1), second.stderr
    assert read_alerts(split) == expected
    assert not list(tmp_path.glob(".state.json.*"))  # no temporary file left behind


@pytest.mark.parametrize("content, message", [
    ("{not json", "cannot read detector state"),
    ('{"kind": "something else"}', "not an mlthreat detector state file"),
    ('{"kind": "mlthreat.detect.state", "schema_version": 1, "detectors": '
     '{"volume": {"state": {"clients": []}}}}', "bad state for detector volume"),
])
def test_malformed_state_file_one_line_exit_2(tmp_path, traffic, content, message):
    log, state = tmp_path / "log.jsonl", tmp_path / "state.json"
    log.write_text(lines(traffic[1][:50]))
    state.write_text(content)
    res = cli("run", str(log), "--state", str(state))
    assert res.returncode == 2, res.stderr
    assert message in res.stderr and str(state) in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert state.read_text() == content  # left as it was


def test_follow_rejects_csv(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("ts,client_id,model_id,input\n")
    res = cli("run", str(log), "--follow", "--max-seconds", "1")
    assert res.returncode == 2 and "JSONL only" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_follow_delivers_alerts_as_raised(tmp_path, traffic):
    x, events = traffic
    benign = [e for e in events if e["client_id"] != "prober-1"]
    log, alerts, state = tmp_path / "live.jsonl", tmp_path / "alerts.jsonl", tmp_path / "s.json"
    log.write_text(lines(benign))
    env = {**os.environ, "COLUMNS": "160"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlthreat", "detect", "run", str(log), "--follow",
         "--max-seconds", "6", "--poll-interval", "0.2", "--detectors", DETECTORS,
         "--state", str(state), "-o", str(alerts)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        time.sleep(1.0)
        probe = lines(probe_events(x, max(e["ts"] for e in benign) + 1.0))
        half = len(probe) // 2 + 7  # mid-line: the reader must wait for the newline
        with log.open("a") as fh:
            fh.write(probe[:half])
            fh.flush()
            time.sleep(0.6)
            fh.write(probe[half:])
        seen_running = False
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            running = proc.poll() is None
            if any(a["client_id"] == "prober-1" for a in read_alerts(alerts)):
                seen_running = running
                break
            if not running:
                break
            time.sleep(0.1)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, err
    found = read_alerts(alerts)
    assert "prober-1" in {a["client_id"] for a in found}
    assert not any(a["client_id"].startswith("benign") for a in found)
    assert seen_running  # delivered while still following, not at the end
    assert "skipped" not in err
    assert "0 malformed lines skipped" in out  # the split line was read whole
    assert json.loads(state.read_text())["kind"] == "mlthreat.detect.state"


def test_restarted_follow_adds_to_its_alerts_once_each(tmp_path, traffic):
    """Run, stop, restart with the same --state and -o (no --append): the file holds the first
    run's alerts and the second's, once each, as one run over the whole log would; the restart
    reads only the lines appended since (the old ones are not fed to the detectors twice)."""
    x, events = traffic  # benign clients and prober-1
    log, alerts, state = tmp_path / "live.jsonl", tmp_path / "alerts.jsonl", tmp_path / "s.json"
    log.write_text(lines(events))
    command = ("run", str(log), "--follow", "--max-seconds", "1", "--poll-interval", "0.2",
               "--detectors", DETECTORS, "--state", str(state), "-o", str(alerts), "--json")
    first = cli(*command)
    assert first.returncode == 1, first.stderr
    first_alerts = read_alerts(alerts)
    assert [(a["client_id"], a["detector"]) for a in first_alerts] == [("prober-1", "blacklight")]
    assert json.loads(first.stdout)["events"] == len(events)
    saved = json.loads(state.read_text())["follow"]
    assert saved["offset"] == log.stat().st_size and saved["path"] == str(log.resolve())

    later = probe_events(x, max(e["ts"] for e in events) + 1.0, client="prober-2", seed=8)
    with log.open("a") as fh:
        fh.write(lines(later))
    second = cli(*command)
    assert second.returncode == 1, second.stderr
    assert json.loads(second.stdout)["events"] == len(later)  # only the new lines
    assert f"resuming from state {state}: alerts are added to {alerts}" in second.stderr
    both = read_alerts(alerts)
    assert [(a["client_id"], a["detector"]) for a in both] == [
        ("prober-1", "blacklight"), ("prober-2", "blacklight")]
    assert both[:1] == first_alerts  # the first run's alert kept, not rewritten

    # the same as one run over everything
    once = tmp_path / "once.jsonl"
    assert cli("run", str(log), "--detectors", DETECTORS, "-o", str(once)).returncode == 1
    assert both == read_alerts(once)

    # resuming into a file of another format is refused, and the file left as it was
    res = cli(*command, "--format", "ocsf")
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        f"mlthreat: error: cannot append ocsf alerts to {alerts}: it holds jsonl alerts, added "
        f"to on resuming from state {state} (use --format jsonl or another file)"]
    assert read_alerts(alerts) == both

    # a fresh run (no state file yet) still replaces the file
    state.unlink()
    fresh = cli("run", str(log), "--detectors", DETECTORS, "--state", str(state), "-o",
                str(alerts))
    assert fresh.returncode == 1 and "resuming" not in fresh.stderr
    assert read_alerts(alerts) == both  # replaced by the same two alerts, not doubled


def test_follow_resumes_only_the_same_file(tmp_path):
    from mlthreat.detect.follow import position, resume_offset

    log = tmp_path / "live.jsonl"
    log.write_text('{"a": 1}\n' * 10)
    saved = json.loads(json.dumps(position(log, 45)))
    assert resume_offset(log, saved) == 45
    assert resume_offset(log, None) == 0 and resume_offset(log, {"offset": True}) == 0
    assert resume_offset(log, {**saved, "offset": -1}) == 0
    assert resume_offset(tmp_path / "other.jsonl", saved) == 0  # another log
    log.write_text('{"a": 1}\n')  # truncated in place: shorter than the offset
    assert resume_offset(log, saved) == 0
    log.write_text('{"b": 2}\n' * 10)  # truncated and written again past the offset
    assert resume_offset(log, saved) == 0
    log.write_text('{"a": 1}\n' * 30)  # the same start, grown: goes on
    assert resume_offset(log, saved) == 45
    rotated = tmp_path / "new.jsonl"
    rotated.write_text('{"a": 1}\n' * 20)
    os.replace(rotated, log)  # rotated: same name, another file
    assert resume_offset(log, saved) == 0
    assert position(tmp_path / "gone.jsonl", 3) is None


def test_sigterm_while_behind_the_writer_stops_promptly_and_saves_where_it_stopped(
        tmp_path, traffic):
    """SIGTERM to a following run far behind its log: it exits within about a second, after a
    whole chunk, its state file saying the byte it stopped at (a line boundary); the restart goes
    on from there, and the two runs' alerts are those of one run over the whole log."""
    import signal

    x, events = traffic
    log, alerts, state = tmp_path / "live.jsonl", tmp_path / "alerts.jsonl", tmp_path / "s.json"
    log.write_text(lines(events[:100]))
    command = ("run", str(log), "--follow", "--poll-interval", "0.2", "--detectors", DETECTORS,
               "--state", str(state), "-o", str(alerts))
    env = {**os.environ, "COLUMNS": "160"}
    proc = subprocess.Popen([sys.executable, "-m", "mlthreat", "detect", *command],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stderr is not None
        assert proc.stderr.readline().startswith(f"following {log}")  # signals handled now
        with log.open("a") as fh:  # far more than it can read before the signal
            fh.write(lines(events[100:]))
        time.sleep(0.1)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode in (0, 1), err
    assert took < 2.0
    saved = json.loads(state.read_text())["follow"]
    assert saved["path"] == str(log.resolve())
    data = log.read_bytes()
    assert 0 < saved["offset"] < len(data)  # stopped behind the writer
    assert data[saved["offset"] - 1:saved["offset"]] == b"\n"
    first_alerts = read_alerts(alerts)

    later = probe_events(x, max(e["ts"] for e in events) + 1.0, client="prober-2", seed=8)
    with log.open("a") as fh:
        fh.write(lines(later))
    second = cli(*command, "--max-seconds", "1", "--json")
    assert second.returncode == 1, second.stderr
    assert f"following {log} from byte {saved['offset']}" in second.stderr
    assert json.loads(second.stdout)["events"] == data[saved["offset"]:].count(b"\n") + len(later)
    both = read_alerts(alerts)
    assert both[:len(first_alerts)] == first_alerts
    once = tmp_path / "once.jsonl"
    assert cli("run", str(log), "--detectors", DETECTORS, "-o", str(once)).returncode == 1
    assert both == read_alerts(once)
    assert [(a["client_id"], a["detector"]) for a in both] == [
        ("prober-1", "blacklight"), ("prober-2", "blacklight")]


def test_follow_quarantines_a_line_over_the_cap_before_its_newline_comes(tmp_path):
    from mlthreat.detect.follow import FollowStats, follow

    def event(ts):
        return json.dumps({"ts": ts, "client_id": "c", "model_id": "m", "input": [0.0, 1.0],
                           "output": {"label": 0}}) + "\n"

    log, q = tmp_path / "live.jsonl", tmp_path / "q.jsonl"
    log.write_text(event(1) + '{"ts": 2, "input": [' + "7, " * 3000)  # 9 kB, no newline yet
    calls = 0

    def stop():  # the writer finishes the long line, then writes one more event
        nonlocal calls
        calls += 1
        if calls == 6:
            with log.open("a") as fh:
                fh.write("7" * 5000 + "]}\n" + event(3))
        return calls > 12

    stats = FollowStats(str(log))
    got = [int(ts) for b in follow(log, quarantine=q, poll_interval=0.01, stop=stop,
                                   stats=stats, chunk_bytes=256, max_line_bytes=4096)
           for ts in b.ts]
    assert got == [1, 3]
    assert (stats.lines, stats.events, dict(stats.skipped)) == (3, 2, {"line_too_long": 1})
    (record,) = [json.loads(line) for line in q.read_text().splitlines()]
    assert record["reason"] == "line_too_long" and record["detail"] == \
        "over the 4096-byte line cap"
    assert record["raw"].startswith('{"ts": 2, "input": [7, 7') and len(record["raw"]) == 1024
    assert stats.offset == log.stat().st_size
