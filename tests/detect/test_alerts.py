"""Alerts: KB resolution, the four formats, suppression, and delivery to real local endpoints."""

from __future__ import annotations

import io
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from atlas_paths import STIX_BUNDLE

from mlthreat.detect.alerts import Alert, Suppressor, format_of, render
from mlthreat.detect.detectors.base import Detection
from mlthreat.detect.errors import DetectError
from mlthreat.detect.sinks import (
    FileSink,
    HecSink,
    StdoutSink,
    SyslogSink,
    deliver,
    existing_format,
    open_sink,
)
from mlthreat.errors import UsageError
from mlthreat.kb.errors import KnowledgeBaseError

T0 = 1767225600.0  # 2026-01-01T00:00:00Z
TOKEN = "s3cr3t-hec-token-0123"


def _detection(technique: str = "AML.T0024.002", client: str = "client-7",
               first: float = T0, last: float = T0 + 60.5, **kw: Any) -> Detection:
    evidence = kw.pop("evidence", {"shapiro_w": 0.81, "inputs": [[0.1, 0.2]]})
    return Detection(detector="prada", technique=technique, client_id=client,
                     model_id="demo-model", first_seen=first, last_seen=last,
                     queries_observed=150, score=0.81, threshold=0.9, unit="W",
                     evidence=evidence, **kw)


@pytest.fixture(scope="module")
def kb():
    from mlthreat.kb.sources.snapshot import load_embedded

    return load_embedded()


@pytest.fixture(scope="module")
def extract(kb) -> Alert:
    return Alert.from_detection(_detection(), kb)


@pytest.fixture(scope="module")
def cost(kb) -> Alert:
    return Alert.from_detection(
        Detection(detector="volume", technique="AML.T0034", client_id="bulk-3",
                  model_id="demo-model", first_seen=T0, last_seen=T0 + 3600,
                  queries_observed=90_000, score=25.0, threshold=10.0, unit="queries/s"),
        kb)


# -- Alert ----------------------------------------------------------------------------------------
def test_names_and_tactics_come_from_the_kb(kb, extract, cost):
    assert extract.technique == "AML.T0024.002"
    assert extract.technique_name == kb.technique("AML.T0024.002").name == "Extract AI Model"
    assert extract.parent == "AML.T0024"
    assert extract.parent_name == kb.technique("AML.T0024").name
    assert extract.tactics == ({"id": "AML.TA0010", "name": "Exfiltration"},)
    assert extract.atlas_version == kb.version
    assert cost.parent is None
    assert cost.tactics == tuple({"id": t.id, "name": t.name} for t in kb.tactics_of("AML.T0034"))


def test_unknown_technique_raises(kb):
    with pytest.raises(KnowledgeBaseError):
        Alert.from_detection(_detection(technique="AML.T9999"), kb)


def test_raw_inputs_only_when_asked(kb, extract):
    assert extract.evidence == {"shapiro_w": 0.81}
    for fmt in ("jsonl", "ocsf", "ecs", "stix"):
        assert "0.2" not in json.dumps(render(extract, fmt))
    with_inputs = Alert.from_detection(_detection(), kb, include_inputs=True)
    assert render(with_inputs, "jsonl")["evidence"]["inputs"] == [[0.1, 0.2]]


def test_jsonl(extract):
    out = render(extract, "jsonl")
    assert out["kind"] == "mlthreat.detect.alert"
    assert out["first_seen"] == "2026-01-01T00:00:00.000Z"
    assert out["last_seen"] == "2026-01-01T00:01:00.500Z"
    assert out["tactics"] == [{"id": "AML.TA0010", "name": "Exfiltration"}]
    assert (out["client_id"], out["queries_observed"], out["score"], out["threshold"]) == (
        "client-7", 150, 0.81, 0.9)


def test_unknown_format(extract):
    with pytest.raises(UsageError, match="ocsf"):
        render(extract, "cef")


