"""The HTTP(S) target against real servers on 127.0.0.1: protocol, mapping, transport, auth."""

from __future__ import annotations

import socket
import time

import numpy as np
import pytest
from model_server import ModelServer, serve_estimator

from mlthreat.assess.errors import TargetError
from mlthreat.assess.targets import load_target

SECRET = "Bearer s3cret-t0ken-value"
KEY = "k3y-v4lue-from-env"


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    model = LogisticRegression(max_iter=500).fit(x[:600], y[:600])
    return x[600:640], model


@pytest.fixture(autouse=True)
def _no_proxy_no_auth(monkeypatch):
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "MLTHREAT_HTTP_HEADERS",
                "MLTHREAT_HTTP_AUTHORIZATION"):
        monkeypatch.delenv(var, raising=False)


def test_kserve_scores(digits):
    x, model = digits
    with ModelServer(serve_estimator(model)) as server:
        target = load_target(server.url, n_features=64)
        assert target.output_kind == "scores" and target.access == "black-box"
        scores = target.predict(x[:5])
    np.testing.assert_allclose(scores, model.predict_proba(x[:5].astype("float64")), atol=1e-12)
    assert target.n_classes == 10 and target.total_queries == 5
    sent = server.requests[0]
    assert sent["headers"]["Content-Type"] == "application/json"
    assert np.asarray(sent["json"]["instances"]).shape == (5, 64)


def test_labels_only(digits):
    x, model = digits
    with ModelServer(serve_estimator(model, labels=True)) as server:
        with pytest.raises(TargetError, match="n_classes"):
            load_target(server.url, n_features=64).predict(x[:3])
        target = load_target(server.url, n_features=64, n_classes=10)
        with pytest.warns(UserWarning, match="labels only"):
            out = target.predict(x[:6])
        stated = load_target(server.url, n_features=64, n_classes=10, output_kind="labels")
        assert stated.output_kind == "labels"
        np.testing.assert_array_equal(stated.predict(x[:6]), out)
    assert target.output_kind == "labels"
    np.testing.assert_array_equal(out, np.eye(10)[model.predict(x[:6])])


def test_label_names_map_through_classes(digits):
    x, model = digits
    names = [f"digit-{i}" for i in range(10)]

    def respond(payload, headers):
        return {"predictions": [names[i] for i in model.predict(np.asarray(payload["instances"]))]}

    with ModelServer(respond) as server:
        target = load_target(server.url, n_features=64, classes=names, output_kind="labels")
        out = target.predict(x[:4])
    assert target.n_classes == 10
    np.testing.assert_array_equal(out.argmax(axis=1), model.predict(x[:4]))
    np.testing.assert_array_equal(target.class_index(["digit-3", "digit-0"]), [3, 0])


@pytest.mark.parametrize("template, path, answer", [
    ("inputs.data", "result.scores",
     lambda p, proba: {"result": {"scores": proba(p["inputs"]["data"]).tolist()}}),
    ('{"inputs": [{"name": "x", "shape": ["$n", 64], "data": "$instances"}]}', "outputs.0.data",
     lambda p, proba: {"outputs": [{"data": proba(p["inputs"][0]["data"]).ravel().tolist()}]}),
    ({"rows": "$instances", "count": "$n"}, "",
     lambda p, proba: proba(p["rows"]).tolist() if p["count"] == len(p["rows"]) else None),
])
def test_custom_mapping(digits, template, path, answer):
    x, model = digits

    def proba(rows):
        return model.predict_proba(np.asarray(rows))

    with ModelServer(lambda p, h: answer(p, proba)) as server:
        target = load_target(server.url, n_features=64, n_classes=10,
                             request_template=template, response_path=path)
        out = target.predict(x[:5])
    np.testing.assert_allclose(out, model.predict_proba(x[:5].astype("float64")), atol=1e-12)


def test_template_needs_one_placeholder():
    with pytest.raises(TargetError, match=r"\$instances"):
        load_target("http://127.0.0.1:9/p", n_features=4, request_template='{"data": []}')


def test_batching(digits):
    x, model = digits
    with ModelServer(serve_estimator(model)) as server:
        target = load_target(server.url, n_features=64, batch_size=7)
        out = target.predict(x[:20])
    assert [len(r["json"]["instances"]) for r in server.requests] == [7, 7, 6]
    assert out.shape == (20, 10) and target.total_queries == 20


