"""The deployment's route table (the protocol's paths to handlers, 404 and 405 otherwise)
and its body limit. No Ray: the handlers are called on the bare class."""

import asyncio
from types import SimpleNamespace

import pytest

from deploylab.serve.app import ROUTES, ModelServer, _match
from deploylab.serve.protocol import ProtocolError


@pytest.mark.parametrize("method,path,handler,params", [
    ("GET", "/v2/health/live", "live", {}),
    ("GET", "/v2", "server_metadata", {}),
    ("POST", "/v2/repository/index", "repository_index", {}),
    ("GET", "/v2/models/minilm", "model_metadata", {"name": "minilm"}),
    ("GET", "/v2/models/minilm/versions/2", "model_metadata", {"name": "minilm", "version": "2"}),
    ("GET", "/v2/models/minilm/ready", "model_ready", {"name": "minilm"}),
    ("POST", "/v2/models/minilm/infer", "infer", {"name": "minilm"}),
    ("POST", "/v2/models/kws/versions/int8/infer", "infer", {"name": "kws", "version": "int8"}),
    ("GET", "/metrics", "metrics", {}),
    ("HEAD", "/v2/health/ready", "ready", {}),  # HEAD is answered as GET
])
def test_protocol_paths_reach_their_handler(method, path, handler, params):
    assert _match(method, path) == (handler, params)


def test_every_route_has_a_handler():
    assert all(callable(getattr(ModelServer.func_or_class, f"_{h}", None))
               for _, _, h in ROUTES if h != "infer")


@pytest.mark.parametrize("method,path,status,words", [
    ("GET", "/v2/nothing", 404, "GET /v2/nothing: Not Found"),
    ("POST", "/v2/models/a/b/infer", 404, "Not Found"),  # a name is one path segment
    ("GET", "/v2/models/minilm/infer/", 404, "Not Found"),
    ("GET", "/v2/models/minilm/infer", 405, "Method Not Allowed (use POST)"),
    ("DELETE", "/v2/models/minilm", 405, "(use GET)"),
])
def test_other_paths_and_methods_are_refused_by_name(method, path, status, words):
    with pytest.raises(ProtocolError) as e:
        _match(method, path)
    assert e.value.status == status and words in str(e.value)
    assert "/v2/models/{name}/infer" in str(e.value)  # says where to go instead


class _Chunked:
    """A request sent without a length: 100 chunks of 1 kB, counting those read."""

    def __init__(self):
        self.headers, self.read = {}, 0

    async def stream(self):
        for _ in range(100):
            self.read += 1
            yield b" " * 1000

    async def body(self):
        return b"".join([c async for c in self.stream()])


def test_a_body_without_a_length_is_read_only_up_to_the_limit():
    req, replica = _Chunked(), SimpleNamespace(settings={"max_body_bytes": 5000})
    with pytest.raises(ProtocolError, match="over the limit of 5000 bytes") as e:
        asyncio.run(ModelServer.func_or_class._body(replica, req))
    assert e.value.status == 413 and req.read == 6  # not the whole 100 kB


def test_a_body_within_the_limit_is_read_whole():
    req, replica = _Chunked(), SimpleNamespace(settings={"max_body_bytes": 100_000})
    assert asyncio.run(ModelServer.func_or_class._body(replica, req)) == b" " * 100_000