# -- OCSF -----------------------------------------------------------------------------------------
def test_ocsf_subtechnique(kb, extract):
    out = render(extract, "ocsf")
    assert (out["class_uid"], out["category_uid"], out["activity_id"], out["type_uid"]) == (
        2004, 2, 1, 200401)
    assert out["metadata"]["version"] == "1.5.0"
    assert out["metadata"]["product"]["name"] == "mlthreat"
    assert out["time"] == int((T0 + 60.5) * 1000)
    info = out["finding_info"]
    assert info["analytic"]["name"] == "prada"
    assert info["first_seen_time"] == int(T0 * 1000)
    (attack,) = info["attacks"]
    assert attack["technique"]["uid"] == "AML.T0024"
    assert attack["technique"]["name"] == kb.technique("AML.T0024").name
    assert attack["sub_technique"]["uid"] == "AML.T0024.002"
    assert attack["sub_technique"]["name"] == "Extract AI Model"
    assert attack["tactic"] == {"uid": "AML.TA0010", "name": "Exfiltration",
                                "src_url": "https://atlas.mitre.org/tactics/AML.TA0010"}
    assert out["evidences"][0]["actor"]["user"]["uid"] == "client-7"
    assert out["resources"][0]["uid"] == "demo-model"


def test_ocsf_technique_has_no_sub_technique(kb, cost):
    attacks = render(cost, "ocsf")["finding_info"]["attacks"]
    assert [a["tactic"]["uid"] for a in attacks] == [t.id for t in kb.tactics_of("AML.T0034")]
    for a in attacks:
        assert a["technique"] == {"uid": "AML.T0034", "name": kb.technique("AML.T0034").name,
                                  "src_url": "https://atlas.mitre.org/techniques/AML.T0034"}
        assert "sub_technique" not in a


def test_finding_uid_is_deterministic_and_keyed(kb, extract):
    uid = render(extract, "ocsf")["finding_info"]["uid"]
    assert uid == render(Alert.from_detection(_detection(), kb), "ocsf")["finding_info"]["uid"]
    other = Alert.from_detection(_detection(client="client-8"), kb)
    assert render(other, "ocsf")["finding_info"]["uid"] != uid


# -- ECS ------------------------------------------------------------------------------------------
def test_ecs_subtechnique(kb, extract):
    out = render(extract, "ecs")
    assert out["@timestamp"] == "2026-01-01T00:01:00.500Z"
    assert out["event"]["kind"] == "alert"
    assert out["event"]["category"] == ["intrusion_detection"]
    threat = out["threat"]
    assert threat["framework"] == "MITRE ATLAS"
    assert threat["tactic"] == {"id": ["AML.TA0010"], "name": ["Exfiltration"],
                                "reference": ["https://atlas.mitre.org/tactics/AML.TA0010"]}
    assert threat["technique"]["id"] == ["AML.T0024"]
    assert threat["technique"]["name"] == [kb.technique("AML.T0024").name]
    assert threat["technique"]["subtechnique"]["id"] == ["AML.T0024.002"]
    assert threat["technique"]["subtechnique"]["name"] == ["Extract AI Model"]
    assert out["user"]["id"] == "client-7"
    assert out["rule"]["name"] == "prada"


def test_ecs_technique(kb, cost):
    threat = render(cost, "ecs")["threat"]
    assert threat["technique"]["id"] == ["AML.T0034"]
    assert "subtechnique" not in threat["technique"]
    assert threat["tactic"]["name"] == [t.name for t in kb.tactics_of("AML.T0034")]


# -- STIX -----------------------------------------------------------------------------------------
def _official_ids() -> dict[str, str]:
    bundle = json.loads(STIX_BUNDLE.read_text(encoding="utf-8"))
    ids = {}
    for obj in bundle["objects"]:
        if obj["type"] == "attack-pattern":
            for ref in obj.get("external_references", []):
                if ref.get("external_id", "").startswith("AML."):
                    ids[ref["external_id"]] = obj["id"]
    return ids


@pytest.mark.parametrize("which", ["extract", "cost"])
def test_stix_sighting_of_official_attack_pattern(which, request):
    from stix2validator import ValidationOptions, validate_instance

    alert: Alert = request.getfixturevalue(which)
    bundle = render(alert, "stix")
    result = validate_instance(bundle, ValidationOptions(strict=False))
    assert result.is_valid, [str(e) for e in result.errors]
    types = [o["type"] for o in bundle["objects"]]
    assert types == ["identity", "sighting"]
    sighting = bundle["objects"][1]
    assert sighting["sighting_of_ref"] == _official_ids()[alert.technique]
    assert sighting["count"] == alert.queries_observed
    assert sighting["x_mlthreat_client_id"] == alert.client_id
    assert sighting["x_mlthreat_model_id"] == "demo-model"
    assert sighting["first_seen"].startswith("2026-01-01T00:00:00")


def test_every_format_is_deterministic(kb, extract):
    again = Alert.from_detection(_detection(), kb)
    for fmt in ("jsonl", "ocsf", "ecs", "stix"):
        assert json.dumps(render(extract, fmt)) == json.dumps(render(again, fmt))