def test_retries_on_503_then_succeeds(digits):
    x, model = digits
    good = serve_estimator(model)

    def flaky(payload, headers):
        return (503, {"error": "warming up"}) if len(server.requests) <= 2 else \
            good(payload, headers)

    with ModelServer(flaky) as server:
        target = load_target(server.url, n_features=64, retries=3, backoff=0.01)
        out = target.predict(x[:2])
    assert len(server.requests) == 3 and target.requests == 3
    assert out.shape == (2, 10) and target.total_queries == 2


def test_retries_run_out():
    with ModelServer(lambda p, h: (500, {"error": "boom"})) as server:
        target = load_target(server.url, n_features=64, retries=1, backoff=0.01, n_classes=10)
        with pytest.raises(TargetError, match=r"HTTP 500.*after 2 attempts"):
            target.predict(np.zeros((1, 64)))
    assert len(server.requests) == 2 and target.total_queries == 0


def test_429_honours_retry_after(digits):
    x, model = digits
    good = serve_estimator(model)

    def limited(payload, headers):
        if len(server.requests) == 1:
            return 429, {"error": "slow down"}, {"Retry-After": "1"}
        return good(payload, headers)

    with ModelServer(limited) as server:
        target = load_target(server.url, n_features=64, backoff=0.01)
        start = time.monotonic()
        target.predict(x[:1])
        elapsed = time.monotonic() - start
    assert len(server.requests) == 2 and elapsed >= 0.95


def test_timeout():
    def slow(payload, headers):
        time.sleep(1.5)
        return {"predictions": [[1.0]]}

    with ModelServer(slow) as server:
        target = load_target(server.url, n_features=64, n_classes=10, timeout=0.3, retries=0)
        start = time.monotonic()
        with pytest.raises(TargetError, match=r"timed out after 0\.3 s") as err:
            target.predict(np.zeros((1, 64)))
        assert time.monotonic() - start < 1.2
    assert "127.0.0.1" in str(err.value)


def test_connection_refused():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    target = load_target(f"http://127.0.0.1:{port}/p", n_features=4, n_classes=2, retries=1,
                         backoff=0.01)
    with pytest.raises(TargetError, match=f"127.0.0.1:{port}.*connection failed"):
        target.predict(np.zeros((1, 4)))


@pytest.mark.parametrize("body, message", [
    ((200, b"<html><body>Internal error page</body></html>", {"Content-Type": "text/html"}),
     r"answered non-JSON \(text/html\): '<html><body>Internal"),
    ({"predictions": [[0.5, 0.5]] * 3}, "answered 3 predictions for 5 inputs"),
    ({"predictions": [["a", "b"]] * 5}, "non-numeric"),
    ({"predictions": [[0.5, 0.5], [1.0]] * 2 + [[0.5, 0.5]]}, "non-numeric or ragged"),
    ({"predictions": [[0.5, 0.5], 1] * 2 + [1]}, "mix of score rows and labels"),
    ({"outputs": [[0.5, 0.5]] * 5}, r"no 'predictions' \(keys: outputs\)"),
    ({"predictions": "all good"}, "answered str"),
    ((200, b'{"predictions": [[' + b"9" * 4000 + b", 0]" + b", [0.5, 0.5]" * 4 + b"]}",
      {"Content-Type": "application/json"}), "numbers too large for float64"),
    ({"predictions": [10 ** 3999] * 5}, r"answered label 10+\.\.\.0+; without the classes"),
    ((200, b'{"predictions": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
      {"Content-Type": "application/json"}), "nested too deeply"),
])
def test_garbage_answers(body, message):
    with ModelServer(lambda p, h: body) as server:
        target = load_target(server.url, n_features=4, n_classes=2)
        with pytest.raises(TargetError, match=message) as err:
            target.predict(np.zeros((5, 4)))
    assert server.url in str(err.value) and "\n" not in str(err.value)
    assert len(str(err.value)) < 400
    assert target.total_queries == 0


def test_wrong_row_length_after_first_answer():
    answers = iter([[[0.5, 0.5]], [[0.2, 0.3, 0.5]]])
    with ModelServer(lambda p, h: {"predictions": next(answers)}) as server:
        target = load_target(server.url, n_features=4)
        target.predict(np.zeros((1, 4)))
        with pytest.raises(TargetError, match="rows of 3 scores, expected 2"):
            target.predict(np.zeros((1, 4)))


def test_401_is_not_retried():
    with ModelServer(lambda p, h: (401, {"error": "no token"})) as server:
        target = load_target(server.url, n_features=4, retries=3, backoff=0.01)
        with pytest.raises(TargetError, match=r"HTTP 401.*MLTHREAT_HTTP_AUTHORIZATION"):
            target.predict(np.zeros((1, 4)))
    assert len(server.requests) == 1


