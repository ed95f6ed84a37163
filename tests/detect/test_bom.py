"""A log that starts with a UTF-8 byte-order mark (Notepad, PowerShell's ``Out-File -Encoding
utf8``, Excel's "CSV UTF-8") loses nothing: every reader, mapping, ``--follow`` and the
calibration and state files skip the mark. Before the fix the first record was quarantined as
``bad_json`` (JSONL), the CSV header lacked ``ts``, and ``--follow`` called the log CSV."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mlthreat.detect.detectors.volume import VolumeDetector
from mlthreat.detect.follow import check_followable, follow
from mlthreat.detect.readers import LogReader

BOM = "\ufeff"


def events(n: int = 5) -> list[dict[str, Any]]:
    return [{"ts": 1000.0 + i, "client_id": f"c{i % 2}", "model_id": "m",
             "input": [i / 10, 0.5, 1.0], "output": {"label": i % 3}} for i in range(n)]


def jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def read(path: Path, **kwargs: Any) -> tuple[LogReader, Any]:
    reader = LogReader(path, **kwargs)
    batches = list(reader)
    assert len(batches) == 1
    return reader, batches[0]


@pytest.mark.parametrize("name", ["q.jsonl", "q.log", "queries"])  # by suffix and by content
def test_jsonl_with_bom_keeps_its_first_record(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text(BOM + jsonl(events()), "utf-8")
    assert path.read_bytes()[:4] == b"\xef\xbb\xbf{"
    reader, b = read(path)
    assert (reader.stats.lines, reader.stats.events, reader.stats.skipped_total) == (5, 5, 0)
    assert b.ts[0] == 1000.0 and b.client_id[0] == "c0" and b.line[0] == 1
    np.testing.assert_array_equal(b.x[0], np.array([0.0, 0.5, 1.0], np.float32))


def test_gzipped_jsonl_with_bom(tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl.gz"
    path.write_bytes(gzip.compress((BOM + jsonl(events())).encode()))
    reader, b = read(path)
    assert (reader.stats.events, reader.stats.skipped_total) == (5, 0)
    assert b.ts[0] == 1000.0


def test_csv_with_bom_finds_its_header(tmp_path: Path) -> None:
    path = tmp_path / "q.csv"
    rows = ["ts,client_id,model_id,input,output_label"] + [
        f'{e["ts"]},{e["client_id"]},m,"{json.dumps(e["input"])}",{e["output"]["label"]}'
        for e in events()]
    path.write_text(BOM + "\n".join(rows) + "\n", "utf-8")
    reader, b = read(path)
    assert (reader.stats.lines, reader.stats.events, reader.stats.skipped_total) == (5, 5, 0)
    assert b.ts[0] == 1000.0 and b.client_id[0] == "c0" and list(b.label) == [0, 1, 2, 0, 1]


def test_kserve_sagemaker_and_yaml_mappings_with_bom(tmp_path: Path) -> None:
    request = {"specversion": "1.0", "id": "r1", "source": "http://10.0.0.7/",
               "type": "org.kubeflow.serving.inference.request", "time": "2024-05-01T12:00:00Z",
               "inferenceservicename": "iris", "clientid": "key-17",
               "data": {"instances": [[6.8, 2.8, 4.8, 1.4]]}}
    response = {**request, "type": "org.kubeflow.serving.inference.response",
                "data": {"predictions": [2]}}
    kserve = tmp_path / "kserve.jsonl"
    kserve.write_text(BOM + jsonl([request, response]), "utf-8")
    reader, b = read(kserve, mapping="kserve")
    assert (reader.stats.events, dict(reader.stats.skipped)) == (1, {})
    assert (b.client_id[0], b.model_id[0], int(b.label[0])) == ("key-17", "iris", 2)

    capture = {"captureData": {
        "endpointInput": {"observedContentType": "text/csv", "data": "1,2,3", "encoding": "CSV"},
        "endpointOutput": {"observedContentType": "text/csv", "data": "1", "encoding": "CSV"}},
        "eventMetadata": {"inferenceId": "client-7", "inferenceTime": "2024-05-01T12:10:00Z"}}
    sagemaker = tmp_path / "capture.jsonl"
    sagemaker.write_text(BOM + jsonl([capture]), "utf-8")
    reader, b = read(sagemaker, mapping="sagemaker")
    assert (reader.stats.events, dict(reader.stats.skipped)) == (1, {})
    assert b.client_id[0] == "client-7" and list(b.x[0]) == [1.0, 2.0, 3.0]

    mapping = tmp_path / "map.yaml"  # the mapping file itself saved with a BOM too
    mapping.write_text(BOM + "ts: t\nclient_id: who\nmodel_id: {value: fraud}\ninput: x\n",
                       "utf-8")
    custom = tmp_path / "gateway.jsonl"
    custom.write_text(BOM + jsonl([{"t": 5, "who": "k1", "x": [1, 2]}]), "utf-8")
    reader, b = read(custom, mapping=mapping)
    assert (reader.stats.events, dict(reader.stats.skipped)) == (1, {})
    assert (b.client_id[0], b.model_id[0], float(b.ts[0])) == ("k1", "fraud", 5.0)


def test_follow_reads_a_log_with_bom(tmp_path: Path) -> None:
    path = tmp_path / "live"  # no suffix: recognised by content
    path.write_text(BOM + jsonl(events()), "utf-8")
    check_followable(path)  # was: "--follow reads JSONL only; ... is CSV"
    batches = list(follow(path, poll_interval=0.01, max_seconds=0.05))
    assert sum(len(b) for b in batches) == 5
    assert batches[0].ts[0] == 1000.0 and batches[0].line[0] == 1


def test_calibration_input_with_bom(tmp_path: Path) -> None:
    rows = [{"ts": 1000.0 + i / 10, "client_id": "c", "model_id": "m", "input": [1.0],
             "output": {"label": 0}} for i in range(30)]
    plain, marked = tmp_path / "plain.jsonl", tmp_path / "marked.jsonl"
    plain.write_text(jsonl(rows), "utf-8")
    marked.write_text(BOM + jsonl(rows), "utf-8")
    # 30 queries in one window: the peak counts the first one only if it is read
    with_bom = VolumeDetector().calibrate(LogReader(marked), 0.001)
    assert with_bom["benign_peak_quantile"] == 30.0
    assert with_bom == VolumeDetector().calibrate(LogReader(plain), 0.001)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "160"}
    return subprocess.run([sys.executable, "-m", "mlthreat", "detect", *args],
                          capture_output=True, text=True, env=env, timeout=600)


def test_cli_calibration_and_state_files_with_bom(tmp_path: Path) -> None:
    log = tmp_path / "q.jsonl"
    log.write_text(BOM + jsonl(events(50)), "utf-8")
    cal = tmp_path / "cal.json"
    res = cli("calibrate", str(log), "--detectors", "volume", "-o", str(cal))
    assert res.returncode == 0, res.stderr
    assert json.loads(cal.read_text())["detectors"]["volume"]["benign_peak_quantile"] == 25.0
    cal.write_text(BOM + cal.read_text("utf-8"), "utf-8")  # re-saved by a Windows editor
    state = tmp_path / "state.json"
    for _ in range(2):  # the second run restores the state the first wrote
        res = cli("run", str(log), "--detectors", "volume", "--calibration", str(cal),
                  "--state", str(state), "--json")
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout)["read"][0] == {
            "source": str(log), "lines": 50, "events": 50, "skipped": {}}
        state.write_text(BOM + state.read_text("utf-8"), "utf-8")
    clients = json.loads(state.read_text("utf-8-sig"))["detectors"]["volume"]["state"]["clients"]
    assert sorted((c["client_id"], c["n"]) for c in clients) == [("c0", 50), ("c1", 50)]