# -- suppression ----------------------------------------------------------------------------------
def test_suppression_window_and_allow_list(kb):
    sup = Suppressor(window_seconds=600, allow_list=["bulk-*", "etl-exact"])
    alerts = [Alert.from_detection(_detection(client=c, technique=t, first=T0, last=T0 + s), kb)
              for c, t, s in [
                  ("a", "AML.T0024.002", 0),     # admitted
                  ("a", "AML.T0024.002", 300),   # suppressed: same window
                  ("a", "AML.T0034", 300),       # admitted: other technique
                  ("b", "AML.T0024.002", 300),   # admitted: other client
                  ("a", "AML.T0024.002", 600),   # admitted: next window
                  ("bulk-1", "AML.T0034", 0),    # allow-listed (glob)
                  ("etl-exact", "AML.T0034", 0),  # allow-listed (exact)
                  ("etl-exact2", "AML.T0034", 0),  # admitted: not a glob match
              ]]
    kept = sup.filter(alerts)
    assert [(a.client_id, a.technique, a.last_seen - T0) for a in kept] == [
        ("a", "AML.T0024.002", 0), ("a", "AML.T0034", 300), ("b", "AML.T0024.002", 300),
        ("a", "AML.T0024.002", 600), ("etl-exact2", "AML.T0034", 0)]
    assert sup.counts == {"admitted": 5, "suppressed": 1, "allow_listed": 2}


def test_allow_list_drops_detections_before_alerting():
    sup = Suppressor(window_seconds=0, allow_list=["client-*"])
    assert not sup.admit(_detection())
    assert sup.counts["allow_listed"] == 1


# -- sinks ----------------------------------------------------------------------------------------
def test_file_sink_replaces_unless_appending(tmp_path, extract, cost):
    path = tmp_path / "out" / "alerts.jsonl"
    for _ in range(2):
        sink = FileSink(path, fmt="ecs")
        assert deliver([extract, cost], sink, "ecs") == 2
        sink.close()
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert lines == [render(extract, "ecs"), render(cost, "ecs")]  # replaced, not doubled
    sink = FileSink(path, append=True, fmt="ecs")
    assert deliver([cost], sink, "ecs") == 1
    sink.close()
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert lines == [render(extract, "ecs"), render(cost, "ecs"), render(cost, "ecs")]
    FileSink(path).close()  # a run without alerts leaves an empty file, not the old alerts
    assert path.read_text(encoding="utf-8") == ""


@pytest.mark.parametrize("fmt", ["jsonl", "ocsf", "ecs", "stix"])
def test_format_of_inverts_render(extract, cost, fmt):
    assert format_of(render(extract, fmt)) == fmt == format_of(render(cost, fmt))
    assert format_of(json.loads(json.dumps(render(extract, fmt)))) == fmt


def test_format_of_other_json():
    assert [format_of(r) for r in ({}, [], "x", {"kind": "mlthreat.detect.run"},
                                   {"class_uid": 2004}, {"type": "bundle", "objects": []})
            ] == [None] * 6


@pytest.mark.parametrize("held,wanted", [("ecs", "ocsf"), ("jsonl", "stix"),
                                         ("stix", "jsonl"), ("ocsf", "ecs")])
def test_appending_another_format_is_refused(tmp_path, extract, held, wanted):
    path = tmp_path / "alerts.jsonl"
    sink = FileSink(path, fmt=held)
    deliver([extract], sink, held)
    sink.close()
    before = path.read_bytes()
    with pytest.raises(DetectError) as err:
        FileSink(path, append=True, fmt=wanted)
    assert str(err.value) == (f"cannot append {wanted} alerts to {path}: it holds {held} "
                              f"alerts (use --format {held} or another file)")
    assert path.read_bytes() == before  # left as it was


