"""`deploylab.serve.server`: the settings Ray starts with, refused options, Ray's metrics,
and the request timeout end to end (answered as 504, counted by the replicas and the proxy)."""

import os
import re
import time

import numpy as np
import pytest

from deploylab.serve import Client, InferenceError, monitor
from deploylab.serve.server import ServeError, Server, _throughput_optimized, free_port, start

SETTINGS = ("RAY_SERVE_THROUGHPUT_OPTIMIZED", "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE",
            "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S")


# `_init_ray` sets these, and the gateway's callback, through one `_environ`; the slow timeout
# test below sees the callback's 504 end to end.
def test_throughput_mode_is_set_for_ray_and_cleaned_up_after(monkeypatch):
    for key in SETTINGS:
        monkeypatch.delenv(key, raising=False)
    with _throughput_optimized():
        inside = {key: os.environ.get(key) for key in SETTINGS}
    assert inside == {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
                      "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1",
                      "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1"}
    assert not any(key in os.environ for key in SETTINGS)  # nothing leaks past the block


def test_throughput_mode_keeps_what_the_user_set(monkeypatch):
    monkeypatch.setenv("RAY_SERVE_THROUGHPUT_OPTIMIZED", "0")
    monkeypatch.setenv("RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE", "100")
    with _throughput_optimized():
        assert os.environ["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "0"
        assert os.environ["RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE"] == "100"
    assert os.environ["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "0"


@pytest.mark.parametrize("timeout", [0, -1.0])
def test_a_request_timeout_that_is_not_positive_is_refused(nap_spec, timeout):
    with pytest.raises(ServeError, match="request_timeout_s must be > 0 or None"):
        start(nap_spec, request_timeout_s=timeout)


@pytest.mark.parametrize(("option", "words"), [
    ({"max_body_bytes": 0}, "max_body_bytes must be an int >= 1, got 0"),
    ({"max_body_bytes": 1.5e6}, "max_body_bytes must be an int >= 1, got 1500000.0"),
    ({"max_text_chars": -1}, "max_text_chars must be an int >= 1"),
    ({"threads": 0}, "threads must be an int >= 1, got 0"),  # was taken as "the default"
    ({"replica_cpus": 0}, "replica_cpus must be > 0 or None"),
])
def test_options_the_server_cannot_run_with_are_refused_before_ray_starts(
        nap_spec, option, words, monkeypatch):
    def no_ray(*_):
        raise AssertionError("Ray started before the options were checked")

    monkeypatch.setattr("deploylab.serve.server._init_ray", no_ray)
    with pytest.raises(ServeError, match=re.escape(words)):
        start(nap_spec, **option)


def test_ray_metrics_that_do_not_answer_name_the_endpoint(monkeypatch):
    import ray

    port = free_port()  # nothing listens there
    monkeypatch.setattr(ray, "nodes", lambda: [
        {"Alive": True, "MetricsExportPort": port, "NodeManagerAddress": "10.0.0.9"},
        {"Alive": False, "MetricsExportPort": 1, "NodeManagerAddress": "10.0.0.8"}])
    server = Server("http://127.0.0.1:1", "127.0.0.1", 1, [], "app", True, None, (), {})
    with pytest.raises(ServeError, match=f"127.0.0.1:{port}/metrics did not answer"):
        server.ray_metrics(timeout_s=2)


@pytest.mark.parametrize(("change", "words"), [
    ({"max_batch_size": 0}, "max_batch_size must be an int >= 1, got 0"),
    ({"max_batch_size": 2.5}, "got 2.5"),
    ({"batch_wait_timeout_s": -0.1}, "batch_wait_timeout_s must be in [0, 10]"),
    ({"num_replicas": 0}, "num_replicas must be an int >= 1, got 0"),
])
def test_configure_refuses_what_the_server_cannot_run_with_before_changing_it(change, words):
    options = {"num_replicas": 2, "user_config": {"max_batch_size": 8}}
    server = Server("http://127.0.0.1:1", "127.0.0.1", 1, [], "app", True, None, (),
                    {k: (dict(v) if isinstance(v, dict) else v) for k, v in options.items()})
    with pytest.raises(ServeError, match=re.escape(words)):
        server.configure(**change)  # no Serve here: it must fail before reaching it
    assert server._options == options  # nothing half-applied


@pytest.mark.slow
def test_a_request_over_the_timeout_gets_504_the_server_serves_on_and_counts_it(nap_spec):
    # three workers: a quick request never waits for a slow one's model call (each slow one
    # naps on after its 504, and the second starts before the first has woken)
    with start(nap_spec, workers=3, threads=1, request_timeout_s=1.0) as server:
        for url in [server.url, *server.replica_urls()]:  # the proxy, the replica's own
            with Client(url) as client:
                with pytest.raises(InferenceError, match="timed out") as e:
                    client.infer("nap", {"x": np.array([[3.0, 0.0]], dtype=np.float32)})
                # Serve's 408, sent as 504 by the kit's gateway middleware
                assert e.value.status == 504 and e.value.retryable, url
                out = client.infer("nap", {"x": np.array([[0.0, 1.0]], dtype=np.float32)})
                assert out["y"].tolist() == [[0.0, 1.0]], url
        with Client(server.url, timeout_s=0.5) as impatient, pytest.raises(InferenceError,
                                                                         match="no response"):
            impatient.infer("nap", {"x": np.array([[2.0, 0.0]], dtype=np.float32)})
        # the two cut off by the server and the one whose client hung up count as cancelled
        # (499), not as answered; the replica hears of a cut at the proxy a moment later
        with Client(server.url) as client:
            text = _eventually(client.metrics,
                               lambda t: _request_codes(t).get("499", 0) >= 3, wait_s=0.1)
        assert _request_codes(text) == {"200": 2, "499": 3}
        assert monitor.samples(text, "deploylab_errors_total") == [
            ({"code": "499", "model": "nap", "reason": "cancelled"}, 3.0)]
        assert monitor.samples(text, "deploylab_request_latency_seconds_count") == [
            ({"model": "nap", "version": "1"}, 2.0)]  # only the answered ones are timed
        # the proxy's own count of that timeout, from Ray's metrics (reported every 10 s),
        # under the 408 it chose before the middleware sent a 504
        proxy = _eventually(lambda: monitor.proxy_requests(server.ray_metrics()),
                            lambda p: p.get("408", 0) >= 1, wait_s=0.5)
        assert proxy.get("408") == 1 and proxy.get("200", 0) >= 1, proxy.to_dict()


def _eventually(read, done, wait_s: float, tries: int = 60):
    """The first of up to `tries` reads, `wait_s` apart, that is `done` (else the last)."""
    for _ in range(tries - 1):
        value = read()
        if done(value):
            return value
        time.sleep(wait_s)
    return read()


def _request_codes(text: str) -> dict[str, int]:
    return {lab["code"]: int(v) for lab, v in monitor.samples(text, "deploylab_requests_total")}


@pytest.mark.slow
def test_a_corrupt_model_is_a_one_line_error_and_leaves_nothing_running(tmp_path):
    import psutil
    import ray

    from deploylab.serve import ModelSpec

    bad = tmp_path / "truncated.onnx"
    bad.write_bytes(b"not a protobuf")  # passes the spec's checks: it is an .onnx file
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    with pytest.raises(ServeError) as e:
        start(ModelSpec("bad", "1", bad))
    # the replica's own error, which Serve's "failed to update the deployments" leaves out
    assert "failed to start" in str(e.value) and "INVALID_PROTOBUF" in str(e.value)
    assert str(bad) in str(e.value) and "ModelSpec(...).build()" in str(e.value)
    assert not ray.is_initialized()  # the Ray it started is stopped again
    new = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    _, alive = psutil.wait_procs(new, timeout=15)  # Ray's daemons exit a moment later
    assert not alive, [p.name() for p in alive]
