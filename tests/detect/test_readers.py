"""Log readers: formats, batching, bad lines, serving-log mappings."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest

from mlthreat.detect.errors import LogFormatError
from mlthreat.detect.readers import LogReader, read_events
from mlthreat.events import FLAT_COLUMNS, QueryLog


def _concat(batches):
    return {
        "ts": np.concatenate([b.ts for b in batches]),
        "client_id": np.concatenate([b.client_id for b in batches]),
        "model_id": np.concatenate([b.model_id for b in batches]),
        "x": np.concatenate([b.x for b in batches]),
        "label": np.concatenate([b.label for b in batches]),
        "scores": np.concatenate([b.scores for b in batches]),
        "line": np.concatenate([b.line for b in batches]),
    }


def _write_log(path: Path, n: int = 10, d: int = 4, k: int = 3) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(0)
    x = np.round(rng.random((n, d)), 6)
    scores = np.round(rng.random((n, k)), 6)
    labels = scores.argmax(1)
    with QueryLog(path, "demo") as log:
        log.log(x[: n // 2], labels[: n // 2], scores[: n // 2], client_id="a",
                truth="benign", ts=1000.5)
        log.log(x[n // 2:], labels[n // 2:], scores[n // 2:], client_id="b",
                truth="attack:AML.T0024.002", ts=1001.25)
    return x, labels, scores


def test_round_trip_from_query_log(tmp_path: Path) -> None:
    x, labels, scores = _write_log(tmp_path / "q.jsonl")
    reader = LogReader(tmp_path / "q.jsonl")
    batches = list(reader)
    assert len(batches) == 1
    b = batches[0]
    np.testing.assert_array_equal(b.x, x.astype(np.float32))
    np.testing.assert_array_equal(b.label, labels)
    np.testing.assert_array_equal(b.scores, scores.astype(np.float32))
    assert b.x.dtype == np.float32 and b.label.dtype == np.int64 and b.ts.dtype == np.float64
    assert list(b.client_id) == ["a"] * 5 + ["b"] * 5
    assert set(b.model_id) == {"demo"}
    assert list(b.truth) == ["benign"] * 5 + ["attack:AML.T0024.002"] * 5
    assert list(b.ts) == [1000.5] * 5 + [1001.25] * 5
    assert list(b.line) == list(range(1, 11))
    assert b.source == str(tmp_path / "q.jsonl")
    assert (reader.stats.lines, reader.stats.events, reader.stats.skipped_total) == (10, 10, 0)


def _flat_rows(jsonl: Path) -> list[dict]:
    rows = []
    for line in jsonl.read_text().splitlines():
        e = json.loads(line)
        rows.append({"ts": e["ts"], "client_id": e["client_id"], "model_id": e["model_id"],
                     "input": e["input"], "output_label": e["output"]["label"],
                     "output_scores": e["output"]["scores"], "truth": e["truth"]})
    return rows


def test_csv_and_parquet_give_identical_batches(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    _write_log(tmp_path / "q.jsonl")
    rows = _flat_rows(tmp_path / "q.jsonl")
    import csv

    with (tmp_path / "q.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, FLAT_COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({**r, "input": json.dumps(r["input"]),
                        "output_scores": json.dumps(r["output_scores"])})
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "q.parquet", row_group_size=4)

    got = {fmt: list(read_events(tmp_path / f"q.{fmt}", batch_size=3))
           for fmt in ("jsonl", "csv", "parquet")}
    assert [len(b) for b in got["csv"]] == [3, 3, 3, 1] == [len(b) for b in got["parquet"]]
    ref = _concat(got["jsonl"])
    for fmt in ("csv", "parquet"):
        other = _concat(got[fmt])
        for key in ("ts", "client_id", "model_id", "x", "label", "scores"):
            np.testing.assert_array_equal(other[key], ref[key], err_msg=f"{fmt} {key}")
    # Parquet rows are numbered from 1, CSV data lines after the header from 2
    assert list(_concat(got["parquet"])["line"]) == list(range(1, 11))
    assert list(_concat(got["csv"])["line"]) == list(range(2, 12))


def _event(ts, client="c", x=(0.0, 1.0), label=0, **extra) -> str:
    return json.dumps({"ts": ts, "client_id": client, "model_id": "m", "input": list(x),
                       "output": {"label": label}, **extra})


def test_rfc3339_and_epoch_ts(tmp_path: Path) -> None:
    p = tmp_path / "t.jsonl"
    p.write_text("\n".join([_event(1700000000), _event("2023-11-14T22:13:20Z"),
                            _event("2023-11-14T23:13:20.5+01:00"), _event("1700000000.25"),
                            _event("2023-11-14T22:13:20.123456789Z")]) + "\n")
    (b,) = read_events(p)
    np.testing.assert_allclose(b.ts, [1.7e9, 1.7e9, 1.7e9 + 0.5, 1.7e9 + 0.25,
                                      1.7e9 + 0.123456])
    assert b.scores is None and b.truth is None


def test_batching_boundaries(tmp_path: Path) -> None:
    p = tmp_path / "b.jsonl"
    p.write_text("\n".join(_event(i, x=(i, -i)) for i in range(10)) + "\n")
    batches = list(read_events(p, batch_size=3))
    assert [len(b) for b in batches] == [3, 3, 3, 1]
    assert [list(b.ts) for b in batches] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    np.testing.assert_array_equal(np.concatenate([b.x for b in batches])[:, 0], np.arange(10))
    assert len(list(read_events(p, batch_size=10))) == 1


def test_each_malformed_kind_is_counted_and_quarantined(tmp_path: Path) -> None:
    p = tmp_path / "bad.jsonl"
    lines = [
        _event(1),                                                   # 1 good
        "{not json",                                                 # 2 bad_json
        "[1, 2]",                                                    # 3 not_object
        json.dumps({"ts": 2, "model_id": "m", "input": [0, 1],
                    "output": {"label": 0}}),                        # 4 missing client_id
        _event(3, x=(0.0, "a")),                                     # 5 non-numeric
        _event(4, x=(0.0, float("nan"))),                            # 6 NaN
        '{"ts": 5, "client_id": "c", "model_id": "m", "input": [0, Infinity], '
        '"output": {"label": 0}}',                                   # 7 inf
        _event("yesterday"),                                         # 8 bad ts
        _event(6, x=(1.0, 2.0, 3.0)),                                # 9 wrong dimension
        "",                                                          # 10 blank, ignored
        _event(7, label="setosa"),                                   # 11 good, string label
        json.dumps({"ts": 8, "client_id": "c", "model_id": "m", "input_ref": "s3://x",
                    "output": {"label": 1}}),                        # 12 no input
        _event(9, x=(2.0, 3.0), label=2),                            # 13 good
    ]
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with (tmp_path / "bad.bin").open("wb") as fh:  # an undecodable line between good ones
        fh.write(_event(1).encode() + b"\n\xff\xfe\n" + _event(2).encode() + b"\n")
    q = tmp_path / "quarantine.jsonl"
    reader = LogReader(p, quarantine=q, batch_size=2)
    batches = list(reader)
    assert [list(b.line) for b in batches] == [[1, 11], [13]]
    assert list(np.concatenate([b.label for b in batches])) == [0, 0, 2]
    assert reader.label_names == ["setosa"]
    stats = reader.stats
    assert dict(stats.skipped) == {"bad_json": 1, "not_object": 1, "missing_field": 1,
                                   "bad_value": 1, "non_finite": 2, "bad_ts": 1,
                                   "dim_mismatch": 1, "no_input": 1}
    assert stats.lines == stats.events + stats.skipped_total == 12 and stats.blank == 1
    quarantined = [json.loads(line) for line in q.read_text().splitlines()]
    assert [r["line"] for r in quarantined] == [2, 3, 4, 5, 6, 7, 8, 9, 12]
    assert [r["reason"] for r in quarantined][:3] == ["bad_json", "not_object", "missing_field"]
    assert all(r["raw"] == lines[r["line"] - 1] for r in quarantined)  # verbatim
    assert "client_id" in quarantined[2]["detail"]
    assert "3 values" in quarantined[7]["detail"]
    assert "lines" in stats.summary() and "dim_mismatch 1" in stats.summary()

    enc = LogReader(tmp_path / "bad.bin", quarantine=q)
    (b,) = list(enc)  # content sniffed as JSONL
    assert list(b.line) == [1, 3] and dict(enc.stats.skipped) == {"bad_encoding": 1}


def test_bad_csv_rows(tmp_path: Path) -> None:
    p = tmp_path / "bad.csv"
    p.write_text("ts,client_id,model_id,input,output_label\n"
                 '1,c,m,"[0, 1]",0\n'
                 '2,c,m,"[0, 1",0\n'          # bad JSON array
                 "3,c,m\n"                     # too few fields
                 '4,c,m,"[0, 1, 2]",0\n'      # wrong dimension
                 '2024-01-01T00:00:00Z,c,m,"[1, 1]",1\n')
    reader = LogReader(p)
    (b,) = list(reader)
    assert list(b.line) == [2, 6] and b.ts[1] == 1704067200.0
    assert dict(reader.stats.skipped) == {"bad_value": 1, "missing_field": 1,
                                          "dim_mismatch": 1}


def test_file_level_errors(tmp_path: Path) -> None:
    with pytest.raises(LogFormatError, match=r"nope\.jsonl"):
        list(read_events(tmp_path / "nope.jsonl"))
    odd = tmp_path / "data.bin"
    odd.write_text("hello world\n")
    with pytest.raises(LogFormatError, match=r"data\.bin: unknown log format"):
        list(read_events(odd))
    bad_csv = tmp_path / "x.csv"
    bad_csv.write_text("ts,client,input\n1,a,[1]\n")
    with pytest.raises(LogFormatError, match="client_id, model_id, output_label"):
        list(read_events(bad_csv))
    broken = tmp_path / "x.parquet"
    broken.write_bytes(b"PAR1 not really")
    with pytest.raises(LogFormatError, match=r"x\.parquet"):
        list(read_events(broken))
    ok = tmp_path / "ok.jsonl"
    ok.write_text(_event(1) + "\n")
    with pytest.raises(LogFormatError, match="unknown mapping 'splunk'"):
        iter(LogReader(ok, mapping="splunk"))  # raised when iteration starts


def _cloudevent(kind: str, eid: str, data, **attrs) -> str:
    return json.dumps({"specversion": "1.0", "id": eid,
                       "type": f"org.kubeflow.serving.inference.{kind}",
                       "source": "http://localhost:9081/", "time": "2024-05-01T12:00:00Z",
                       "inferenceservicename": "sklearn-iris", "namespace": "default",
                       "component": "predictor", "endpoint": "default",
                       "datacontenttype": "application/json", "data": data, **attrs})


def test_kserve_mapping(tmp_path: Path) -> None:
    p = tmp_path / "kserve.jsonl"
    lines = [
        _cloudevent("request", "r1", {"instances": [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]},
                    clientid="key-17"),
        _cloudevent("response", "r1", {"predictions": [1, 2]}),
        # response first, JSON text body, scores as predictions, binary-mode header names
        json.dumps({"ce-id": "r2", "ce-type": "org.kubeflow.serving.inference.response",
                    "ce-source": "http://10.0.0.7/", "data": json.dumps(
                        {"predictions": [[0.1, 0.7, 0.2]]})}),
        json.dumps({"ce-id": "r2", "ce-type": "org.kubeflow.serving.inference.request",
                    "ce-source": "http://10.0.0.7/", "ce-time": "2024-05-01T12:00:01Z",
                    "ce-inferenceservicename": "sklearn-iris",
                    "data": {"instances": [[5.1, 3.5, 1.4, 0.2]]}}),
        # open inference protocol (V2)
        _cloudevent("request", "r3", {"inputs": [{"name": "x", "shape": [2, 4],
                                                  "datatype": "FP32",
                                                  "data": [1, 2, 3, 4, 5, 6, 7, 8]}]}),
        _cloudevent("response", "r3", {"outputs": [{"name": "predict", "shape": [2],
                                                    "datatype": "INT64", "data": [0, 1]}]}),
        _cloudevent("request", "r4", {"instances": [[1, 1, 1, 1]]}),  # never answered
    ]
    p.write_text("\n".join(lines) + "\n")
    q = tmp_path / "q.jsonl"
    reader = LogReader(p, mapping="kserve", quarantine=q)
    (b,) = list(reader)
    np.testing.assert_allclose(b.x[:3], [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6],
                                         [5.1, 3.5, 1.4, 0.2]], rtol=1e-6)
    np.testing.assert_array_equal(b.x[3:], [[1, 2, 3, 4], [5, 6, 7, 8]])
    assert list(b.label) == [1, 2, 1, 0, 1]
    assert list(b.client_id) == ["key-17", "key-17", "http://10.0.0.7/",
                                 "http://localhost:9081/", "http://localhost:9081/"]
    assert set(b.model_id) == {"sklearn-iris"}
    assert list(b.line) == [1, 1, 4, 5, 5]  # the request's line
    assert b.ts[2] - b.ts[0] == 1.0
    np.testing.assert_allclose(b.scores[2], [0.1, 0.7, 0.2], rtol=1e-6)
    assert np.isnan(b.scores[0]).all()
    assert dict(reader.stats.skipped) == {"unmatched": 1}
    (rec,) = [json.loads(line) for line in q.read_text().splitlines()]
    assert rec["line"] == 7 and rec["reason"] == "unmatched" and rec["raw"] == lines[6]


def test_sagemaker_mapping(tmp_path: Path) -> None:
    folder = tmp_path / "capture" / "fraud-endpoint" / "AllTraffic" / "2024" / "05" / "01" / "12"
    folder.mkdir(parents=True)
    p = folder / "10-30-000-abc.jsonl"

    def record(inp, out, meta, in_enc="CSV", out_enc="CSV", ctype="text/csv"):
        return json.dumps({
            "captureData": {
                "endpointInput": {"observedContentType": ctype, "mode": "INPUT",
                                  "data": inp, "encoding": in_enc},
                "endpointOutput": {"observedContentType": "text/csv; charset=utf-8",
                                   "mode": "OUTPUT", "data": out, "encoding": out_enc}},
            "eventMetadata": {"eventId": "e-1", "inferenceTime": "2024-05-01T12:10:00Z",
                              **meta},
            "eventVersion": "0"})

    lines = [
        record("1,2,3\n4,5,6", "0\n1", {"inferenceId": "client-7"}),
        record(json.dumps({"instances": [[7, 8, 9]]}), json.dumps({"predictions": [[0.2, 0.8]]}),
               {"customAttributes": "tenant=x,client_id=client-9"}, in_enc="JSON",
               out_enc="JSON", ctype="application/json"),
        record(base64.b64encode(b"1,1,1").decode(), "0.3,0.7", {}, in_enc="BASE64"),
        record("1,abc,3", "0", {"inferenceId": "client-7"}),  # non-numeric input
    ]
    p.write_text("\n".join(lines) + "\n")
    reader = LogReader(p, mapping="sagemaker")
    (b,) = list(reader)
    np.testing.assert_array_equal(b.x, [[1, 2, 3], [4, 5, 6], [7, 8, 9], [1, 1, 1]])
    assert list(b.label) == [0, 1, 1, 1]
    assert list(b.client_id) == ["client-7", "client-7", "client-9", "anonymous"]
    assert set(b.model_id) == {"fraud-endpoint"}
    assert list(b.line) == [1, 1, 2, 3]
    assert set(b.ts) == {1714565400.0}
    np.testing.assert_allclose(b.scores[2:], [[0.2, 0.8], [0.3, 0.7]], rtol=1e-6)
    assert dict(reader.stats.skipped) == {"bad_value": 1}


def test_yaml_mapping(tmp_path: Path) -> None:
    mapping = tmp_path / "map.yaml"
    mapping.write_text("ts: request.time\n"
                       "client_id: request.headers.x-api-key\n"
                       "model_id: {value: fraud-v3}\n"
                       "input: request.body.features\n"
                       "output_label: response.labels\n"
                       "output_scores: response.probabilities\n"
                       "truth: meta.truth\n")
    p = tmp_path / "gateway.jsonl"
    rows = [
        {"request": {"time": 1700000000, "headers": {"x-api-key": "k1"},
                     "body": {"features": [[1, 2], [3, 4]]}},
         "response": {"labels": [1, 0], "probabilities": [[0.4, 0.6], [0.9, 0.1]]},
         "meta": {"truth": "benign"}},
        {"request": {"time": "2023-11-14T22:13:21Z", "headers": {"x-api-key": "k2"},
                     "body": {"features": [5, 6]}}, "response": {"labels": 1}},
        {"request": {"time": 1700000002, "headers": {}, "body": {"features": [7, 8]}},
         "response": {"labels": 1}},  # no client
    ]
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    reader = LogReader(p, mapping=mapping)
    (b,) = list(reader)
    np.testing.assert_array_equal(b.x, [[1, 2], [3, 4], [5, 6]])
    assert list(b.label) == [1, 0, 1] and list(b.client_id) == ["k1", "k1", "k2"]
    assert set(b.model_id) == {"fraud-v3"} and list(b.ts) == [1.7e9, 1.7e9, 1.7e9 + 1]
    assert list(b.truth) == ["benign", "benign", None]
    np.testing.assert_allclose(b.scores[:2], [[0.4, 0.6], [0.9, 0.1]], rtol=1e-6)
    assert dict(reader.stats.skipped) == {"missing_field": 1}


@pytest.mark.parametrize(("text", "message"), [
    ("ts: a\nclient_id: b\nmodel_id: c\ninput: d\nlabel: e\n", "unknown field 'label'"),
    ("ts: a\nclient_id: b\nmodel_id: c\n", "required field 'input' missing"),
    ("ts: a\nclient_id: b\nmodel_id: c\ninput: [1, 2]\n", "field 'input' must be a dotted path"),
    ("ts: [unclosed\n", "not valid YAML"),
    ("- a\n- b\n", "expected a mapping"),
])
def test_bad_mapping_file(tmp_path: Path, text: str, message: str) -> None:
    mapping = tmp_path / "bad-map.yaml"
    mapping.write_text(text)
    log = tmp_path / "l.jsonl"
    log.write_text("{}\n")
    with pytest.raises(LogFormatError) as err:
        list(read_events(log, mapping=mapping))
    assert "bad-map.yaml" in str(err.value) and message in str(err.value)
    assert "\n" not in str(err.value)


def test_quarantine_to_open_file_and_gzip(tmp_path: Path) -> None:
    import gzip
    import io

    p = tmp_path / "q.jsonl.gz"
    with gzip.open(p, "wt") as fh:
        fh.write(_event(1) + "\n{oops\n" + _event(2) + "\n")
    sink = io.StringIO()
    (b,) = list(read_events(p, quarantine=sink))
    assert list(b.line) == [1, 3]
    assert json.loads(sink.getvalue())["raw"] == "{oops"


@pytest.mark.parametrize("gz", [False, True])
def test_a_line_over_the_cap_is_quarantined_in_bounded_memory(tmp_path: Path, gz: bool) -> None:
    import gzip
    import tracemalloc

    huge = '{"ts": 1, "input": [' + "0.5, " * 10_000_000 + "0.5]}"  # 50 MB, one line
    text = "\n".join([_event(1), huge, _event(2), "", _event(3) + "x" * 300, _event(4)]) + "\n"
    p = tmp_path / ("big.jsonl.gz" if gz else "big.jsonl")
    p.write_bytes(gzip.compress(text.encode(), compresslevel=1) if gz else text.encode())
    q = tmp_path / "q.jsonl"
    reader = LogReader(p, quarantine=q, max_line_bytes=4 << 20)
    tracemalloc.start()
    batches = list(reader)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 12 << 20  # the 50 MB line is never held whole
    assert [int(v) for b in batches for v in b.line] == [1, 3, 6]
    assert reader.stats.lines == 5 and reader.stats.blank == 1
    assert reader.stats.skipped == {"line_too_long": 1, "bad_json": 1}
    first, second = (json.loads(line) for line in q.read_text().splitlines())
    assert (first["line"], first["reason"]) == (2, "line_too_long")
    assert first["detail"] == f"{len(huge) + 1} bytes, over the {4 << 20}-byte line cap"
    assert first["raw"] == huge[:1024]
    assert (second["line"], second["reason"]) == (5, "bad_json")


def test_line_cap_must_be_positive(tmp_path: Path) -> None:
    p = tmp_path / "q.jsonl"
    p.write_text(_event(1) + "\n")
    with pytest.raises(ValueError, match="max_line_bytes must be a positive integer, got 0"):
        list(LogReader(p, max_line_bytes=0))