def test_appending_to_a_file_of_something_else_is_refused(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("\n\nshopping list\n", "utf-8")
    with pytest.raises(DetectError) as err:
        FileSink(path, append=True)
    assert str(err.value) == (f"cannot append alerts to {path}: its first line is not an "
                              "mlthreat alert in any format (jsonl, ocsf, ecs, stix)")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", "utf-8")
    assert existing_format(empty) is None and existing_format(tmp_path / "none") is None
    with pytest.raises(UsageError, match=r"--append applies to an alert file, not -$"):
        open_sink("-", append=True)


def test_stdout_sink(extract):
    buf = io.StringIO()
    deliver([extract], StdoutSink(buf))
    assert json.loads(buf.getvalue()) == render(extract, "jsonl")


def test_syslog_sink_rfc5424_over_udp(extract, cost):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        server.settimeout(5)
        sink = SyslogSink("127.0.0.1", server.getsockname()[1], hostname="det01")
        deliver([extract, cost], sink, "ocsf")
        sink.close()
        got = [server.recv(65535) for _ in range(2)]
    for datagram, alert in zip(got, [extract, cost], strict=True):
        header, _, msg = datagram.partition(b" \xef\xbb\xbf")
        stamp = "2026-01-01T00:01:00.500Z" if alert is extract else "2026-01-01T01:00:00.000Z"
        assert header.decode() == f"<84>1 {stamp} det01 mlthreat - alert -"
        assert json.loads(msg) == render(alert, "ocsf")


class _Collector(BaseHTTPRequestHandler):
    received: list[tuple[str, dict[str, Any]]]
    fail_first: int

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        server: Any = self.server
        if server.fail_first > 0:
            server.fail_first -= 1
            self.send_response(503)
        else:
            server.received.append((self.headers["Authorization"], json.loads(body)))
            self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"text":"Success","code":0}')

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def collector():
    server: Any = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    server.received, server.fail_first = [], 0
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, f"http://127.0.0.1:{server.server_address[1]}/services/collector/event"
    server.shutdown()
    server.server_close()


def test_hec_sink_delivers_with_token_and_retries(monkeypatch, collector, extract, cost):
    server, url = collector
    monkeypatch.setenv("MLTHREAT_HEC_TOKEN", TOKEN)
    server.fail_first = 2  # two 503s, then success
    assert deliver([extract, cost], HecSink(url, backoff=0.01), "ecs") == 2
    assert server.received == [
        (f"Splunk {TOKEN}", {"event": render(extract, "ecs"), "sourcetype": "mlthreat:alert",
                             "time": T0 + 60.5}),
        (f"Splunk {TOKEN}", {"event": render(cost, "ecs"), "sourcetype": "mlthreat:alert",
                             "time": T0 + 3600}),
    ]


def test_hec_sink_errors_name_url_not_token(monkeypatch, collector, extract):
    server, url = collector
    monkeypatch.setenv("MLTHREAT_HEC_TOKEN", TOKEN)
    server.fail_first = 10
    with pytest.raises(DetectError) as err:
        deliver([extract], HecSink(url, retries=2, backoff=0.01))
    message = str(err.value)
    assert url in message and "HTTP 503" in message and "3 attempts" in message
    assert TOKEN not in message and "\n" not in message
    assert server.received == []

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/collector"
    with pytest.raises(DetectError) as err:
        deliver([extract], HecSink(dead, retries=1, backoff=0.01))
    assert dead in str(err.value) and TOKEN not in str(err.value)


def test_hec_sink_needs_token_from_env(monkeypatch, collector, extract):
    _, url = collector
    monkeypatch.delenv("MLTHREAT_HEC_TOKEN", raising=False)
    with pytest.raises(DetectError, match="MLTHREAT_HEC_TOKEN"):
        deliver([extract], HecSink(url))


def test_open_sink(tmp_path):
    assert isinstance(open_sink("-"), StdoutSink)
    syslog = open_sink("syslog://127.0.0.1:5514")
    assert isinstance(syslog, SyslogSink) and syslog.port == 5514
    assert isinstance(open_sink("https://splunk:8088/services/collector"), HecSink)
    assert isinstance(open_sink(str(tmp_path / "a.jsonl")), FileSink)


def test_suppressor_checkpoint_keeps_open_windows():
    """A restarted run keeps the windows open: a second alert inside the window stays
    suppressed after checkpoint and restore through JSON."""
    import json as _json

    from mlthreat.detect.alerts import Suppressor
    from mlthreat.detect.detectors.base import Detection

    def detection(ts):
        return Detection("prada", "AML.T0024.002", "c1", "m", ts - 5, ts, 120, 0.8, 0.92)

    first = Suppressor(window_seconds=3600)
    assert first.admit(detection(1000.0))
    saved = _json.loads(_json.dumps(first.checkpoint()))
    assert saved == {"last": [["c1", "AML.T0024.002", 1000.0]]}
    second = Suppressor(window_seconds=3600)
    second.restore(saved)
    assert not second.admit(detection(2000.0))  # inside the window opened before the restart
    assert second.admit(detection(5000.0))
