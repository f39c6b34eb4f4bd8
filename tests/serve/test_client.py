"""The protocol client's retries, against a tiny loopback HTTP server (no Ray)."""

import json

import pytest

from deploylab.serve import Client, InferenceError

OK = {"model_name": "m", "outputs": [{"name": "y", "datatype": "FP32", "shape": [1],
                                      "data": [1.0]}]}


@pytest.fixture
def scripted(http_server):
    """A server that answers POSTs with the statuses in `script`, then 200s."""
    script: list[int] = []

    def answer(path):
        status = script.pop(0) if script else 200
        body = OK if status == 200 else {"error": f"status {status}"}
        return status, json.dumps(body).encode()

    return http_server(answer), script


@pytest.mark.parametrize("status", [408, 500, 503])
def test_a_retryable_failure_is_retried(scripted, status):
    url, script = scripted
    script.append(status)
    with Client(url, retries=1, backoff_s=0.01) as c:
        assert c.infer("m", {"x": [1.0]})["y"].tolist() == [1.0]
    assert script == []  # the failure was served, then the retry succeeded


@pytest.mark.parametrize("status,retryable", [(408, True), (504, True), (400, False),
                                              (404, False), (413, False)])
def test_without_retries_the_failure_says_whether_a_retry_can_help(scripted, status,
                                                                   retryable):
    url, script = scripted
    script.append(status)
    with Client(url) as c, pytest.raises(InferenceError, match=f"status {status}") as e:
        c.infer("m", {"x": [1.0]})
    assert e.value.status == status and e.value.retryable is retryable


def test_a_refusal_is_not_retried(scripted):
    url, script = scripted
    script.extend([400, 200])
    with Client(url, retries=3, backoff_s=0.01) as c, pytest.raises(InferenceError):
        c.infer("m", {"x": [1.0]})
    assert script == [200], "a 4xx other than 408 was retried"


@pytest.mark.parametrize("kwargs", [{"retries": -1}, {"timeout_s": 0}, {"backoff_s": -0.1}])
def test_settings_that_cannot_work_are_refused_up_front(kwargs):
    # retries=-1 would send nothing at all and fail later with no reason
    with pytest.raises(ValueError, match=f"{next(iter(kwargs))}={next(iter(kwargs.values()))}"):
        Client("http://127.0.0.1:9", **kwargs)


def test_embed_refuses_an_empty_list_and_a_batch_size_below_one():
    with Client("http://127.0.0.1:9") as c:  # nothing is sent
        with pytest.raises(ValueError, match="at least one text"):
            c.embed("m", [])
        with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
            c.embed("m", ["a"], batch_size=0)