def test_auth_from_environment_only(monkeypatch, digits):
    x, model = digits
    monkeypatch.setenv("MLTHREAT_HTTP_AUTHORIZATION", SECRET)
    monkeypatch.setenv("MLTHREAT_HTTP_HEADERS", f'{{"X-Api-Key": "{KEY}"}}')
    with ModelServer(serve_estimator(model)) as server:
        load_target(server.url, n_features=64).predict(x[:1])
    assert server.requests[0]["headers"]["Authorization"] == SECRET
    assert server.requests[0]["headers"]["X-Api-Key"] == KEY

    def echo(status):  # a server that puts the credentials it got into its error page
        return lambda p, h: (status, f"denied {h['Authorization'].split()[1]} "
                                     f"{h['X-Api-Key']}".encode(), {"Content-Type": "text/plain"})

    for status in (403, 200, 503):
        with ModelServer(echo(status)) as server:
            target = load_target(server.url, n_features=64, retries=0)
            with pytest.raises(TargetError) as err:
                target.predict(x[:1])
        assert "denied" in str(err.value) or status == 503
        assert SECRET not in str(err.value) and KEY not in str(err.value)
        assert "s3cret" not in str(err.value)

    with pytest.raises(TargetError, match="environment"):
        load_target("http://127.0.0.1:9/p", n_features=4, headers={"Authorization": "x"})
    monkeypatch.setenv("MLTHREAT_HTTP_HEADERS", f"not json {KEY}")
    with pytest.raises(TargetError, match="MLTHREAT_HTTP_HEADERS") as err:
        load_target("http://127.0.0.1:9/p", n_features=4)
    assert KEY not in str(err.value)
    monkeypatch.setenv("MLTHREAT_HTTP_HEADERS", f'{{"X-Api-Key": "{KEY}\\r\\nX-Evil: 1"}}')
    with pytest.raises(TargetError, match="'X-Api-Key' from the environment") as err:
        load_target("http://127.0.0.1:9/p", n_features=4)
    assert KEY not in str(err.value)


def test_rate_limit(digits):
    x, model = digits
    with ModelServer(serve_estimator(model)) as server:
        target = load_target(server.url, n_features=64, max_rps=20, batch_size=1)
        start = time.monotonic()
        target.predict(x[:10])
        elapsed = time.monotonic() - start
    assert len(server.requests) == 10
    assert elapsed >= 0.45


def test_redirect_is_not_followed():
    with ModelServer(lambda p, h: (307, {}, {"Location": "http://elsewhere.invalid/p"})) as server:
        target = load_target(server.url, n_features=4, n_classes=2)
        with pytest.raises(TargetError, match=r"redirect to http://elsewhere\.invalid/p, not "
                                              r"followed"):
            target.predict(np.zeros((1, 4)))
    assert len(server.requests) == 1


def test_needs_n_features_and_a_url():
    with pytest.raises(TargetError, match="n_features"):
        load_target("http://127.0.0.1:9/p")
    with pytest.raises(TargetError, match="not an http"):
        load_target("http://", n_features=3)


def test_user_password_kept_out_of_messages():
    target = load_target("http://user:pa55word@127.0.0.1:9/p", n_features=4, n_classes=2,
                         retries=0)
    with pytest.raises(TargetError) as err:
        target.predict(np.zeros((1, 4)))
    assert "pa55word" not in str(err.value) and "127.0.0.1:9/p" in str(err.value)
    assert "pa55word" not in target.description


def test_regression_endpoint():
    with ModelServer(lambda p, h: {"predictions": [sum(r) for r in p["instances"]]}) as server:
        target = load_target(server.url, n_features=3, task="regression")
        out = target.predict(np.ones((4, 3)))
    assert target.task == "regression" and target.n_classes == 1
    np.testing.assert_allclose(out, [3.0] * 4)


def test_a_trickled_answer_is_bounded_by_the_timeout():
    """An endpoint that sends its headers, then its body a byte every 0.2 s: the per-read
    socket timeout never fires, so --timeout has to bound the whole answer."""
    import socket
    import threading
    import time

    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                body = b'{"predictions": [[0.5, 0.5]]}'
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n")
                for byte in body:
                    if stop.is_set():
                        return
                    try:
                        conn.sendall(bytes([byte]))
                    except OSError:
                        break
                    time.sleep(0.2)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.getsockname()[1]}/predict"
        target = load_target(url, n_features=2, timeout=1.0, retries=0)
        started = time.monotonic()
        with pytest.raises(TargetError, match=r"timed out after 1 s"):
            target.predict(np.zeros((1, 2), dtype="float32"))
        assert time.monotonic() - started < 3.0  # the body alone would take 6 s
    finally:
        stop.set()
        server.close()
