"""Alert delivery that must not leak or tear: the HEC sink follows no redirect (its token would
go along), and an alert file holds whole lines only, even when the disk fills mid-write."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import socket
import threading
from typing import Any

import pytest
from model_server import ModelServer

from mlthreat.detect.alerts import KIND
from mlthreat.detect.errors import DetectError
from mlthreat.detect.sinks import FileSink, HecSink

TOKEN = "s3cr3t-hec-token-0f6b"


class Listener:
    """A TCP listener on 127.0.0.1 that records every byte any client sends it."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.received = b""
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self._done.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            with conn:
                conn.settimeout(0.5)
                with contextlib.suppress(OSError):
                    self.received += conn.recv(65536)

    def __enter__(self) -> Listener:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._done.set()
        self._thread.join()
        self.sock.close()


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_hec_sink_follows_no_redirect(monkeypatch, status):
    monkeypatch.setenv("MLTHREAT_HEC_TOKEN", TOKEN)
    with Listener() as elsewhere:
        target = f"http://127.0.0.1:{elsewhere.port}/services/collector/event"
        with ModelServer(lambda payload, headers: (status, {}, {"Location": target}),
                         path="/services/collector/event") as server, \
                pytest.raises(DetectError) as err:
            HecSink(server.url, retries=3, backoff=0.01).send({"a": 1}, time=1.0)
    message = str(err.value)
    assert message == (f"cannot deliver alert to {server.url}: HTTP {status} redirect to "
                       f"{target} not followed (1 attempt)")
    assert TOKEN not in message
    assert len(server.requests) == 1  # asked once, not retried
    assert server.requests[0]["headers"]["Authorization"] == f"Splunk {TOKEN}"
    assert elsewhere.connections == 0 and elsewhere.received == b""


def test_hec_redirect_location_never_shows_the_token(monkeypatch):
    monkeypatch.setenv("MLTHREAT_HEC_TOKEN", TOKEN)
    location = f"http://127.0.0.1:9/collector?token={TOKEN}"
    with ModelServer(lambda payload, headers: (302, {}, {"Location": location})) as server, \
            pytest.raises(DetectError) as err:
        HecSink(server.url, retries=0).send({"a": 1})
    assert TOKEN not in str(err.value)
    assert "redirect to http://127.0.0.1:9/collector?token=*** not followed" in str(err.value)


class FillingDisk(io.FileIO):
    """An alert file on a disk with ``room`` bytes left: a write that does not fit writes what
    fits (a short count), and once full every write fails with ENOSPC."""

    room = 0

    def write(self, data: Any) -> int:
        if self.room <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        fits = bytes(data)[:self.room]
        FillingDisk.room -= len(fits)
        return super().write(fits)


@pytest.mark.parametrize("room", [0, 17, 80, 120])
@pytest.mark.parametrize("append", [False, True])
def test_alert_file_holds_whole_lines_when_the_disk_fills(tmp_path, monkeypatch, room, append):
    path = tmp_path / "alerts.jsonl"
    record = {"kind": KIND, "client_id": "prober-1", "detector": "blacklight"}
    line = json.dumps(record, separators=(",", ":")) + "\n"
    before = line if append else ""
    path.write_text(before)
    sink = FileSink(path, append=append)
    sink.send(record)
    assert sink._fh is not None
    sink._fh.close()
    disk = FillingDisk(path, "a")
    monkeypatch.setattr(FillingDisk, "room", room)
    sink._fh = disk
    with pytest.raises(DetectError) as err:
        for _ in range(3):  # the third line never fits
            sink.send(record)
    sink.close()
    message = str(err.value)
    assert message.startswith(f"cannot write alerts to {path}: ")
    assert "No space left on device" in message and "\n" not in message
    whole = 1 + (room >= len(line))  # lines that fitted
    assert path.read_text() == before + line * whole
