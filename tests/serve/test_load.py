"""The load generators on their own, against two tiny loopback HTTP servers (no Ray)."""

import pytest

from deploylab.serve import load


@pytest.fixture
def two_servers(http_server):
    hits = ([], [])

    def answer(paths):  # records each request's path
        def respond(path):
            paths.append(path)
            return 200, b'{"outputs": []}'
        return respond

    yield [http_server(answer(h)) for h in hits], hits


def test_closed_loop_spreads_its_clients_over_several_servers(two_servers):
    urls, hits = two_servers
    res = load.closed_loop(urls, "m", [load.text_request("hi")], concurrency=4,
                           duration_s=10, max_requests=40)
    assert res.ok == res.requests == 40 and res.errors == {}
    assert len(hits[0]) + len(hits[1]) == 40
    assert hits[0] and hits[1], "one server got no request"
    assert set(hits[0]) == {"/v2/models/m/infer"}


def test_open_loop_sends_requests_to_several_servers_in_turn(two_servers):
    urls, hits = two_servers
    res = load.open_loop(urls, "m", [load.text_request("hi")], rate=200, duration_s=0.1,
                         version="2")
    assert res.ok == res.requests == 20
    assert len(hits[0]) == len(hits[1]) == 10  # request i goes to server i % 2
    assert set(hits[1]) == {"/v2/models/m/versions/2/infer"}


@pytest.mark.parametrize("urls", [[], ["http://127.0.0.1:1", "http://example.com:80"]])
def test_an_empty_or_remote_target_list_is_refused_before_any_request(urls):
    with pytest.raises(ValueError, match=r"URL|this machine only"):
        load.closed_loop(urls, "m", [load.text_request("hi")], duration_s=1)
